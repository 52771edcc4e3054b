// Package blocks starts and stops an endpoint's managers in blocks, the
// way Parsl's providers and dask-jobqueue do: a Provider submits, watches
// and cancels blocks (batch jobs, or child processes), Decide is the
// scaling strategy as a pure function, and Blocks is the controller the
// interchange's loop owns.
//
// It lives under internal/ because it is a part of the interchange, not a
// daemon or a public API: the contract is the interchange's flags, the
// "blocks" list of GET /v1/endpoints/{ep} and the metrics, and keeping the
// Go API internal lets it change while the interchange integrates it.
package blocks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// JobState is what a provider knows of a block's job.
type JobState int

const (
	JobUnknown JobState = iota // the provider has no record of it
	JobPending                 // queued by the scheduler, not started
	JobRunning
	JobDone   // ended normally: drained, cancelled, or its managers exited
	JobFailed // never started, or ended with an error
)

func (s JobState) String() string {
	switch s {
	case JobPending:
		return "pending"
	case JobRunning:
		return "running"
	case JobDone:
		return "done"
	case JobFailed:
		return "failed"
	}
	return "unknown"
}

// JobStatus is a job's state and, for ended jobs, why.
type JobStatus struct {
	State  JobState
	Reason string
	// Since is when the job started running, when the provider knows.
	Since time.Time
}

// Spec is one block to start.
type Spec struct {
	BlockID string
	// Dir is the block's own directory (STATE_DIR/blocks/<block-id>); the
	// provider keeps its script and logs there.
	Dir            string
	Nodes          int // managers: one per node
	WorkersPerNode int // 0: the manager's default (its CPU count)
	Walltime       time.Duration
	// WorkerInit is shell text run before the managers start.
	WorkerInit string
	Manager    ManagerCommand
}

// Provider starts, watches and stops blocks. Implementations: local
// (child processes) and slurm. Calls may be slow (sbatch can take seconds);
// the controller makes them from a goroutine of its own, one at a time.
type Provider interface {
	// Name is the --provider value.
	Name() string
	// Submit starts a block and returns its job id.
	Submit(ctx context.Context, spec Spec) (jobID string, err error)
	// Status reports the jobs in one call. A job missing from the map is
	// unknown to the provider.
	Status(ctx context.Context, jobIDs []string) (map[string]JobStatus, error)
	// Cancel asks the job to end: its managers get SIGTERM and drain, and
	// are killed if they outlast the provider's grace.
	Cancel(ctx context.Context, jobID string) error
	// Close releases the provider. The local provider stops its managers;
	// the slurm provider leaves jobs running, since managers reconnect to
	// a restarted interchange.
	Close(ctx context.Context) error
}

// ManagerCommand is how a block starts `switchyard manager`.
type ManagerCommand struct {
	// Binary is the switchyard executable. Empty: $SWITCHYARD_BIN, else
	// the running executable (see Binary).
	Binary string
	// Interchange is the address managers connect to.
	Interchange string
	// Credentials is the interchange's manager credential file; empty
	// when the interchange runs with --insecure.
	Credentials string
	// AllowRoot passes --allow-root on, as the interchange had it.
	AllowRoot bool
	// Args are extra arguments (--manager-arg).
	Args []string
}

// Binary finds the switchyard executable managers run: SWITCHYARD_BIN
// when set, else the absolute path of the running binary. Batch nodes
// must see the same path (a shared filesystem), or SWITCHYARD_BIN must
// name the binary's path on the nodes.
func Binary() (string, error) {
	if p := os.Getenv("SWITCHYARD_BIN"); p != "" {
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("SWITCHYARD_BIN=%q must be an absolute path", p)
		}
		return p, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the switchyard binary for managers (set SWITCHYARD_BIN): %w", err)
	}
	return p, nil
}

// args is the manager's command line after the binary; managerID may be
// empty when the job script names the manager itself.
func (m ManagerCommand) args(blockID, managerID string, workers int, listenHTTP string) []string {
	return launch.Manager{Common: launch.Common{ListenHTTP: listenHTTP}, ManagerID: managerID, Interchange: m.Interchange,
		BlockID: blockID, Workers: workers, Credentials: m.Credentials, AllowRoot: m.AllowRoot, Extra: m.Args}.Args()
}

// setsHTTP reports whether --manager-arg chose the managers' HTTP address.
func (m ManagerCommand) setsHTTP() bool {
	for _, a := range m.Args {
		if a == "--listen-http" || strings.HasPrefix(a, "--listen-http=") {
			return true
		}
	}
	return false
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
