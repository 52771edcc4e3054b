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
	// env is every task's environment before its own variables.
	env        []string
	adminToken string
	py         *pyPool

	viewMu sync.RWMutex
	view   StatusView
	// busy is the number of workers running a task.
	busy atomic.Int32
	// draining is set once the manager takes no new tasks.
	draining atomic.Bool
	gate     *gate
}

func (mg *Manager) idle() int { return max(0, mg.opts.Workers-int(mg.busy.Load())) }

type evKind uint8

const (
	evFinished evKind = iota + 1
	evStarted
)

type event struct {
	kind   evKind
	t      *mtask
	at     int64 // evStarted: unix ns
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
	// out is set once it is no longer a task held: ended, cancelled,
	// given back or replaced by a newer attempt (loop only).
	out bool
	// startedAt is set by the worker when it starts the task.
	startedAt atomic.Int64
	// parked is the result of a run a signal killed, held for parkGrace
	// in case the manager itself is being stopped (loop only).
	parked      *messages.Result
	parkedUntil time.Time
	// claim decides, once, between a worker starting the task (0->1) and
	// the loop cancelling it before it started (0->2).
	claim atomic.Int32
	// res is the result, held in the outbox until acknowledged, and
	// delivery its place there (loop only).
	res      messages.Result
	delivery link.Delivery[mtask]
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
	if mg.dir, err = mg.res.StateDir(opts.StateDir, "manager"); err != nil {
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
	mg.py = newPyPool(opts.Python, opts.PythonWorkers, opts.PythonIdle, mg.env, mg.log, opts.Registry)
	mg.res.Add(mg.py.close)
	if opts.ListenHTTP != "" {
		if err := mg.setupAdmin(); err != nil {
			return fail(err)
		}
		if mg.http, err = httpx.ListenConfig(opts.ListenHTTP, mg.routes(), opts.HTTP); err != nil {
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
	f := logrus.Fields{"interchange": mg.opts.Interchange, "workers": mg.opts.Workers, "prefetch": mg.opts.Prefetch,
		"drain_grace": mg.opts.DrainGrace.String()}
	if a := mg.HTTPAddr(); a != "" {
		f["http"] = a
	}
	if mg.opts.BlockID != "" {
		f["block"] = mg.opts.BlockID
	}
	mg.log.WithFields(f).Info("manager starting")
	if mg.opts.Insecure {
		mg.log.Warn("--insecure: the link to the interchange is neither authenticated nor encrypted; any process listening at " +
			mg.opts.Interchange + " can hand this manager code to run")
	}
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
	byID := make(map[messages.TaskID]*mtask)
	l := &loop{mg: mg, log: mg.log, byID: byID, results: newOutbox(byID),
		deltas: make(map[messages.TaskID]messages.Delta), work: work, workCtx: workCtx,
		returned: make(map[messages.TaskID]uint32)}
	l.up = link.NewUplink(link.UplinkConfig{Ctx: mg.zctx, Addr: mg.opts.Interchange, ID: mg.opts.ManagerID,
		Timing: link.Timing{Interval: mg.opts.HeartbeatInterval, Threshold: mg.opts.HeartbeatThreshold},
		Keys:   mg.opts.keys(), Register: l.registration, Peer: "interchange", Log: mg.log})
	var g daemon.Group
	g.Add("loop", func(c context.Context) error {
		err := l.run(c)
		if errors.Is(err, errDrainedByCommand) {
			return daemon.ErrDone
		}
		return err
	})
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
