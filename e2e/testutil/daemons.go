package testutil

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/manager"
)

// Test timing: heartbeats of 50ms; peers declared lost after 500ms unless a
// test asks for less.
const (
	Interval  = 50 * time.Millisecond
	Threshold = 500 * time.Millisecond
	// StopTimeout bounds how long a daemon may take to stop in Cleanup.
	StopTimeout = 15 * time.Second
)

// runDaemon runs fn in a goroutine and, in t.Cleanup, cancels it and waits
// for it to return; a daemon that does not stop fails the test.
func runDaemon(t testing.TB, name string, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		case <-time.After(StopTimeout):
			t.Errorf("%s did not stop within %s of its context ending", name, StopTimeout)
		}
	}
	t.Cleanup(stop)
	return stop
}

// Forwarder is a forwarder running inside the test.
type Forwarder struct {
	*forwarder.Forwarder
	Reg  *prometheus.Registry
	Log  *LogBuffer
	URL  string // http://host:port
	Stop func()
}

// testDefaults fills what every daemon started by a test shares: an
// ephemeral HTTP port, test heartbeats, a fresh registry and a kept log
// (returned, nil when the test brought its own logger).
func testDefaults(t testing.TB, name string, listenHTTP *string, interval, threshold *time.Duration,
	reg **prometheus.Registry, log **logrus.Entry) *LogBuffer {
	if *listenHTTP == "" {
		*listenHTTP = "127.0.0.1:0"
	}
	if *interval == 0 {
		*interval = Interval
	}
	if *threshold == 0 {
		*threshold = Threshold
	}
	if *reg == nil {
		*reg = prometheus.NewRegistry()
	}
	if *log != nil {
		return nil
	}
	var logs *LogBuffer
	*log, logs = Logger(t, name)
	return logs
}

// StartForwarder starts a forwarder on ephemeral ports. Zero fields of opts
// get test values: 127.0.0.1:0, tcp://127.0.0.1:*, Interval, Threshold, a
// fresh registry and a kept log.
func StartForwarder(t testing.TB, opts forwarder.Options) *Forwarder {
	t.Helper()
	if opts.ListenZMQ == "" {
		opts.ListenZMQ = "tcp://127.0.0.1:*"
	}
	logs := testDefaults(t, "forwarder", &opts.ListenHTTP, &opts.HeartbeatInterval, &opts.HeartbeatThreshold, &opts.Registry, &opts.Log)
	f, err := forwarder.New(opts)
	if err != nil {
		t.Fatalf("forwarder.New: %v", err)
	}
	stop := runDaemon(t, "forwarder", f.Run)
	tf := &Forwarder{Forwarder: f, Reg: opts.Registry, Log: logs, URL: "http://" + f.HTTPAddr(), Stop: stop}
	remember(forwarders, f.ZMQAddr(), tf, t)
	return tf
}

// Client is a client of the forwarder's API with the admin token.
func (f *Forwarder) Client() *Client { return NewClient(f.URL, f.AdminToken()) }

// Enroll creates endpoint id, as `switchyard endpoint create` does, and
// returns its credential; an endpoint this test enrolled before keeps its
// key (so a restarted forwarder's endpoint can be enrolled again).
func (f *Forwarder) Enroll(t testing.TB, id string) *curve.Credentials {
	t.Helper()
	return credentialsFor(t, f.ZMQAddr(), curve.KindEndpoint, id)
}

// User makes a token for a user (an admin one when admin) and returns a
// client of the forwarder that sends it.
func (f *Forwarder) User(t testing.TB, name string, admin bool) *Client {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	f.Client().Must(t, http.StatusCreated, http.MethodPost, "/v1/tokens", map[string]any{"user": name, "admin": admin}, &out)
	return NewClient(f.URL, out.Token)
}

// Share lets users submit to endpoint ep, as its owner (the admin) does
// with `switchyard endpoint share`.
func (f *Forwarder) Share(t testing.TB, ep string, users ...string) {
	t.Helper()
	f.Client().Must(t, http.StatusOK, http.MethodPost, "/v1/endpoints/"+ep+"/share", map[string]any{"users": users}, nil)
}

// Interchange is an interchange running inside the test.
type Interchange struct {
	*interchange.Interchange
	Reg  *prometheus.Registry
	Log  *LogBuffer
	URL  string
	Stop func()
	// Dir is its state dir ("" when it keeps state in memory).
	Dir string
}

// StartInterchange starts an interchange on ephemeral ports. opts.Forwarder
// must be set; EndpointID defaults to "ep1".
func StartInterchange(t testing.TB, opts interchange.Options) *Interchange {
	t.Helper()
	if opts.EndpointID == "" {
		opts.EndpointID = "ep1"
	}
	if opts.ListenManagers == "" {
		opts.ListenManagers = "tcp://127.0.0.1:*"
	}
	logs := testDefaults(t, "interchange "+opts.EndpointID, &opts.ListenHTTP, &opts.HeartbeatInterval, &opts.HeartbeatThreshold, &opts.Registry, &opts.Log)
	if opts.Credentials == nil && !opts.Insecure {
		opts.Credentials = credentialsFor(t, opts.Forwarder, curve.KindEndpoint, opts.EndpointID)
	}
	ix, err := interchange.New(opts)
	if err != nil {
		t.Fatalf("interchange.New: %v", err)
	}
	stop := runDaemon(t, "interchange", ix.Run)
	ti := &Interchange{Interchange: ix, Reg: opts.Registry, Log: logs, URL: "http://" + ix.HTTPAddr(), Stop: stop, Dir: opts.StateDir}
	remember(interchanges, ix.ManagersAddr(), ti, t)
	return ti
}

