package forwarder_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

const ep = "ep1"

// fakeEndpoint is a raw DEALER with identity ep1 playing the interchange.
type fakeEndpoint struct {
	*testutil.Peer
	f *testutil.Forwarder
	c *testutil.Client
}

func connect(t *testing.T, opts forwarder.Options) *fakeEndpoint {
	t.Helper()
	return connectWith(t, opts, testutil.PeerOptions{AckTasks: true})
}

// connectWith is connect with the fake interchange's options: without
// AckTasks it acknowledges nothing by itself.
func connectWith(t *testing.T, opts forwarder.Options, po testutil.PeerOptions) *fakeEndpoint {
	t.Helper()
	f, c := startForwarder(t, opts)
	f.Enroll(t, ep)
	ix := testutil.NewDealer(t, "fake interchange", ep, f.ZMQAddr(), po)
	e := &fakeEndpoint{Peer: ix, f: f, c: c}
	e.register(t)
	return e
}

// noops is n no-op task specs.
func noops(n int) []any {
	spec := make([]any, n)
	for i := range spec {
		spec[i] = map[string]any{"kind": "noop"}
	}
	return spec
}

func (e *fakeEndpoint) register(t *testing.T) {
	t.Helper()
	e.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: ep, Hostname: "test-host",
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	e.Expect(t, 5*time.Second, "Heartbeat after registering", func(r testutil.Received) bool {
		return r.Type() == messages.TypeHeartbeat
	})
	e.SetHeartbeat(testutil.Interval)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v, ok := e.f.Endpoint(ep); !ok || !v.Connected {
			return fmt.Errorf("endpoint not connected: %+v", v)
		}
		return nil
	})
}

func (e *fakeEndpoint) task(t *testing.T, id string) testutil.TaskView {
	t.Helper()
	v, err := e.c.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *fakeEndpoint) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return testutil.Metric(t, e.f.Reg, "switchyard_forwarder_"+name, labels...)
}

// received waits until the fake has been sent every id in a TaskBatch and
// returns those tasks.
func (e *fakeEndpoint) received(t *testing.T, ids []string) map[string]messages.Task {
	t.Helper()
	out := map[string]messages.Task{}
	testutil.WaitFor(t, 10*time.Second, func() error {
		clear(out)
		for _, x := range e.Tasks("") {
			out[x.ID.String()] = x
		}
		for _, id := range ids {
			if _, ok := out[id]; !ok {
				return fmt.Errorf("task %s not sent to the endpoint (%d sent)", id, len(out))
			}
		}
		return nil
	})
	return out
}

func tid(t *testing.T, s string) messages.TaskID {
	t.Helper()
	id, err := messages.ParseTaskID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestEndpointRegistration(t *testing.T) {
	e := connect(t, forwarder.Options{})
	var v forwarder.EndpointView
	e.c.Must(t, http.StatusOK, "GET", "/v1/endpoints/"+ep, nil, &v)
	if !v.Connected || v.Hostname != "test-host" || v.LastHeartbeat == nil || v.ServingState != "NONE_PAUSED" {
		t.Errorf("endpoint view %+v", v)
	}
	var all struct {
		Endpoints []forwarder.EndpointView `json:"endpoints"`
	}
	e.c.Must(t, http.StatusOK, "GET", "/v1/endpoints", nil, &all)
	if len(all.Endpoints) != 1 || all.Endpoints[0].EndpointID != ep {
		t.Errorf("endpoints %+v", all)
	}
	// Totals from a status report show up in the view, as numbers.
	e.Send(t, "", &messages.EPStatusReport{Managers: 2, Workers: 8, IdleWorkers: 3, Queued: 0, Outstanding: 5})
	testutil.WaitFor(t, 5*time.Second, func() error {
		var raw map[string]any
		e.c.Must(t, http.StatusOK, "GET", "/v1/endpoints/"+ep, nil, &raw)
		for k, want := range map[string]float64{"managers": 2, "workers": 8, "idle_workers": 3, "queued": 0, "outstanding": 5} {
			if got, ok := raw[k].(float64); !ok || got != want {
				return fmt.Errorf("%s = %v, want %g (view %v)", k, raw[k], want, raw)
			}
		}
		return nil
	})

	// A manager trying to register with the forwarder is refused.
	m := testutil.NewDealer(t, "stray manager", "ep2", e.f.ZMQAddr(), testutil.PeerOptions{})
	m.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "ep2", Workers: 1, ProtocolVersion: messages.Version})
	rep := m.ExpectType(t, 5*time.Second, "", messages.TypeErrorReply).Msg.(*messages.ErrorReply)
	if rep.Code != messages.CodeRefused || !strings.Contains(rep.Reason, "only interchanges") {
		t.Errorf("refusal %+v", rep)
	}
	if v, ok := e.f.Endpoint("ep2"); ok && v.Connected {
		t.Errorf("a manager registered as endpoint ep2")
	}
}

