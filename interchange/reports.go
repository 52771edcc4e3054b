package interchange

import (
	"context"
	"sort"
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
	for i := range r.Deltas {
		d := &r.Deltas[i]
		t, ok := l.tasks[d.ID]
		ok = ok && !t.fin
		if ok && t.mgr == nil && t.queued && t.recovered && d.Attempt == t.attempt && (l.multi == nil || t.acct == m.acct) {
			// After our restart: the manager still holds this task (only a
			// recovered one: a live queued task was handed to nobody).
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
		if d.Code == messages.Running {
			t.countStart()
		}
		l.noteStatus(t, d.At)
	}
	l.statusNoted()
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
			ix.mbox.Post(event{kind: evReport, report: ix.status.build(ix.pushState(now))})
		case now := <-t.C:
			ix.serving.Measure(servingstate.Sample{Queued: int(ix.status.queued.Load()),
				MemoryPercent: servingstate.MemoryPercent()}, now)
			r := ix.status.build(ix.pushState(now))
			// Built here, off the loop, and on the periodic report only:
			// last_seen changes all the time.
			r.ManagerList = managerListJSON(ix.Status().ManagerList)
			ix.mbox.Post(event{kind: evReport, report: r})
		}
	}
}

// statusBuffer holds the totals the loop publishes for the report
// goroutine; the loop adds the deltas when it sends the report.
type statusBuffer struct {
	mu     sync.Mutex
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
	return &statusBuffer{kick: make(chan struct{}, 1)}
}

// soon asks for a report within reportDelay.
func (s *statusBuffer) soon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
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
	for o, n := range l.queuedByOwner() {
		t.QueuedByOwner = append(t.QueuedByOwner, messages.OwnerCount{Owner: o, N: uint32(n)})
	}
	sort.Slice(t.QueuedByOwner, func(i, j int) bool { return t.QueuedByOwner[i].Owner < t.QueuedByOwner[j].Owner })
	t.Outstanding = uint32(l.outstanding())
	l.ix.status.setTotals(t)
}
