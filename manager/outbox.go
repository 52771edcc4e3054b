package manager

import (
	"time"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

// outbox holds results until the interchange acknowledges them, with
// link.Outbox. A result lives in its task's mtask, which stays in the
// loop's byID map until the ack: ending a task costs no map operation,
// and sending its result none.
type outbox struct {
	q    *link.Outbox[mtask]
	byID map[messages.TaskID]*mtask // the loop's; entries held by q are results
	// superseded holds results whose id a newer attempt took in byID
	// before the interchange acknowledged them.
	superseded map[messages.TaskID]*mtask
	n          int // results held
	// buf is reused for the results of the queue.
	buf []messages.Result
}

func resultDelivery(t *mtask) *link.Delivery[mtask] { return &t.delivery }

func newOutbox(byID map[messages.TaskID]*mtask) *outbox {
	return &outbox{q: link.NewOutbox(resultDelivery), byID: byID}
}

// put holds r, the result of t, which is byID[r.ID], and queues it.
func (o *outbox) put(t *mtask, r messages.Result) {
	if s := o.older(r.ID); s != nil {
		// Only the newest result of a task is held.
		o.q.Ack(s)
		delete(o.superseded, r.ID)
		o.n--
	}
	t.res = r
	o.n++
	o.q.Put(t)
}

// held reports whether t's result is held.
func (o *outbox) held(t *mtask) bool { return o.q.Held(t) }

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
func (o *outbox) requeue(t *mtask) { o.q.Requeue(t) }

func (o *outbox) ack(id messages.TaskID) {
	if t, ok := o.byID[id]; ok && o.q.Ack(t) {
		delete(o.byID, id)
		o.n--
		return
	}
	if s := o.older(id); s != nil {
		o.q.Ack(s)
		delete(o.superseded, id)
		o.n--
	}
}

func (o *outbox) len() int { return o.n }

// waiting is how many results wait to be sent.
func (o *outbox) waiting() int { return len(o.q.Queued()) }

// queued is the results waiting to be sent, oldest first, valid until
// the next call; dropped ones are sent all the same.
func (o *outbox) queued() []messages.Result {
	o.buf = o.buf[:0]
	for _, t := range o.q.Queued() {
		o.buf = append(o.buf, t.res)
	}
	return o.buf
}

// sent drops the first n queued results, now on their way.
func (o *outbox) sent(n int, now int64) { o.q.Sent(n, now) }

// resendAll queues every held result again, after a (re-)registration.
func (o *outbox) resendAll() { o.q.ResendAll() }

// resendDue queues again, at most once per threshold, results sent
// longer than the threshold ago; it returns how many.
func (o *outbox) resendDue(now time.Time, threshold time.Duration) int {
	return o.q.ResendDue(now, threshold)
}