func TestUnknownEndpointToldToReregister(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	// "ep2" never registered: its report and a result claiming ep1's task
	// change nothing, and it is told to re-register.
	g := testutil.NewDealer(t, "ghost", "ep2", e.f.ZMQAddr(), testutil.PeerOptions{})
	g.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid(t, ids[0]), Attempt: 1, Code: messages.Success}}})
	rep := g.ExpectType(t, 5*time.Second, "", messages.TypeReregister).Msg.(*messages.Reregister)
	if !strings.Contains(rep.Reason, "Registration") {
		t.Errorf("Reregister reason %q", rep.Reason)
	}
	g.Send(t, "", &messages.EPStatusReport{Deltas: []messages.Delta{{ID: tid(t, ids[0]), Code: messages.Running, Attempt: 1}}})
	e.f.Enroll(t, "ep2")
	g.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "ep2", ProtocolVersion: messages.Version})
	g.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat) // everything before was handled
	if n := g.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeAck }); n != 0 {
		t.Errorf("an unregistered endpoint's results were acknowledged")
	}
	if v := e.task(t, ids[0]); v.State != "received" {
		t.Errorf("task state %s after messages from an unregistered endpoint, want received", v.State)
	}
	// Once registered, ep2 still cannot touch ep1's task.
	g.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid(t, ids[0]), Attempt: 1, Code: messages.Success}}})
	g.ExpectType(t, 5*time.Second, "", messages.TypeAck)
	if v := e.task(t, ids[0]); v.State != "received" {
		t.Errorf("endpoint ep2 changed a task of ep1: %s", v.State)
	}
}

func TestTasksArriveAsTaskBatch(t *testing.T) {
	e := connect(t, forwarder.Options{BatchSize: 2})
	specs := []any{
		map[string]any{"kind": "noop"},
		map[string]any{"kind": "sleep", "args": []string{"0.5"}},
		map[string]any{"kind": "exec", "args": []string{"echo", "hi"}, "timeout": "1m"},
	}
	ids, err := e.c.Submit(ep, specs...)
	if err != nil {
		t.Fatal(err)
	}
	got := e.received(t, ids)
	want := []taskspec.Spec{{Kind: "noop"}, {Kind: "sleep", Args: []string{"0.5"}}, {Kind: "exec", Args: []string{"echo", "hi"}, Timeout: "1m"}}
	for i, id := range ids {
		x := got[id]
		if x.Attempt != 1 || string(x.Payload) != string(want[i].Encode()) {
			t.Errorf("task %d: attempt %d payload %s, want %s", i, x.Attempt, x.Payload, want[i].Encode())
		}
		if v := e.task(t, id); v.State != "received" {
			t.Errorf("task %d state %s before any delta, want received", i, v.State)
		}
	}
	batches := e.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeTaskBatch })
	if batches != 2 {
		t.Errorf("%d TaskBatches for 3 tasks with BatchSize 2, want 2", batches)
	}
	if n := len(e.Tasks("")); n != 3 {
		t.Errorf("%d tasks sent, want 3 (each once)", n)
	}
}

