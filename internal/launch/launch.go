// Package launch is the one place that turns "start this daemon like so"
// into the command line of `switchyard forwarder|interchange|manager`.
// `switchyard endpoint up`, the blocks' managers, the bench and the test
// harnesses all build their argv here, so a flag renamed in the CLI breaks
// one package and its test, not five hand-written lists.
//
// The flag names are the daemons' public contract; cmd/switchyard's tests
// parse every argv built here with the real cobra commands.
//
// A zero field leaves its flag out, so the daemon's own default applies.
// Fields whose zero is a meaningful value (a prefetch of 0, a walltime of
// 0) are pointers: nil leaves the flag out.
package launch

import (
	"strconv"
	"time"
)

// Common are the flags every daemon has.
type Common struct {
	ListenHTTP         string
	StateDir           string
	HeartbeatInterval  time.Duration
	HeartbeatThreshold time.Duration
	LogFormat          string
	LogLevel           string
	Pprof              bool
	Insecure           bool
}

// Forwarder is `switchyard forwarder`.
type Forwarder struct {
	Common
	ListenZMQ string
	// Store is --store ("" for the default).
	Store     string
	NoPersist bool
	Fsync     bool
	// Extra are more arguments, appended last (so they win).
	Extra []string
}

// Interchange is `switchyard interchange`.
type Interchange struct {
	Common
	EndpointID     string
	Credentials    string
	Forwarder      string
	ListenManagers string
	NoPersist      bool
	Fsync          bool
	MaxRetries     *int
	PauseQueued    int
	ResumeQueued   int
	// AllowRoot is passed on to the managers of blocks.
	AllowRoot bool
	// Blocks, when set, lets the interchange start its own managers.
	Blocks *Blocks
	Extra  []string
}

// Blocks are the interchange's block flags.
type Blocks struct {
	Provider       string // blocks.ProviderLocal or blocks.ProviderSlurm
	MinBlocks      int
	InitBlocks     int
	MaxBlocks      int
	WorkersPerNode int
	MaxIdle        time.Duration
	Period         time.Duration // --block-period
	Walltime       *time.Duration
	// ManagerArgs go to every manager of a block (--manager-arg).
	ManagerArgs []string
}

// Manager is `switchyard manager`.
type Manager struct {
	Common
	ManagerID   string
	Interchange string
	BlockID     string
	Workers     int
	Prefetch    *int
	Credentials string
	Python      string
	DrainGrace  time.Duration
	AllowRoot   bool
	Extra       []string
}

// argv collects flags in a fixed order; joined writes "--name=value" as
// one argument instead of two.
type argv struct {
	out    []string
	joined bool
}

func (a *argv) str(name, v string) {
	switch {
	case v == "":
	case a.joined:
		a.out = append(a.out, name+"="+v)
	default:
		a.out = append(a.out, name, v)
	}
}

func (a *argv) num(name string, v int) {
	if v != 0 {
		a.str(name, strconv.Itoa(v))
	}
}

func (a *argv) numPtr(name string, v *int) {
	if v != nil {
		a.str(name, strconv.Itoa(*v))
	}
}

func (a *argv) dur(name string, v time.Duration) {
	if v != 0 {
		a.str(name, v.String())
	}
}

func (a *argv) flag(name string, on bool) {
	if on {
		a.out = append(a.out, name)
	}
}

func (a *argv) common(c Common) {
	a.str("--listen-http", c.ListenHTTP)
	a.str("--state-dir", c.StateDir)
	a.dur("--heartbeat-interval", c.HeartbeatInterval)
	a.dur("--heartbeat-threshold", c.HeartbeatThreshold)
	a.str("--log-format", c.LogFormat)
	a.str("--log-level", c.LogLevel)
	a.flag("--pprof", c.Pprof)
	a.flag("--insecure", c.Insecure)
}

// Args is the forwarder's command line after the binary.
func (f Forwarder) Args() []string {
	a := argv{out: []string{"forwarder"}}
	a.str("--listen-zmq", f.ListenZMQ)
	a.str("--store", f.Store)
	a.common(f.Common)
	a.flag("--no-persist", f.NoPersist)
	a.flag("--fsync", f.Fsync)
	return append(a.out, f.Extra...)
}

// Args is the interchange's command line after the binary.
func (ix Interchange) Args() []string {
	a := argv{out: []string{"interchange"}}
	a.str("--endpoint-id", ix.EndpointID)
	a.str("--credentials", ix.Credentials)
	a.str("--forwarder", ix.Forwarder)
	a.str("--listen-managers", ix.ListenManagers)
	a.common(ix.Common)
	a.flag("--no-persist", ix.NoPersist)
	a.flag("--fsync", ix.Fsync)
	a.numPtr("--max-retries", ix.MaxRetries)
	a.num("--pause-queued-tasks", ix.PauseQueued)
	a.num("--resume-queued-tasks", ix.ResumeQueued)
	a.flag("--allow-root", ix.AllowRoot)
	if b := ix.Blocks; b != nil {
		a.str("--provider", b.Provider)
		a.num("--min-blocks", b.MinBlocks)
		a.num("--init-blocks", b.InitBlocks)
		a.num("--max-blocks", b.MaxBlocks)
		a.num("--workers-per-node", b.WorkersPerNode)
		a.dur("--max-idle", b.MaxIdle)
		a.dur("--block-period", b.Period)
		if b.Walltime != nil {
			a.out = append(a.out, "--walltime", b.Walltime.String())
		}
		for _, m := range b.ManagerArgs {
			// One argument each, so a manager flag is never read as the
			// interchange's.
			a.out = append(a.out, "--manager-arg="+m)
		}
	}
	return append(a.out, ix.Extra...)
}

// Args is the manager's command line after the binary.
func (m Manager) Args() []string {
	a := argv{out: []string{"manager"}}
	m.build(&a)
	return append(a.out, m.Extra...)
}

// Flags are the manager's flags without the subcommand, each with its
// value in one argument (--name=value): the form of the interchange's
// --manager-arg, which passes them on to the managers of blocks.
func (m Manager) Flags() []string {
	a := argv{joined: true}
	m.build(&a)
	return append(a.out, m.Extra...)
}

func (m Manager) build(a *argv) {
	a.str("--manager-id", m.ManagerID)
	a.str("--interchange", m.Interchange)
	a.str("--block-id", m.BlockID)
	a.num("--workers", m.Workers)
	a.numPtr("--prefetch", m.Prefetch)
	a.str("--credentials", m.Credentials)
	a.common(m.Common)
	a.str("--python", m.Python)
	a.dur("--drain-grace", m.DrainGrace)
	a.flag("--allow-root", m.AllowRoot)
}
