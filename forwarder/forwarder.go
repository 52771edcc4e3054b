// Package forwarder is the service side: an HTTP API for users, a task
// table, and a ZMQ ROUTER that endpoints' interchanges connect to.
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
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

	store taskstore.Store
	// shared is set on a store several forwarders share (shared.go).
	shared     *sharedState
	res        daemon.Resources
	recovering bool
	recovered  map[string][]*entry

	// idem remembers submits by Idempotency-Key (idempotency.go).
	idem *idempotency
	// access holds the API's tokens (access.go).
	access     *access
	adminToken string
	// lastCompact is when the janitor last compacted the store.
	lastCompact time.Time

	// api is the API's mux without the token check; ui serves /ui/
	// (ui.go) over it.
	api http.Handler
	ui  *webUI
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
	// Several forwarders on one database (shared.go): a lease was
	// decided or lost; tasks another forwarder accepted were read.
	evLease
	evLeaseLost
	evAdopt
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
	why   string // evLease: why it was refused ("" when taken)
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
	f := &Forwarder{opts: opts, log: opts.Log, views: make(map[string]EndpointView), idem: newIdempotency()}
	fail := func(err error) (*Forwarder, error) {
		f.res.Close()
		return nil, err
	}
	var err error
	if f.dir, err = f.res.StateDir(opts.StateDir, "forwarder"); err != nil {
		return fail(err)
	}
	f.m = newMetrics(opts.Registry, f)
	if f.store, f.recovering, err = f.openStore(); err != nil {
		return fail(fmt.Errorf("forwarder: %w", err))
	}
	f.res.Add(func() {
		if err := f.store.Close(); err != nil {
			f.log.WithError(err).Error("closing the store")
		}
	})
	f.tasks = newTaskTable(f.store, f.log)
	f.tasks.endLatency = func(d time.Duration) { f.m.latency.Observe(d.Seconds()) }
	total, unfinished, err := f.tasks.load()
	if err != nil {
		return fail(fmt.Errorf("forwarder: read %s: %w", f.store.Describe(), err))
	}
	f.recovered = unfinished
	if f.recovering {
		n := 0
		for _, ids := range unfinished {
			n += len(ids)
		}
		f.log.WithFields(logrus.Fields{"tasks": total, "unfinished": n, "endpoints": len(unfinished), "store": f.store.Describe()}).
			Infof("recovering: %d tasks unfinished of %d stored", n, total)
	}
	if f.zctx, err = f.res.ZMQ(); err != nil {
		return fail(err)
	}
	// Before the bind: the ZAP handler of a shared store may post.
	if f.mbox, err = zsock.NewMailbox[event](f.zctx); err != nil {
		return fail(err)
	}
	f.res.Add(f.mbox.Close)
	if sh, ok := f.store.(taskstore.Shared); ok {
		f.shared = newShared(f, sh)
	}
	if err := f.bindZMQ(); err != nil {
		return fail(err)
	}
	if f.shared != nil {
		f.shared.named()
	}
	if err := f.failOrphans(); err != nil {
		return fail(err)
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
	if f.enrolled, err = loadEnrollment(f.store); err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	if f.shared != nil {
		// Created through another forwarder: read them again on a miss.
		f.enrolled.miss = f.shared.missedEndpoint
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
		if f.shared != nil {
			if err := f.sharedServerKey(); err != nil {
				return err
			}
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
	if !f.opts.Insecure {
		logFail := zsock.QuietFailures(f.log, time.Minute, "interchanges")
		w, err := zsock.WatchHandshakes(f.zctx, sock, func(why zsock.HandshakeFailure, addr string) {
			f.m.handshakeFailures.WithLabelValues(string(why)).Inc()
			logFail(why, addr)
		})
		if err != nil {
			return fmt.Errorf("forwarder: %w", err)
		}
		f.res.Add(w.Stop)
	}
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
	if f.shared != nil {
		g.Add("leases", func(c context.Context) error { f.shared.leaser(c); return nil })
		g.Add("listener", func(c context.Context) error { f.shared.listener(c); return nil })
	}
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
	pending    pendingTasks
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
	// held: this forwarder holds the endpoint's lease (shared store);
	// claiming is the registration waiting for it.
	held     bool
	claiming *claimReg
}

// claimReg is a registration waiting for its endpoint's lease.
type claimReg struct {
	route []byte
	user  string
	reg   messages.Registration
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

// openStore opens the store --store names: Pebble in the state dir by
// default, memory with no state dir or --no-persist.
func (f *Forwarder) openStore() (taskstore.Store, bool, error) {
	url := f.opts.Store
	dir := ""
	if f.dir != nil {
		dir = f.dir.Path
	}
	if url == "" {
		url = "pebble"
		if dir == "" || f.opts.NoPersist {
			url = "memory"
		}
	}
	st, existed, err := taskstore.Open(taskstore.Config{URL: url, Dir: dir, Durability: f.opts.durability(), OnCommit: f.m.observeStore, Log: f.log})
	if err != nil || !f.opts.NoPersist || dir == "" {
		return st, existed, err
	}
	// Endpoints enrolled offline in the state dir (endpoint up, bench)
	// still count; nothing is written back.
	if err := importEndpoints(st, dir, f.log); err != nil {
		st.Close()
		return nil, false, err
	}
	return st, false, nil
}

// importEndpoints copies the endpoints of the store in dir, if there is
// one, into st.
func importEndpoints(st taskstore.Store, dir string, log *logrus.Entry) error {
	if _, err := os.Stat(filepath.Join(dir, taskstore.PebbleDir)); err != nil {
		return nil
	}
	src, _, err := taskstore.Open(taskstore.Config{URL: "pebble", Dir: dir, Log: log})
	if err != nil {
		return err
	}
	defer src.Close()
	eps, err := src.Endpoints()
	for _, e := range eps {
		if err == nil {
			err = st.PutEndpoint(e)
		}
	}
	return err
}

// failOrphans fails the unfinished tasks of endpoints deleted before a
// crash could store their end: no interchange will ever take them.
func (f *Forwarder) failOrphans() error {
	if f.opts.Insecure {
		return nil
	}
	for id := range f.recovered {
		if f.enrolled.has(id) {
			continue
		}
		n, err := f.tasks.failEndpoint(id, "endpoint "+id+" was deleted")
		if err != nil {
			return fmt.Errorf("forwarder: fail the tasks of deleted endpoint %s: %w", id, err)
		}
		delete(f.recovered, id)
		f.log.WithFields(logrus.Fields{"endpoint": id, "failed_tasks": n}).Warn("tasks of a deleted endpoint failed at start")
	}
	return nil
}