func TestDeltasMoveStatesForwardOnly(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	id := tid(t, ids[0])
	steps := []struct {
		name      string
		delta     messages.Delta
		wantState string
		wantAtt   int
		ignored   bool
	}{
		// attempts reads 0 until the task is handed to a manager.
		{"queued", messages.Delta{ID: id, Code: messages.WaitingForNodes, Attempt: 1}, "waiting-for-nodes", 0, false},
		{"same again", messages.Delta{ID: id, Code: messages.WaitingForNodes, Attempt: 1}, "waiting-for-nodes", 0, false},
		{"running", messages.Delta{ID: id, Code: messages.Running, Attempt: 1, Runs: 1}, "running", 1, false},
		{"regress to launch", messages.Delta{ID: id, Code: messages.WaitingForLaunch, Attempt: 1}, "running", 1, true},
		{"regress to nodes", messages.Delta{ID: id, Code: messages.WaitingForNodes, Attempt: 1}, "running", 1, true},
		{"stale attempt", messages.Delta{ID: id, Code: messages.Running, Attempt: 0}, "running", 1, true},
		{"terminal code is only a hint", messages.Delta{ID: id, Code: messages.Success, Attempt: 1}, "running", 1, false},
		{"re-queued after a lost node", messages.Delta{ID: id, Code: messages.WaitingForNodes, Attempt: 2}, "waiting-for-nodes", 2, false},
		{"old attempt after re-queue", messages.Delta{ID: id, Code: messages.Running, Attempt: 1}, "waiting-for-nodes", 2, true},
		{"new attempt runs", messages.Delta{ID: id, Code: messages.Running, Attempt: 2, Runs: 2}, "running", 2, false},
		{"unknown task", messages.Delta{ID: testutil.NewTaskID(), Code: messages.Running, Attempt: 1}, "running", 2, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := e.metric(t, "stale_updates_total")
			d := s.delta
			d.At = time.Now().UnixNano()
			e.Send(t, "", &messages.EPStatusReport{Deltas: []messages.Delta{d}})
			e.Sync(t, "")
			v := e.task(t, ids[0])
			if v.State != s.wantState || v.Attempts != s.wantAtt {
				t.Fatalf("state %s attempts %d, want %s %d", v.State, v.Attempts, s.wantState, s.wantAtt)
			}
			after := e.metric(t, "stale_updates_total")
			if s.ignored && after != before+1 {
				t.Errorf("stale_updates_total %g -> %g; an ignored delta must be counted", before, after)
			}
			if !s.ignored && after != before {
				t.Errorf("stale_updates_total %g -> %g for a delta that is not stale", before, after)
			}
		})
	}
	if v := e.task(t, ids[0]); v.Runs != 2 {
		t.Errorf("runs %d after two starts, want 2", v.Runs)
	}
	if v := e.task(t, ids[1]); v.State != "received" {
		t.Errorf("the other task moved: %s", v.State)
	}
}

func TestResultAppliedOnceAndAcked(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "exec", "args": []string{"true"}}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	id := tid(t, ids[0])
	finished := time.Date(2026, 11, 22, 12, 0, 0, 4_000_000, time.UTC)
	payload := `{"exit_code":0,"stdout":"hi\n","stderr":""}`
	ok := messages.Result{ID: id, Attempt: 1, Code: messages.Success, Started: finished.Add(-time.Millisecond).UnixNano(),
		Finished: finished.UnixNano(), Payload: []byte(payload)}
	ackOf := func(id messages.TaskID) func(testutil.Received) bool {
		return func(r testutil.Received) bool {
			a, isAck := r.Msg.(*messages.Ack)
			return isAck && len(a.IDs) == 1 && a.IDs[0] == id
		}
	}

	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{ok}})
	e.Expect(t, 5*time.Second, "Ack of the result", ackOf(id))
	v := e.task(t, ids[0])
	if v.State != "success" || v.Attempts != 1 || v.CompletedAt == nil {
		t.Fatalf("after the result: %+v", v)
	}
	var res taskspec.ExecResult
	if err := json.Unmarshal(v.Result, &res); err != nil || res.Stdout != "hi\n" {
		t.Errorf("result %s: %v", v.Result, err)
	}
	if !v.CompletedAt.Equal(finished) {
		t.Errorf("completed_at %s, want the node's finish time %s", v.CompletedAt, finished)
	}

	cases := []struct {
		name string
		r    messages.Result
	}{
		{"duplicate", ok},
		{"a later failure", messages.Result{ID: id, Attempt: 1, Code: messages.Failed, Error: "boom", Finished: time.Now().UnixNano()}},
		{"a cancel", messages.Result{ID: id, Attempt: 1, Code: messages.Cancelled, Finished: time.Now().UnixNano()}},
		{"a newer attempt", messages.Result{ID: id, Attempt: 2, Code: messages.Failed, Error: "late", Finished: time.Now().UnixNano()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{tc.r}})
			// Acked all the same, so the interchange stops re-sending it.
			e.Expect(t, 5*time.Second, "Ack", ackOf(id))
			v := e.task(t, ids[0])
			if v.State != "success" || v.Attempts != 1 || v.Error != "" || !strings.Contains(string(v.Result), "hi") {
				t.Errorf("the first result did not stay: %+v", v)
			}
		})
	}
	if n := e.metric(t, "tasks_completed_total", "state", "success"); n != 1 {
		t.Errorf("tasks_completed_total{success} = %g, want 1", n)
	}
	if n := e.metric(t, "tasks_completed_total"); n != 1 {
		t.Errorf("tasks_completed_total = %g, want 1", n)
	}
	if n := e.metric(t, "duplicate_results_total"); n != float64(len(cases)) {
		t.Errorf("duplicate_results_total = %g, want %d", n, len(cases))
	}

	// A stale attempt for a task that is still running is ignored, and a
	// result for an unknown id is acknowledged and dropped.
	other := tid(t, ids[1])
	e.Send(t, "", &messages.EPStatusReport{Deltas: []messages.Delta{{ID: other, Code: messages.Running, Attempt: 3, At: time.Now().UnixNano()}}})
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: other, Attempt: 2, Code: messages.Success, Finished: time.Now().UnixNano()}}})
	e.Expect(t, 5*time.Second, "Ack of the stale result", ackOf(other))
	if v := e.task(t, ids[1]); v.State != "running" || v.Attempts != 3 {
		t.Errorf("a stale result was applied: %+v", v)
	}
	ghost := testutil.NewTaskID()
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: ghost, Attempt: 1, Code: messages.Success}}})
	e.Expect(t, 5*time.Second, "Ack of an unknown task's result", ackOf(ghost))
}

