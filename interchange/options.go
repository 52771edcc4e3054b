package interchange

import (
	"fmt"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"math"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Options configure an Interchange.
type Options struct {
	EndpointID string
	// Forwarder is the forwarder's ZMQ address, or several separated by
	// commas (forwarders sharing one database), tried in turn.
	Forwarder      string
	ListenManagers string
	ListenHTTP     string
	// HTTP sets TLS and the connection caps of the admin HTTP listener.
	HTTP     httpx.Config
	StateDir string
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
	// Pprof serves /debug/pprof/ on the HTTP listener (with the token).
	Pprof    bool
	Log      *logrus.Entry
	Registry *prometheus.Registry
	Version  string
	// Credentials enroll this endpoint with the forwarder (written by
	// `switchyard endpoint create`). Required unless Insecure.
	Credentials *curve.Credentials
	// Insecure turns CurveZMQ off on both links and serves the admin
	// HTTP without a token.
	Insecure bool
	// MaxResultBytes refuses larger results from managers.
	MaxResultBytes int
	// Blocks, when its provider is set, makes the interchange start and
	// stop managers itself (validated by the caller).
	Blocks *blocks.Config
	// AllowRoot is passed on to the managers of blocks.
	AllowRoot bool
	// ManagerBinary is the switchyard binary blocks run (default:
	// $SWITCHYARD_BIN, else this executable).
	ManagerBinary string
	// UserMap makes a multi-user endpoint (--user-map FILE): each user's
	// tasks run only on managers running as her mapped POSIX account.
	UserMap string
	// MaxBlocksPerUser caps each user's blocks on a multi-user endpoint
	// (--max-blocks-per-user; 0: only --max-blocks).
	MaxBlocksPerUser int
	// Shares weighs task owners in dispatch (--share USER=WEIGHT); an
	// owner not named weighs 1.
	Shares map[string]float64
}

// DefaultMaxResultBytes is --max-result-bytes' default.
const DefaultMaxResultBytes = 10 << 20

// maxMsgSize is the largest message either link takes: a full batch, or
// one result at the cap with room for its header.
func (o *Options) maxMsgSize() int64 {
	return int64(max(messages.MaxBatchBytes, o.MaxResultBytes)) + 1<<20
}

// Defaults as documented in docs/contract.md, "Commands".
const (
	DefaultForwarder      = "tcp://127.0.0.1:55001"
	DefaultListenManagers = "tcp://127.0.0.1:55002"
	DefaultListenHTTP     = "127.0.0.1:8081"
	DefaultMaxRetries     = 2
)

func (o *Options) setDefaults() error {
	if !o.Insecure {
		if o.Credentials == nil {
			return fmt.Errorf("the interchange needs --credentials FILE (written by `switchyard endpoint create ID --out FILE`), or --insecure to run without CurveZMQ")
		}
		if err := o.Credentials.Check(curve.KindEndpoint); err != nil {
			return fmt.Errorf("--credentials: %w", err)
		}
		if o.EndpointID == "" {
			o.EndpointID = o.Credentials.ID
		}
		if o.EndpointID != o.Credentials.ID {
			return fmt.Errorf("--endpoint-id %q does not match the credentials, which enroll endpoint %q", o.EndpointID, o.Credentials.ID)
		}
		if o.Forwarder == "" && o.Credentials.Address != "" {
			o.Forwarder = o.Credentials.Address
		}
	}
	if o.EndpointID == "" {
		return fmt.Errorf("--endpoint-id is required: the name users submit tasks to")
	}
	if o.UserMap != "" {
		switch {
		case o.Insecure:
			return fmt.Errorf("--user-map needs CurveZMQ: a multi-user endpoint tells users' managers apart by their keys (drop --insecure)")
		case o.StateDir == "":
			return fmt.Errorf("--user-map needs a --state-dir for the users' manager credentials")
		case o.AllowRoot:
			return fmt.Errorf("--user-map with --allow-root: a multi-user endpoint never runs managers as root")
		case os.Geteuid() != 0:
			return fmt.Errorf("--user-map needs the interchange to run as root, to write each user's credentials as hers and start her managers as her")
		}
	} else if o.MaxBlocksPerUser != 0 {
		return fmt.Errorf("--max-blocks-per-user applies to multi-user endpoints only (with --user-map)")
	}
	for u, w := range o.Shares {
		if !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("--share %s=%v: the weight must be a positive number", u, w)
		}
	}
	if o.MaxBlocksPerUser < 0 {
		return fmt.Errorf("--max-blocks-per-user %d must be 0 (no cap but --max-blocks) or more", o.MaxBlocksPerUser)
	}
	switch {
	case o.MaxResultBytes == 0:
		o.MaxResultBytes = DefaultMaxResultBytes
	case o.MaxResultBytes < 1024:
		return fmt.Errorf("--max-result-bytes %d is too small (minimum 1024)", o.MaxResultBytes)
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
