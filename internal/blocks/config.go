package blocks

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Config is the interchange's block configuration: its flags, plus tuning
// that has no flag.
type Config struct {
	Provider         string // "" or "none": no blocks
	MinBlocks        int
	MaxBlocks        int
	InitBlocks       int
	NodesPerBlock    int
	WorkersPerNode   int // 0: the manager's default, its CPU count
	Walltime         time.Duration
	Partition        string
	Account          string
	SchedulerOptions []string
	WorkerInit       string
	MaxIdle          time.Duration
	ManagerArgs      []string
	// NoExclusive: slurm jobs share their nodes and ask for
	// --cpus-per-task=WorkersPerNode instead of whole nodes.
	NoExclusive bool
	MemPerNode  string // Slurm --mem, e.g. 64G; empty: the cluster's default
	GPUsPerNode int
	// CancelOnExit: the interchange cancels its blocks when it stops and
	// waits for their jobs to end. Without it slurm jobs keep running and
	// the interchange adopts them when it starts again.
	CancelOnExit bool

	// Period is how often the strategy runs and jobs are polled.
	Period time.Duration
	// WalltimeMargin: a block is drained and replaced this long before its
	// walltime ends (default a tenth of the walltime, 30s to 10m, at most
	// half of it).
	WalltimeMargin time.Duration
	// DrainTimeout: a draining block whose job has not ended by then is
	// cancelled (SIGTERM to its managers). Default: the walltime margin,
	// or 2 minutes without a walltime.
	DrainTimeout time.Duration
	// BackoffBase and BackoffMax bound the wait after a block failed to
	// start: base, doubled at each failure in a row, up to max.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// CancelGrace: the local provider kills managers this long after
	// SIGTERM.
	CancelGrace time.Duration
	// KeepEnded is how many ended blocks the view keeps.
	KeepEnded int
}

// Provider names: the legal --provider values.
const (
	ProviderLocal = "local"
	ProviderSlurm = "slurm"
)

// Providers are the legal --provider values.
var Providers = []string{ProviderLocal, ProviderSlurm}

// AddFlags adds the block flags to fs. Call Validate on the result once
// the flags are parsed.
func AddFlags(fs *pflag.FlagSet) *Config {
	c := &Config{}
	fs.StringVar(&c.Provider, "provider", "", "start managers in blocks: local (child processes) or slurm (batch jobs); empty: managers are started by hand")
	fs.IntVar(&c.MinBlocks, "min-blocks", 0, "keep at least this many blocks")
	fs.IntVar(&c.MaxBlocks, "max-blocks", 1, "start at most this many blocks (draining blocks do not count)")
	fs.IntVar(&c.InitBlocks, "init-blocks", 0, "blocks to start at once when the interchange starts")
	fs.IntVar(&c.NodesPerBlock, "nodes-per-block", 1, "nodes per block; one manager per node")
	fs.IntVar(&c.WorkersPerNode, "workers-per-node", 0, "workers of each manager (default: the node's CPU count)")
	fs.DurationVar(&c.Walltime, "walltime", 30*time.Minute, "time limit of a block; it is drained and replaced before the end (local: 0 for none)")
	fs.StringVar(&c.Partition, "partition", "", "Slurm partition (default: the cluster's default)")
	fs.StringVar(&c.Account, "account", "", "Slurm account to charge")
	fs.StringArrayVar(&c.SchedulerOptions, "scheduler-option", nil, "extra line for the job script header, e.g. '#SBATCH --qos=x' (repeatable)")
	fs.StringVar(&c.WorkerInit, "worker-init", "", "shell commands run before the managers start, e.g. 'module load x'")
	fs.DurationVar(&c.MaxIdle, "max-idle", 2*time.Minute, "drain a block whose managers were idle this long, down to --min-blocks")
	fs.DurationVar(&c.Period, "block-period", 5*time.Second, "how often the block strategy runs and the provider is polled")
	fs.BoolVar(&c.NoExclusive, "no-exclusive", false, "slurm: share nodes with other jobs, asking for --cpus-per-task=--workers-per-node, instead of whole nodes (#SBATCH --exclusive, the default)")
	fs.StringVar(&c.MemPerNode, "mem-per-node", "", "slurm: memory per node (#SBATCH --mem), e.g. 64G; default: the cluster's")
	fs.IntVar(&c.GPUsPerNode, "gpus-per-node", 0, "slurm: GPUs per node (#SBATCH --gpus-per-node)")
	fs.BoolVar(&c.CancelOnExit, "cancel-blocks-on-exit", false, "when the interchange stops (SIGTERM), cancel its blocks and wait for their jobs to end: for stopping it for good. "+
		"Without it slurm jobs keep running and the interchange adopts them when it starts again (from STATE_DIR/blocks/blocks.json)")
	fs.StringArrayVar(&c.ManagerArgs, "manager-arg", nil, "extra argument for the block's managers, e.g. --manager-arg=--prefetch=0 (repeatable)")
	return c
}