// A result payload is opaque to brokers; one that is not JSON must not
// break the task's JSON view.
func TestNonJSONResultPayload(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid(t, ids[0]), Attempt: 1, Code: messages.Success,
		Finished: time.Now().UnixNano(), Payload: []byte("plain text, not JSON")}}})
	e.ExpectType(t, 5*time.Second, "", messages.TypeAck)
	resp, err := e.c.Send(testutil.Request{Method: "GET", Path: "/v1/tasks/" + ids[0]})
	if err != nil {
		t.Fatal(err)
	}
	var v testutil.TaskView
	if err := json.Unmarshal(resp.Body, &v); resp.Code != 200 || err != nil || v.State != "success" {
		t.Errorf("GET of a task with a non-JSON result: HTTP %d %q (%v)", resp.Code, resp.Body, err)
	}
	// The batch status of it and another task still answers.
	if _, err := e.c.Status(ids); err != nil {
		t.Errorf("status batch including it: %v", err)
	}
}

func TestEndpointLostAndTasksResent(t *testing.T) {
	const threshold = 300 * time.Millisecond
	e := connect(t, forwarder.Options{HeartbeatThreshold: threshold})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	now := time.Now().UnixNano()
	e.Send(t, "", &messages.EPStatusReport{Deltas: []messages.Delta{
		{ID: tid(t, ids[0]), Code: messages.Running, Attempt: 1, At: now},
		{ID: tid(t, ids[1]), Code: messages.WaitingForNodes, Attempt: 1, At: now},
	}})
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid(t, ids[2]), Attempt: 1, Code: messages.Success, Finished: now}}})
	e.ExpectType(t, 5*time.Second, "", messages.TypeAck)

	e.SetHeartbeat(0)
	silent := time.Now()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := e.f.Endpoint(ep); v.Connected {
			return fmt.Errorf("endpoint still connected")
		}
		return nil
	})
	detect := time.Since(silent)
	t.Logf("endpoint declared lost %s after it went silent (threshold %s)", detect.Round(time.Millisecond), threshold)
	if detect < threshold-testutil.Interval {
		t.Errorf("declared lost after %s, before the threshold %s", detect, threshold)
	}
	var v forwarder.EndpointView
	e.c.Must(t, http.StatusOK, "GET", "/v1/endpoints/"+ep, nil, &v)
	if v.LostReason != "heartbeat timeout" {
		t.Errorf("lost reason %q", v.LostReason)
	}
	if n := e.metric(t, "endpoints_lost_total", "reason", "heartbeat timeout"); n != 1 {
		t.Errorf("endpoints_lost_total = %g", n)
	}
	vs, err := e.c.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"waiting-for-endpoint", "waiting-for-endpoint", "success"} {
		if vs[i].State != want {
			t.Errorf("task %d: %s after the endpoint was lost, want %s", i, vs[i].State, want)
		}
	}
	// New work waits for the endpoint too.
	more, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if v := e.task(t, more[0]); v.State != "waiting-for-endpoint" {
		t.Errorf("task submitted while lost: %s", v.State)
	}

	// The interchange comes back: first a stray heartbeat, then a proper
	// registration; the unfinished tasks (and only those) are sent again.
	sentBefore := len(e.Tasks(""))
	e.Send(t, "", &messages.Heartbeat{})
	e.ExpectType(t, 5*time.Second, "", messages.TypeReregister)
	e.register(t)
	want := []string{ids[0], ids[1], more[0]}
	testutil.WaitFor(t, 10*time.Second, func() error {
		resent := map[string]messages.Task{}
		for _, x := range e.Tasks("")[sentBefore:] {
			resent[x.ID.String()] = x
		}
		for _, id := range want {
			if _, ok := resent[id]; !ok {
				return fmt.Errorf("task %s not re-sent (re-sent: %d)", id, len(resent))
			}
		}
		if _, ok := resent[ids[2]]; ok {
			return fmt.Errorf("a finished task was sent again")
		}
		return nil
	})
	for _, x := range e.Tasks("")[sentBefore:] {
		t.Logf("re-sent %s with attempt %d", x.ID, x.Attempt)
	}
}

