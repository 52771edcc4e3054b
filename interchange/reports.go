package interchange

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) managerReport(m *manager, r *messages.ManagerStatusReport) {
	m.idle = r.IdleWorkers
	m.capacity = r.Capacity
	m.serving = r.ServingState
	var fwd []messages.Delta
	for i := range r.Deltas {
		d := &r.Deltas[i]
		t, ok := l.tasks[d.ID]
		if ok && t.mgr == nil && t.queued && d.Attempt == t.attempt {
			// After our restart: the manager still holds this task.
			l.unqueue(t)
			t.mgr = m
			m.outstanding[t.id] = t
		}
		if !ok || t.mgr != m || d.Attempt != t.attempt {
			l.ix.m.staleUpdates.Inc()
			continue
		}
		t.seen = time.Now().UnixNano()
		if messages.Apply(t.code.State(), t.attempt, d.Code.State(), d.Attempt) != messages.Applied {
			continue
		}
		t.code = d.Code
		fwd = append(fwd, *d)
	}
	if len(fwd) > 0 {
		l.ix.status.add(fwd...)
	}
	l.resynced(m.ID, time.Now())
}

// reportDelay batches changes: a report leaves this long after the change
// that called for it, so states and counts are current within a few
// milliseconds while a busy interchange still sends few reports.
const reportDelay = 5 * time.Millisecond

// reportLoop builds an EPStatusReport every interval, and soon after a
// change (deltas, manager counts, serving state), and hands it to the
// loop; it never touches a socket.
func (ix *Interchange) reportLoop(ctx context.Context) {
	t := time.NewTicker(ix.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ix.status.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(reportDelay):
			}
			now := time.Now()
			ix.mbox.Post(event{kind: evReport, report: ix.status.build(ix.serving.Effective(now))})
		case now := <-t.C:
			ix.serving.Measure(servingstate.Sample{Queued: int(ix.status.queued.Load()),
				MemoryPercent: servingstate.MemoryPercent()}, now)
			r := ix.status.build(ix.serving.Effective(now))
			ix.mbox.Post(event{kind: evReport, report: r})
		}
	}
}

// statusBuffer collects deltas from the loop for the report goroutine.
type statusBuffer struct {
	mu     sync.Mutex
	deltas map[messages.TaskID]messages.Delta
	totals messages.EPStatusReport
	queued atomic.Uint32
	// kick asks the report goroutine for a report soon.
	kick chan struct{}
	// blocksJSON is the blocks list that rides on every report.
	blocksJSON []byte
}

func (s *statusBuffer) blocks() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocksJSON
}

func (s *statusBuffer) setBlocks(raw []byte) {
	s.mu.Lock()
	s.blocksJSON = raw
	s.mu.Unlock()
	s.soon()
}

func newStatusBuffer() *statusBuffer {
	return &statusBuffer{deltas: make(map[messages.TaskID]messages.Delta), kick: make(chan struct{}, 1)}
}

// soon asks for a report within reportDelay.
func (s *statusBuffer) soon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// soonDeltas: with more deltas than this waiting, the endpoint is busy;
// they wait for the periodic report, and most are dropped before it
// because their results went first, so a busy endpoint sends no more
// entries per task than before.
const soonDeltas = 256

func (s *statusBuffer) add(ds ...messages.Delta) {
	s.mu.Lock()
	for _, d := range ds {
		s.deltas[d.ID] = d
	}
	n := len(s.deltas)
	s.mu.Unlock()
	if len(ds) > 0 && n <= soonDeltas {
		s.soon()
	}
}

// dropResults forgets deltas of tasks whose result is on its way.
func (s *statusBuffer) dropResults(rs []messages.Result) {
	s.mu.Lock()
	for i := range rs {
		delete(s.deltas, rs[i].ID)
	}
	s.mu.Unlock()
}

func (s *statusBuffer) setTotals(t messages.EPStatusReport) {
	s.mu.Lock()
	old := s.totals
	s.totals = t
	s.mu.Unlock()
	s.queued.Store(t.Queued)
	if old.Managers != t.Managers || old.Workers != t.Workers {
		s.soon()
	}
}

func (s *statusBuffer) build(state messages.ServingState) *messages.EPStatusReport {
	s.mu.Lock()
	r := s.totals
	if len(s.deltas) > 0 {
		r.Deltas = make([]messages.Delta, 0, len(s.deltas))
		for _, d := range s.deltas {
			r.Deltas = append(r.Deltas, d)
		}
		if len(s.deltas) > 4096 {
			// A map keeps the room it once needed; a busy spell's
			// hundreds of thousands of slots would stay held.
			s.deltas = make(map[messages.TaskID]messages.Delta)
		} else {
			clear(s.deltas)
		}
	}
	r.Blocks = s.blocksJSON
	s.mu.Unlock()
	r.ServingState = state
	return &r
}

func (l *loop) publishTotals() {
	var t messages.EPStatusReport
	t.Managers = uint32(len(l.mgrs))
	for _, m := range l.mgrs {
		t.Workers += m.reg.Workers
		t.IdleWorkers += m.idle
	}
	t.Queued = uint32(l.queued)
	t.Outstanding = uint32(len(l.tasks))
	l.ix.status.setTotals(t)
}
