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

// fqueue is the queue of an endpoint, or of one POSIX account on a
// multi-user endpoint: a FIFO per task owner, served in turn by weight
// (stride scheduling), so one user's backlog never holds up another's
// first task. Owners with nothing queued are forgotten: a user coming
// back starts level with those queued now, with no credit saved up.
type fqueue struct {
	n      int
	owners map[owner]*oqueue
	active []*oqueue
	// vtime is the pass of the owner served last: where newcomers start.
	vtime  float64
	last   *oqueue // a batch's tasks usually share their owner
	weight func(owner) float64
	// runs is each owner's mean task run time, kept while her queue
	// empties: it says whether her next tasks are long (sched.go).
	runs    map[owner]*runMean
	lastRun *runMean
}

// oqueue is one owner's FIFO in an fqueue.
type oqueue struct {
	tqueue
	owner owner
	// pass grows by stride (1/weight) per task taken; the lowest goes next.
	pass, stride float64
	idx          int // in fqueue.active
	run          *runMean
}

func (q *fqueue) of(o owner) *oqueue {
	if q.last != nil && q.last.owner == o && q.last.idx >= 0 {
		return q.last
	}
	oq := q.owners[o]
	if oq == nil {
		if q.owners == nil {
			q.owners = make(map[owner]*oqueue)
		}
		w := 1.0
		if q.weight != nil {
			w = q.weight(o)
		}
		oq = &oqueue{owner: o, pass: q.vtime, stride: 1 / w, idx: len(q.active), run: q.runOf(o)}
		q.owners[o] = oq
		q.active = append(q.active, oq)
	}
	q.last = oq
	return oq
}

// retire forgets an owner with nothing queued.
func (q *fqueue) retire(oq *oqueue) {
	last := len(q.active) - 1
	q.active[oq.idx] = q.active[last]
	q.active[oq.idx].idx = oq.idx
	q.active[last] = nil
	q.active = q.active[:last]
	oq.idx = -1
	delete(q.owners, oq.owner)
	if q.last == oq {
		q.last = nil
	}
}

// runOf is o's run-time mean in q.
func (q *fqueue) runOf(o owner) *runMean {
	if r := q.lastRun; r != nil && r.owner == o {
		return r
	}
	r := q.runs[o]
	if r == nil {
		if q.runs == nil {
			q.runs = make(map[owner]*runMean)
		}
		r = &runMean{owner: o}
		q.runs[o] = r
	}
	q.lastRun = r
	return r
}

// next is the owner whose turn it is among those m may take now, with
// m's cap on her long tasks (manager.longCap; -1: hers are not long
// there); nil when none. long counts the long tasks m holds, those
// popped for it included.
func (q *fqueue) next(m *manager, long int) (best *oqueue, longCap int) {
	for _, oq := range q.active {
		if best != nil && oq.pass >= best.pass {
			continue
		}
		if c := m.longCap(oq.run); c < 0 || long < c {
			best, longCap = oq, c
		}
	}
	return best, longCap
}

// queueOf is the queue t waits in: the endpoint's, or on a multi-user
// endpoint its POSIX account's.
func (l *loop) queueOf(t *itask) *fqueue {
	if t.acct == 0 {
		return &l.q
	}
	return &l.multi.list[t.acct-1].q
}

// enqueueBack queues t at now, the clock of the batch it came in: one
// clock read a task was a tenth of a microsecond of the interchange's.
func (l *loop) enqueueBack(t *itask, now time.Time) {
	t.queuedAt = now.UnixNano()
	t.queued = true
	t.mgr = nil
	t.code = messages.WaitingForNodes
	q := l.queueOf(t)
	oq := q.of(t.owner)
	oq.items = append(oq.items, t)
	oq.n++
	q.n++
	l.queued++
}

// enqueueFront puts tasks back at the head of their owner's queue, in
// order, and gives back the turns they took.
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
		t.long = false
	}
	l.queued += len(ts)
	// Usually all of one account and owner (one manager's tasks); split
	// otherwise.
	for len(ts) > 0 {
		a, o := ts[0].acct, ts[0].owner
		n := 1
		for n < len(ts) && ts[n].acct == a && ts[n].owner == o {
			n++
		}
		q := l.queueOf(ts[0])
		oq := q.of(o)
		oq.pushFront(ts[:n])
		oq.pass -= oq.stride * float64(n)
		q.n += n
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

// pop returns the next task queued in q for m, the owners taking turns;
// an owner whose tasks m may not take now (too many long ones) keeps her
// turn. *long counts the long tasks m holds, this one included.
func (l *loop) pop(q *fqueue, m *manager, long *int) *itask {
	for q.n > 0 {
		oq, longCap := q.next(m, *long)
		if oq == nil {
			return nil
		}
		t := oq.take()
		if t == nil {
			// Only dead entries were left (cannot happen while n counts
			// right); drop the owner rather than spin.
			q.n -= oq.n
			l.queued -= oq.n
			q.retire(oq)
			continue
		}
		q.vtime = oq.pass
		oq.pass += oq.stride
		q.n--
		l.queued--
		if oq.n == 0 {
			q.retire(oq)
		}
		if longCap >= 0 {
			t.long = true
			*long++
		}
		return t
	}
	return nil
}

// take returns the next task queued in q, skipping those removed meanwhile.
func (q *tqueue) take() *itask {
	for q.head < len(q.items) {
		t := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		if t.queued {
			t.queued = false
			q.n--
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
	if !t.queued {
		return
	}
	t.queued = false
	q := l.queueOf(t)
	q.n--
	l.queued--
	if oq := q.owners[t.owner]; oq != nil {
		if oq.n--; oq.n == 0 {
			q.retire(oq)
		}
	}
}

// byOwner adds q's queued tasks per owner to counts.
func (q *fqueue) byOwner(counts map[string]int) {
	for _, oq := range q.active {
		counts[ownerName(oq.owner)] += oq.n
	}
}
