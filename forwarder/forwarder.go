// Package forwarder is the service side: an HTTP API for users, a task
// table, and a ZMQ ROUTER that endpoints' interchanges connect to.
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Forwarder is one service-side process.
type Forwarder struct {
	opts    Options
	log     *logrus.Entry
	zctx    *zmq.Context
	router  *link.Router
	zmqAddr string
	http    *httpx.Server
	mbox    *zsock.Mailbox[event]
	tasks   *taskTable
	m       *metrics
	dir     *statedir.Dir

	// views is what the loop publishes about endpoints for HTTP readers.
	viewMu sync.RWMutex
	views  map[string]EndpointView

	cmdSeq uint64

	enrolled  *enrollment
	serverKey curve.KeyPair

	store      *store.Log
	res        daemon.Resources
	recovering bool
	recovered  map[string][]*entry

	// access holds the API's tokens (access.go).
	access     *access
	adminToken string
	// lastCompact is when the janitor last compacted the store.
	lastCompact time.Time
}

type evKind uint8

const (
	evSubmitted evKind = iota + 1
	evCancel
	evCommand
	evProbe
	evAck
	// evRevoke drops an endpoint's connection (its key was replaced);
	// evDeleted drops it and forgets the endpoint.
	evRevoke
	evDeleted
)

// event is what other goroutines hand the loop.
type event struct {
	kind  evKind
	ep    string
	ids   []messages.TaskID
	tasks []*entry // evSubmitted
	cmd   *messages.Command
	reply chan commandResult
	key   string // evRevoke, evDeleted: the key that no longer counts
}

type commandResult struct {
	reply *messages.CommandReply
	err   error
}

// New validates options, takes the state dir and binds both listeners.
func New(opts Options) (*Forwarder, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	f := &Forwarder{opts: opts, log: opts.Log, views: make(map[string]EndpointView)}
	fail := func(err error) (*Forwarder, error) {
		f.res.Close()
		return nil, err
	}
	var err error
	if f.dir, err = f.res.StateDir(opts.StateDir, "forwarder"); err != nil {
		return fail(err)
	}
	var st *store.Log
	if f.dir != nil && !opts.NoPersist {
		if st, f.recovering, err = f.openStore(); err != nil {
			return fail(fmt.Errorf("forwarder: %w", err))
		}
	}
	f.store = st
	f.tasks = newTaskTable(st, f.log)
	total, unfinished, err := f.tasks.load()
	if err != nil {
		return fail(fmt.Errorf("forwarder: read %s: %w (move the file aside to start empty)", st.Path(), err))
	}
	f.recovered = unfinished
	if f.recovering {
		n := 0
		for _, ids := range unfinished {
			n += len(ids)
		}
		f.log.WithFields(logrus.Fields{"tasks": total, "unfinished": n, "endpoints": len(unfinished), "store": st.Path()}).
			Infof("recovering: %d tasks unfinished of %d stored", n, total)
	}
	if f.zctx, err = f.res.ZMQ(); err != nil {
		return fail(err)
	}
	if err := f.bindZMQ(); err != nil {
		return fail(err)
	}
	if f.mbox, err = zsock.NewMailbox[event](f.zctx); err != nil {
		return fail(err)
	}
	f.res.Add(f.mbox.Close)
	f.m = newMetrics(opts.Registry, f)
	f.tasks.endLatency = func(d time.Duration) { f.m.latency.Observe(d.Seconds()) }
	if f.store != nil {
		f.store.OnCommit(f.m.observeStore)
	}
	if f.http, err = httpx.ListenConfig(opts.ListenHTTP, f.routes(), opts.HTTP); err != nil {
		return fail(fmt.Errorf("forwarder: %w", err))
	}
	// After the bind, so a client that finds admin.token can connect.
	if err := f.setupAccess(); err != nil {
		f.http.Close()
		return fail(err)
	}
	return f, nil
}

