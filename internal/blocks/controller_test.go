package blocks_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

// buildSwitchyard builds bin/switchyard into a temporary directory.
func buildSwitchyard(t *testing.T) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go command to build cmd/switchyard with")
		}
	}
	out := filepath.Join(t.TempDir(), "switchyard")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/switchyard-hpc/switchyard/cmd/switchyard")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/switchyard: %v\n%s", err, b)
	}
	return out
}

// harness drives a Blocks controller against an in-process forwarder and
// interchange the way the interchange's loop will: Tick with the queue and
// the managers the interchange reports.
type harness struct {
	t     *testing.T
	b     *blocks.Blocks
	reg   *prometheus.Registry
	fwd   *testutil.Forwarder
	ix    *testutil.Interchange
	c     *testutil.Client
	start time.Time
	// first time each event was seen, for the timeline
	events map[string]time.Duration
	order  []string
	ep     string
}

func newHarness(t *testing.T, cfg *blocks.Config, p blocks.Provider, bin string) *harness {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, reg: prometheus.NewRegistry(), events: map[string]time.Duration{}, ep: "ep1"}
	h.fwd = testutil.StartForwarder(t, forwarder.Options{})
	h.ix = testutil.StartInterchange(t, interchange.Options{EndpointID: h.ep, Forwarder: h.fwd.ZMQAddr()})
	h.c = testutil.NewClient(h.fwd.URL)
	log, _ := testutil.Logger(t, "blocks")
	b, err := blocks.New(blocks.Options{Config: cfg, Provider: p, StateDir: t.TempDir(), Registry: h.reg, Log: log,
		Manager: blocks.ManagerCommand{Binary: bin, Interchange: h.ix.ManagersAddr(),
			Args: []string{"--heartbeat-interval=50ms", "--heartbeat-threshold=500ms"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	h.start = time.Now()
	return h
}

func (h *harness) mark(event string) {
	if _, ok := h.events[event]; !ok {
		h.events[event] = time.Since(h.start)
		h.order = append(h.order, event)
	}
}

func (h *harness) timeline() string {
	var s []string
	for _, e := range h.order {
		s = append(s, fmt.Sprintf("%s %s", h.events[e].Round(10*time.Millisecond), e))
	}
	return strings.Join(s, "; ")
}

// tick feeds the controller what the interchange reports and records
// the timeline.
func (h *harness) tick() {
	st := h.ix.Status()
	load := blocks.Load{Queued: st.Queued}
	for _, m := range st.ManagerList {
		load.Managers = append(load.Managers, blocks.Manager{BlockID: m.BlockID, Capacity: int(m.Workers + m.Prefetch), Held: m.Outstanding})
	}
	for _, d := range h.b.Tick(time.Now(), load) {
		if _, seen := h.events[d.Kind.String()]; seen && d.Kind == blocks.Backoff {
			continue
		}
		h.mark(d.Kind.String())
		h.t.Logf("%s decision %s %d %s: %s", time.Since(h.start).Round(time.Millisecond), d.Kind, d.Count, d.Block, d.Reason)
	}
	for _, v := range h.b.View() {
		h.mark("a block " + v.State)
	}
	if len(st.ManagerList) > 0 {
		h.mark("first manager registered")
	}
}

func (h *harness) count(state string) int {
	n := 0
	for _, v := range h.b.View() {
		if v.State == state {
			n++
		}
	}
	return n
}

// waitFor ticks the controller while it polls cond.
func (h *harness) waitFor(timeout time.Duration, cond func() error) {
	h.t.Helper()
	testutil.WaitFor(h.t, timeout, func() error {
		h.tick()
		return cond()
	})
}

func (h *harness) submitSleeps(n int, secs string) []string {
	tasks := make([]any, n)
	for i := range tasks {
		tasks[i] = map[string]any{"kind": "sleep", "args": []string{secs}}
	}
	ids, err := h.c.Submit(h.ep, tasks...)
	if err != nil {
		h.t.Fatal(err)
	}
	return ids
}

// waitTasks ticks until every task ended and returns how many succeeded.
func (h *harness) waitTasks(ids []string, timeout time.Duration) (ok, failed int) {
	h.t.Helper()
	h.waitFor(timeout, func() error {
		vs, err := h.c.Status(ids)
		if err != nil {
			return err
		}
		ok, failed = 0, 0
		for _, v := range vs {
			switch {
			case v.State == "success":
				ok++
			case v.Terminal():
				failed++
			}
		}
		if ok+failed < len(ids) {
			return fmt.Errorf("%d of %d tasks ended", ok+failed, len(ids))
		}
		return nil
	})
	return ok, failed
}

func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

// TestLocalBlocksScaleOutAndIn: from 0 blocks, queued tasks start blocks
// of real `switchyard manager` processes within one strategy period, all
// tasks succeed, and idle blocks go away after max-idle, down to min.
func TestLocalBlocksScaleOutAndIn(t *testing.T) {
	bin := buildSwitchyard(t)
	cfg := &blocks.Config{Provider: "local", MinBlocks: 0, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 4,
		Walltime: 0, MaxIdle: time.Second, Period: 100 * time.Millisecond, CancelGrace: 5 * time.Second}
	p := blocks.NewLocal(5 * time.Second)
	h := newHarness(t, cfg, p, bin)
	h.tick()
	if n := len(h.b.View()); n != 0 {
		t.Fatalf("%d blocks before any task, want 0", n)
	}
	ids := h.submitSleeps(200, "0.05")
	h.mark("200 tasks submitted")
	h.waitFor(10*time.Second, func() error {
		if n := metric(t, h.reg, "switchyard_interchange_block_submits_total"); n != 2 {
			return fmt.Errorf("%v blocks submitted", n)
		}
		return nil
	})
	if d := h.events["submit"] - h.events["200 tasks submitted"]; d > time.Second {
		t.Logf("note: first submit %s after the tasks (the interchange learns of them first)", d)
	}
	ok, failed := h.waitTasks(ids, 60*time.Second)
	h.mark("last task ended")
	if ok != len(ids) {
		t.Fatalf("%d of %d tasks succeeded, %d failed", ok, len(ids), failed)
	}
	h.waitFor(20*time.Second, func() error {
		if n := h.count("done"); n != 2 {
			return fmt.Errorf("%d blocks done: %+v", n, h.b.View())
		}
		return nil
	})
	h.mark("scaled in to 0")
	if n := metric(t, h.reg, "switchyard_interchange_blocks", "state", "running"); n != 0 {
		t.Fatalf("%v blocks still running", n)
	}
	if n := metric(t, h.reg, "switchyard_interchange_scale_decisions_total", "decision", "drain"); n != 2 {
		t.Fatalf("%v drain decisions, want 2", n)
	}
	if n := metric(t, h.reg, "switchyard_interchange_block_failures_total"); n != 0 {
		t.Fatalf("%v block failures", n)
	}
	for _, v := range h.b.View() {
		if v.JobID == "" || v.SubmittedAt.IsZero() || v.StartedAt == nil {
			t.Errorf("block view lacks its job id or times: %+v", v)
		}
	}
	t.Logf("timeline: %s", h.timeline())
}

// TestSlurmBlocks runs the controller with the slurm provider on a real
// one-node cluster and real `switchyard manager` processes started by srun.
func TestSlurmBlocks(t *testing.T) {
	bin := buildSwitchyard(t)
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 5 * time.Second})

	t.Run("scale out, tasks succeed, scale in", func(t *testing.T) {
		cfg := &blocks.Config{Provider: "slurm", MinBlocks: 0, MaxBlocks: 1, NodesPerBlock: 1, WorkersPerNode: 2,
			Walltime: 10 * time.Minute, MaxIdle: time.Second, Period: 200 * time.Millisecond}
		p := blocks.NewSlurm(cfg)
		p.Env = c.Env()
		h := newHarness(t, cfg, p, bin)
		h.tick()
		ids := h.submitSleeps(100, "0.05")
		h.mark("100 tasks submitted")
		ok, failed := h.waitTasks(ids, 90*time.Second)
		h.mark("last task ended")
		if ok != len(ids) {
			t.Fatalf("%d of %d tasks succeeded, %d failed", ok, len(ids), failed)
		}
		h.waitFor(60*time.Second, func() error {
			if n := h.count("done"); n != 1 {
				return fmt.Errorf("%d blocks done: %+v", n, h.b.View())
			}
			return nil
		})
		h.mark("scaled in to 0")
		v := h.b.View()[0]
		st, err := c.JobState(v.JobID)
		if err != nil || st != "CANCELLED" && st != "COMPLETED" {
			t.Fatalf("job %s of the drained block is %q (%v)", v.JobID, st, err)
		}
		t.Logf("timeline: %s", h.timeline())
	})

	t.Run("scancel of a running block: a new one replaces it", func(t *testing.T) {
		cfg := &blocks.Config{Provider: "slurm", MinBlocks: 1, MaxBlocks: 1, NodesPerBlock: 1, WorkersPerNode: 2,
			Walltime: 10 * time.Minute, MaxIdle: time.Minute, Period: 200 * time.Millisecond}
		p := blocks.NewSlurm(cfg)
		p.Env = c.Env()
		h := newHarness(t, cfg, p, bin)
		var first blocks.View
		h.waitFor(60*time.Second, func() error {
			vs := h.b.View()
			if len(vs) != 1 || vs[0].State != "running" || vs[0].Managers != 1 {
				return fmt.Errorf("blocks: %+v", vs)
			}
			first = vs[0]
			return nil
		})
		if _, err := c.Output("scancel", first.JobID); err != nil {
			t.Fatal(err)
		}
		h.mark("scancel")
		h.waitFor(60*time.Second, func() error {
			vs := h.b.View()
			if len(vs) != 2 || vs[0].State != "done" || vs[1].State != "running" || vs[1].Managers != 1 {
				return fmt.Errorf("blocks: %+v", vs)
			}
			return nil
		})
		h.mark("replacement running with its manager")
		t.Logf("timeline: %s", h.timeline())
	})

	t.Run("rejected sbatch is a failure, backed off", func(t *testing.T) {
		cfg := &blocks.Config{Provider: "slurm", MinBlocks: 1, MaxBlocks: 1, NodesPerBlock: 1, Walltime: 10 * time.Minute,
			Partition: "nosuchpartition", Period: 50 * time.Millisecond, BackoffBase: time.Second, BackoffMax: 4 * time.Second}
		p := blocks.NewSlurm(cfg)
		p.Env = c.Env()
		h := newHarness(t, cfg, p, bin)
		h.waitFor(30*time.Second, func() error {
			if n := metric(t, h.reg, "switchyard_interchange_block_failures_total"); n != 1 {
				return fmt.Errorf("%v failures", n)
			}
			return nil
		})
		failedAt := time.Now()
		vs := h.b.View()
		if len(vs) != 1 || vs[0].State != "failed" || !strings.Contains(vs[0].Reason, "invalid partition") {
			t.Fatalf("blocks: %+v, want one failed with sbatch's reason", vs)
		}
		// Ticking every few ms for 600ms: still one submission, backoff decisions.
		testutil.WaitFor(t, 5*time.Second, func() error {
			h.tick()
			if time.Since(failedAt) < 600*time.Millisecond {
				return fmt.Errorf("ticking")
			}
			return nil
		})
		if n := metric(t, h.reg, "switchyard_interchange_block_submits_total"); n != 1 {
			t.Fatalf("%v submissions within the back-off, want 1", n)
		}
		if n := metric(t, h.reg, "switchyard_interchange_scale_decisions_total", "decision", "backoff"); n != 1 {
			t.Fatalf("%v backoff decisions counted, want 1 (once per failure, not per tick)", n)
		}
		// After the back-off (1s) it tries again, and fails again: 2s next.
		h.waitFor(10*time.Second, func() error {
			if n := metric(t, h.reg, "switchyard_interchange_block_failures_total"); n != 2 {
				return fmt.Errorf("%v failures", n)
			}
			return nil
		})
		t.Logf("second try %s after the first failure (back-off 1s)", time.Since(failedAt).Round(10*time.Millisecond))
		if d := time.Since(failedAt); d < time.Second {
			t.Fatalf("retried after %s, inside the 1s back-off", d)
		}
	})
}
