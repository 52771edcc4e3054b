package chain_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/launch"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// The interchange scales its own managers (local provider): from no block
// at all, a burst of tasks starts blocks within one strategy period, every
// task succeeds, and idle blocks are drained back to --min-blocks.
func TestLocalBlocksScaleOutAndIn(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 0, MaxBlocks: 2, InitBlocks: 0, NodesPerBlock: 1,
		WorkersPerNode: 8, MaxIdle: time.Second, Period: 200 * time.Millisecond}
	args := append(launch.Manager{Common: launch.Common{HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 5 * time.Second},
		Prefetch: new(8)}.Flags(), testutil.AllowRootArgs(bin)...)
	cfg.ManagerArgs = args
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 5 * time.Second})
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: fwd.ZMQAddr(), StateDir: t.TempDir(),
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: 5 * time.Second, Blocks: cfg, ManagerBinary: bin})
	client := fwd.Client()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := fwd.Endpoint("ep1"); !v.Connected {
			return fmt.Errorf("endpoint not connected")
		}
		return nil
	})
	if n := len(ix.Status().Blocks); n != 0 {
		t.Fatalf("%d blocks before any task, want 0", n)
	}
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
	testutil.WaitFor(t, 30*time.Second, func() error {
		var v struct {
			Blocks []blocks.View `json:"blocks"`
		}
		client.Must(t, 200, "GET", "/v1/endpoints/ep1", nil, &v)
		if len(v.Blocks) == 0 || v.Blocks[0].BlockID == "" || v.Blocks[0].JobID == "" {
			return fmt.Errorf("GET /v1/endpoints/ep1 lists blocks %+v", v.Blocks)
		}
		return nil
	})
	testutil.WaitFor(t, 30*time.Second, func() error {
		st := ix.Status()
		if submitted == 0 && len(st.Blocks) > 0 {
			submitted = time.Since(t0)
		}
		if st.Managers == 0 {
			return fmt.Errorf("no manager yet; blocks %+v", st.Blocks)
		}
		firstManager = time.Since(t0)
		return nil
	})
	views := client.WaitTerminal(t, ids, 120*time.Second)
	lastTask := time.Since(t0)
	for _, v := range views {
		if v.State != "success" {
			t.Fatalf("task %s: %s (%s)", v.TaskID, v.State, v.Error)
		}
	}
	peak := 0
	for _, b := range ix.Status().Blocks {
		if b.State != "failed" {
			peak++
		}
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		st := ix.Status()
		for _, b := range st.Blocks {
			if b.State == "pending" || b.State == "running" || b.State == "draining" {
				return fmt.Errorf("block %s still %s", b.BlockID, b.State)
			}
		}
		if st.Managers != 0 {
			return fmt.Errorf("%d managers still registered", st.Managers)
		}
		return nil
	})
	scaledIn := time.Since(t0)
	t.Logf("2000 × sleep 0.05 from 0 blocks: block submitted %s, first manager %s, last task %s, %d blocks used, scaled back to 0 at %s (max-idle 1s)",
		submitted.Round(time.Millisecond), firstManager.Round(time.Millisecond), lastTask.Round(time.Millisecond), peak, scaledIn.Round(time.Millisecond))
	if peak < 1 || peak > cfg.MaxBlocks {
		t.Fatalf("%d blocks used, want 1 to %d", peak, cfg.MaxBlocks)
	}
}
