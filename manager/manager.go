// Package manager runs on a compute node: it registers with the
// interchange, runs tasks on a pool of workers and reports results.
package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Manager is one node's task runner.
type Manager struct {
	opts     Options
	log      *logrus.Entry
	zctx     *zmq.Context
	mbox     *zsock.Mailbox[event]
	http     *httpx.Server
	dir      *statedir.Dir
	serving  *servingstate.Controller
	m        *metrics
	hostname string
	res      daemon.Resources

	viewMu sync.RWMutex
	view   StatusView
	// busy is the number of workers running a task.
	busy atomic.Int32
	gate *gate
}

// gate holds workers while dispatch is paused.
type gate struct {
	mu   sync.Mutex
	open bool
	ch   chan struct{} // closed while open
}

func newGate() *gate {
	g := &gate{open: true, ch: make(chan struct{})}
	close(g.ch)
	return g
}

func (g *gate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if open == g.open {
		return
	}
	g.open = open
	if open {
		close(g.ch)
	} else {
		g.ch = make(chan struct{})
	}
}

func (g *gate) wait(ctx context.Context) {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

func (mg *Manager) idle() int { return max(0, mg.opts.Workers-int(mg.busy.Load())) }

type evKind uint8

const (
	evFinished evKind = iota + 1
)

type event struct {
	kind   evKind
	id     messages.TaskID
	result messages.Result
}

// mtask is a task this manager holds.
type mtask struct {
	task messages.Task
	code messages.TaskStatusCode
	// ctx and cancel are set by the loop before a worker sees the task.
	ctx     context.Context
	cancel  context.CancelCauseFunc
	handed  bool // given to a worker
	started bool // running delta recorded
	// startedAt is set by the worker when it starts the task.
	startedAt atomic.Int64
	// claim decides, once, between a worker starting the task (0->1) and
	// the loop cancelling it before it started (0->2).
	claim atomic.Int32
}

// New validates options and binds the admin HTTP listener.
func New(opts Options) (*Manager, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	mg := &Manager{opts: opts, log: opts.Log, serving: servingstate.New(opts.Pressure), gate: newGate()}
	mg.hostname, _ = os.Hostname()
	fail := func(err error) (*Manager, error) {
		mg.res.Close()
		return nil, err
	}
	var err error
	if mg.dir, _, _, err = mg.res.State(opts.StateDir, "manager", true, "", "", nil, 0, mg.log); err != nil {
		return fail(err)
	}
	if mg.zctx, err = mg.res.ZMQ(); err != nil {
		return fail(err)
	}
	if mg.mbox, err = zsock.NewMailbox[event](mg.zctx); err != nil {
		return fail(err)
	}
	mg.res.Add(mg.mbox.Close)
	mg.m = newMetrics(opts.Registry, mg)
	if opts.ListenHTTP != "" {
		if mg.http, err = httpx.Listen(opts.ListenHTTP, mg.routes()); err != nil {
			return fail(fmt.Errorf("manager: %w", err))
		}
	}
	return mg, nil
}

// HTTPAddr is the bound admin address, or "" without one.
func (mg *Manager) HTTPAddr() string {
	if mg.http == nil {
		return ""
	}
	return mg.http.Addr()
}

// ID is the manager id (its routing identity).
func (mg *Manager) ID() string { return mg.opts.ManagerID }

// Run works until ctx ends. Running tasks are stopped on the way out.
func (mg *Manager) Run(ctx context.Context) error {
	mg.log.WithFields(logrus.Fields{"interchange": mg.opts.Interchange, "workers": mg.opts.Workers,
		"prefetch": mg.opts.Prefetch, "http": mg.HTTPAddr()}).Info("manager starting")
	workCtx, stopWork := context.WithCancel(context.Background())
	// Workers take the next task straight from this buffer, so a finished
	// worker never waits for the loop. It holds everything the manager
	// accepts; the gate, not the buffer, holds tasks while dispatch is paused.
	work := make(chan *mtask, 2*mg.opts.Workers+mg.opts.Prefetch)
	var workers sync.WaitGroup
	for i := 0; i < mg.opts.Workers; i++ {
		workers.Add(1)
		go mg.worker(workCtx, work, &workers)
	}
	l := &loop{mg: mg, log: mg.log, tasks: make(map[messages.TaskID]*mtask), results: link.NewOutbox(resultID),
		deltas: make(map[messages.TaskID]messages.Delta), work: work, workCtx: workCtx}
	l.up = link.NewUplink(link.UplinkConfig{Ctx: mg.zctx, Addr: mg.opts.Interchange, ID: mg.opts.ManagerID,
		Timing: link.Timing{Interval: mg.opts.HeartbeatInterval, Threshold: mg.opts.HeartbeatThreshold},
		Keys:   mg.opts.keys(), Register: l.registration, Peer: "interchange", Log: mg.log})
	var g daemon.Group
	g.Add("loop", l.run)
	if mg.http != nil {
		g.Add("http", func(c context.Context) error { return mg.http.Serve(c, mg.log) })
	}
	err := g.Run(ctx)
	close(work)
	stopWork()
	workers.Wait()
	l.close()
	mg.res.Close()
	if err != nil {
		mg.log.WithError(err).Error("manager stopped")
		return err
	}
	mg.log.Info("manager stopped")
	return nil
}

func (mg *Manager) worker(ctx context.Context, work <-chan *mtask, wg *sync.WaitGroup) {
	defer wg.Done()
	for t := range work {
		mg.gate.wait(ctx)
		if !t.claim.CompareAndSwap(0, 1) {
			continue // cancelled before it started; the loop reported it
		}
		// The loop reads this at its next report: most tasks end before
		// then and never need a running delta, so no message is spent here.
		t.startedAt.Store(time.Now().UnixNano())
		mg.busy.Add(1)
		r := run(t.ctx, t.task, mg.opts.OutputLimit)
		mg.busy.Add(-1)
		t.cancel(nil)
		mg.mbox.Post(event{kind: evFinished, id: t.task.ID, result: r})
	}
}

type loop struct {
	mg         *Manager
	log        *logrus.Entry
	up         *link.Uplink
	lastReport time.Time
	poller     *zmq.Poller

	tasks   map[messages.TaskID]*mtask
	pending []*mtask
	work    chan *mtask
	workCtx context.Context
	// results are kept until the interchange acknowledges them.
	results *link.Outbox[messages.Result]
	deltas  map[messages.TaskID]messages.Delta
	evs     []event
	retryAt time.Time
}

func resultID(r *messages.Result) messages.TaskID { return r.ID }

func (l *loop) close() { l.up.Close() }

func (l *loop) registration() messages.Message {
	o := l.mg.opts
	return &messages.Registration{Role: messages.RoleManager, ID: o.ManagerID, Hostname: l.mg.hostname,
		Workers: uint32(o.Workers), Prefetch: uint32(o.Prefetch), ProtocolVersion: messages.Version,
		SoftwareVersion: o.Version, BlockID: o.BlockID}
}

func (l *loop) run(ctx context.Context) error {
	l.up.Connect(time.Now())
	tick := heartbeat.Tick(l.mg.opts.HeartbeatInterval)
	nextHK := time.Now().Add(tick)
	for {
		if ctx.Err() != nil {
			for _, t := range l.tasks {
				if t.cancel != nil {
					t.cancel(errors.New("manager shutting down"))
				}
			}
			return nil
		}
		if l.up.SocketChanged() || l.poller == nil {
			l.poller = zmq.NewPoller()
			l.poller.Add(l.mg.mbox.Socket(), zmq.POLLIN)
			if s := l.up.Socket(); s != nil {
				l.poller.Add(s, zmq.POLLIN)
			}
		}
		polled, err := zsock.Wait(l.poller, nextHK, l.retryAt)
		if err != nil {
			return err
		}
		for _, p := range polled {
			if p.Socket == l.mg.mbox.Socket() {
				l.evs = l.mg.mbox.Take(l.evs)
				for i := range l.evs {
					l.handleEvent(&l.evs[i])
					l.evs[i] = event{}
				}
			} else if p.Socket == l.up.Socket() {
				for i := 0; i < 1000; i++ {
					frames, ok, err := l.up.Recv()
					if err != nil || !ok {
						break
					}
					l.handleMessage(frames)
				}
			}
		}
		now := time.Now()
		if !l.retryAt.IsZero() && !now.Before(l.retryAt) {
			l.retryAt = time.Time{}
		}
		l.startWork()
		if now.Sub(l.lastReport) >= l.mg.opts.HeartbeatInterval {
			l.report(now)
		}
		l.flushResults()
		if !now.Before(nextHK) {
			l.housekeeping(now)
			nextHK = now.Add(tick)
		}
	}
}

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evFinished:
		r := ev.result
		if t, ok := l.tasks[r.ID]; ok {
			if t.task.Attempt > r.Attempt {
				// A newer attempt replaced this run: its result is stale
				// and must not take the newer one's place.
				l.mg.m.duplicates.Inc()
				return
			}
			delete(l.tasks, r.ID)
			delete(l.deltas, r.ID)
		}
		if old, ok := l.results.Get(r.ID); ok && old.Attempt > r.Attempt {
			return
		}
		l.results.Put(r)
		l.mg.m.completed.WithLabelValues(string(r.Code.State())).Inc()
		if r.Started > 0 && r.Finished >= r.Started {
			l.mg.m.runTime.WithLabelValues(string(r.Code.State())).Observe(time.Duration(r.Finished - r.Started).Seconds())
		}
	}
}