// bindZMQ binds the ROUTER for interchanges: unless insecure a CURVE
// server whose ZAP handler admits only keys of created endpoints and names
// each connection after its endpoint.
func (f *Forwarder) bindZMQ() error {
	var err error
	path := ""
	if f.dir != nil {
		path = f.dir.File("endpoints.json")
	}
	if f.enrolled, err = loadEnrollment(path); err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	opts := []zsock.Option{zsock.MaxMsgSize(messages.MaxBatchBytes + 1<<20)}
	if f.opts.Insecure {
		f.log.Warn("--insecure: the interchange link is neither authenticated nor encrypted; any process that reaches " + f.opts.ListenZMQ + " can register as any endpoint")
	} else {
		if f.dir != nil {
			f.serverKey, _, err = curve.LoadOrCreate(f.dir.File("curve.key"))
		} else {
			f.serverKey, err = curve.NewKeyPair()
		}
		if err != nil {
			return fmt.Errorf("forwarder: CURVE key: %w", err)
		}
		zap, err := zsock.StartZAP(f.zctx, func(domain, _, key string) (string, bool) {
			if domain != "interchanges" {
				return "", false
			}
			id, ok := f.enrolled.idOf(key)
			// The key rides along so a registration can be checked against
			// the endpoint's current key, not only its name.
			return id + "|" + key, ok
		})
		if err != nil {
			return err
		}
		f.res.Add(zap.Stop)
		opts = append(opts, zsock.CurveServer(f.serverKey.Secret, "interchanges"))
	}
	sock, addr, err := zsock.NewRouter(f.zctx, f.opts.ListenZMQ, opts...)
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	f.res.Add(func() { zsock.Close(sock) })
	f.zmqAddr = addr
	f.router = link.NewRouter(sock, f.timing(), !f.opts.Insecure)
	return nil
}

func (f *Forwarder) timing() link.Timing {
	return link.Timing{Interval: f.opts.HeartbeatInterval, Threshold: f.opts.HeartbeatThreshold}
}

// ServerKey is the forwarder's CURVE public key ("" when insecure).
func (f *Forwarder) ServerKey() string { return f.serverKey.Public }

// HTTPAddr is the bound HTTP address.
func (f *Forwarder) HTTPAddr() string { return f.http.Addr() }

// ZMQAddr is the bound ROUTER endpoint.
func (f *Forwarder) ZMQAddr() string { return f.zmqAddr }

// Run serves until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	f.log.WithFields(logrus.Fields{"http": f.HTTPAddr(), "zmq": f.zmqAddr}).Info("forwarder listening")
	var g daemon.Group
	g.Add("loop", newLoop(f).run)
	g.Add("http", func(c context.Context) error { return f.http.Serve(c, f.log) })
	g.Add("janitor", func(c context.Context) error { f.janitor(c); return nil })
	err := g.Run(ctx)
	f.res.Close()
	if err != nil {
		f.log.WithError(err).Error("forwarder stopped")
		return err
	}
	f.log.Info("forwarder stopped")
	return nil
}

type endpoint struct {
	link.Peer
	id         string
	connected  bool
	reg        messages.Registration
	lostReason string
	lostAt     time.Time
	report     messages.EPStatusReport
	pending    []*entry
	// inflight are the tasks pushed that have not ended, by id; sent
	// holds them until they end, and those the interchange has not
	// acknowledged go again if the ack does not come.
	inflight map[messages.TaskID]*entry
	sent     *link.Deliveries[entry]
	// cancels are task ids to cancel on the interchange, kept until a
	// send succeeds (it may be away, or its pipe full).
	cancels []messages.TaskID
	probes  map[uint64]chan commandResult
	// holdPush stops pushes until the endpoint's next status report: it
	// gave tasks back, or is being paused right now.
	holdPush bool
}

// loop owns the ROUTER and every table below; nothing here is locked.
type loop struct {
	f        *Forwarder
	router   *link.Router
	quiet    *link.Quiet
	eps      map[string]*endpoint
	commands map[uint64]pendingCmd
	retryAt  time.Time
	sendBuf  []messages.Task
	sentBuf  []*entry
	resBuf   []*entry
	verdicts []messages.Verdict
}

type pendingCmd struct {
	ep       string
	cmd      *messages.Command
	reply    chan commandResult
	deadline time.Time
}

var errEndpointNotConnected = errors.New("endpoint is not connected")

func (f *Forwarder) connectedCount() int {
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	n := 0
	for _, v := range f.views {
		if v.Connected {
			n++
		}
	}
	return n
}

// janitor forgets finished tasks older than the retention period, so a
// long-running forwarder does not grow without bound.
func (f *Forwarder) janitor(ctx context.Context) {
	if f.opts.Retention < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(min(max(f.opts.Retention/10, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := f.tasks.prune(now.Add(-f.opts.Retention)); n > 0 {
				f.m.pruned.Add(float64(n))
				f.log.WithFields(logrus.Fields{"tasks": n, "retention": f.opts.Retention.String()}).Info("forgot finished tasks past retention")
				f.compactAfterPrune(now)
			}
		}
	}
}
