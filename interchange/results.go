package interchange

import (
	"errors"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// outstanding is how many tasks are not finished.
func (l *loop) outstanding() int { return len(l.tasks) - l.nheld }

// finishTask ends a task we hold with its result.
func (l *loop) finishTask(t *itask, r messages.Result) {
	if t.fin {
		return
	}
	r.Runs = max(r.Runs, uint32(t.runs))
	if l.ix.store != nil {
		l.ops = append(l.ops, taskDeleteOp(t.seq))
	}
	l.unqueue(t)
	if t.mgr != nil {
		l.takeBack(t.mgr, t)
	}
	t.payload = nil
	l.holdResult(t, r)
}

func (l *loop) holdResult(t *itask, r messages.Result) {
	t.fin = true
	t.res = &r
	l.nheld++
	l.results.Put(t)
	if l.ix.store != nil {
		l.ops = append(l.ops, resultOp(t.seq, t.res))
	}
}

// resultAcked drops the result of id, which the forwarder has stored.
func (l *loop) resultAcked(id messages.TaskID) {
	t, ok := l.tasks[id]
	if !ok || t.res == nil {
		return
	}
	delete(l.tasks, id)
	l.nheld--
	l.results.Ack(t)
	t.res = nil
	if l.ix.store != nil {
		l.ops = append(l.ops, resultDeleteOp(t.seq))
	}
}

// requeueResult sends a held result again (the forwarder asked again).
func (l *loop) requeueResult(t *itask) {
	if t.res != nil {
		l.results.Requeue(t)
	}
}

func (l *loop) flushResults() {
	if len(l.results.Queued()) == 0 || !l.up.Registered() || !l.upRetryAt.IsZero() {
		return
	}
	for q := l.results.Queued(); len(q) > 0; q = l.results.Queued() {
		l.sendBuf, l.sendPos = l.sendBuf[:0], l.sendPos[:0]
		taken := 0
		for i, t := range q {
			if len(l.sendBuf) == 1000 {
				break
			}
			taken++
			if t.res != nil {
				l.sendBuf = append(l.sendBuf, *t.res)
				l.sendPos = append(l.sendPos, i)
			}
		}
		n := messages.ChunkResults(l.sendBuf, 1000)
		if n < len(l.sendBuf) {
			// Cut short by size: the rest stay queued.
			taken = l.sendPos[n]
		}
		if n > 0 {
			if err := l.up.Send(&messages.ResultBatch{Results: l.sendBuf[:n]}); err != nil {
				if errors.Is(err, zsock.ErrWouldBlock) {
					l.upRetryAt = time.Now().Add(5 * time.Millisecond)
				}
				break
			}
			l.ix.m.resultsUp.Add(float64(n))
		}
		l.results.Sent(taken, time.Now().UnixNano())
	}
	clear(l.sendBuf)
}

// noteStatus records that t's state changed at at, for the next report.
func (l *loop) noteStatus(t *itask, at int64) {
	t.stAt = at
	l.markDirty(t)
}

func (l *loop) markDirty(t *itask) {
	if !t.dirty {
		t.dirty = true
		l.dirty = append(l.dirty, t)
	}
}

// soonDeltas: with more changes than this waiting, the endpoint is busy;
// they wait for the periodic report, and most are dropped before it
// because their results went first, so a busy endpoint sends no more
// entries per task than before.
const soonDeltas = 256

// statusNoted asks for a report soon unless the endpoint is busy.
func (l *loop) statusNoted() {
	if n := len(l.dirty); n > 0 && n <= soonDeltas {
		l.ix.status.soon()
	}
}

// takeDeltas is the current state of every task that changed since the
// last report, except finished ones: their results say more.
func (l *loop) takeDeltas() []messages.Delta {
	if len(l.dirty) == 0 {
		return nil
	}
	var ds []messages.Delta
	for _, t := range l.dirty {
		t.dirty = false
		if !t.fin {
			ds = append(ds, messages.Delta{ID: t.id, Code: t.code, Attempt: t.attempt, At: t.stAt, Runs: uint32(t.runs)})
		}
	}
	if cap(l.dirty) > 4096 {
		// A busy spell's room is not kept.
		l.dirty = nil
	} else {
		clear(l.dirty)
		l.dirty = l.dirty[:0]
	}
	return ds
}
