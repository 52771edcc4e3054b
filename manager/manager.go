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
	// env is every task's environment before its own variables.
	env        []string
	adminToken string

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
	kind    evKind
	id      messages.TaskID
	attempt uint32
	at      int64
	result  messages.Result
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
	mg := &Manager{opts: opts, log: opts.Log, serving: servingstate.New(opts.Pressure), gate: newGate(), env: baseEnv(opts.TaskEnv)}
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
		if err := mg.setupAdmin(); err != nil {
			return fail(err)
		}
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
	var fns []func(context.Context) error
	if mg.http != nil {
		fns = append(fns, func(c context.Context) error { return mg.http.Serve(c, mg.log) })
	}
	bg := daemon.Start(ctx, fns...)
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
	l := &loop{mg: mg, log: mg.log, tasks: make(map[messages.TaskID]*mtask), unacked: make(map[messages.TaskID]messages.Result),
		deltas: make(map[messages.TaskID]messages.Delta), work: work, workCtx: workCtx,
		sentAt: make(map[messages.TaskID]int64)}
	loopErr := l.run(ctx)
	close(work)
	stopWork()
	workers.Wait()
	httpErr := bg.Stop()
	l.close()
	mg.res.Close()
	mg.log.Info("manager stopped")
	if loopErr != nil {
		return loopErr
	}
	return httpErr
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
		r := run(t.ctx, t.task, mg.opts.OutputLimit, mg.env)
		mg.busy.Add(-1)
		t.cancel(nil)
		mg.mbox.Post(event{kind: evFinished, id: t.task.ID, result: r})
	}
}

type loop struct {
	mg   *Manager
	log  *logrus.Entry
	sock *zmq.Socket
	// registered is true once the interchange answered our Registration.
	registered bool
	lastSeen   time.Time
	lastSent   time.Time
	lastTry    time.Time
	lastReport time.Time
	backoff    time.Duration
	pollerOK   bool
	poller     *zmq.Poller

	tasks   map[messages.TaskID]*mtask
	pending []*mtask
	work    chan *mtask
	workCtx context.Context
	unacked map[messages.TaskID]messages.Result
	// sentAt is when each unacknowledged result was last sent.
	sentAt     map[messages.TaskID]int64
	lastResend time.Time
	outbox     []messages.Result
	deltas     map[messages.TaskID]messages.Delta
	evs        []event
	retryAt    time.Time
}

func (l *loop) close() {
	zsock.Close(l.sock)
	l.sock = nil
}

func (l *loop) connect(now time.Time) {
	l.close()
	l.pollerOK = false
	l.lastTry = now
	l.registered = false
	s, err := zsock.NewDealer(l.mg.zctx, l.mg.opts.ManagerID, l.mg.opts.Interchange)
	if err != nil {
		l.log.WithError(err).Error("cannot connect to interchange")
		return
	}
	l.sock = s
	l.sendRegistration()
}

func (l *loop) sendRegistration() {
	o := l.mg.opts
	l.send(&messages.Registration{Role: messages.RoleManager, ID: o.ManagerID, Hostname: l.mg.hostname,
		Workers: uint32(o.Workers), Prefetch: uint32(o.Prefetch), ProtocolVersion: messages.Version,
		SoftwareVersion: o.Version, BlockID: o.BlockID})
}

func (l *loop) sendErr(m messages.Message) error {
	if l.sock == nil {
		return zsock.ErrSocketGone
	}
	frames, err := m.Pack()
	if err != nil {
		return err
	}
	if err := zsock.Send(l.sock, nil, frames); err != nil {
		return err
	}
	l.lastSent = time.Now()
	return nil
}

func (l *loop) send(m messages.Message) {
	if err := l.sendErr(m); err != nil {
		l.log.WithError(err).WithField("type", m.Type().String()).Debug("message to interchange not sent")
	}
}

