package chain_test

import (
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// Equal managers with a large prefetch get equal shares of a big queue:
// each dispatch pass splits the whole queue, not what the managers before
// it in the pass left over.
func TestFairShareAcrossEqualManagers(t *testing.T) {
	o := testutil.ChainOptions{Managers: 4, Workers: 4, Prefetch: 2000, Interval: 100 * time.Millisecond, Threshold: 10 * time.Second}
	ch := testutil.StartChain(t, o)
	specs := make([]any, 4000)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"0.01"}}
	}
	ids, err := ch.Client.Submit(ch.Endpoint, specs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range ch.Client.WaitTerminal(t, ids, 120*time.Second) {
		if v.State != "success" {
			t.Fatalf("task %s: %s", v.TaskID, v.State)
		}
	}
	lo, hi := 1e9, 0.0
	for _, m := range ch.Managers {
		n := testutil.Metric(t, m.Reg, "switchyard_manager_tasks_completed_total", "state", "success")
		lo, hi = min(lo, n), max(hi, n)
	}
	t.Logf("tasks per manager: min %g, max %g, max/min %.3f", lo, hi, hi/lo)
	if hi/lo > 1.10 {
		t.Fatalf("equal managers got %g to %g tasks (max/min %.2f > 1.10)", lo, hi, hi/lo)
	}
}