func TestPausedEndpointHoldsTasks(t *testing.T) {
	e := connect(t, forwarder.Options{})
	e.Send(t, "", &messages.EPStatusReport{ServingState: messages.PushPaused})
	e.Sync(t, "")
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if v := e.task(t, ids[0]); v.State != "waiting-for-endpoint" {
		t.Errorf("task for a paused endpoint: %s, want waiting-for-endpoint", v.State)
	}
	e.Sync(t, "")
	e.Sync(t, "")
	if n := len(e.Tasks("")); n != 0 {
		t.Fatalf("%d tasks pushed to a PUSH_PAUSED endpoint", n)
	}
	e.Send(t, "", &messages.EPStatusReport{ServingState: messages.NonePaused})
	e.received(t, ids)
}

// Tasks accepted before the forwarder hears of a pause, and not yet sent,
// wait as waiting-for-endpoint like those submitted during it.
func TestPauseHoldsTasksNotYetSent(t *testing.T) {
	e := connectWith(t, forwarder.Options{MaxUnacked: 2}, testutil.PeerOptions{})
	ids, err := e.c.Submit(ep, noops(10)...)
	if err != nil {
		t.Fatal(err)
	}
	e.Sync(t, "")
	sent := map[string]bool{}
	for _, x := range e.Tasks("") {
		sent[x.ID.String()] = true
	}
	if len(sent) != 2 {
		t.Fatalf("%d tasks sent before any was acknowledged, want 2", len(sent))
	}
	waiting := func() (n int) {
		for _, id := range ids {
			if !sent[id] && e.task(t, id).State == "waiting-for-endpoint" {
				n++
			}
		}
		return n
	}
	if n := waiting(); n != 0 {
		t.Fatalf("%d tasks waiting-for-endpoint before the pause", n)
	}
	e.Send(t, "", &messages.EPStatusReport{ServingState: messages.PushPaused})
	e.Sync(t, "")
	if n := waiting(); n != 8 {
		t.Errorf("%d of the 8 tasks held by the pause read waiting-for-endpoint", n)
	}
}

func TestCancelSentToEndpoint(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "sleep", "args": []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	e.c.Must(t, http.StatusOK, "DELETE", "/v1/tasks/"+ids[0], nil, nil)
	cmd := e.ExpectType(t, 5*time.Second, "", messages.TypeCommand).Msg.(*messages.Command)
	if cmd.Op != messages.OpCancel || len(cmd.TaskIDs) != 1 || cmd.TaskIDs[0].String() != ids[0] {
		t.Errorf("command %+v", cmd)
	}
	// The endpoint finished it meanwhile: the cancel stands.
	e.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid(t, ids[0]), Attempt: 1, Code: messages.Success, Finished: time.Now().UnixNano()}}})
	e.ExpectType(t, 5*time.Second, "", messages.TypeAck)
	if v := e.task(t, ids[0]); v.State != "cancelled" {
		t.Errorf("a result after the cancel changed the task to %s", v.State)
	}
}

