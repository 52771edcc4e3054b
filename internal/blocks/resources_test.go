package blocks

import (
	"strings"
	"testing"
	"time"
)

func TestSlurmResources(t *testing.T) {
	spec := Spec{BlockID: "b1", Dir: "/s/b1", Nodes: 1, WorkersPerNode: 4, Manager: ManagerCommand{Binary: "/bin/sy", Interchange: "tcp://x:1"}}
	cases := []struct {
		name      string
		cfg       Config
		killWait  time.Duration
		want, not []string
	}{
		{name: "exclusive by default", want: []string{"#SBATCH --exclusive\n", "srun --ntasks-per-node=1 --whole "}, not: []string{"--cpus-per-task", "--mem", "--drain-grace"}},
		{name: "shared nodes ask for a CPU per worker", cfg: Config{NoExclusive: true, MemPerNode: "64G", GPUsPerNode: 2},
			want: []string{"#SBATCH --cpus-per-task=4\n", "#SBATCH --mem=64G\n", "#SBATCH --gpus-per-node=2\n", "srun --ntasks-per-node=1 --cpus-per-task=4 "},
			not:  []string{"--exclusive", "--whole"}},
		{name: "drain grace kept below KillWait", killWait: 5 * time.Second, want: []string{" --drain-grace=3.75s\n", "KillWait is 5s"}},
		{name: "default grace fits a long KillWait", killWait: 30 * time.Second, not: []string{"--drain-grace"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Provider = ProviderSlurm
			tc.cfg.MaxBlocks, tc.cfg.NodesPerBlock, tc.cfg.WorkersPerNode, tc.cfg.Walltime = 1, 1, 4, time.Hour
			if err := tc.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			s := NewSlurm(&tc.cfg)
			s.KillWait = tc.killWait
			script, err := s.Script(spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(script, w) {
					t.Errorf("script lacks %q", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(script, n) {
					t.Errorf("script has %q", n)
				}
			}
			if t.Failed() {
				t.Log(script)
			}
		})
	}
	if a, g := drainGraceArg(5*time.Second, []string{"--drain-grace", "2s"}); a != "" || g != 2*time.Second {
		t.Errorf("an explicit grace below KillWait: %q %s", a, g)
	}
	if a, _ := drainGraceArg(5*time.Second, []string{"--drain-grace=20s"}); a != "--drain-grace=3.75s" {
		t.Errorf("an explicit grace above KillWait: %q", a)
	}
	kw, err := parseKillWait("JobRequeue              = 1\nKillWait                = 5 sec\nLaunchType = x\n")
	if err != nil || kw != 5*time.Second {
		t.Errorf("parseKillWait = %s, %v", kw, err)
	}
	bad := Config{Provider: ProviderSlurm, MaxBlocks: 1, NodesPerBlock: 1, Walltime: time.Hour, NoExclusive: true, MemPerNode: "lots"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--workers-per-node") || !strings.Contains(err.Error(), "64G") {
		t.Errorf("Validate = %v", err)
	}
}
