package link

import "time"

// Delivery is one record's place in a Deliveries, embedded in the record
// (a task, a result) so that holding it allocates nothing.
type Delivery[T any] struct {
	prev, next *T
	// at is when the record was last sent while it waits for an ack;
	// the negative values below say where else it is; 0: nowhere.
	at int64
}

const (
	atQueued int64 = -1 // taken out to be sent again, or put in an Outbox
	atAcked  int64 = -2 // in the acked list
)

// SentAt is when the record was last sent, 0 unless it waits for an ack.
func (d *Delivery[T]) SentAt() int64 { return max(d.at, 0) }

// list is an intrusive doubly linked list of records.
type list[T any] struct {
	head, tail *T
	n          int
}

// Deliveries holds the records sent to a peer until the caller is done
// with them: those the peer has not acknowledged in order of sending, so
// that the due ones are found from the front, and those it acknowledged
// (a task the caller keeps until its result). The caller owns what waits
// to be sent. A record is in at most one Deliveries at a time.
type Deliveries[T any] struct {
	of             func(*T) *Delivery[T]
	unacked, acked list[T]
	lastDue        time.Time
}

// NewDeliveries holds nothing yet; of returns a record's Delivery.
func NewDeliveries[T any](of func(*T) *Delivery[T]) *Deliveries[T] {
	return &Deliveries[T]{of: of}
}

func (s *Deliveries[T]) listOf(d *Delivery[T]) *list[T] {
	switch {
	case d.at > 0:
		return &s.unacked
	case d.at == atAcked:
		return &s.acked
	}
	return nil
}

func (s *Deliveries[T]) unlink(t *T) {
	d := s.of(t)
	l := s.listOf(d)
	if l == nil {
		return
	}
	if d.prev != nil {
		s.of(d.prev).next = d.next
	} else {
		l.head = d.next
	}
	if d.next != nil {
		s.of(d.next).prev = d.prev
	} else {
		l.tail = d.prev
	}
	d.prev, d.next = nil, nil
	l.n--
}

func (s *Deliveries[T]) push(l *list[T], t *T) {
	d := s.of(t)
	d.prev, d.next = l.tail, nil
	if l.tail != nil {
		s.of(l.tail).next = t
	} else {
		l.head = t
	}
	l.tail = t
	l.n++
}

// Sent holds t, sent at now (unix nanoseconds), until it is acknowledged.
func (s *Deliveries[T]) Sent(t *T, now int64) {
	s.unlink(t)
	s.of(t).at = max(now, 1)
	s.push(&s.unacked, t)
}

// Ack notes that the peer has t, which stays held until Drop; it reports
// whether t was waiting for the ack.
func (s *Deliveries[T]) Ack(t *T) bool {
	d := s.of(t)
	if d.at <= 0 {
		return false
	}
	s.unlink(t)
	d.at = atAcked
	s.push(&s.acked, t)
	return true
}

// Drop lets go of t: acknowledged and done with, ended, or taken back.
// It reports whether t was held (sent, or taken out to be sent again).
func (s *Deliveries[T]) Drop(t *T) bool {
	d := s.of(t)
	if d.at == 0 {
		return false
	}
	s.unlink(t)
	d.at = 0
	return true
}

// Waiting reports whether t was sent and not acknowledged.
func (s *Deliveries[T]) Waiting(t *T) bool { return s.of(t).at > 0 }

// Len is the number sent and not dropped (waiting or acknowledged).
func (s *Deliveries[T]) Len() int { return s.unacked.n + s.acked.n }

// Unacked is the number waiting for an ack.
func (s *Deliveries[T]) Unacked() int { return s.unacked.n }

// Due takes out, at most once per threshold, the records that have waited
// longer than the threshold for an ack (a message lost in a reconnect
// nobody noticed) and appends them to out, oldest first: the caller sends
// them again and calls Sent. Until then they count as held.
func (s *Deliveries[T]) Due(now time.Time, threshold time.Duration, out []*T) []*T {
	if s.unacked.n == 0 || now.Sub(s.lastDue) < threshold {
		return out
	}
	s.lastDue = now
	cut := now.UnixNano() - int64(threshold)
	for t := s.unacked.head; t != nil && s.of(t).at < cut; t = s.unacked.head {
		s.unlink(t)
		s.of(t).at = atQueued
		out = append(out, t)
	}
	return out
}

// Newest calls fn with the acknowledged records, newest first, until it
// returns false.
func (s *Deliveries[T]) Newest(fn func(*T) bool) {
	for t := s.acked.tail; t != nil; {
		prev := s.of(t).prev
		if !fn(t) {
			return
		}
		t = prev
	}
}

// TakeAll takes out every record sent, acknowledged or not, and appends
// them to out in order of sending, unacknowledged ones last: after a
// (re-)registration the peer may have lost any of them. They count as
// held until the caller sends them again or drops them.
func (s *Deliveries[T]) TakeAll(out []*T) []*T {
	for _, l := range [2]*list[T]{&s.acked, &s.unacked} {
		for t := l.head; t != nil; t = l.head {
			s.unlink(t)
			s.of(t).at = atQueued
			out = append(out, t)
		}
	}
	return out
}

// Outbox is Deliveries with the queue of what waits to be sent, for
// records held until the peer acknowledges them (results): acknowledged
// means done with. A record is queued at most once at a time unless it
// is asked for again.
type Outbox[T any] struct {
	Deliveries[T]
	queue []*T
}

// NewOutbox holds nothing yet; of returns a record's Delivery.
func NewOutbox[T any](of func(*T) *Delivery[T]) *Outbox[T] {
	return &Outbox[T]{Deliveries: Deliveries[T]{of: of}}
}

// Put holds t and queues it to send.
func (o *Outbox[T]) Put(t *T) {
	o.unlink(t)
	o.of(t).at = atQueued
	o.queue = append(o.queue, t)
}

// Requeue queues t again if it is held (the peer asked for it again).
func (o *Outbox[T]) Requeue(t *T) bool {
	if o.of(t).at == 0 {
		return false
	}
	o.Put(t)
	return true
}

// Ack drops t, which the peer acknowledged; it reports whether t was held.
func (o *Outbox[T]) Ack(t *T) bool { return o.Drop(t) }

// Held reports whether t is held.
func (o *Outbox[T]) Held(t *T) bool { return o.of(t).at != 0 }

// Queued is what waits to be sent, oldest first; it may name records
// dropped since, which Sent skips.
func (o *Outbox[T]) Queued() []*T { return o.queue }

// Sent takes the first n queued records off the queue, sent at now; those
// still held wait for their ack.
func (o *Outbox[T]) Sent(n int, now int64) {
	for i, t := range o.queue[:n] {
		if o.of(t).at == atQueued {
			o.Deliveries.Sent(t, now)
		}
		o.queue[i] = nil
	}
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
}

// ResendAll queues every record sent again, ahead of those waiting, after
// a (re-)registration; it returns how many.
func (o *Outbox[T]) ResendAll() int {
	if o.Len() == 0 {
		return 0
	}
	n := o.Len()
	q := o.TakeAll(make([]*T, 0, n+len(o.queue)))
	o.queue = append(q, o.queue...)
	return n
}

// ResendDue queues again, at most once per threshold, the records that
// waited longer than the threshold for an ack; it returns how many.
func (o *Outbox[T]) ResendDue(now time.Time, threshold time.Duration) int {
	n := len(o.queue)
	o.queue = o.Due(now, threshold, o.queue)
	return len(o.queue) - n
}
