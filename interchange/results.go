package interchange

import (
	"cmp"
	"errors"
	"slices"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// sentResult is one sending of a task's result, for re-sending.
type sentResult struct {
	t  *itask
	at int64
}

// outstanding is how many tasks are not finished.
func (l *loop) outstanding() int { return len(l.tasks) - l.nheld }

// finish takes a task's result: it is held until the forwarder acks it.
func (l *loop) finish(r messages.Result) {
	t, ok := l.tasks[r.ID]
	if !ok {
		// Unknown here (we restarted, or it was cancelled): passed up all
		// the same; the forwarder decides by task id and attempt.
		t = &itask{id: r.ID, seq: l.nextSeq()}
		l.tasks[r.ID] = t
		l.holdResult(t, r)
		return
	}
	l.finishTask(t, r)
}

// finishTask ends a task we hold with its result.
func (l *loop) finishTask(t *itask, r messages.Result) {
	if t.fin {
		return
	}
	if l.ix.store != nil {
		l.ops = append(l.ops, taskDeleteOp(t.seq))
	}
	l.unqueue(t)
	if t.mgr != nil {
		delete(t.mgr.outstanding, t.id)
		t.mgr = nil
	}
	t.payload, t.unacked = nil, false
	l.holdResult(t, r)
}

func (l *loop) holdResult(t *itask, r messages.Result) {
	t.fin = true
	t.res = &r
	l.nheld++
	l.upQueue = append(l.upQueue, t)
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
	t.res = nil
	if l.ix.store != nil {
		l.ops = append(l.ops, resultDeleteOp(t.seq))
	}
}

// requeueResult sends a held result again (the forwarder asked again).
func (l *loop) requeueResult(t *itask) {
	if t.res != nil {
		l.upQueue = append(l.upQueue, t)
	}
}

func (l *loop) flushResults() {
	if len(l.upQueue) == 0 || !l.up.Registered() || !l.upRetryAt.IsZero() {
		return
	}
	for len(l.upQueue) > 0 {
		l.sendBuf, l.sendTs, l.sendPos = l.sendBuf[:0], l.sendTs[:0], l.sendPos[:0]
		taken := 0
		for i, t := range l.upQueue {
			if len(l.sendBuf) == 1000 {
				break
			}
			taken++
			if t.res != nil {
				l.sendBuf = append(l.sendBuf, *t.res)
				l.sendTs = append(l.sendTs, t)
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
			now := time.Now().UnixNano()
			for _, t := range l.sendTs[:n] {
				t.sentAt = now
				l.upSent = append(l.upSent, sentResult{t: t, at: now})
			}
			l.ix.m.resultsUp.Add(float64(n))
		}
		clear(l.upQueue[:taken])
		l.upQueue = l.upQueue[taken:]
	}
	if len(l.upQueue) == 0 {
		l.upQueue = nil
	}
	clear(l.sendBuf)
	clear(l.sendTs)
}

// resendAll queues every held result again, oldest first, after a
// (re-)registration.
func (l *loop) resendAll() {
	clear(l.upQueue)
	l.upQueue = l.upQueue[:0]
	for _, t := range l.tasks {
		if t.res != nil {
			l.upQueue = append(l.upQueue, t)
		}
	}
	slices.SortFunc(l.upQueue, func(a, b *itask) int { return cmp.Compare(a.seq, b.seq) })
	clear(l.upSent)
	l.upSent = l.upSent[:0]
}

// resendDue queues again, at most once per threshold, the results sent
// longer than the threshold ago and not acknowledged; it returns how many.
func (l *loop) resendDue(now time.Time, threshold time.Duration) int {
	if len(l.upSent) == 0 || now.Sub(l.lastResend) < threshold {
		return 0
	}
	l.lastResend = now
	cut := now.UnixNano() - int64(threshold)
	i, n := 0, 0
	for ; i < len(l.upSent) && l.upSent[i].at < cut; i++ {
		// A later sending of the same result has its own entry.
		if s := l.upSent[i]; s.t.res != nil && s.t.sentAt == s.at {
			l.upQueue = append(l.upQueue, s.t)
			n++
		}
	}
	clear(l.upSent[:i])
	l.upSent = l.upSent[i:]
	if len(l.upSent) == 0 {
		l.upSent = nil
	}
	return n
}

// trimSent drops acknowledged results from the head of upSent, so the
// tasks behind them are freed now, not at the next re-send check.
func (l *loop) trimSent() {
	i := 0
	for i < len(l.upSent) && (l.upSent[i].t.res == nil || l.upSent[i].t.sentAt != l.upSent[i].at) {
		i++
	}
	if i > 0 {
		clear(l.upSent[:i])
		l.upSent = l.upSent[i:]
	}
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
			ds = append(ds, messages.Delta{ID: t.id, Code: t.code, Attempt: t.attempt, At: t.stAt})
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
