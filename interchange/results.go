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
func (l *loop) finishTask(t *itask, r messages.Result) { l.finish(t, r, nil, 0) }

// finish ends t with r. With from, the manager r came from at now, the
// result may stay in memory only: see unstoredResult.
func (l *loop) finish(t *itask, r messages.Result, from *manager, now int64) {
	if t.fin {
		return
	}
	r.Runs = max(r.Runs, uint32(t.runs))
	if from != nil && l.ix.store != nil && l.up.Registered() && r.Started > 0 &&
		r.Finished-r.Started < int64(unstoredUnder) {
		t.ackTo = from
		l.nunstored++
		l.unstored = append(l.unstored, unstoredResult{t: t, at: now})
	} else if l.ix.store != nil {
		l.ops = append(l.ops, taskDeleteOp(t))
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
	if l.ix.store != nil && t.ackTo == nil {
		l.ops = append(l.ops, resultOp(t.seq, t.res))
	}
}

// Unstored results. A manager keeps a result until we ack it. For a task
// that ran briefly we leave it there until the forwarder has stored it,
// rather than storing it ourselves: the task's record stays in our store
// meanwhile, and after a restart the manager sends the result again.
// That saves two of the four store writes a task costs. A result the
// forwarder has not acked within unstoredFor is stored after all and
// acked, so managers hold results no longer than that (nor do they send
// them again: they wait a heartbeat threshold). A task that ran longer
// than unstoredUnder is stored at once: were its manager lost with our
// restart, it would run again.
const (
	unstoredUnder = time.Second
	unstoredFor   = time.Second
)

type unstoredResult struct {
	t  *itask
	at int64 // unix ns
}

// storeUnacked stores the unstored results held since before cut (all
// with a zero cut) and acks them to their managers once stored.
func (l *loop) storeUnacked(cut time.Time) {
	for l.unstoredAt < len(l.unstored) {
		u := l.unstored[l.unstoredAt]
		if !cut.IsZero() && u.at > cut.UnixNano() {
			break
		}
		l.unstored[l.unstoredAt] = unstoredResult{}
		l.unstoredAt++
		t := u.t
		if t.ackTo == nil || t.res == nil {
			continue // acked by the forwarder meanwhile
		}
		l.ops = append(l.ops, taskDeleteOp(t), resultOp(t.seq, t.res))
		l.ackManagerLater(t)
	}
	if l.unstoredAt == len(l.unstored) || l.unstoredAt > 4096 && l.unstoredAt > len(l.unstored)/2 {
		l.unstored = append(l.unstored[:0], l.unstored[l.unstoredAt:]...)
		l.unstoredAt = 0
	}
	l.sendLaterAcks()
}

// ackManagerLater notes t's result for its manager's ack, sent by
// sendLaterAcks once what is queued for the store now is stored.
func (l *loop) ackManagerLater(t *itask) {
	if l.ackLater == nil {
		l.ackLater = map[*manager][]messages.TaskID{}
	}
	l.ackLater[t.ackTo] = append(l.ackLater[t.ackTo], t.id)
	t.ackTo = nil
	l.nunstored--
}

func (l *loop) sendLaterAcks() {
	if len(l.ackLater) == 0 {
		return
	}
	acks := l.ackLater
	l.ackLater = nil
	l.persist(l.takeOps(), func(l *loop) {
		for m, ids := range acks {
			// The manager as it is registered now: one that re-registered
			// still holds what it sent before.
			cur, ok := l.mgrs[m.ID]
			if !ok {
				continue
			}
			if err := l.sendManager(cur, &messages.Ack{IDs: ids}); err != nil {
				l.log.WithError(err).WithField("manager", cur.ID).Debug("ack not sent; manager will re-send")
			}
		}
	})
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
	switch {
	case t.ackTo != nil:
		// Its record goes now, and its manager may forget the result.
		if l.ix.store != nil {
			l.ops = append(l.ops, taskDeleteOp(t))
		}
		l.ackManagerLater(t)
	case l.ix.store != nil:
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