// A cancel made while the interchange is away waits for it: it may still
// hold the task from before.
func TestCancelWhileEndpointAwayReachesIt(t *testing.T) {
	e := connect(t, forwarder.Options{HeartbeatThreshold: 300 * time.Millisecond})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "sleep", "args": []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	e.SetHeartbeat(0)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := e.f.Endpoint(ep); v.Connected {
			return fmt.Errorf("endpoint still connected")
		}
		return nil
	})
	e.c.Must(t, http.StatusOK, "DELETE", "/v1/tasks/"+ids[0], nil, nil)
	e.register(t)
	cmd := e.ExpectType(t, 5*time.Second, "", messages.TypeCommand).Msg.(*messages.Command)
	if cmd.Op != messages.OpCancel || len(cmd.TaskIDs) != 1 || cmd.TaskIDs[0].String() != ids[0] {
		t.Errorf("command %+v, want the cancel of %s", cmd, ids[0])
	}
}

func TestMalformedFromEndpoint(t *testing.T) {
	e := connect(t, forwarder.Options{})
	hb, _ := (&messages.Heartbeat{}).Pack()
	cases := []struct {
		name   string
		frames [][]byte
		code   messages.ErrorCode
	}{
		{"random", [][]byte{{0x42, 0x13, 0x37}}, messages.CodeVersion},
		{"unknown type", [][]byte{{messages.Version, 0x7f, 0x90}}, messages.CodeUnknownType},
		{"truncated report", [][]byte{{messages.Version, byte(messages.TypeEPStatusReport), 0x97, 0x91}}, messages.CodeMalformed},
		{"extra frame", [][]byte{hb[0], {1}}, messages.CodeMalformed},
		{"empty", [][]byte{{}}, messages.CodeMalformed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.SendRaw("", tc.frames); err != nil {
				t.Fatal(err)
			}
			rep := e.ExpectType(t, 5*time.Second, "", messages.TypeErrorReply).Msg.(*messages.ErrorReply)
			if rep.Code != tc.code || rep.Reason == "" {
				t.Errorf("ErrorReply %+v, want %s", rep, tc.code)
			}
			if v := e.metric(t, "malformed_messages_total"); v != float64(i+1) {
				t.Errorf("malformed_messages_total = %g, want %d", v, i+1)
			}
		})
	}
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	if v, _ := e.f.Endpoint(ep); !v.Connected {
		t.Errorf("endpoint disconnected by malformed input")
	}
}

// Thousands of random or mutated messages from a registered endpoint and
// from strangers: each undecodable one is counted and answered, nothing
// changes a task, and the endpoint keeps working.
func TestRandomFramesFromEndpoints(t *testing.T) {
	e := connect(t, forwarder.Options{})
	ids, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, ids)
	rng := rand.New(rand.NewPCG(5, 6))
	other := testutil.NewTaskID()
	seeds := []messages.Message{
		&messages.Heartbeat{}, &messages.HeartbeatResp{Nonce: 1}, &messages.Ack{IDs: []messages.TaskID{other}},
		&messages.EPStatusReport{Managers: 1, Deltas: []messages.Delta{{ID: other, Code: messages.Running, Attempt: 1, At: 1}}},
		&messages.ResultBatch{Results: []messages.Result{{ID: other, Attempt: 1, Code: messages.Failed, Error: "x", Payload: []byte(`{}`)}}},
		&messages.CommandReply{ID: 99, Message: "m"},
	}
	stranger := testutil.NewDealer(t, "stranger", "stranger", e.f.ZMQAddr(), testutil.PeerOptions{})
	msgs := testutil.RandomMessages(rng, 2000, seeds)
	half := len(msgs) / 2
	for i, frames := range msgs {
		p := e.Peer
		if i >= half {
			p = stranger
		}
		if err := p.SendRaw("", frames); err != nil {
			t.Fatal(err)
		}
	}
	e.Sync(t, "")
	e.f.Enroll(t, "stranger")
	stranger.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "stranger", ProtocolVersion: messages.Version})
	stranger.ExpectType(t, 30*time.Second, "", messages.TypeHeartbeat)
	bad := testutil.Undecodable(msgs)
	if v := e.metric(t, "malformed_messages_total"); v != float64(bad) {
		t.Errorf("malformed_messages_total = %g, want %d", v, bad)
	}
	replies := e.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply }) +
		stranger.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply })
	if replies != bad {
		t.Errorf("%d ErrorReplies for %d undecodable messages", replies, bad)
	}
	if v := e.task(t, ids[0]); v.State != "received" {
		t.Errorf("random input moved a task to %s", v.State)
	}
	v, _ := e.f.Endpoint(ep)
	if !v.Connected {
		t.Fatalf("endpoint disconnected by random input")
	}
	// A mutated status report may validly have paused the endpoint; a
	// clean one resumes it.
	t.Logf("after random input the endpoint reads %s", v.ServingState)
	e.Send(t, "", &messages.EPStatusReport{ServingState: messages.NonePaused})
	more, err := e.c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, more)
	t.Logf("%d random messages (%d undecodable) handled; forwarder still serving", len(msgs), bad)
}