// Client is a client of the interchange's admin HTTP with its token.
func (ix *Interchange) Client() *Client { return NewClient(ix.URL, ix.AdminToken()) }

// Manager is a manager running inside the test.
type Manager struct {
	*manager.Manager
	Reg  *prometheus.Registry
	Log  *LogBuffer
	URL  string
	Stop func()
}

// StartManager starts a manager. opts.Interchange must be set; Workers
// defaults to 2, ListenHTTP to 127.0.0.1:0.
func StartManager(t testing.TB, opts manager.Options) *Manager {
	t.Helper()
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	// CI runs the tests as root; a manager there must be allowed to be.
	opts.AllowRoot = opts.AllowRoot || os.Geteuid() == 0
	logs := testDefaults(t, "manager "+opts.ManagerID, &opts.ListenHTTP, &opts.HeartbeatInterval, &opts.HeartbeatThreshold, &opts.Registry, &opts.Log)
	if opts.Credentials == nil && !opts.Insecure {
		opts.Credentials = credentialsFor(t, opts.Interchange, curve.KindManager, "")
	}
	if opts.DrainGrace == 0 {
		// Tests stop managers with tasks running; keep their drain short.
		opts.DrainGrace = 500 * time.Millisecond
	}
	mg, err := manager.New(opts)
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	stop := runDaemon(t, "manager "+mg.ID(), mg.Run)
	return &Manager{Manager: mg, Reg: opts.Registry, Log: logs, URL: "http://" + mg.HTTPAddr(), Stop: stop}
}

// Client is a client of the manager's admin HTTP with its token.
func (m *Manager) Client() *Client { return NewClient(m.URL, m.AdminToken()) }

// ChainOptions shape a full in-process endpoint.
type ChainOptions struct {
	Endpoint    string // default "ep1"
	Managers    int    // default 2
	Workers     int    // per manager, default 4
	Prefetch    int    // per manager
	Interval    time.Duration
	Threshold   time.Duration
	MaxRetries  int
	OutputLimit int
	// DrainGrace is the managers' --drain-grace.
	DrainGrace time.Duration
	// MaxBodyBytes is passed to the forwarder.
	MaxBodyBytes int64
	// Persist gives the forwarder and the interchange state directories
	// under t.TempDir(), so their stores are used; otherwise they keep
	// state in memory only.
	Persist bool
}

// Chain is a forwarder, one interchange and its managers, all in-process.
type Chain struct {
	Endpoint    string
	Forwarder   *Forwarder
	Interchange *Interchange
	Managers    []*Manager
	Client      *Client
}

// StartChain starts forwarder, interchange and managers and waits until the
// forwarder sees the endpoint connected with every manager registered.
// Cleanup stops them in reverse order: managers, interchange, forwarder.
func StartChain(t testing.TB, o ChainOptions) *Chain {
	t.Helper()
	if o.Endpoint == "" {
		o.Endpoint = "ep1"
	}
	if o.Managers == 0 {
		o.Managers = 2
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.Interval == 0 {
		o.Interval = Interval
	}
	if o.Threshold == 0 {
		o.Threshold = Threshold
	}
	c := &Chain{Endpoint: o.Endpoint}
	var fdir, idir string
	if o.Persist {
		base := t.TempDir()
		fdir, idir = filepath.Join(base, "forwarder"), filepath.Join(base, "interchange")
	}
	c.Forwarder = StartForwarder(t, forwarder.Options{HeartbeatInterval: o.Interval, HeartbeatThreshold: o.Threshold,
		MaxBodyBytes: o.MaxBodyBytes, StateDir: fdir})
	c.Client = c.Forwarder.Client()
	c.Interchange = StartInterchange(t, interchange.Options{EndpointID: o.Endpoint, Forwarder: c.Forwarder.ZMQAddr(),
		HeartbeatInterval: o.Interval, HeartbeatThreshold: o.Threshold, MaxRetries: o.MaxRetries, StateDir: idir,
		Credentials: c.Forwarder.Enroll(t, o.Endpoint)})
	for i := 0; i < o.Managers; i++ {
		c.Managers = append(c.Managers, StartManager(t, manager.Options{Interchange: c.Interchange.ManagersAddr(),
			Credentials: c.Interchange.ManagerCredentials(),
			ManagerID:   fmt.Sprintf("m%d", i+1), Workers: o.Workers, Prefetch: o.Prefetch,
			HeartbeatInterval: o.Interval, HeartbeatThreshold: o.Threshold, OutputLimit: o.OutputLimit, DrainGrace: o.DrainGrace}))
	}
	WaitFor(t, 20*time.Second, func() error {
		var ep struct {
			Connected bool `json:"connected"`
			Managers  int  `json:"managers"`
			Workers   int  `json:"workers"`
		}
		code, body, err := c.Client.Do(http.MethodGet, "/v1/endpoints/"+o.Endpoint, nil, &ep)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !ep.Connected || ep.Managers != o.Managers {
			return fmt.Errorf("endpoint not ready: HTTP %d %s", code, body)
		}
		return nil
	})
	return c
}
