package forwarder

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/store"
)

// Options configure a Forwarder.
type Options struct {
	ListenHTTP string
	ListenZMQ  string
	StateDir   string
	// Fsync makes every store commit survive a host crash, not only a
	// process crash (each group commit then waits for the disk).
	Fsync bool
	// Retention is how long finished tasks and their results are kept:
	// 0 means the default (24h), negative means forever.
	Retention time.Duration
	// CompactInterval is the least time between two compactions of the
	// store after pruning (default 1h): a compaction makes pruned tasks'
	// arguments and results leave the store's files.
	CompactInterval time.Duration
	// Store names the task store: "pebble" (the default with a state dir),
	// "memory", or another registered implementation (SCHEME:ADDRESS).
	Store string
	// NoPersist keeps tasks in memory only (for benchmarks and tests).
	NoPersist          bool
	HeartbeatInterval  time.Duration
	HeartbeatThreshold time.Duration
	// BatchSize caps the tasks in one TaskBatch.
	BatchSize int
	// MaxInflight caps the tasks handed to one endpoint that have not
	// ended (default DefaultMaxInflight); the rest wait here, where they
	// are stored anyway, instead of being pushed and given back.
	MaxInflight int
	// MaxUnacked caps the tasks sent to one endpoint that it has not yet
	// acknowledged (default DefaultMaxUnacked).
	MaxUnacked int
	// MaxBodyBytes caps a submission body.
	MaxBodyBytes int64
	// Pprof serves /debug/pprof/ on the HTTP listener (admins only).
	Pprof bool
	// HTTP sets TLS, timeouts and the connection cap of the API server.
	HTTP httpx.Config
	// MaxTasksPerUser caps one user's tasks that have not ended (0: no
	// cap); a submission past it is refused with 429.
	MaxTasksPerUser int
	// MaxPendingBytesPerUser caps the bytes of one user's task specs not
	// yet ended, which the forwarder holds in memory (0: no cap); past it
	// a submission is refused with 429.
	MaxPendingBytesPerUser int64
	// Insecure turns security off, for benchmark comparisons and
	// debugging: the API takes requests without a token (every caller is
	// an admin) and CurveZMQ is off, so any interchange may register as
	// any endpoint. Tasks are still refused for an endpoint that has
	// neither been created nor connected.
	Insecure bool
	// NoUI turns off the web UI at /ui/ (docs/contract.md, Web UI).
	NoUI bool
	// UISessionTTL is how long a web UI sign-in lasts (default 8h).
	UISessionTTL time.Duration
	Log          *logrus.Entry
	Registry     *prometheus.Registry
}

// Defaults as documented in docs/contract.md, "Commands".
const (
	DefaultListenHTTP = "127.0.0.1:8080"
	DefaultListenZMQ  = "tcp://127.0.0.1:55001"
	DefaultRetention  = 24 * time.Hour
	// DefaultMaxTasksPerUser is the CLI's cap on one user's unfinished
	// tasks.
	DefaultMaxTasksPerUser = 1000000
	// DefaultMaxPendingBytesPerUser is the CLI's cap on the bytes of one
	// user's unfinished tasks' specs.
	DefaultMaxPendingBytesPerUser = 1 << 30
	// DefaultMaxInflight is an interchange's default pause threshold
	// (100,000 queued): tasks in flight include those on managers, so
	// the queue stays under it and no push is given back.
	DefaultMaxInflight = 100000
	// DefaultMaxUnacked: batches an interchange has not read yet wait in
	// the link in order, and a user submitting after another's backlog
	// waited for all of them (100,000 no-ops: a third of a second at full
	// speed) before the interchange's turns between owners could start
	// his tasks. An interchange acks a batch once stored, within
	// milliseconds nearby, so 2,500 do not slow it down; a link with a
	// round trip of R allows at most MaxUnacked/R tasks a second.
	DefaultMaxUnacked = 2500
	// DefaultUISessionTTL is how long a web UI sign-in lasts.
	DefaultUISessionTTL = 8 * time.Hour
)

func (o *Options) setDefaults() error {
	if o.ListenHTTP == "" {
		o.ListenHTTP = DefaultListenHTTP
	}
	if o.ListenZMQ == "" {
		o.ListenZMQ = DefaultListenZMQ
	}
	if err := heartbeat.Defaults(&o.HeartbeatInterval, &o.HeartbeatThreshold); err != nil {
		return err
	}
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.CompactInterval <= 0 {
		o.CompactInterval = time.Hour
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxUnacked <= 0 {
		o.MaxUnacked = DefaultMaxUnacked
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.UISessionTTL <= 0 {
		o.UISessionTTL = DefaultUISessionTTL
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
	if o.Log == nil {
		l := logrus.New()
		o.Log = logrus.NewEntry(l)
	}
	o.Log = o.Log.WithField("component", "forwarder")
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return nil
}

func (o *Options) durability() store.Durability {
	if o.Fsync {
		return store.SurviveHostCrash
	}
	return store.SurviveProcessCrash
}
