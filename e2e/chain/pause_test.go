package chain_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// probe makes a synchronous round trip forwarder → interchange → forwarder:
// ZeroMQ keeps order on a connection, so any batch the forwarder sent
// before it has reached the interchange once the probe comes back.
func probe(t *testing.T, ch *testutil.Chain) {
	t.Helper()
	var v struct {
		Probe struct {
			OK bool `json:"ok"`
		} `json:"probe"`
	}
	ch.Client.Must(t, http.StatusOK, http.MethodGet, "/v1/endpoints/"+ch.Endpoint+"?probe=1", nil, &v)
	if !v.Probe.OK {
		t.Fatal("probe of the endpoint failed")
	}
}

func noops(n int) []any {
	specs := make([]any, n)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "noop"}
	}
	return specs
}

// checkHeld checks that no task reached the interchange and that every
// task waits at the forwarder.
func checkHeld(t *testing.T, ch *testutil.Chain, ids []string) {
	t.Helper()
	probe(t, ch)
	probe(t, ch)
	if n := ixMetric(t, ch, "tasks_received_total"); n != 0 {
		t.Fatalf("the interchange took %g tasks while paused", n)
	}
	vs, err := ch.Client.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.State != "waiting-for-endpoint" {
			t.Fatalf("task %s is %s while the endpoint is paused, want waiting-for-endpoint", v.TaskID, v.State)
		}
	}
}

func resumeAndFinish(t *testing.T, ch *testutil.Chain, clear func(), ids []string) {
	t.Helper()
	clear()
	for _, v := range ch.Client.WaitTerminal(t, ids, 30*time.Second) {
		if v.State != "success" {
			t.Fatalf("task %s ended %s after the pause was cleared", v.TaskID, v.State)
		}
	}
}

// A pause set through the forwarder holds from the moment it is answered:
// a submission right after it stays upstream until the pause ends.
func TestPauseThroughForwarderHoldsAtOnce(t *testing.T) {
	ch := testutil.StartChain(t, oneManager)
	path := "/v1/endpoints/" + ch.Endpoint + "/servingState"
	ch.Client.Must(t, http.StatusOK, http.MethodPost, path, map[string]any{"state": "PUSH_PAUSED"}, nil)
	ids, err := ch.Client.Submit(ch.Endpoint, noops(100)...)
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, ch, ids)
	resumeAndFinish(t, ch, func() {
		ch.Client.Must(t, http.StatusOK, http.MethodPost, path, map[string]any{"state": ""}, nil)
	}, ids)
}

// A pause set on the interchange itself, which the forwarder has not heard
// of yet: the batches it pushes are given back, and wait upstream.
func TestPauseOnInterchangeGivesBatchesBack(t *testing.T) {
	ch := testutil.StartChain(t, oneManager)
	ix := ch.Interchange.Client()
	ix.Must(t, http.StatusOK, http.MethodPost, "/servingState", map[string]any{"state": "PUSH_PAUSED"}, nil)
	ids, err := ch.Client.Submit(ch.Endpoint, noops(100)...)
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, ch, ids)
	if n := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_tasks_nacked_total"); n != 100 && n != 0 {
		t.Logf("%g tasks given back (the rest were held once the paused report arrived)", n)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		v, _ := ch.Forwarder.Endpoint(ch.Endpoint)
		if v.ServingState != "PUSH_PAUSED" {
			return fmt.Errorf("forwarder sees %s", v.ServingState)
		}
		return nil
	})
	resumeAndFinish(t, ch, func() {
		ix.Must(t, http.StatusOK, http.MethodPost, "/servingState", map[string]any{"state": ""}, nil)
	}, ids)
}

// An interchange that stops says goodbye: the forwarder shows the endpoint
// gone at once, not after the heartbeat threshold.
func TestInterchangeStopShowsDisconnectedAtOnce(t *testing.T) {
	o := oneManager
	o.Threshold = time.Minute
	ch := testutil.StartChain(t, o)
	ch.Interchange.Stop()
	testutil.WaitFor(t, 10*time.Second, func() error {
		v, _ := ch.Forwarder.Endpoint(ch.Endpoint)
		if v.Connected || v.LostReason != "said goodbye" {
			return fmt.Errorf("endpoint view %+v", v)
		}
		return nil
	})
}

// A drain command through the forwarder makes one manager finish what it
// runs, take nothing new, and leave; its queued tasks run elsewhere with
// their first attempt.
func TestDrainCommandThroughForwarder(t *testing.T) {
	o := testutil.ChainOptions{Managers: 2, Workers: 2, Prefetch: 4, Interval: 100 * time.Millisecond, Threshold: 5 * time.Second}
	ch := testutil.StartChain(t, o)
	specs := make([]any, 24)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"0.3"}}
	}
	ids, err := ch.Client.Submit(ch.Endpoint, specs...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := ch.Managers[0].Status(); st.Held == 0 {
			return fmt.Errorf("m1 holds nothing yet")
		}
		return nil
	})
	var out struct {
		Message string `json:"message"`
	}
	ch.Client.Must(t, http.StatusAccepted, http.MethodPost, "/v1/endpoints/"+ch.Endpoint+"/managers/m1/drain", nil, &out)
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, m := range ch.Interchange.Status().ManagerList {
			if m.ID == "m1" {
				return fmt.Errorf("m1 still listed (draining=%v)", m.Draining)
			}
		}
		return nil
	})
	for _, v := range ch.Client.WaitTerminal(t, ids, 30*time.Second) {
		if v.State != "success" || v.Attempts != 1 {
			t.Errorf("task %s: %s after %d attempts", v.TaskID, v.State, v.Attempts)
		}
	}
	ch.Client.Must(t, http.StatusNotFound, http.MethodPost, "/v1/endpoints/"+ch.Endpoint+"/managers/nope/drain", nil, nil)
	t.Logf("drain answered: %s", out.Message)
}

// A task killed by a signal while its manager goes on is reported failed
// (after the short wait that lets a stopping manager give it back).
func TestTaskKilledBySignalFails(t *testing.T) {
	ch := testutil.StartChain(t, oneManager)
	ids, err := ch.Client.Submit(ch.Endpoint, taskspec.Spec{Kind: "exec", Args: []string{"sh", "-c", "kill -TERM $$"}})
	if err != nil {
		t.Fatal(err)
	}
	v := ch.Client.WaitTerminal(t, ids, 20*time.Second)[0]
	if v.State != "failed" || v.Error != "signal: terminated" || v.Attempts != 1 {
		t.Fatalf("task %s: %s %q after %d attempts", v.TaskID, v.State, v.Error, v.Attempts)
	}
}
