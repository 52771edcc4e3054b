package blocks

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// managerDrainGrace is the manager's own --drain-grace default.
const managerDrainGrace = 10 * time.Second

var memRE = regexp.MustCompile(`^[1-9][0-9]*[KMGT]?$`)

// validateResources checks the job resource flags.
func (c *Config) validateResources() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Provider == ProviderLocal {
		if c.NoExclusive || c.MemPerNode != "" || c.GPUsPerNode != 0 {
			bad("--no-exclusive, --mem-per-node and --gpus-per-node apply to --provider slurm only")
		}
		return errs
	}
	if c.NoExclusive && c.WorkersPerNode < 1 {
		bad("--no-exclusive needs --workers-per-node: a shared node gives a job only the CPUs it asks for (--cpus-per-task)")
	}
	if c.MemPerNode != "" && !memRE.MatchString(c.MemPerNode) {
		bad("--mem-per-node %q: legal forms are a number of megabytes or one with K, M, G or T, e.g. 64G", c.MemPerNode)
	}
	if c.GPUsPerNode < 0 || c.GPUsPerNode > 1024 {
		bad("--gpus-per-node %d must be between 0 and 1024", c.GPUsPerNode)
	}
	return errs
}

// resourceLines are the #SBATCH lines for what each node gives the block.
func (s *Slurm) resourceLines(workers int) []string {
	var out []string
	if s.NoExclusive {
		out = append(out, fmt.Sprintf("#SBATCH --cpus-per-task=%d", max(workers, 1)))
	} else {
		out = append(out, "#SBATCH --exclusive")
	}
	if s.MemPerNode != "" {
		out = append(out, "#SBATCH --mem="+s.MemPerNode)
	}
	if s.GPUsPerNode > 0 {
		out = append(out, fmt.Sprintf("#SBATCH --gpus-per-node=%d", s.GPUsPerNode))
	}
	return out
}

// srunResources gives the managers' step the job's CPUs: since Slurm
// 22.05 srun does not inherit --cpus-per-task, and a step asks for one
// CPU per task unless told otherwise.
func (s *Slurm) srunResources(workers int) string {
	if s.NoExclusive {
		return fmt.Sprintf("--cpus-per-task=%d", max(workers, 1))
	}
	return "--whole"
}

// drainGraceArg keeps the managers' drain grace below the cluster's
// KillWait, so running tasks are given back before SIGKILL; "" when the
// grace in force already fits or KillWait is unknown.
func drainGraceArg(killWait time.Duration, args []string) (string, time.Duration) {
	if killWait <= 0 {
		return "", 0
	}
	grace := managerDrainGrace
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--drain-grace=")
		if !ok && a == "--drain-grace" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok {
			if d, err := time.ParseDuration(v); err == nil {
				grace = d
			}
		}
	}
	// Room after the grace to stop the tasks and tell the interchange.
	limit := killWait - max(killWait/4, time.Second)
	if limit <= 0 {
		limit = killWait / 2
	}
	if grace <= limit {
		return "", grace
	}
	return "--drain-grace=" + limit.String(), limit
}

// readKillWait asks the cluster for its KillWait (scontrol show config).
func (s *Slurm) readKillWait(ctx context.Context) (time.Duration, error) {
	out, err := s.run(ctx, "", "scontrol", "show", "config")
	if err != nil {
		return 0, err
	}
	return parseKillWait(out)
}

// parseKillWait reads "KillWait = 30 sec" from scontrol's output.
func parseKillWait(out string) (time.Duration, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.TrimSpace(k) != "KillWait" {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			return 0, fmt.Errorf("KillWait %q: %v", v, err)
		}
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("no KillWait in scontrol show config")
}

// explainFailures adds the end of a failed job's output to its reason:
// Slurm says only "NonZeroExitCode"; the why is in job.out.
func (s *Slurm) explainFailures(out map[string]JobStatus) {
	for id, st := range out {
		if st.State != JobFailed {
			continue
		}
		s.mu.Lock()
		dir := s.dirs[id]
		s.mu.Unlock()
		if dir == "" {
			continue
		}
		path := filepath.Join(dir, "job.out")
		if tail := lastLines(path, 5, 600); tail != "" {
			st.Reason += "; " + path + " ends: " + tail
		} else {
			st.Reason += "; see " + path
		}
		out[id] = st
	}
}

// lastLines is the last n non-empty lines of a file joined by " | ", at
// most max bytes.
func lastLines(path string, n, limit int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > 64<<10 {
		data = data[len(data)-64<<10:]
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.Join(lines, " | ")
	if len(s) > limit {
		s = "…" + s[len(s)-limit:]
	}
	return s
}
