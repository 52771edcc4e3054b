package blocks_test

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

func TestFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string // substring; "" for valid
		check   func(*testing.T, *blocks.Config)
	}{
		{name: "no provider: blocks off", args: nil, check: func(t *testing.T, c *blocks.Config) {
			if c.Enabled() {
				t.Error("blocks enabled without --provider")
			}
		}},
		{name: "contract example", args: []string{"--provider", "slurm", "--min-blocks", "0", "--max-blocks", "4", "--init-blocks", "0",
			"--nodes-per-block", "1", "--workers-per-node", "2", "--walltime", "30m", "--partition", "debug", "--account", "A",
			"--scheduler-option", "#SBATCH --qos=x", "--scheduler-option", "--exclusive", "--worker-init", "module load x", "--max-idle", "2m",
			"--manager-arg=--prefetch=0", "--manager-arg", "--log-format=json"},
			check: func(t *testing.T, c *blocks.Config) {
				if c.MaxBlocks != 4 || c.WorkersPerNode != 2 || c.Walltime != 30*time.Minute || c.Partition != "debug" || c.Account != "A" ||
					c.WorkerInit != "module load x" || c.MaxIdle != 2*time.Minute {
					t.Errorf("parsed %+v", c)
				}
				if strings.Join(c.SchedulerOptions, "|") != "#SBATCH --qos=x|#SBATCH --exclusive" {
					t.Errorf("scheduler options %q", c.SchedulerOptions)
				}
				if strings.Join(c.ManagerArgs, " ") != "--prefetch=0 --log-format=json" {
					t.Errorf("manager args %q", c.ManagerArgs)
				}
				if c.WalltimeMargin != 3*time.Minute || c.DrainTimeout != 3*time.Minute || c.Period <= 0 {
					t.Errorf("defaults: margin %s, drain timeout %s, period %s", c.WalltimeMargin, c.DrainTimeout, c.Period)
				}
			}},
		{name: "local defaults", args: []string{"--provider=local", "--walltime=0"}, check: func(t *testing.T, c *blocks.Config) {
			if c.MaxBlocks != 1 || c.NodesPerBlock != 1 || c.MaxIdle != 2*time.Minute || c.DrainTimeout != 2*time.Minute {
				t.Errorf("defaults %+v", c)
			}
		}},
		{name: "unknown provider", args: []string{"--provider=pbs"}, wantErr: `--provider "pbs" is not known; legal values: local, slurm`},
		{name: "min above max", args: []string{"--provider=local", "--min-blocks=3", "--max-blocks=2"}, wantErr: "--min-blocks 3 is more than --max-blocks 2"},
		{name: "init above max", args: []string{"--provider=local", "--init-blocks=3"}, wantErr: "--init-blocks 3 is more than --max-blocks 1"},
		{name: "max zero", args: []string{"--provider=local", "--max-blocks=0"}, wantErr: "--max-blocks 0 must be at least 1"},
		{name: "negative", args: []string{"--provider=local", "--min-blocks=-1"}, wantErr: "must not be negative"},
		{name: "no nodes", args: []string{"--provider=slurm", "--nodes-per-block=0"}, wantErr: "--nodes-per-block 0 must be between 1 and 100000"},
		{name: "negative workers", args: []string{"--provider=slurm", "--workers-per-node=-2"}, wantErr: "--workers-per-node -2"},
		{name: "slurm walltime in seconds", args: []string{"--provider=slurm", "--walltime=30s"}, wantErr: "Slurm time limits are whole minutes"},
		{name: "negative max idle", args: []string{"--provider=local", "--max-idle=-1s"}, wantErr: "--max-idle -1s must not be negative"},
		{name: "partition with local", args: []string{"--provider=local", "--partition=debug"}, wantErr: "--partition applies to --provider slurm only"},
		{name: "partition with a space", args: []string{"--provider=slurm", "--partition=a b"}, wantErr: "only a plain name is legal"},
		{name: "account with a dollar", args: []string{"--provider=slurm", "--account=$(x)"}, wantErr: "only a plain name is legal"},
		{name: "scheduler option on two lines", args: []string{"--provider=slurm", "--scheduler-option=#SBATCH --a\n#SBATCH --b"}, wantErr: "one line per option"},
		{name: "scheduler option not an option", args: []string{"--provider=slurm", "--scheduler-option=rm -rf /"}, wantErr: "legal forms are '#SBATCH --opt=value' or '--opt=value'"},
		{name: "manager arg the block sets", args: []string{"--provider=local", "--manager-arg=--interchange=tcp://x:1"}, wantErr: "the block sets --interchange itself"},
		{name: "manager arg block id", args: []string{"--provider=local", "--manager-arg", "--block-id"}, wantErr: "the block sets --block-id itself"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("interchange", pflag.ContinueOnError)
			cfg := blocks.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate: %v, want an error with %q", err, tc.wantErr)
			}
			if tc.check != nil && err == nil {
				tc.check(t, cfg)
			}
		})
	}
}
