// Package interchange is the endpoint's broker: it connects out to the
// forwarder, accepts managers on a ROUTER, queues tasks and hands them to
// managers with free capacity.
package interchange

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Interchange is one endpoint broker.
type Interchange struct {
	opts     Options
	log      *logrus.Entry
	zctx     *zmq.Context
	down     *zmq.Socket
	downAddr string
	mbox     *zsock.Mailbox[event]
	http     *httpx.Server
	dir      *statedir.Dir
	serving  *servingstate.Controller
	status   *statusBuffer
	m        *metrics
	hostname string
	store    *store.Store
	res      daemon.Resources
	recovery *recovered
	gcLong   bool // reportLoop only
	// adminToken guards the admin HTTP; curveKey is the key managers
	// must find here (STATE_DIR/curve.key).
	adminToken string
	curveKey   curve.KeyPair

	viewMu sync.RWMutex
	view   StatusView
}

type evKind uint8

const (
	evReport evKind = iota + 1
	evCommand
	evDurable
)

type event struct {
	kind   evKind
	report *messages.EPStatusReport
	cmd    *messages.Command
	reply  chan *messages.CommandReply
	then   func(*loop)
}

// New validates options, takes the state dir and binds the manager
// ROUTER and the admin HTTP listener.
func New(opts Options) (*Interchange, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	ix := &Interchange{opts: opts, log: opts.Log, serving: servingstate.New(opts.Pressure), status: newStatusBuffer()}
	ix.hostname, _ = os.Hostname()
	fail := func(err error) (*Interchange, error) {
		ix.res.Close()
		return nil, err
	}
	var err error
	var existed bool
	ix.dir, ix.store, existed, err = ix.res.State(opts.StateDir, "interchange", opts.NoPersist, "interchange.db",
		"switchyard-interchange-v1", []string{tasksBucket, resultsBucket}, opts.durability(), ix.log)
	if err != nil {
		return fail(err)
	}
	if existed {
		if ix.recovery, err = loadState(ix.store); err != nil {
			return fail(fmt.Errorf("interchange: read %s: %w (move the file aside to start empty)", ix.store.Path(), err))
		}
	}
	if ix.zctx, err = ix.res.ZMQ(); err != nil {
		return fail(err)
	}
	if ix.down, ix.downAddr, err = zsock.NewRouter(ix.zctx, opts.ListenManagers); err != nil {
		return fail(fmt.Errorf("interchange: managers: %w", err))
	}
	ix.res.Add(func() { zsock.Close(ix.down) })
	if ix.mbox, err = zsock.NewMailbox[event](ix.zctx); err != nil {
		return fail(err)
	}
	ix.res.Add(ix.mbox.Close)
	ix.m = newMetrics(opts.Registry, ix)
	if ix.store != nil {
		ix.store.OnCommit(ix.m.observeStore)
	}
	if err := ix.setupAccess(); err != nil {
		return fail(err)
	}
	if ix.http, err = httpx.Listen(opts.ListenHTTP, ix.routes()); err != nil {
		return fail(fmt.Errorf("interchange: %w", err))
	}
	return ix, nil
}

// ManagersAddr is the bound ROUTER endpoint for managers.
func (ix *Interchange) ManagersAddr() string { return ix.downAddr }

// HTTPAddr is the bound admin HTTP address.
func (ix *Interchange) HTTPAddr() string { return ix.http.Addr() }

// Run serves until ctx ends.
func (ix *Interchange) Run(ctx context.Context) error {
	ix.log.WithFields(logrus.Fields{"managers": ix.downAddr, "http": ix.HTTPAddr(), "forwarder": ix.opts.Forwarder}).Info("interchange starting")
	bg := daemon.Start(ctx,
		func(c context.Context) error { return ix.http.Serve(c, ix.log) },
		func(c context.Context) error { ix.reportLoop(c); return nil })
	l := newLoop(ix)
	loopErr := l.run(ctx)
	httpErr := bg.Stop()
	l.close()
	ix.res.Close()
	ix.log.Info("interchange stopped")
	if loopErr != nil {
		return loopErr
	}
	return httpErr
}

// reportLoop builds an EPStatusReport every interval and hands it to the
// loop; it never touches a socket.
func (ix *Interchange) reportLoop(ctx context.Context) {
	t := time.NewTicker(ix.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if ix.opts.AdaptiveGC {
				ix.tuneGC(int(ix.status.queued.Load()))
			}
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
}

func newStatusBuffer() *statusBuffer {
	return &statusBuffer{deltas: make(map[messages.TaskID]messages.Delta)}
}

func (s *statusBuffer) add(ds ...messages.Delta) {
	s.mu.Lock()
	for _, d := range ds {
		s.deltas[d.ID] = d
	}
	s.mu.Unlock()
}

// drop forgets deltas of tasks whose result is on its way.
func (s *statusBuffer) drop(ids []messages.TaskID) {
	s.mu.Lock()
	for _, id := range ids {
		delete(s.deltas, id)
	}
	s.mu.Unlock()
}

func (s *statusBuffer) setTotals(t messages.EPStatusReport) {
	s.mu.Lock()
	s.totals = t
	s.mu.Unlock()
	s.queued.Store(t.Queued)
}

func (s *statusBuffer) build(state messages.ServingState) *messages.EPStatusReport {
	s.mu.Lock()
	r := s.totals
	if len(s.deltas) > 0 {
		r.Deltas = make([]messages.Delta, 0, len(s.deltas))
		for _, d := range s.deltas {
			r.Deltas = append(r.Deltas, d)
		}
		clear(s.deltas)
	}
	s.mu.Unlock()
	r.ServingState = state
	return &r
}

// GC targets: the default while the queue is short; with a long queue the
// heap is mostly queued tasks, and a lower target keeps a queued task near
// 300 bytes of memory instead of 480, for little CPU (GC runs seldom when
// the heap is large).
const (
	gcPercentShort = 100
	gcPercentLong  = 25
	longQueue      = 50000
)

func (ix *Interchange) tuneGC(queued int) {
	want := gcPercentShort
	if queued >= longQueue || (ix.gcLong && queued >= longQueue/2) {
		want = gcPercentLong
	}
	if (want == gcPercentLong) != ix.gcLong {
		ix.gcLong = want == gcPercentLong
		debug.SetGCPercent(want)
		ix.log.WithFields(logrus.Fields{"queued": queued, "gc_percent": want}).Info("GC target changed for the queue length")
	}
}
