package slurmtest_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// scriptEnv is what the tests of scripts/slurm-managers.sbatch share: the
// binary, the script, a cluster, an endpoint and its manager credential.
type scriptEnv struct {
	bin, script, creds string
	c                  *slurmtest.Cluster
	fwd                *testutil.Forwarder
	ix                 *testutil.Interchange
}

// newScriptEnv starts them; threshold 0 keeps the test defaults.
func newScriptEnv(t *testing.T, killWait, threshold time.Duration) *scriptEnv {
	t.Helper()
	e := &scriptEnv{bin: testutil.BuildSwitchyard(t)}
	var err error
	if e.script, err = filepath.Abs("../../scripts/slurm-managers.sbatch"); err != nil {
		t.Fatal(err)
	}
	e.c = slurmtest.Start(t, slurmtest.Options{KillWait: killWait})
	fo := forwarder.Options{HeartbeatThreshold: threshold}
	io := interchange.Options{EndpointID: "ep1", HeartbeatThreshold: threshold}
	if threshold > 0 {
		fo.HeartbeatInterval, io.HeartbeatInterval = 50*time.Millisecond, 50*time.Millisecond
	}
	e.fwd = testutil.StartForwarder(t, fo)
	io.Forwarder = e.fwd.ZMQAddr()
	e.ix = testutil.StartInterchange(t, io)
	e.creds = filepath.Join(t.TempDir(), "manager.credentials")
	if err := curve.WriteCredentials(e.creds, e.ix.ManagerCredentials()); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestManagersSbatchScript runs scripts/slurm-managers.sbatch as its header
// says, on a one-node partition: the manager registers with the block id
// of its job, serves /metrics, runs a task, and the job writes nothing in
// the submit directory or in /tmp besides its output file; scancel ends it.
func TestManagersSbatchScript(t *testing.T) {
	e := newScriptEnv(t, 5*time.Second, 0)
	bin, script, c, ix, creds := e.bin, e.script, e.c, e.ix, e.creds
	client := e.fwd.Client()

	submitDir := t.TempDir()
	// The job's temporary files go to a directory of its own: other
	// tests' managers come and go in /tmp meanwhile.
	jobTmp := t.TempDir()
	port := testutil.Port(t)
	sbatch := func(env ...string) string {
		cmd := c.Command(t.Context(), "sbatch", "--parsable", script, ix.ManagersAddr())
		cmd.Dir = submitDir
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sbatch: %v: %s", err, out)
		}
		id := strings.TrimSpace(string(out))
		t.Cleanup(func() { os.Remove("/tmp/switchyard-managers-root-" + id + ".out") })
		return id
	}

	t0 := time.Now()
	id := sbatch("TMPDIR="+jobTmp, "SWITCHYARD_BIN="+bin, fmt.Sprintf("SWITCHYARD_METRICS_PORT=%d", port), "SWITCHYARD_WORKERS=2", "SWITCHYARD_CREDENTIALS="+creds,
		"SWITCHYARD_MANAGER_ARGS="+strings.Join(append(launch.Manager{Common: launch.Common{HeartbeatInterval: 50 * time.Millisecond,
			HeartbeatThreshold: 500 * time.Millisecond}}.Flags(), testutil.AllowRootArgs(bin)...), " "))
	testutil.WaitFor(t, 60*time.Second, func() error {
		for _, m := range ix.Status().ManagerList {
			if m.BlockID == "slurm-"+id && m.ID == c.Node+"-"+id && m.Workers == 2 {
				return nil
			}
		}
		st, _ := c.JobState(id)
		return fmt.Errorf("no manager of job %s (%s) registered: %+v", id, st, ix.Status().ManagerList)
	})
	registered := time.Since(t0)
	// Python workers get their program through a pipe: nothing a task
	// could rewrite is written to disk.
	if entries, _ := os.ReadDir(jobTmp); len(entries) != 0 {
		t.Errorf("the job's manager wrote %v into its TMPDIR, want nothing", entries)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("manager metrics port: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	ids, err := client.Submit("ep1", map[string]any{"kind": "exec", "args": []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	if v := client.WaitTerminal(t, ids, 30*time.Second); v[0].State != "success" {
		t.Fatalf("task on the job's manager: %+v", v[0])
	}
	t1 := time.Now()
	if _, err := c.Output("scancel", id); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		if st, err := c.JobState(id); err != nil || st != "CANCELLED" {
			return fmt.Errorf("job %s is %q (%v)", id, st, err)
		}
		return nil
	})
	t.Logf("sbatch → manager registered %s; scancel → job CANCELLED %s", registered.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))

	if entries, _ := os.ReadDir(submitDir); len(entries) != 0 {
		t.Errorf("the job wrote into the submit directory: %v", entries)
	}
	// Nor does it leave anything there as it exits.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if entries, _ := os.ReadDir(jobTmp); len(entries) != 0 {
			return fmt.Errorf("the job left files in its TMPDIR: %v", entries)
		}
		return nil
	})
	out, err := os.ReadFile("/tmp/switchyard-managers-root-" + id + ".out")
	if err != nil {
		t.Fatalf("job output not at /tmp/switchyard-managers-USER-JOBID.out: %v", err)
	}
	if !strings.Contains(string(out), `"component":"manager"`) {
		t.Errorf("job output lacks the manager's JSON log:\n%s", out)
	}

	// Without SWITCHYARD_BIN and with no switchyard on PATH, the job says
	// what to do and fails at once.
	bad := sbatch("SWITCHYARD_BIN=", "PATH=/usr/bin:/bin")
	testutil.WaitFor(t, 60*time.Second, func() error {
		if st, err := c.JobState(bad); err != nil || st != "FAILED" {
			return fmt.Errorf("job %s is %q (%v)", bad, st, err)
		}
		return nil
	})
	out, _ = os.ReadFile("/tmp/switchyard-managers-root-" + bad + ".out")
	if !strings.Contains(string(out), "set SWITCHYARD_BIN to the binary's absolute path") {
		t.Errorf("job without a binary says:\n%s", out)
	}
}