// startWork hands pending tasks to idle workers.
func (l *loop) startWork() {
	open := l.mg.serving.Effective(time.Now()).DispatchAllowed()
	l.mg.gate.set(open)
	if !open {
		return
	}
	for len(l.work) < cap(l.work) && len(l.pending) > 0 {
		t := l.pending[0]
		l.pending[0] = nil
		l.pending = l.pending[1:]
		if cur, ok := l.tasks[t.task.ID]; !ok || cur != t || t.code.Terminal() {
			continue // cancelled or replaced while pending
		}
		t.handed = true
		t.ctx, t.cancel = context.WithCancelCause(l.workCtx)
		l.work <- t
	}
	if len(l.pending) == 0 {
		l.pending = nil
	}
}

func (l *loop) handleMessage(frames [][]byte) {
	msg, err := messages.Unpack(frames)
	if err != nil {
		l.mg.m.malformed.Inc()
		l.log.WithError(err).Warn("dropped undecodable message from interchange")
		l.up.TrySend(messages.ReplyFor(err))
		return
	}
	now := time.Now()
	registered, handled := l.up.Heard(msg, now)
	if registered {
		l.log.WithFields(logrus.Fields{"held_results": l.results.Len(), "tasks": len(l.tasks)}).Info("registered with interchange")
		l.resync(now)
	}
	if handled {
		return
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.mg.m.heartbeatsRecv.Inc()
	case *messages.TaskBatch:
		l.acceptTasks(m)
	case *messages.Ack:
		for _, id := range m.IDs {
			l.results.Ack(id)
		}
	case *messages.Command:
		l.up.TrySend(l.command(m))
	case *messages.ErrorReply:
		l.log.WithField("code", m.Code.String()).Warn("interchange refused a message: " + m.Reason)
	default:
		l.log.WithField("type", msg.Type().String()).Warn("unexpected message type from interchange")
	}
}

