package slurmtest_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/launch"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// The interchange scales its managers on a real Slurm cluster by itself:
// from no block, 2,000 short tasks start blocks within one strategy period
// and all succeed; idle blocks go back to --min-blocks; a scancel'd block
// fails no task and is replaced; a block near its walltime is drained and
// replaced before Slurm kills it.
func TestInterchangeScalesSlurmBlocks(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 10 * time.Second, CPUs: 16})
	for _, kv := range c.Env() {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "SLURM_CONF" {
			t.Setenv("SLURM_CONF", v)
		}
	}
	args := append(launch.Manager{Common: launch.Common{HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 3 * time.Second},
		DrainGrace: time.Second}.Flags(), testutil.AllowRootArgs(bin)...)
	cfg := &blocks.Config{Provider: blocks.ProviderSlurm, MinBlocks: 0, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 8, NoExclusive: true,
		Walltime: time.Minute, MaxIdle: 2 * time.Second, Period: 500 * time.Millisecond, ManagerArgs: args}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 3 * time.Second})
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: fwd.ZMQAddr(), StateDir: t.TempDir(),
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 3 * time.Second, Blocks: cfg, ManagerBinary: bin})
	client := fwd.Client()
	count := func(state string) int {
		n := 0
		for _, b := range ix.Status().Blocks {
			if b.State == state {
				n++
			}
		}
		return n
	}
	live := func() int { return count("pending") + count("running") + count("draining") }
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := fwd.Endpoint("ep1"); !v.Connected {
			return fmt.Errorf("endpoint not connected")
		}
		return nil
	})

	// 1. Scale out from nothing, run 2,000 tasks, scale back in.
	specs := make([]any, 2000)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"0.05"}}
	}
	t0 := time.Now()
	ids, err := client.Submit("ep1", specs...)
	if err != nil {
		t.Fatal(err)
	}
	var submitted, firstManager time.Duration
	testutil.WaitFor(t, 60*time.Second, func() error {
		if submitted == 0 && len(ix.Status().Blocks) > 0 {
			submitted = time.Since(t0)
		}
		if ix.Status().Managers == 0 {
			return fmt.Errorf("no manager yet: %+v", ix.Status().Blocks)
		}
		firstManager = time.Since(t0)
		return nil
	})
	for _, v := range client.WaitTerminal(t, ids, 120*time.Second) {
		if v.State != "success" {
			t.Fatalf("task %s: %s (%s)", v.TaskID, v.State, v.Error)
		}
	}
	lastTask := time.Since(t0)
	testutil.WaitFor(t, 60*time.Second, func() error {
		if n := live(); n != 0 {
			return fmt.Errorf("%d blocks still live", n)
		}
		return nil
	})
	t.Logf("scale-out: block submitted %s after the tasks, first manager %s, last of 2000 tasks %s, back to 0 blocks %s (max-idle 2s, period 500ms)",
		submitted.Round(time.Millisecond), firstManager.Round(time.Millisecond), lastTask.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	// 2. scancel a running block with tasks on it: none fails, another
	// block takes them. 3. Its replacement reaches its walltime margin and
	// is drained and replaced before Slurm would kill it.
	marker := t.TempDir() + "/go"
	spec := map[string]any{"kind": "exec", "args": []string{"sh", "-c", "while [ ! -e " + marker + " ]; do sleep 0.05; done"}}
	long := make([]any, 4)
	for i := range long {
		long[i] = spec
	}
	ids, err = client.Submit("ep1", long...)
	if err != nil {
		t.Fatal(err)
	}
	var victim blocks.View
	testutil.WaitFor(t, 60*time.Second, func() error {
		vs, err := client.Status(ids)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if v.State != "running" {
				return fmt.Errorf("task %s %s", v.TaskID, v.State)
			}
		}
		for _, b := range ix.Status().Blocks {
			if b.State == "running" && b.Managers > 0 {
				victim = b
				return nil
			}
		}
		return fmt.Errorf("no running block")
	})
	t1 := time.Now()
	if _, err := c.Output("scancel", victim.JobID); err != nil {
		t.Fatal(err)
	}
	var replaced time.Duration
	testutil.WaitFor(t, 60*time.Second, func() error {
		for _, b := range ix.Status().Blocks {
			if b.BlockID != victim.BlockID && b.State == "running" && b.Managers > 0 && b.SubmittedAt.After(t1) {
				replaced = time.Since(t1)
				return nil
			}
		}
		return fmt.Errorf("no replacement yet: %+v", ix.Status().Blocks)
	})
	vs, err := client.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Terminal() {
			t.Fatalf("task %s ended %s (%s) when its block was cancelled", v.TaskID, v.State, v.Error)
		}
	}
	t.Logf("scancel of block %s (job %s): a new block ran its tasks %s later", victim.BlockID, victim.JobID, replaced.Round(time.Millisecond))

	// The blocks running now reach the walltime margin (30s before 1m):
	// each is drained and replaced; the tasks are given back, not failed.
	t2 := time.Now()
	testutil.WaitFor(t, 90*time.Second, func() error {
		if n := testutil.Metric(t, ix.Reg, "switchyard_interchange_scale_decisions_total", "decision", "replace"); n < 1 {
			return fmt.Errorf("no walltime replacement yet")
		}
		return nil
	})
	t.Logf("walltime: a block was drained and replaced %s after the previous step (walltime 1m, margin 30s)", time.Since(t2).Round(time.Second))
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range client.WaitTerminal(t, ids, 90*time.Second) {
		if v.State != "success" {
			t.Errorf("task %s: %s (%s)", v.TaskID, v.State, v.Error)
		}
	}
	for _, b := range ix.Status().Blocks {
		if b.State == "failed" {
			t.Errorf("block %s failed: %s", b.BlockID, b.Reason)
		}
	}
}
