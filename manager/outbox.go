package manager

import (
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// outbox holds results until the interchange acknowledges them: new ones
// are queued to send, sent ones go again after the threshold, and all of
// them after a re-registration. A result lives in its task's mtask, so
// holding, sending and acknowledging it each cost at most one map
// operation.
type outbox struct {
	held map[messages.TaskID]*mtask
	// queue waits to be sent, oldest first; an entry may have been
	// acknowledged or replaced since, and is sent all the same.
	queue []*mtask
	// buf is reused for the results of the queue.
	buf       []messages.Result
	lastCheck time.Time
}

func newOutbox() *outbox { return &outbox{held: make(map[messages.TaskID]*mtask)} }

// put holds t's result r and queues it.
func (o *outbox) put(t *mtask, r messages.Result) {
	t.res, t.sentAt = r, 0
	o.held[r.ID] = t
	o.queue = append(o.queue, t)
}

// get returns the result held for id.
func (o *outbox) get(id messages.TaskID) (*messages.Result, bool) {
	t, ok := o.held[id]
	if !ok {
		return nil, false
	}
	return &t.res, true
}

// requeue queues the result held for id again (a duplicate request).
func (o *outbox) requeue(id messages.TaskID) {
	if t, ok := o.held[id]; ok {
		o.queue = append(o.queue, t)
	}
}

func (o *outbox) ack(id messages.TaskID) { delete(o.held, id) }

func (o *outbox) len() int { return len(o.held) }

// waiting is how many results wait to be sent.
func (o *outbox) waiting() int { return len(o.queue) }

// queued is the results waiting to be sent, oldest first, valid until
// the next call.
func (o *outbox) queued() []messages.Result {
	o.buf = o.buf[:0]
	for _, t := range o.queue {
		o.buf = append(o.buf, t.res)
	}
	return o.buf
}

// sent drops the first n queued results, now on their way.
func (o *outbox) sent(n int, now int64) {
	for i, t := range o.queue[:n] {
		t.sentAt = now
		o.queue[i] = nil
	}
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil
	}
}

// resendAll queues every held result again, after a (re-)registration.
func (o *outbox) resendAll() {
	clear(o.queue)
	o.queue = o.queue[:0]
	for _, t := range o.held {
		o.queue = append(o.queue, t)
	}
}

// resendDue queues again, at most once per threshold, results sent
// longer than the threshold ago; it returns how many.
func (o *outbox) resendDue(now time.Time, threshold time.Duration) int {
	if len(o.held) == 0 || now.Sub(o.lastCheck) < threshold {
		return 0
	}
	o.lastCheck = now
	cut := now.UnixNano() - int64(threshold)
	n := 0
	for _, t := range o.held {
		if t.sentAt != 0 && t.sentAt < cut {
			t.sentAt = 0
			o.queue = append(o.queue, t)
			n++
		}
	}
	return n
}