// resync re-sends held results and reports every task held, after a
// (re-)registration.
func (l *loop) resync(now time.Time) {
	l.results.ResendAll()
	for id, t := range l.tasks {
		l.deltas[id] = messages.Delta{ID: id, Code: t.code, Attempt: t.task.Attempt, At: now.UnixNano()}
	}
	l.report(now)
}

func (l *loop) acceptTasks(b *messages.TaskBatch) {
	for i := range b.Tasks {
		t := b.Tasks[i]
		have, ok := l.tasks[t.ID]
		if ok && have.task.Attempt >= t.Attempt {
			l.mg.m.duplicates.Inc()
			continue
		}
		if ok && have.handed {
			// A newer attempt replaces one handed to a worker here (we were
			// taken for lost): keep it from starting, or stop its run; any
			// result of it is stale.
			have.claim.CompareAndSwap(0, 2)
			have.cancel(errCancelled)
		}
		if r, ok := l.results.Get(t.ID); ok && r.Attempt >= t.Attempt {
			l.mg.m.duplicates.Inc()
			l.results.Requeue(t.ID)
			continue
		}
		mt := &mtask{task: t, code: messages.WaitingForLaunch}
		l.tasks[t.ID] = mt
		l.pending = append(l.pending, mt)
	}
	l.mg.m.received.Add(float64(len(b.Tasks)))
	// Tell the interchange we hold them, so it need not send them again.
	ids := make([]messages.TaskID, len(b.Tasks))
	for i := range b.Tasks {
		ids[i] = b.Tasks[i].ID
	}
	l.up.TrySend(&messages.Ack{IDs: ids})
}

