package interchange

import (
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) enqueueBack(t *itask) {
	t.queuedAt = time.Now().UnixNano()
	t.queued = true
	t.mgr = nil
	t.code = messages.WaitingForNodes
	l.queue = append(l.queue, t)
	l.queued++
}

// enqueueFront puts tasks back at the head of the queue, in order, with
// one copy however many there are.
func (l *loop) enqueueFront(ts ...*itask) {
	now := time.Now().UnixNano()
	for _, t := range ts {
		t.queuedAt = now
		t.queued = true
		t.mgr = nil
		t.code = messages.WaitingForNodes
	}
	l.queued += len(ts)
	if len(ts) <= l.qhead {
		l.qhead -= len(ts)
		copy(l.queue[l.qhead:], ts)
		return
	}
	rest := l.queue[l.qhead:]
	q := make([]*itask, 0, len(ts)+len(rest)+len(rest)/4)
	q = append(q, ts...)
	l.queue = append(q, rest...)
	l.qhead = 0
}

// pop returns the next queued task, skipping those removed meanwhile.
func (l *loop) pop() *itask {
	for l.qhead < len(l.queue) {
		t := l.queue[l.qhead]
		l.queue[l.qhead] = nil
		l.qhead++
		if t.queued {
			t.queued = false
			l.queued--
			l.compact()
			return t
		}
	}
	l.queue = l.queue[:0]
	l.qhead = 0
	return nil
}

// compact keeps the queue's backing array from growing with every task
// ever queued: reset when drained, slide down when the dead head is large.
func (l *loop) compact() {
	switch {
	case l.qhead == len(l.queue):
		l.queue = l.queue[:0]
		l.qhead = 0
	case l.qhead > 4096 && l.qhead > len(l.queue)/2:
		n := copy(l.queue, l.queue[l.qhead:])
		clear(l.queue[n:])
		l.queue = l.queue[:n]
		l.qhead = 0
	}
}

func (l *loop) unqueue(t *itask) {
	if t.queued {
		t.queued = false
		l.queued--
	}
}
