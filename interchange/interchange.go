// Package interchange is the endpoint's broker: it connects out to the
// forwarder, accepts managers on a ROUTER, queues tasks and hands them to
// managers with free capacity.
package interchange

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/link"
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
	down     *link.Router
	downAddr string
	mbox     *zsock.Mailbox[event]
	http     *httpx.Server
	dir      *statedir.Dir
	serving  *servingstate.Controller
	status   *statusBuffer
	m        *metrics
	hostname string
	store    *store.DB
	res      daemon.Resources
	recovery *recovered
	// mgrCreds is what managers of this endpoint need (nil when insecure).
	mgrCreds *curve.Credentials
	// adminToken guards the admin HTTP (STATE_DIR/admin.token).
	adminToken string
	// blocks starts and stops managers when a provider is configured;
	// only the loop calls it. blocksView is its last view, for HTTP.
	blocks     *blocks.Blocks
	blocksView atomic.Pointer[[]blocks.View]
	// multi is the user map's state on a multi-user endpoint (the loop
	// owns it once running); keys are the user keys the ZAP handler admits.
	multi        *multiUser
	keys         userKeys
	serverPublic string

	viewMu sync.RWMutex
	view   StatusView
}

type evKind uint8

const (
	evReport evKind = iota + 1
	evDurable
	evBlocks
	evDrainBlock
	evReloadMap
)

type event struct {
	kind   evKind
	report *messages.EPStatusReport
	then   func(*loop)
	block  string
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
	if ix.dir, err = ix.res.StateDir(opts.StateDir, "interchange"); err != nil {
		return fail(err)
	}
	if ix.dir != nil && !opts.NoPersist {
		if ix.store, existed, err = ix.openStore(); err != nil {
			return fail(fmt.Errorf("interchange: %w", err))
		}
	}
	if existed {
		if ix.recovery, err = loadState(ix.store); err != nil {
			return fail(fmt.Errorf("interchange: read pebble %s: %w", ix.store.Path(), err))
		}
	}
	if ix.zctx, err = ix.res.ZMQ(); err != nil {
		return fail(err)
	}
	sock, err := ix.bindManagers()
	if err != nil {
		return fail(err)
	}
	ix.down = link.NewRouter(sock, ix.timing(), !opts.Insecure)
	if ix.mbox, err = zsock.NewMailbox[event](ix.zctx); err != nil {
		return fail(err)
	}
	ix.res.Add(ix.mbox.Close)
	ix.m = newMetrics(opts.Registry, ix)
	if !opts.Insecure {
		logFail := zsock.QuietFailures(ix.log, time.Minute, "managers")
		w, err := zsock.WatchHandshakes(ix.zctx, sock, func(why zsock.HandshakeFailure, addr string) {
			ix.m.handshakeFailures.WithLabelValues(string(why)).Inc()
			logFail(why, addr)
		})
		if err != nil {
			return fail(fmt.Errorf("interchange: %w", err))
		}
		ix.res.Add(w.Stop)
	}
	if opts.UserMap != "" {
		if err := ix.setupMultiUser(); err != nil {
			return fail(err)
		}
	}
	if err := ix.startBlocks(); err != nil {
		return fail(fmt.Errorf("interchange: %w", err))
	}
	if ix.store != nil {
		ix.store.OnCommit(ix.m.observeStore)
	}
	if err := ix.setupAccess(); err != nil {
		return fail(err)
	}
	if ix.http, err = httpx.ListenConfig(opts.ListenHTTP, ix.routes(), opts.HTTP); err != nil {
		return fail(fmt.Errorf("interchange: %w", err))
	}
	return ix, nil
}

// managerUser is the ZAP name of this endpoint's manager key.
const managerUser = "manager"

