package chain_test

import (
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// A restarted interchange waits, before dispatching, only until the
// managers it knew have re-registered and reported what they still run
// (not a fixed hold), says so in its log, and re-runs nothing those
// managers kept running.
func TestInterchangeRestartResyncsWithItsManagers(t *testing.T) {
	o := testutil.ChainOptions{Managers: 2, Workers: 1, Prefetch: 0, Persist: true,
		Interval: 300 * time.Millisecond, Threshold: 10 * time.Second}
	ch := testutil.StartChain(t, o)
	specs := make([]any, 6)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"1"}}
	}
	ids, err := ch.Client.Submit(ch.Endpoint, specs...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := ch.Interchange.Status(); st.Queued != 4 {
			return testutil.Errorf("queued %d, want 4 while 2 run", st.Queued)
		}
		return nil
	})
	old := ch.Interchange
	dir, addr := old.Dir, old.ManagersAddr()
	old.Stop()
	restarted := time.Now()
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: ch.Endpoint, Forwarder: ch.Forwarder.ZMQAddr(),
		ListenManagers: addr, StateDir: dir, HeartbeatInterval: o.Interval, HeartbeatThreshold: o.Threshold})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(ix.Log.String(), "every manager re-synced") {
			return testutil.Errorf("no re-sync yet")
		}
		return nil
	})
	resynced := time.Since(restarted)
	views := ch.Client.WaitTerminal(t, ids, 30*time.Second)
	for _, v := range views {
		if v.State != "success" || v.Attempts != 1 {
			t.Errorf("task %s: %s after %d attempts", v.TaskID, v.State, v.Attempts)
		}
	}
	if strings.Contains(ix.Log.String(), "did not come back") {
		t.Fatalf("the restarted interchange gave up on a manager that was alive:\n%s", ix.Log.String())
	}
	t.Logf("re-synced with both managers %s after the restart (interval %s; the old fixed hold was %s)",
		resynced.Round(time.Millisecond), o.Interval, 2*o.Interval)
}