// A TaskBatch lost without any reconnect being noticed (no ack comes) is
// sent again after the threshold; an acknowledged one is not.
func TestUnacknowledgedTasksSentAgain(t *testing.T) {
	f, c := startForwarder(t, forwarder.Options{})
	f.Enroll(t, ep)
	ix := testutil.NewDealer(t, "silent interchange", ep, f.ZMQAddr(), testutil.PeerOptions{})
	e := &fakeEndpoint{Peer: ix, f: f, c: c}
	e.register(t)
	ids, err := c.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		n := 0
		for _, x := range e.Tasks("") {
			if x.ID.String() == ids[0] {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("task sent %d times; want it again after the threshold without an ack", n)
		}
		return nil
	})
	if v := e.metric(t, "tasks_resent_total"); v < 1 {
		t.Fatalf("tasks_resent_total = %v", v)
	}
	e.Send(t, "", &messages.Ack{IDs: []messages.TaskID{tid(t, ids[0])}})
	e.Sync(t, "")
	sent := len(e.Tasks(""))
	hb := e.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeHeartbeat })
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := e.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeHeartbeat }); n < hb+20 {
			return fmt.Errorf("%d heartbeats since the ack", n-hb)
		}
		return nil
	})
	if n := len(e.Tasks("")); n != sent {
		t.Fatalf("an acknowledged task was sent again (%d -> %d sends)", sent, n)
	}
}

// An endpoint is handed at most MaxInflight tasks that have not ended;
// the next go as soon as some end, in submission order.
func TestInflightWindow(t *testing.T) {
	e := connect(t, forwarder.Options{MaxInflight: 5})
	specs := make([]any, 12)
	for i := range specs {
		specs[i] = map[string]any{"kind": "noop"}
	}
	ids, err := e.c.Submit(ep, specs...)
	if err != nil {
		t.Fatal(err)
	}
	got := e.received(t, ids[:5])
	e.Sync(t, "")
	if n := len(e.Tasks("")); n != 5 || len(got) != 5 {
		t.Fatalf("%d tasks handed to the endpoint, want the window of 5", n)
	}
	var rs []messages.Result
	for _, id := range ids[:2] {
		rs = append(rs, messages.Result{ID: tid(t, id), Attempt: 1, Code: messages.Success, Finished: time.Now().UnixNano()})
	}
	e.Send(t, "", &messages.ResultBatch{Results: rs})
	e.received(t, ids[:7])
	e.Sync(t, "")
	if n := len(e.Tasks("")); n != 7 {
		t.Fatalf("%d tasks handed after 2 ended, want 7", n)
	}
}

// Beyond the window, owners take turns: a user who submits after
// another's backlog has her tasks pushed as the next ones end, not after
// the backlog.
func TestInflightWindowOwnersTakeTurns(t *testing.T) {
	e := connect(t, forwarder.Options{MaxInflight: 5})
	alice := e.f.User(t, "alice", false)
	bob := e.f.User(t, "bob", false)
	e.f.Share(t, ep, "alice", "bob")
	specs := make([]any, 30)
	for i := range specs {
		specs[i] = map[string]any{"kind": "noop"}
	}
	a, err := alice.Submit(ep, specs...)
	if err != nil {
		t.Fatal(err)
	}
	e.received(t, a[:5])
	b, err := bob.Submit(ep, specs[:2]...)
	if err != nil {
		t.Fatal(err)
	}
	e.Sync(t, "")
	// As alice's tasks end, bob's go out among the next ones.
	end := func(ids []string) {
		var rs []messages.Result
		for _, id := range ids {
			rs = append(rs, messages.Result{ID: tid(t, id), Attempt: 1, Code: messages.Success, Finished: time.Now().UnixNano()})
		}
		e.Send(t, "", &messages.ResultBatch{Results: rs})
	}
	end(a[:4])
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(e.Tasks("")); n != 9 {
			return fmt.Errorf("%d tasks handed after 4 of 5 ended, want 9", n)
		}
		return nil
	})
	got := e.received(t, a[:5])
	if _, ok := got[b[0]]; !ok {
		t.Fatalf("bob's first task not among the 4 sent after alice's ended")
	}
	sent := 0
	for _, id := range a {
		if _, ok := got[id]; ok {
			sent++
		}
	}
	end(a[4:sent])
	e.received(t, b)
}