// bindManagers binds the ROUTER for managers; unless insecure it is a
// CURVE server that admits only the manager key, which is made on first
// start and kept in STATE_DIR/manager.credentials.
func (ix *Interchange) bindManagers() (*zmq.Socket, error) {
	opts := []zsock.Option{zsock.MaxMsgSize(ix.opts.maxMsgSize())}
	if !ix.opts.Insecure {
		server, creds, err := ix.managerKeys()
		if err != nil {
			return nil, fmt.Errorf("interchange: manager keys: %w", err)
		}
		ix.serverPublic = server.Public
		check := func(domain, _, key string) (string, bool) {
			return managerUser, domain == "managers" && key == creds.Client.Public
		}
		if ix.opts.UserMap != "" {
			// Only users' keys: the plain key would run anyone's tasks.
			check = func(domain, _, key string) (string, bool) {
				name, ok := ix.keys.lookup(key)
				return userIDPrefix + name, ok && domain == "managers"
			}
			creds = nil
		}
		ix.mgrCreds = creds
		zap, err := zsock.StartZAP(ix.zctx, check)
		if err != nil {
			return nil, err
		}
		ix.res.Add(zap.Stop)
		opts = append(opts, zsock.CurveServer(server.Secret, "managers"))
	} else {
		ix.log.Warn("--insecure: the manager link is neither authenticated nor encrypted; any process that reaches " + ix.opts.ListenManagers + " can take tasks")
	}
	sock, addr, err := zsock.NewRouter(ix.zctx, ix.opts.ListenManagers, opts...)
	if err != nil {
		return nil, fmt.Errorf("interchange: managers: %w", err)
	}
	ix.res.Add(func() { zsock.Close(sock) })
	ix.downAddr = addr
	if ix.opts.UserMap != "" && ix.dir != nil {
		// A plain key left by a single-user run is not admitted here.
		if err := os.Remove(ix.dir.File("manager.credentials")); err == nil {
			ix.log.Info("multi-user: removed the plain manager.credentials of an earlier single-user run; it is not admitted")
		}
	}
	if ix.mgrCreds != nil {
		ix.mgrCreds.Address = addr
		if ix.dir != nil {
			if err := curve.WriteCredentials(ix.dir.File("manager.credentials"), ix.mgrCreds); err != nil {
				return nil, err
			}
		}
	}
	return sock, nil
}

// managerKeys loads or makes the server key pair and the managers' key
// pair; without a state dir they live in memory only.
func (ix *Interchange) managerKeys() (server curve.KeyPair, creds *curve.Credentials, err error) {
	if ix.dir == nil {
		if server, err = curve.NewKeyPair(); err != nil {
			return server, nil, err
		}
		client, err := curve.NewKeyPair()
		if err != nil {
			return server, nil, err
		}
		return server, &curve.Credentials{Kind: curve.KindManager, ServerKey: server.Public, Client: client}, nil
	}
	if server, _, err = curve.LoadOrCreate(ix.dir.File("curve.key")); err != nil {
		return server, nil, err
	}
	if ix.opts.UserMap != "" {
		return server, &curve.Credentials{Kind: curve.KindManager, ServerKey: server.Public}, nil
	}
	path := ix.dir.File("manager.credentials")
	creds, err = curve.ReadCredentials(path, curve.KindManager)
	if err == nil && creds.ServerKey == server.Public {
		return server, creds, nil
	}
	client, err := curve.NewKeyPair()
	if err != nil {
		return server, nil, err
	}
	ix.log.WithField("path", path).Info("made the manager credentials; give this file to managers with --credentials")
	return server, &curve.Credentials{Kind: curve.KindManager, ServerKey: server.Public, Client: client}, nil
}

// ManagerCredentials is what this endpoint's managers need to connect (nil
// when insecure).
func (ix *Interchange) ManagerCredentials() *curve.Credentials { return ix.mgrCreds }

func (ix *Interchange) timing() link.Timing {
	return link.Timing{Interval: ix.opts.HeartbeatInterval, Threshold: ix.opts.HeartbeatThreshold}
}

func (ix *Interchange) upKeys() *link.ClientKeys {
	if ix.opts.Insecure {
		return nil
	}
	c := ix.opts.Credentials
	return &link.ClientKeys{ServerKey: c.ServerKey, Public: c.Client.Public, Secret: c.Client.Secret}
}

// ManagersAddr is the bound ROUTER endpoint for managers.
func (ix *Interchange) ManagersAddr() string { return ix.downAddr }

// HTTPAddr is the bound admin HTTP address.
func (ix *Interchange) HTTPAddr() string { return ix.http.Addr() }

// Run serves until ctx ends.
func (ix *Interchange) Run(ctx context.Context) error {
	ix.log.WithFields(logrus.Fields{"managers": ix.downAddr, "http": ix.HTTPAddr(), "forwarder": ix.opts.Forwarder}).Info("interchange starting")
	l := newLoop(ix)
	var g daemon.Group
	g.Add("loop", l.run)
	g.Add("http", func(c context.Context) error { return ix.http.Serve(c, ix.log) })
	g.Add("status reports", func(c context.Context) error { ix.reportLoop(c); return nil })
	if ix.multi != nil {
		g.Add("user map reloads", func(c context.Context) error { ix.watchHUP(c); return nil })
	}
	err := g.Run(ctx)
	l.close()
	ix.res.Close()
	if err != nil {
		ix.log.WithError(err).Error("interchange stopped")
		return err
	}
	ix.log.Info("interchange stopped")
	return nil
}
