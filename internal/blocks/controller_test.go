package blocks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// buildSwitchyard builds bin/switchyard into a temporary directory.

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
	h.c = h.fwd.Client()
	log, _ := testutil.Logger(t, "blocks")
	// As the interchange will: its manager credential file goes to the managers.
	creds := filepath.Join(t.TempDir(), "manager.credentials")
	if err := curve.WriteCredentials(creds, h.ix.ManagerCredentials()); err != nil {
		t.Fatal(err)
	}
	b, err := blocks.New(blocks.Options{Config: cfg, Provider: p, StateDir: t.TempDir(), Registry: h.reg, Log: log,
		Manager: blocks.ManagerCommand{Binary: bin, Interchange: h.ix.ManagersAddr(), Credentials: creds,
			AllowRoot: os.Geteuid() == 0, Args: launch.Manager{Common: launch.Common{HeartbeatInterval: 50 * time.Millisecond, HeartbeatThreshold: 500 * time.Millisecond}}.Flags()}})
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
	bin := testutil.BuildSwitchyard(t)
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 0, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 4,
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
	bin := testutil.BuildSwitchyard(t)
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 5 * time.Second})

	t.Run("scale out, tasks succeed, scale in", func(t *testing.T) {
		cfg := &blocks.Config{Provider: blocks.ProviderSlurm, MinBlocks: 0, MaxBlocks: 1, NodesPerBlock: 1, WorkersPerNode: 2,
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
		cfg := &blocks.Config{Provider: blocks.ProviderSlurm, MinBlocks: 1, MaxBlocks: 1, NodesPerBlock: 1, WorkersPerNode: 2,
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
		cfg := &blocks.Config{Provider: blocks.ProviderSlurm, MinBlocks: 1, MaxBlocks: 1, NodesPerBlock: 1, Walltime: 10 * time.Minute,
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

// TestLocalBlocksWalltimeReplaced: a block near its walltime is replaced
// before the provider's limit ends it.
func TestLocalBlocksWalltimeReplaced(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 1, MaxBlocks: 1, NodesPerBlock: 1, WorkersPerNode: 1,
		Walltime: 4 * time.Second, WalltimeMargin: 2 * time.Second, MaxIdle: time.Minute, Period: 100 * time.Millisecond}
	h := newHarness(t, cfg, blocks.NewLocal(5*time.Second), bin)
	var first blocks.View
	h.waitFor(20*time.Second, func() error {
		vs := h.b.View()
		if len(vs) != 1 || vs[0].State != "running" || vs[0].Managers != 1 {
			return fmt.Errorf("blocks: %+v", vs)
		}
		first = vs[0]
		return nil
	})
	h.waitFor(20*time.Second, func() error {
		vs := h.b.View()
		if len(vs) != 2 || vs[0].State != "done" || vs[1].State != "running" || vs[1].Managers != 1 {
			return fmt.Errorf("blocks: %+v", vs)
		}
		return nil
	})
	replaced := h.events["replace"]
	limit := first.StartedAt.Sub(h.start) + cfg.Walltime
	t.Logf("timeline: %s (first block's walltime ends at %s)", h.timeline(), limit.Round(10*time.Millisecond))
	if replaced == 0 || replaced >= limit {
		t.Fatalf("replaced at %s, want before the walltime ends at %s", replaced, limit)
	}
	if n := metric(t, h.reg, "switchyard_interchange_block_failures_total"); n != 0 {
		t.Fatalf("%v failures", n)
	}
}

// TestDrainCallback: scale-in asks the interchange to drain the block's
// managers (the callback), and cancels the job only once they are gone.
func TestDrainCallback(t *testing.T) {
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 0, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 2,
		MaxIdle: 0, Period: 20 * time.Millisecond, DrainTimeout: time.Minute}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := localWith(t, "drain", 5*time.Second)
	var drained []string
	reg := prometheus.NewRegistry()
	b, err := blocks.New(blocks.Options{Config: cfg, Provider: p, StateDir: t.TempDir(), Registry: reg,
		Manager: blocks.ManagerCommand{Binary: os.Args[0], Interchange: "tcp://127.0.0.1:1"},
		Drain:   func(id string) { drained = append(drained, id) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })

	// The test plays the interchange's loop: one queued task, then a
	// manager of the block that takes it and finishes it.
	load := blocks.Load{Queued: 1}
	tick := func() []blocks.Decision { return b.Tick(time.Now(), load) }
	var id string
	testutil.WaitFor(t, 10*time.Second, func() error {
		tick()
		vs := b.View()
		if len(vs) != 1 || vs[0].JobID == "" {
			return fmt.Errorf("blocks %+v", vs)
		}
		id = vs[0].BlockID
		return nil
	})
	load = blocks.Load{Managers: []blocks.Manager{{BlockID: id, Capacity: 4, Held: 1}}}
	if tick(); b.View()[0].State != "running" || b.View()[0].Managers != 1 {
		t.Fatalf("a block with a registered manager: %+v", b.View())
	}
	if len(drained) != 0 {
		t.Fatalf("busy block drained: %v", drained)
	}
	load.Managers[0].Held = 0
	testutil.WaitFor(t, 5*time.Second, func() error {
		tick()
		if len(drained) != 1 || drained[0] != id {
			return fmt.Errorf("drained %v", drained)
		}
		return nil
	})
	if st := b.View()[0].State; st != "draining" {
		t.Fatalf("state %s after the drain, want draining", st)
	}
	// Still a manager, which said goodbye and runs a task to its end: no
	// cancel yet. Then it leaves, and the job is cancelled.
	load.Managers[0].Draining, load.Managers[0].Held = true, 1
	tick()
	if vs := b.View(); vs[0].Managers != 1 {
		t.Fatalf("draining manager not counted: %+v", vs)
	}
	if n := metric(t, reg, "switchyard_interchange_scale_decisions_total", "decision", "cancel"); n != 0 {
		t.Fatalf("cancelled while its manager drains")
	}
	load.Managers = nil
	testutil.WaitFor(t, 10*time.Second, func() error {
		tick()
		if st := b.View()[0].State; st != "done" {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})
	if n := metric(t, reg, "switchyard_interchange_blocks", "state", "done"); n != 1 {
		t.Fatalf("blocks{state=done} = %v", n)
	}
	raw, err := json.Marshal(b.View()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"block_id":"` + id + `"`, `"job_id":"local-`, `"state":"done"`, `"managers":0`, `"submitted_at":"`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("view JSON %s lacks %s", raw, k)
		}
	}
}
