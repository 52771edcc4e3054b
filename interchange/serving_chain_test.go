package interchange_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/manager"
)

func endpointView(t *testing.T, c *testutil.Client) map[string]any {
	t.Helper()
	var v map[string]any
	c.Must(t, http.StatusOK, http.MethodGet, "/v1/endpoints/ep1", nil, &v)
	return v
}

// Overrides travel forwarder -> interchange -> manager as commands, the
// effective state holds tasks where docs/contract.md (Serving states) says,
// bad input changes nothing, and an unforced override cannot hide real
// queue pressure.
func TestServingStateThroughForwarder(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{})
	c := f.Client()
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: f.ZMQAddr(),
		Pressure: servingstate.Thresholds{PauseQueued: 20, ResumeQueued: 10}})
	api := "/v1/endpoints/ep1/servingState"
	testutil.WaitFor(t, 10*time.Second, func() error {
		var v map[string]any
		code, body, err := c.Do(http.MethodGet, "/v1/endpoints/ep1", nil, &v)
		if err != nil || code != http.StatusOK || v["connected"] != true {
			return fmt.Errorf("endpoint not connected: %v %d %s", err, code, body)
		}
		return nil
	})

	if got := f.Client().Text(t, api); !strings.Contains(got, "Current state: NONE_PAUSED") || !strings.Contains(got, "Override: none") {
		t.Fatalf("GET through the forwarder:\n%s", got)
	}

	// Pause everything through the forwarder.
	code, body := f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "PUSH_AND_DISPATCH_PAUSED", "timeout", "1m")
	if code != http.StatusOK || !strings.Contains(body, "Serving state forced to PUSH_AND_DISPATCH_PAUSED; the override clears itself after 1m.") {
		t.Fatalf("POST pause: %d %q", code, body)
	}
	if got := ix.Client().Text(t, "/servingState"); !strings.Contains(got, "Current state: PUSH_AND_DISPATCH_PAUSED") || !strings.Contains(got, "clears in") {
		t.Fatalf("interchange after the override:\n%s", got)
	}
	if v := testutil.Metric(t, ix.Reg, "switchyard_interchange_serving_override_active", "state", "PUSH_AND_DISPATCH_PAUSED"); v != 1 {
		t.Fatalf("override_active metric = %v, want 1", v)
	}

	// Bad input: 400 with the legal values, and no change.
	for _, tc := range [][]string{{"state", "INVALID"}, {"state", "PUSH_PAUSED", "timeout", "1k"}, {"state", "NONE_PAUSED", "force", "maybe"}} {
		code, body := f.Client().Form(t, "/v1/endpoints/ep1/servingState", tc...)
		if code != http.StatusBadRequest {
			t.Fatalf("POST %v: %d %q, want 400", tc, code, body)
		}
		if tc[1] == "INVALID" && !strings.Contains(body, "Invalid state 'INVALID'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED") {
			t.Fatalf("refusal %q", body)
		}
		if tc[len(tc)-1] == "1k" && !strings.Contains(body, "Invalid timeout '1k'") {
			t.Fatalf("refusal %q", body)
		}
	}
	if got := ix.Client().Text(t, "/servingState"); !strings.Contains(got, "Current state: PUSH_AND_DISPATCH_PAUSED") {
		t.Fatalf("bad input changed the state:\n%s", got)
	}

	// Dispatch paused: tasks reach the interchange's queue but do not run.
	m := testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 2})
	ids, err := c.Submit("ep1", manyTasks(5)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := ix.Status(); s.Managers != 1 || s.Queued != 0 && s.Queued != 5 || s.ServingState != "PUSH_AND_DISPATCH_PAUSED" {
			return fmt.Errorf("interchange status %+v", s)
		}
		return nil
	})
	hb0 := testutil.Metric(t, m.Reg, "switchyard_manager_heartbeats_received_total")
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, m.Reg, "switchyard_manager_heartbeats_received_total"); n < hb0+5 {
			return fmt.Errorf("%v heartbeats since the pause", n-hb0)
		}
		return nil
	})
	ts, err := c.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.Terminal() {
			t.Fatalf("task %s ran while dispatch was paused: %s", tv.TaskID, tv.State)
		}
	}

	// One manager's own override, through the forwarder.
	code, body = f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "PUSH_PAUSED", "manager", "m1")
	if code != http.StatusOK || !strings.Contains(body, "forced to PUSH_PAUSED") {
		t.Fatalf("POST manager override: %d %q", code, body)
	}
	if got := m.Client().Text(t, "/servingState"); !strings.Contains(got, "Override: PUSH_PAUSED") {
		t.Fatalf("manager after its override:\n%s", got)
	}
	if code, body = f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "", "manager", "m1"); code != http.StatusOK {
		t.Fatalf("clear manager override: %d %q", code, body)
	}

	// Clearing the endpoint's override lets the tasks run.
	code, body = f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "")
	if code != http.StatusOK || !strings.Contains(body, "Override cleared. Current state: NONE_PAUSED") {
		t.Fatalf("clear: %d %q", code, body)
	}
	for _, tv := range c.WaitTerminal(t, ids, 20*time.Second) {
		if tv.State != "success" {
			t.Fatalf("task %s: %s", tv.TaskID, tv.State)
		}
	}

	// Real pressure: with the manager paused the queue passes 20, the
	// interchange measures PUSH_PAUSED and the forwarder holds the rest.
	if code, body = m.Client().Form(t, "/servingState", "state", "PUSH_AND_DISPATCH_PAUSED"); code != http.StatusOK {
		t.Fatalf("pause manager: %d %q", code, body)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := ix.Status(); len(s.ManagerList) != 1 || s.ManagerList[0].ServingState != "PUSH_AND_DISPATCH_PAUSED" {
			return fmt.Errorf("manager list %+v", s.ManagerList)
		}
		return nil
	})
	more, err := c.Submit("ep1", manyTasks(200)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		v := endpointView(t, c)
		if v["serving_state"] != "PUSH_PAUSED" {
			return fmt.Errorf("endpoint serving state %v", v["serving_state"])
		}
		return nil
	})
	// The unforced, less restrictive override is refused and changes nothing.
	code, body = f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "NONE_PAUSED")
	if code != http.StatusConflict || !strings.Contains(body, "would hide real pressure") {
		t.Fatalf("unforced NONE_PAUSED under pressure: %d %q, want 409", code, body)
	}
	if got := ix.Client().Text(t, "/servingState"); !strings.Contains(got, "Current state: PUSH_PAUSED") || !strings.Contains(got, "Override: none") {
		t.Fatalf("refused override changed the state:\n%s", got)
	}
	// New tasks wait at the forwarder while the endpoint refuses pushes.
	later, err := c.Submit("ep1", manyTasks(50)...)
	if err != nil {
		t.Fatal(err)
	}
	more = append(more, later...)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if held := endpointView(t, c)["held_by_forwarder"].(float64); held != 50 {
			return fmt.Errorf("the forwarder holds %v tasks while the endpoint is PUSH_PAUSED, want 50", held)
		}
		return nil
	})
	ts, err = c.Status(later)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.State != "waiting-for-endpoint" {
			t.Fatalf("task %s submitted during a pause reads %s", tv.TaskID, tv.State)
		}
	}
	// Forced, it applies and the forwarder sends what it held.
	code, body = f.Client().Form(t, "/v1/endpoints/ep1/servingState", "state", "NONE_PAUSED", "force", "true")
	if code != http.StatusOK || !strings.Contains(body, "Forced below the measured PUSH_PAUSED") {
		t.Fatalf("forced NONE_PAUSED: %d %q", code, body)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if h := endpointView(t, c)["held_by_forwarder"].(float64); h != 0 {
			return fmt.Errorf("forwarder still holds %v", h)
		}
		return nil
	})
	if v := testutil.Metric(t, ix.Reg, "switchyard_interchange_serving_override_active", "state", "NONE_PAUSED", "forced", "true"); v != 1 {
		t.Fatalf("forced override metric = %v", v)
	}
	if code, _ = m.Client().Form(t, "/servingState", "state", ""); code != http.StatusOK {
		t.Fatalf("clear manager: %d", code)
	}
	for _, tv := range c.WaitTerminal(t, more, 30*time.Second) {
		if tv.State != "success" {
			t.Fatalf("task %s: %s", tv.TaskID, tv.State)
		}
	}
}

func manyTasks(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"kind": "noop"}
	}
	return out
}
