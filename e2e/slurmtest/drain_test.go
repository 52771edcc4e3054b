package slurmtest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Batch jobs end with SIGTERM (scancel, the time limit): the managers they
// ran drain, give their tasks back with the same attempt, and no task
// fails because its job ended. The tasks then finish on a new job.
func TestManagersDrainWhenTheirJobEnds(t *testing.T) {
	// Thresholds with room for a loaded machine: a manager declared lost
	// would re-run its tasks, which is what this test must not see.
	e := newScriptEnv(t, 10*time.Second, 10*time.Second)
	bin, script, c, ix, creds := e.bin, e.script, e.c, e.ix, e.creds
	client := e.fwd.Client()
	args := strings.Join(append(launch.Manager{Common: launch.Common{HeartbeatInterval: 50 * time.Millisecond, HeartbeatThreshold: 10 * time.Second},
		DrainGrace: 500 * time.Millisecond, Prefetch: new(0)}.Flags(), testutil.AllowRootArgs(bin)...), " ")
	sbatch := func(extra ...string) string {
		t.Helper()
		cmd := c.Command(t.Context(), "sbatch", append(append([]string{"--parsable"}, extra...), script, ix.ManagersAddr())...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(cmd.Env, "SWITCHYARD_BIN="+bin, "SWITCHYARD_WORKERS=2", "SWITCHYARD_CREDENTIALS="+creds,
			fmt.Sprintf("SWITCHYARD_METRICS_PORT=%d", testutil.Port(t)), "SWITCHYARD_MANAGER_ARGS="+args)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sbatch: %v: %s", err, out)
		}
		id := strings.TrimSpace(string(out))
		t.Cleanup(func() { os.Remove("/tmp/switchyard-managers-root-" + id + ".out") })
		return id
	}
	managerOf := func(job string) string { return c.Node + "-" + job }
	listed := func(id string) (found, draining bool) {
		for _, m := range ix.Status().ManagerList {
			if m.ID == id {
				return true, m.Draining
			}
		}
		return false, false
	}
	waitListed := func(job string) {
		t.Helper()
		testutil.WaitFor(t, 90*time.Second, func() error {
			if ok, _ := listed(managerOf(job)); !ok {
				st, _ := c.JobState(job)
				return fmt.Errorf("manager of job %s (%s) not registered", job, st)
			}
			return nil
		})
	}

	// Job a is cancelled; job b reaches its one-minute time limit.
	a := sbatch()
	b := sbatch("--time=1")
	started := time.Now()
	waitListed(a)
	waitListed(b)

	// Four tasks that run until the test lets them end: two on each job.
	marker := filepath.Join(t.TempDir(), "go")
	spec := map[string]any{"kind": "exec", "args": []string{"sh", "-c", "while [ ! -e " + marker + " ]; do sleep 0.05; done"}}
	ids, err := client.Submit("ep1", spec, spec, spec, spec)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		vs, err := client.Status(ids)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if v.State != "running" {
				return fmt.Errorf("task %s is %s", v.TaskID, v.State)
			}
		}
		return nil
	})

	t0 := time.Now()
	if _, err := c.Output("scancel", a); err != nil {
		t.Fatal(err)
	}
	var draining, gone time.Duration
	testutil.WaitFor(t, 30*time.Second, func() error {
		ok, d := listed(managerOf(a))
		if d && draining == 0 {
			draining = time.Since(t0)
		}
		if ok {
			return fmt.Errorf("manager of job %s still listed", a)
		}
		gone = time.Since(t0)
		return nil
	})
	t.Logf("scancel %s: interchange shows its manager draining after %s, gone after %s (drain grace 500ms)",
		a, draining.Round(time.Millisecond), gone.Round(time.Millisecond))

	testutil.WaitFor(t, 150*time.Second, func() error {
		if ok, _ := listed(managerOf(b)); ok {
			return fmt.Errorf("job %s has not reached its time limit yet", b)
		}
		return nil
	})
	limit := time.Since(started)
	if st, _ := c.JobState(b); st != "TIMEOUT" && st != "" {
		t.Logf("job %s ended %s", b, st)
	}

	// Nothing failed; everything waits for nodes again, with attempt 1.
	vs, err := client.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Terminal() {
			t.Fatalf("task %s ended %s (%s) when its job ended", v.TaskID, v.State, v.Error)
		}
	}
	if n := testutil.Metric(t, ix.Reg, "switchyard_interchange_tasks_returned_total"); n != 4 {
		t.Errorf("%g tasks returned, want the 4 that ran", n)
	}

	cjob := sbatch()
	waitListed(cjob)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range client.WaitTerminal(t, ids, 60*time.Second) {
		if v.State != "success" || v.Attempts != 1 {
			t.Errorf("task %s: %s after %d attempts (%s)", v.TaskID, v.State, v.Attempts, v.Error)
		}
	}
	t.Logf("time limit of job %s reached %s after submission; all 4 tasks succeeded on job %s with attempt 1", b,
		limit.Round(time.Second), cjob)
	_, _ = c.Output("scancel", cjob)
}