func (l *loop) command(c *messages.Command) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		n := 0
		now := time.Now().UnixNano()
		for _, id := range c.TaskIDs {
			t, ok := l.tasks[id]
			if !ok {
				continue
			}
			n++
			if t.handed && !t.claim.CompareAndSwap(0, 2) {
				// A worker has it: stop the run, the worker reports it.
				t.cancel(errCancelled)
				continue
			}
			if t.cancel != nil {
				t.cancel(errCancelled)
			}
			delete(l.tasks, id)
			delete(l.deltas, id)
			t.code = messages.Cancelled
			l.results.Put(messages.Result{ID: id, Attempt: t.task.Attempt, Code: messages.Cancelled, Error: errCancelled.Error(), Finished: now})
		}
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("cancelling %d of %d tasks", n, len(c.TaskIDs))}
	case messages.OpSetServingState, messages.OpGetServingState:
		return servingCommand(l.mg, c)
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is not supported by the manager", c.Op)}
}

// report sends the status report; it goes before any results.
func (l *loop) report(now time.Time) {
	l.lastReport = now
	if !l.up.Registered() {
		return
	}
	l.mg.serving.Measure(servingstate.Sample{Queued: len(l.pending), MemoryPercent: servingstate.MemoryPercent()}, now)
	eff := l.mg.serving.Effective(now)
	capacity := max(0, l.mg.opts.Workers+l.mg.opts.Prefetch-len(l.tasks))
	if !eff.PushAllowed() {
		capacity = 0
	}
	for id, t := range l.tasks {
		if t.handed && !t.started {
			if at := t.startedAt.Load(); at != 0 {
				t.started = true
				t.code = messages.Running
				l.deltas[id] = messages.Delta{ID: id, Code: messages.Running, Attempt: t.task.Attempt, At: at}
			}
		}
	}
	r := &messages.ManagerStatusReport{Workers: uint32(l.mg.opts.Workers), IdleWorkers: uint32(l.mg.idle()),
		Capacity: uint32(capacity), Outstanding: uint32(len(l.tasks)), ServingState: eff}
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

func (l *loop) flushResults() {
	q := l.results.Queued()
	if len(q) == 0 || !l.up.Registered() {
		return
	}
	for len(q) > 0 {
		n := messages.ChunkResults(q, 1000)
		if err := l.up.Send(&messages.ResultBatch{Results: q[:n]}); err != nil {
			if errors.Is(err, zsock.ErrWouldBlock) {
				l.retryAt = time.Now().Add(5 * time.Millisecond)
			}
			return
		}
		l.results.Sent(n, time.Now().UnixNano())
		q = l.results.Queued()
	}
}

func (l *loop) housekeeping(now time.Time) {
	switch l.up.Timers(now) {
	case link.TickLost:
		l.mg.m.interchangeLost.Inc()
		l.log.WithFields(logrus.Fields{"running": len(l.tasks), "held_results": l.results.Len()}).Warn("interchange lost; keeping tasks and results until it is back")
	case link.TickHeartbeat:
		l.mg.m.heartbeatsSent.Inc()
	}
	if l.up.Registered() {
		if n := l.results.ResendDue(now, l.mg.opts.HeartbeatThreshold); n > 0 {
			l.log.WithField("results", n).Warn("interchange did not acknowledge results; sending them again")
		}
	}
	l.publishView(now)
}