// The endpoint is told who submitted each task.
func TestTasksCarryTheirOwner(t *testing.T) {
	e := connect(t, forwarder.Options{})
	alice := e.f.User(t, "alice", false)
	bob := e.f.User(t, "bob", false)
	e.f.Share(t, ep, "alice", "bob")
	a, err := alice.Submit(ep, map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bob.Submit(ep, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	got := e.received(t, append(a, b...))
	for _, id := range a {
		if o := got[id].Owner; o != "alice" {
			t.Errorf("alice's task %s sent as owned by %q", id, o)
		}
	}
	if o := got[b[0]].Owner; o != "bob" {
		t.Errorf("bob's task sent as owned by %q", o)
	}
}

// The interchange's queued tasks by owner show in the endpoint view: all
// of them to an admin, only her own to a user the endpoint is shared with.
func TestQueuedByOwnerInEndpointView(t *testing.T) {
	e := connect(t, forwarder.Options{})
	alice := e.f.User(t, "alice", false)
	e.f.Share(t, ep, "alice")
	e.Send(t, "", &messages.EPStatusReport{Queued: 12, QueuedByOwner: []messages.OwnerCount{{Owner: "alice", N: 2}, {Owner: "bob", N: 10}}})
	view := func(c *testutil.Client) map[string]float64 {
		var raw struct {
			By map[string]float64 `json:"queued_by_owner"`
		}
		c.Must(t, http.StatusOK, "GET", "/v1/endpoints/"+ep, nil, &raw)
		return raw.By
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if by := view(e.c); by["alice"] != 2 || by["bob"] != 10 || len(by) != 2 {
			return fmt.Errorf("admin sees queued_by_owner %v", by)
		}
		return nil
	})
	if by := view(alice); by["alice"] != 2 || len(by) != 1 {
		t.Errorf("alice sees queued_by_owner %v, want only her own 2", by)
	}
	var probe struct {
		By map[string]float64 `json:"queued_by_owner"`
	}
	alice.Must(t, http.StatusOK, "GET", "/v1/endpoints/"+ep+"?probe=1", nil, &probe)
	if len(probe.By) != 1 || probe.By["alice"] != 2 {
		t.Errorf("alice's probe shows queued_by_owner %v", probe.By)
	}
}

// An endpoint is sent no more than --max-unacked tasks it has not acknowledged,
// however many wait here: batches it has not read yet queue in the link
// ahead of every other user's tasks.
func TestUnacknowledgedTasksAreCapped(t *testing.T) {
	const limit = 10_000
	e := connectWith(t, forwarder.Options{MaxUnacked: limit}, testutil.PeerOptions{})
	spec := noops(5000)
	var ids []string
	for range 5 {
		got, err := e.c.Submit(ep, spec...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := len(e.Tasks("")); n < limit {
			return fmt.Errorf("%d tasks sent", n)
		}
		return nil
	})
	// Two round trips: the forwarder's loop has sent all it would.
	e.Sync(t, "")
	e.Sync(t, "")
	sent := e.Tasks("")
	if len(sent) != limit {
		t.Fatalf("%d of %d tasks sent before any was acknowledged, want %d", len(sent), len(ids), limit)
	}
	// Acknowledged, they make room for the rest.
	acked := 0
	testutil.WaitFor(t, 10*time.Second, func() error {
		sent := e.Tasks("")
		if acked < len(sent) {
			ack := &messages.Ack{}
			for _, x := range sent[acked:] {
				ack.IDs = append(ack.IDs, x.ID)
			}
			e.Send(t, "", ack)
			acked = len(sent)
		}
		if len(sent) < len(ids) {
			return fmt.Errorf("%d of %d tasks sent", len(sent), len(ids))
		}
		return nil
	})
	e.received(t, ids)
}