// Enabled reports whether blocks are configured.
func (c *Config) Enabled() bool { return c.Provider != "" && c.Provider != "none" }

// reserved manager flags are set by the provider; --manager-arg cannot.
var reserved = []string{"--interchange", "--block-id", "--manager-id", "--workers", "--credentials"}

// Validate checks the flags and fills defaults. Errors say what was wrong
// and what is legal.
func (c *Config) Validate() error {
	if !c.Enabled() {
		c.Provider = ""
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Provider != ProviderLocal && c.Provider != ProviderSlurm {
		return fmt.Errorf("--provider %q is not known; legal values: %s (or empty for none)", c.Provider, strings.Join(Providers, ", "))
	}
	if c.MinBlocks < 0 || c.MaxBlocks < 0 || c.InitBlocks < 0 {
		bad("--min-blocks %d, --max-blocks %d and --init-blocks %d must not be negative", c.MinBlocks, c.MaxBlocks, c.InitBlocks)
	}
	if c.MaxBlocks < 1 {
		bad("--max-blocks %d must be at least 1 with --provider %s", c.MaxBlocks, c.Provider)
	}
	if c.MinBlocks > c.MaxBlocks {
		bad("--min-blocks %d is more than --max-blocks %d", c.MinBlocks, c.MaxBlocks)
	}
	if c.InitBlocks > c.MaxBlocks {
		bad("--init-blocks %d is more than --max-blocks %d", c.InitBlocks, c.MaxBlocks)
	}
	if c.NodesPerBlock < 1 || c.NodesPerBlock > 100000 {
		bad("--nodes-per-block %d must be between 1 and 100000", c.NodesPerBlock)
	}
	if c.WorkersPerNode < 0 || c.WorkersPerNode > 100000 {
		bad("--workers-per-node %d must be between 1 and 100000, or 0 for the node's CPU count", c.WorkersPerNode)
	}
	if c.MaxIdle < 0 {
		bad("--max-idle %s must not be negative", c.MaxIdle)
	}
	switch {
	case c.Walltime < 0:
		bad("--walltime %s must not be negative", c.Walltime)
	case c.Provider == ProviderSlurm && c.Walltime < time.Minute:
		bad("--walltime %s is too short: Slurm time limits are whole minutes, at least 1m", c.Walltime)
	}
	if c.Provider == ProviderLocal {
		for _, f := range []struct {
			name string
			set  bool
		}{{"--partition", c.Partition != ""}, {"--account", c.Account != ""}, {"--scheduler-option", len(c.SchedulerOptions) > 0}} {
			if f.set {
				bad("%s applies to --provider slurm only", f.name)
			}
		}
	}
	errs = append(errs, c.validateResources()...)
	for _, v := range []struct{ name, val string }{{"--partition", c.Partition}, {"--account", c.Account}} {
		if strings.ContainsAny(v.val, " \t\n\r'\"\\$`") {
			bad("%s %q: only a plain name is legal (no spaces, quotes or $)", v.name, v.val)
		}
	}
	for i, o := range c.SchedulerOptions {
		switch {
		case strings.ContainsAny(o, "\n\r"):
			bad("--scheduler-option %q: one line per option", o)
		case strings.HasPrefix(o, "#SBATCH "):
		case strings.HasPrefix(o, "-"):
			c.SchedulerOptions[i] = "#SBATCH " + o // --qos=x is legal shorthand
		default:
			bad("--scheduler-option %q: legal forms are '#SBATCH --opt=value' or '--opt=value'", o)
		}
	}
	for _, a := range c.ManagerArgs {
		for _, r := range reserved {
			if a == r || strings.HasPrefix(a, r+"=") {
				bad("--manager-arg %s: the block sets %s itself (legal: other manager flags, e.g. --prefetch=0)", a, r)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.defaults()
	return nil
}

func (c *Config) defaults() {
	if c.Period <= 0 {
		c.Period = 5 * time.Second
	}
	if c.WalltimeMargin <= 0 && c.Walltime > 0 {
		c.WalltimeMargin = min(max(c.Walltime/10, 30*time.Second), 10*time.Minute, c.Walltime/2)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = c.WalltimeMargin
		if c.DrainTimeout <= 0 {
			c.DrainTimeout = 2 * time.Minute
		}
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = 10 * time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 10 * time.Minute
	}
	if c.CancelGrace <= 0 {
		c.CancelGrace = 30 * time.Second
	}
	if c.KeepEnded <= 0 {
		c.KeepEnded = 20
	}
}