func (l *loop) run(ctx context.Context) error {
	l.connect(time.Now())
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
		if !l.pollerOK {
			l.poller = zmq.NewPoller()
			l.poller.Add(l.mg.mbox.Socket(), zmq.POLLIN)
			if l.sock != nil {
				l.poller.Add(l.sock, zmq.POLLIN)
			}
			l.pollerOK = true
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
			} else if l.sock != nil && p.Socket == l.sock {
				for i := 0; i < 1000; i++ {
					frames, ok, err := zsock.Recv(l.sock)
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
		if old, ok := l.unacked[r.ID]; ok && old.Attempt > r.Attempt {
			return
		}
		l.unacked[r.ID] = r
		l.outbox = append(l.outbox, r)
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
		l.send(messages.ReplyFor(err))
		return
	}
	now := time.Now()
	l.lastSeen = now
	if !l.registered {
		if _, again := msg.(*messages.Reregister); !again {
			l.registered = true
			l.backoff = 0
			l.log.WithFields(logrus.Fields{"held_results": len(l.unacked), "tasks": len(l.tasks)}).Info("registered with interchange")
			l.resync(now)
		}
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.mg.m.heartbeatsRecv.Inc()
	case *messages.TaskBatch:
		l.acceptTasks(m)
	case *messages.Ack:
		for _, id := range m.IDs {
			delete(l.unacked, id)
			delete(l.sentAt, id)
		}
	case *messages.Command:
		l.send(l.command(m))
	case *messages.HeartbeatReq:
		l.send(&messages.HeartbeatResp{Nonce: m.Nonce})
	case *messages.Reregister:
		if !l.registered && now.Sub(l.lastTry) < l.mg.opts.HeartbeatInterval {
			return // our Registration is on its way
		}
		l.log.WithField("reason", m.Reason).Info("interchange asked us to re-register")
		l.registered = false
		l.lastTry = now
		l.sendRegistration()
	case *messages.ErrorReply:
		l.log.WithField("code", m.Code.String()).Warn("interchange refused a message: " + m.Reason)
	default:
		l.log.WithField("type", msg.Type().String()).Warn("unexpected message type from interchange")
	}
}

// resync re-sends held results and reports every task held, after a
// (re-)registration.
func (l *loop) resync(now time.Time) {
	l.outbox = l.outbox[:0]
	for _, r := range l.unacked {
		l.outbox = append(l.outbox, r)
	}
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
		if r, ok := l.unacked[t.ID]; ok && r.Attempt >= t.Attempt {
			l.mg.m.duplicates.Inc()
			l.outbox = append(l.outbox, r)
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
	l.send(&messages.Ack{IDs: ids})
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
			r := messages.Result{ID: id, Attempt: t.task.Attempt, Code: messages.Cancelled, Error: errCancelled.Error(), Finished: now}
			l.unacked[id] = r
			l.outbox = append(l.outbox, r)
		}
		return &messages.CommandReply{ID: c.ID, OK: true, Message: fmt.Sprintf("cancelling %d of %d tasks", n, len(c.TaskIDs))}
	case messages.OpSetServingState, messages.OpGetServingState:
		return servingCommand(l.mg, c)
	}
	return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("operation %s is not supported by the manager", c.Op)}
}

// report sends the status report; it goes before any results.
func (l *loop) report(now time.Time) {
	l.lastReport = now
	if !l.registered {
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
	if err := l.sendErr(r); err == nil {
		clear(l.deltas)
		l.mg.m.reportsSent.Inc()
	}
}

func (l *loop) flushResults() {
	if len(l.outbox) == 0 || !l.registered {
		return
	}
	for len(l.outbox) > 0 {
		n := messages.ChunkResults(l.outbox, 1000)
		if err := l.sendErr(&messages.ResultBatch{Results: l.outbox[:n]}); err != nil {
			if errors.Is(err, zsock.ErrWouldBlock) {
				l.retryAt = time.Now().Add(5 * time.Millisecond)
			}
			return
		}
		now := time.Now().UnixNano()
		for i := range l.outbox[:n] {
			if _, ok := l.unacked[l.outbox[i].ID]; ok {
				l.sentAt[l.outbox[i].ID] = now
			}
		}
		l.outbox = l.outbox[n:]
	}
	l.outbox = nil
}

// resendUnacked queues again, once per threshold, results the interchange
// has not acknowledged in time; it applies a result at most once.
func (l *loop) resendUnacked(now time.Time) {
	th := l.mg.opts.HeartbeatThreshold
	if len(l.sentAt) == 0 || !l.registered || now.Sub(l.lastResend) < th {
		return
	}
	l.lastResend = now
	n := 0
	for id, at := range l.sentAt {
		if now.UnixNano()-at > int64(th) {
			delete(l.sentAt, id)
			if r, ok := l.unacked[id]; ok {
				l.outbox = append(l.outbox, r)
				n++
			}
		}
	}
	if n > 0 {
		l.log.WithField("results", n).Warn("interchange did not acknowledge results; sending them again")
	}
}

func (l *loop) housekeeping(now time.Time) {
	th := l.mg.opts.HeartbeatThreshold
	switch {
	case l.registered && now.Sub(l.lastSeen) > th:
		l.mg.m.interchangeLost.Inc()
		l.log.WithFields(logrus.Fields{"silent_for": now.Sub(l.lastSeen).Round(time.Millisecond).String(),
			"running": len(l.tasks), "held_results": len(l.unacked)}).Warn("interchange lost; reconnecting")
		l.backoff = l.mg.opts.HeartbeatInterval
		l.connect(now)
	case !l.registered && now.Sub(l.lastTry) > l.backoff+th:
		l.backoff = heartbeat.NextBackoff(l.backoff, l.mg.opts.HeartbeatInterval, l.mg.opts.HeartbeatThreshold)
		l.log.WithField("next_try_in", l.backoff.String()).Info("no answer from interchange; reconnecting")
		l.connect(now)
	case l.registered && now.Sub(l.lastSent) >= l.mg.opts.HeartbeatInterval:
		l.send(&messages.Heartbeat{})
		l.mg.m.heartbeatsSent.Inc()
	}
	l.resendUnacked(now)
	l.publishView(now)
}
