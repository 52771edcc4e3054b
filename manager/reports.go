package manager

import (
	"time"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

// deltaDelay batches task-state changes: a report leaves this long after
// the previous one at the soonest, so states are current within a few
// milliseconds and a busy manager still sends few reports.
const deltaDelay = 5 * time.Millisecond

// memoryEvery: memory use is read (files under /sys or /proc) at most this
// often, not at each report, which may go out every deltaDelay.
const memoryEvery = 100 * time.Millisecond

// started records that a worker started a task.
func (l *loop) started(t *mtask, at int64) {
	if t.out || t.started {
		return
	}
	t.started = true
	t.code = messages.Running
	l.deltas[t.task.ID] = messages.Delta{ID: t.task.ID, Code: messages.Running, Attempt: t.task.Attempt, At: at}
}

// report sends the status report; it goes before any results.
func (l *loop) report(now time.Time) {
	l.lastReport = now
	if !l.up.Registered() {
		return
	}
	if l.memAt.IsZero() || now.Sub(l.memAt) >= memoryEvery {
		l.memPct, l.memAt = servingstate.MemoryPercent(), now
	}
	l.mg.serving.Measure(servingstate.Sample{Queued: len(l.pending), MemoryPercent: l.memPct}, now)
	eff := l.mg.serving.Effective(now)
	capacity := max(0, l.mg.opts.Workers+l.mg.opts.Prefetch-l.nTasks)
	if !eff.PushAllowed() || l.drain != nil {
		capacity = 0
	}
	r := &messages.ManagerStatusReport{Workers: uint32(l.mg.opts.Workers), IdleWorkers: uint32(l.mg.idle()),
		Capacity: uint32(capacity), Outstanding: uint32(l.nTasks), ServingState: eff}
	if len(l.deltas) > 0 {
		r.Deltas = make([]messages.Delta, 0, len(l.deltas))
		for _, d := range l.deltas {
			r.Deltas = append(r.Deltas, d)
		}
	}
	if err := l.up.Send(r); err == nil {
		clear(l.deltas)
		l.mg.m.reportsSent.Inc()
	}
}
