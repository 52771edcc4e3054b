package manager

import (
	"errors"
	"fmt"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
)

// Options configure a Manager.
type Options struct {
	Interchange string
	ManagerID   string
	Workers     int
	// Prefetch is how many tasks it holds beyond its workers; below 0
	// (--prefetch not given) the interchange decides, up to
	// MaxAdaptivePrefetch, from measured task durations and round trips.
	Prefetch   int
	adaptive   bool
	ListenHTTP string
	// HTTP sets TLS and the connection caps of the admin HTTP listener.
	HTTP               httpx.Config
	StateDir           string
	BlockID            string
	HeartbeatInterval  time.Duration
	HeartbeatThreshold time.Duration
	// InheritHeartbeat: take the interchange's heartbeat interval and
	// threshold from its answer to the registration (the command line
	// sets it when neither flag was given).
	InheritHeartbeat bool
	// OutputLimit caps each of stdout and stderr kept from an exec task.
	OutputLimit int
	Pressure    servingstate.Thresholds
	// Pprof serves /debug/pprof/ on the HTTP listener (with the token).
	Pprof bool
	// AllowRoot lets the manager run as root; without it New refuses,
	// since every task would run as root.
	AllowRoot bool
	// TaskEnv names variables of the manager's environment passed on to
	// tasks, besides PATH, HOME, USER, LANG and TMPDIR.
	TaskEnv  []string
	Log      *logrus.Entry
	Registry *prometheus.Registry
	Version  string
	// Credentials hold the interchange's public key and this endpoint's
	// manager key pair (the interchange writes them to
	// STATE_DIR/manager.credentials). Required unless Insecure.
	Credentials *curve.Credentials
	// Insecure turns CurveZMQ off on the link to the interchange and
	// serves the admin HTTP without a token.
	Insecure bool
	// DrainGrace is how long running tasks may go on after SIGTERM before
	// they are stopped and returned to the queue (default 10s).
	DrainGrace time.Duration

	// PythonWorkers is how many Python worker processes run python tasks
	// (0: as many as Workers); they start at the first python task. A
	// process serves one owner for its life; an owner may use them all.
	PythonWorkers int
	// PythonIdle is how long an idle Python worker is kept for its owner's
	// next call (default DefaultPythonIdle); one is stopped sooner when
	// another owner needs its slot.
	PythonIdle time.Duration
	// Python is the interpreter of the Python workers (default python3).
	Python string
}

func (o *Options) keys() *link.ClientKeys {
	if o.Insecure || o.Credentials == nil {
		return nil
	}
	c := o.Credentials
	return &link.ClientKeys{ServerKey: c.ServerKey, Public: c.Client.Public, Secret: c.Client.Secret}
}

// DefaultDrainGrace is --drain-grace's default.
const DefaultDrainGrace = 10 * time.Second

// DefaultPythonIdle is how long an idle Python worker waits for its
// owner's next call: long enough to keep a user's burst warm, short
// enough that workers of users gone quiet do not hold memory for long.
const DefaultPythonIdle = 5 * time.Minute

// MaxAdaptivePrefetch bounds what an interchange may have a manager
// without --prefetch hold beyond its workers.
const MaxAdaptivePrefetch = 1000

// DefaultInterchange is where a manager connects unless told otherwise.
const DefaultInterchange = "tcp://127.0.0.1:55002"

func (o *Options) setDefaults() error {
	if os.Geteuid() == 0 && !o.AllowRoot {
		return errors.New("manager: refusing to run as root, since every task would run as root too; run it as an unprivileged user, or pass --allow-root")
	}
	for _, n := range o.TaskEnv {
		if n == "" || strings.ContainsAny(n, "=\x00") {
			return fmt.Errorf("--task-env %q: give a variable name, like --task-env CUDA_VISIBLE_DEVICES", n)
		}
	}
	if o.Interchange == "" {
		o.Interchange = DefaultInterchange
	}
	if o.ManagerID == "" {
		host, _ := os.Hostname()
		o.ManagerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if len(o.ManagerID) > 200 {
		return fmt.Errorf("--manager-id is %d bytes; the limit is 200", len(o.ManagerID))
	}
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.Workers < 0 || o.Workers > 100000 {
		return fmt.Errorf("--workers %d must be between 1 and 100000", o.Workers)
	}
	if o.Prefetch < 0 {
		o.adaptive = true
		o.Prefetch = MaxAdaptivePrefetch
	}
	if err := heartbeat.Defaults(&o.HeartbeatInterval, &o.HeartbeatThreshold); err != nil {
		return err
	}
	if o.DrainGrace == 0 {
		o.DrainGrace = DefaultDrainGrace
	}
	if o.DrainGrace < 0 {
		return fmt.Errorf("--drain-grace %s must be positive", o.DrainGrace)
	}
	if o.PythonWorkers == 0 {
		o.PythonWorkers = o.Workers
	}
	if o.PythonWorkers < 0 || o.PythonWorkers > o.Workers {
		return fmt.Errorf("--python-workers %d must be between 1 and --workers (%d); 0 means the same as --workers", o.PythonWorkers, o.Workers)
	}
	if o.Python == "" {
		o.Python = "python3"
	}
	if o.PythonIdle <= 0 {
		o.PythonIdle = DefaultPythonIdle
	}
	if o.OutputLimit <= 0 {
		o.OutputLimit = 64 << 10
	}
	if err := o.Pressure.Validate(); err != nil {
		return err
	}
	if !o.Insecure {
		if o.Credentials == nil {
			return fmt.Errorf("the manager needs --credentials FILE (the interchange writes it to its STATE_DIR/manager.credentials), or --insecure to run without CurveZMQ")
		}
		if err := o.Credentials.Check(curve.KindManager); err != nil {
			return fmt.Errorf("--credentials: %w", err)
		}
	}
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.New())
	}
	o.Log = o.Log.WithFields(logrus.Fields{"component": "manager", "manager": o.ManagerID})
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	return nil
}
