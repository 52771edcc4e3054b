package link

import (
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Unacked tracks sent items the receiver has not acknowledged yet, by when
// they were sent, so they can go again once the threshold passes (a batch
// lost in a reconnect nobody noticed). Receivers drop ids they hold.
type Unacked struct {
	sentAt    map[messages.TaskID]int64
	lastCheck time.Time
}

// NewUnacked makes an empty tracker.
func NewUnacked() *Unacked { return &Unacked{sentAt: make(map[messages.TaskID]int64)} }

// Sent records that id went out at now.
func (u *Unacked) Sent(id messages.TaskID, now int64) { u.sentAt[id] = now }

// Ack forgets id.
func (u *Unacked) Ack(id messages.TaskID) { delete(u.sentAt, id) }

// Has reports whether id is waiting for an ack.
func (u *Unacked) Has(id messages.TaskID) bool { _, ok := u.sentAt[id]; return ok }

// Len is the number waiting.
func (u *Unacked) Len() int { return len(u.sentAt) }

// Due returns, at most once per threshold, the ids sent longer than the
// threshold ago, and forgets them: the caller sends them again.
func (u *Unacked) Due(now time.Time, threshold time.Duration, out []messages.TaskID) []messages.TaskID {
	if len(u.sentAt) == 0 || now.Sub(u.lastCheck) < threshold {
		return out
	}
	u.lastCheck = now
	cut := now.UnixNano() - int64(threshold)
	for id, at := range u.sentAt {
		if at < cut {
			out = append(out, id)
			delete(u.sentAt, id)
		}
	}
	return out
}

// Outbox holds items (results) until the receiver acknowledges them: new
// items are queued to send, sent ones are re-sent after the threshold, and
// all of them again after a re-registration.
type Outbox[T any] struct {
	held    map[messages.TaskID]T
	unacked *Unacked
	queue   []T
	id      func(*T) messages.TaskID
}

// NewOutbox makes an empty outbox; id reads an item's task id.
func NewOutbox[T any](id func(*T) messages.TaskID) *Outbox[T] {
	return &Outbox[T]{held: make(map[messages.TaskID]T), unacked: NewUnacked(), id: id}
}

// Put holds item and queues it to send.
func (o *Outbox[T]) Put(item T) {
	o.held[o.id(&item)] = item
	o.queue = append(o.queue, item)
}

// Get returns the held item for id.
func (o *Outbox[T]) Get(id messages.TaskID) (T, bool) {
	it, ok := o.held[id]
	return it, ok
}

// Requeue queues a held item again (a duplicate request for it).
func (o *Outbox[T]) Requeue(id messages.TaskID) bool {
	it, ok := o.held[id]
	if ok {
		o.queue = append(o.queue, it)
	}
	return ok
}

// Ack drops id; ok says it was held.
func (o *Outbox[T]) Ack(id messages.TaskID) (T, bool) {
	it, ok := o.held[id]
	if ok {
		delete(o.held, id)
		o.unacked.Ack(id)
	}
	return it, ok
}

// Len is the number of items held.
func (o *Outbox[T]) Len() int { return len(o.held) }

// Queued is what waits to be sent, oldest first.
func (o *Outbox[T]) Queued() []T { return o.queue }

// Sent drops the first n queued items, now on their way.
func (o *Outbox[T]) Sent(n int, now int64) {
	for i := range o.queue[:n] {
		id := o.id(&o.queue[i])
		if _, ok := o.held[id]; ok {
			o.unacked.Sent(id, now)
		}
	}
	var zero T
	for i := range o.queue[:n] {
		o.queue[i] = zero
	}
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
}

// ResendAll queues every held item again, after a (re-)registration.
func (o *Outbox[T]) ResendAll() {
	o.queue = o.queue[:0]
	for _, it := range o.held {
		o.queue = append(o.queue, it)
	}
}

// ResendDue queues again, at most once per threshold, items sent longer
// than the threshold ago; it returns how many.
func (o *Outbox[T]) ResendDue(now time.Time, threshold time.Duration) int {
	due := o.unacked.Due(now, threshold, nil)
	n := 0
	for _, id := range due {
		if it, ok := o.held[id]; ok {
			o.queue = append(o.queue, it)
			n++
		}
	}
	return n
}
