package manager

import (
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// outbox holds results until the interchange acknowledges them: new ones
// are queued to send, sent ones go again after the threshold, and all of
// them after a re-registration. A result lives in its task's mtask, which
// stays in the loop's byID map until the ack: ending a task costs no map
// operation, and sending its result none.
type outbox struct {
	byID map[messages.TaskID]*mtask // the loop's; entries with held set are results
	// superseded holds results whose id a newer attempt took in byID
	// before the interchange acknowledged them.
	superseded map[messages.TaskID]*mtask
	n          int // results held
	// queue waits to be sent, oldest first; an entry may have been
	// acknowledged or replaced since, and is sent all the same.
	queue []*mtask
	// buf is reused for the results of the queue.
	buf       []messages.Result
	lastCheck time.Time
}

func newOutbox(byID map[messages.TaskID]*mtask) *outbox { return &outbox{byID: byID} }

// put holds r, the result of t, which is byID[r.ID], and queues it.
func (o *outbox) put(t *mtask, r messages.Result) {
	if s := o.older(r.ID); s != nil {
		// Only the newest result of a task is held.
		s.held = false
		delete(o.superseded, r.ID)
		o.n--
	}
	t.res, t.sentAt, t.held = r, 0, true
	o.n++
	o.queue = append(o.queue, t)
}

// older returns the mtask holding a result for id that a newer attempt
// superseded, or nil.
func (o *outbox) older(id messages.TaskID) *mtask {
	if len(o.superseded) == 0 {
		return nil
	}
	return o.superseded[id]
}

// supersede keeps t's result while a newer attempt takes its place in byID.
func (o *outbox) supersede(t *mtask) {
	if o.superseded == nil {
		o.superseded = make(map[messages.TaskID]*mtask)
	}
	o.superseded[t.res.ID] = t
}

// requeue queues t's result again (a duplicate request).
func (o *outbox) requeue(t *mtask) { o.queue = append(o.queue, t) }

func (o *outbox) ack(id messages.TaskID) {
	if t, ok := o.byID[id]; ok && t.held {
		t.held = false
		delete(o.byID, id)
		o.n--
		return
	}
	if s := o.older(id); s != nil {
		s.held = false
		delete(o.superseded, id)
		o.n--
	}
}

func (o *outbox) len() int { return o.n }

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

// each calls fn for every result held.
func (o *outbox) each(fn func(t *mtask)) {
	for _, t := range o.byID {
		if t.held {
			fn(t)
		}
	}
	for _, t := range o.superseded {
		fn(t)
	}
}

// resendAll queues every held result again, after a (re-)registration.
func (o *outbox) resendAll() {
	clear(o.queue)
	o.queue = o.queue[:0]
	o.each(func(t *mtask) { o.queue = append(o.queue, t) })
}

// resendDue queues again, at most once per threshold, results sent
// longer than the threshold ago; it returns how many.
func (o *outbox) resendDue(now time.Time, threshold time.Duration) int {
	if o.n == 0 || now.Sub(o.lastCheck) < threshold {
		return 0
	}
	o.lastCheck = now
	cut := now.UnixNano() - int64(threshold)
	n := 0
	o.each(func(t *mtask) {
		if t.sentAt != 0 && t.sentAt < cut {
			t.sentAt = 0
			o.queue = append(o.queue, t)
			n++
		}
	})
	return n
}
