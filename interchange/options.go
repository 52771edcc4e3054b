package interchange

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/heartbeat"

	"github.com/switchyard-hpc/switchyard/internal/store"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
)

// Options configure an Interchange.
type Options struct {
	EndpointID     string
	Forwarder      string
	ListenManagers string
	ListenHTTP     string
	StateDir       string
	// Fsync makes every store commit survive a host crash, not only a
	// process crash (each group commit then waits for the disk).
	Fsync bool
	// NoPersist keeps state in memory only (for benchmarks and tests).
	NoPersist          bool
	HeartbeatInterval  time.Duration
	HeartbeatThreshold time.Duration
	// MaxRetries is how many times a task is re-queued after its manager
	// is lost before it fails: 0 means the default (2), -1 means never.
	MaxRetries int
	Pressure   servingstate.Thresholds
	// AdaptiveGC lowers the Go GC target while the queue is long, trading
	// a little CPU for memory per queued task. It changes a process-wide
	// setting, so only a process that runs nothing else should set it.
	AdaptiveGC bool
	// Pprof serves /debug/pprof/ on the HTTP listener (with the token).
	Pprof bool
	// Credentials is the enrollment file of 'switchyard endpoint create'
	// (endpoint id, its key pair, the forwarder's public key); the
	// endpoint id is taken from it when EndpointID is empty.
	Credentials string
	// Enrollment is what Credentials holds, read by setDefaults.
	Enrollment *curve.Credentials
	// Insecure serves the admin HTTP without a token.
	Insecure bool
	Log      *logrus.Entry
	Registry *prometheus.Registry
	Version  string
}

// Defaults as documented in design.md.
const (
	DefaultForwarder      = "tcp://127.0.0.1:55001"
	DefaultListenManagers = "tcp://127.0.0.1:55002"
	DefaultListenHTTP     = "127.0.0.1:8081"
	DefaultMaxRetries     = 2
)

func (o *Options) setDefaults() error {
	if o.Credentials != "" && o.Enrollment == nil {
		c, err := curve.ReadCredentials(o.Credentials, curve.KindEndpoint)
		if err != nil {
			return fmt.Errorf("interchange: --credentials: %w", err)
		}
		if o.EndpointID == "" {
			o.EndpointID = c.ID
		} else if o.EndpointID != c.ID {
			return fmt.Errorf("interchange: --endpoint-id %q but --credentials %s enrolls endpoint %q; drop --endpoint-id or use that endpoint's credentials", o.EndpointID, o.Credentials, c.ID)
		}
		o.Enrollment = c
	}
	if o.EndpointID == "" {
		return fmt.Errorf("--endpoint-id is required: the name users submit tasks to")
	}
	if o.Forwarder == "" {
		o.Forwarder = DefaultForwarder
	}
	if o.ListenManagers == "" {
		o.ListenManagers = DefaultListenManagers
	}
	if o.ListenHTTP == "" {
		o.ListenHTTP = DefaultListenHTTP
	}
	if err := heartbeat.Defaults(&o.HeartbeatInterval, &o.HeartbeatThreshold); err != nil {
		return err
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries == -1:
		o.MaxRetries = 0
	case o.MaxRetries < 0:
		return fmt.Errorf("--max-retries %d must be 0 or more", o.MaxRetries)
	}
	if err := o.Pressure.Validate(); err != nil {
		return err
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	o.Log = o.Log.WithFields(logrus.Fields{"component": "interchange", "endpoint": o.EndpointID})
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	return nil
}

func (o *Options) durability() store.Durability {
	if o.Fsync {
		return store.SurviveHostCrash
	}
	return store.SurviveProcessCrash
}
