package interchange

import (
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// tqueue is a FIFO of queued tasks. A task taken out of it meanwhile
// (cancelled, finished) stays in items with queued false and is skipped.
type tqueue struct {
	items []*itask
	head  int
	n     int // tasks in it with queued set
}

// queueOf is the queue t waits in: the endpoint's one queue, or on a
// multi-user endpoint its POSIX account's.
func (l *loop) queueOf(t *itask) *tqueue {
	if t.acct == 0 {
		return &l.q
	}
	return &l.multi.list[t.acct-1].q
}

func (l *loop) enqueueBack(t *itask) {
	t.queuedAt = time.Now().UnixNano()
	t.queued = true
	t.mgr = nil
	t.code = messages.WaitingForNodes
	q := l.queueOf(t)
	q.items = append(q.items, t)
	q.n++
	l.queued++
}

// enqueueFront puts tasks back at the head of their queue, in order.
func (l *loop) enqueueFront(ts ...*itask) {
	if len(ts) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for _, t := range ts {
		t.queuedAt = now
		t.queued = true
		t.mgr = nil
		t.code = messages.WaitingForNodes
	}
	l.queued += len(ts)
	if l.multi == nil {
		l.q.pushFront(ts)
		return
	}
	// Usually all of one account (one manager's tasks); split otherwise.
	for len(ts) > 0 {
		a := ts[0].acct
		n := 1
		for n < len(ts) && ts[n].acct == a {
			n++
		}
		l.queueOf(ts[0]).pushFront(ts[:n])
		ts = ts[n:]
	}
}

// pushFront puts ts at the head, in order, with one copy however many.
func (q *tqueue) pushFront(ts []*itask) {
	q.n += len(ts)
	if len(ts) <= q.head {
		q.head -= len(ts)
		copy(q.items[q.head:], ts)
		return
	}
	rest := q.items[q.head:]
	nq := make([]*itask, 0, len(ts)+len(rest)+len(rest)/4)
	nq = append(nq, ts...)
	q.items = append(nq, rest...)
	q.head = 0
}

// pop returns the next task queued in q, skipping those removed meanwhile.
func (l *loop) pop(q *tqueue) *itask {
	for q.head < len(q.items) {
		t := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		if t.queued {
			t.queued = false
			q.n--
			l.queued--
			q.compact()
			return t
		}
	}
	q.items = q.items[:0]
	q.head = 0
	return nil
}

// compact keeps the queue's backing array from growing with every task
// ever queued: reset when drained, slide down when the dead head is large.
func (q *tqueue) compact() {
	switch {
	case q.head == len(q.items):
		q.items = q.items[:0]
		q.head = 0
	case q.head > 4096 && q.head > len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
}

func (l *loop) unqueue(t *itask) {
	if t.queued {
		t.queued = false
		l.queueOf(t).n--
		l.queued--
	}
}
