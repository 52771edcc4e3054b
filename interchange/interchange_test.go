package interchange_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

const ep = "ep1"

// env is an interchange between a fake forwarder (a raw ROUTER) and fake
// managers (raw DEALERs).
type env struct {
	ix  *testutil.Interchange
	fwd *testutil.Peer
}

func start(t *testing.T, opts interchange.Options, autoAck bool) *env {
	t.Helper()
	fwd := testutil.NewRouter(t, "fake forwarder", "", testutil.PeerOptions{Heartbeat: testutil.Interval, AutoAck: autoAck})
	opts.EndpointID = ep
	opts.Forwarder = fwd.Addr()
	ix := testutil.StartInterchange(t, opts)
	reg := fwd.ExpectType(t, 10*time.Second, ep, messages.TypeRegistration).Msg.(*messages.Registration)
	if reg.Role != messages.RoleInterchange || reg.ID != ep {
		t.Fatalf("registration upward: %+v", reg)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !ix.Status().ForwarderConnected {
			return fmt.Errorf("interchange does not see the forwarder yet")
		}
		return nil
	})
	return &env{ix: ix, fwd: fwd}
}

// manager registers a fake manager that then heartbeats every 50ms.
func (e *env) manager(t *testing.T, id string, workers, prefetch uint32) *testutil.Peer {
	t.Helper()
	p := testutil.NewDealer(t, "fake manager "+id, id, e.ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true})
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: id, Workers: workers, Prefetch: prefetch,
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	p.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	p.SetHeartbeat(testutil.Interval)
	return p
}

// push sends tasks from the fake forwarder; every task is a noop unless
// payloads are given.
func (e *env) push(t *testing.T, n int, attempt uint32) []messages.TaskID {
	t.Helper()
	b := &messages.TaskBatch{}
	ids := make([]messages.TaskID, n)
	for i := range ids {
		ids[i] = testutil.NewTaskID()
		b.Tasks = append(b.Tasks, messages.Task{ID: ids[i], Attempt: attempt, Payload: taskspec.Spec{Kind: "noop"}.Encode()})
	}
	e.fwd.Send(t, ep, b)
	return ids
}

func (e *env) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return testutil.Metric(t, e.ix.Reg, "switchyard_interchange_"+name, labels...)
}

// waitTask waits until fake manager p has received task id (with attempt,
// when attempt > 0).
func waitTask(t *testing.T, p *testutil.Peer, id messages.TaskID, attempt uint32, timeout time.Duration) messages.Task {
	t.Helper()
	var got messages.Task
	testutil.WaitFor(t, timeout, func() error {
		for _, x := range p.Tasks("") {
			if x.ID == id && (attempt == 0 || x.Attempt == attempt) {
				got = x
				return nil
			}
		}
		return fmt.Errorf("task %s (attempt %d) not received; has %d tasks", id, attempt, len(p.Tasks("")))
	})
	return got
}

func result(id messages.TaskID, attempt uint32, code messages.TaskStatusCode, payload string) *messages.ResultBatch {
	now := time.Now().UnixNano()
	return &messages.ResultBatch{Results: []messages.Result{{ID: id, Attempt: attempt, Code: code, Started: now - 1000,
		Finished: now, Payload: []byte(payload)}}}
}

// upResults is every result the fake forwarder received for id.
func (e *env) upResults(id messages.TaskID) []messages.Result {
	var out []messages.Result
	for _, r := range e.fwd.Results(ep) {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

func (e *env) waitUpResult(t *testing.T, id messages.TaskID, n int) []messages.Result {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := len(e.upResults(id)); got < n {
			return fmt.Errorf("forwarder has %d results for %s, want %d", got, id, n)
		}
		return nil
	})
	return e.upResults(id)
}

func TestManagerRegistration(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	cases := []struct {
		name     string
		reg      messages.Registration
		wantCode messages.ErrorCode // 0: accepted
		reason   string
	}{
		{name: "valid", reg: messages.Registration{Role: messages.RoleManager, ID: "good", Workers: 4, Prefetch: 1, ProtocolVersion: messages.Version}},
		{name: "interchange role", reg: messages.Registration{Role: messages.RoleInterchange, ID: "wrong-role", ProtocolVersion: messages.Version},
			wantCode: messages.CodeRefused, reason: "only managers"},
		{name: "other protocol version", reg: messages.Registration{Role: messages.RoleManager, ID: "old", Workers: 1, ProtocolVersion: messages.Version + 1},
			wantCode: messages.CodeVersion, reason: "protocol"},
	}
	for _, tc := range cases {
		// Peers belong to the parent test so the accepted one keeps
		// heartbeating while the others run.
		p := testutil.NewDealer(t, tc.reg.ID, tc.reg.ID, e.ix.ManagersAddr(), testutil.PeerOptions{})
		t.Run(tc.name, func(t *testing.T) {
			p.Send(t, "", &tc.reg)
			if tc.wantCode == 0 {
				p.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
				p.SetHeartbeat(testutil.Interval)
				testutil.WaitFor(t, 5*time.Second, func() error {
					st := e.ix.Status()
					if st.Managers != 1 || len(st.ManagerList) != 1 || st.ManagerList[0].Workers != tc.reg.Workers ||
						st.ManagerList[0].Prefetch != tc.reg.Prefetch || st.Workers != tc.reg.Workers {
						return fmt.Errorf("status %+v", st)
					}
					return nil
				})
				if v := e.metric(t, "manager_registrations_total"); v != 1 {
					t.Errorf("manager_registrations_total = %g", v)
				}
				return
			}
			rep := p.ExpectType(t, 5*time.Second, "", messages.TypeErrorReply).Msg.(*messages.ErrorReply)
			if rep.Code != tc.wantCode || !strings.Contains(rep.Reason, tc.reason) {
				t.Errorf("refusal %+v, want code %s naming %q", rep, tc.wantCode, tc.reason)
			}
			// Not registered: its next message is answered with Reregister.
			p.Send(t, "", &messages.Heartbeat{})
			p.ExpectType(t, 5*time.Second, "", messages.TypeReregister)
		})
	}
	waitStatus(t, e, func(st interchange.StatusView) error {
		if st.Managers != 1 {
			return fmt.Errorf("%d managers registered, want 1", st.Managers)
		}
		return nil
	})
}

func TestUnregisteredManagerToldToReregister(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	bogus := testutil.NewTaskID()
	msgs := []messages.Message{
		&messages.Heartbeat{},
		&messages.ManagerStatusReport{Workers: 1, Deltas: []messages.Delta{{ID: bogus, Code: messages.Running, Attempt: 1}}},
		result(bogus, 1, messages.Success, ""),
		&messages.CommandReply{ID: 1},
		&messages.HeartbeatReq{Nonce: 9},
	}
	for i, m := range msgs {
		t.Run(m.Type().String(), func(t *testing.T) {
			id := "ghost-" + m.Type().String()
			ghost := testutil.NewDealer(t, id, id, e.ix.ManagersAddr(), testutil.PeerOptions{})
			ghost.Send(t, "", m)
			rep := ghost.ExpectType(t, 5*time.Second, "", messages.TypeReregister).Msg.(*messages.Reregister)
			if !strings.Contains(rep.Reason, "Registration") {
				t.Errorf("Reregister reason %q does not say what to send", rep.Reason)
			}
			// The loop counts the request just after sending it.
			testutil.WaitFor(t, 5*time.Second, func() error {
				if v := e.metric(t, "reregister_requests_total"); v != float64(i+1) {
					return fmt.Errorf("reregister_requests_total = %g, want %d", v, i+1)
				}
				return nil
			})
			if n := ghost.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeHeartbeatResp }); n != 0 {
				t.Errorf("an unregistered manager's HeartbeatReq was answered")
			}
		})
	}

	// A burst from one unknown peer is answered once per interval, and its
	// result goes nowhere: register it, have it finish a real task, and
	// check what reached each side. One connection keeps order, so
	// anything sent earlier would have arrived first.
	ghost := testutil.NewDealer(t, "ghost", "ghost", e.ix.ManagersAddr(), testutil.PeerOptions{})
	for i := 0; i < 5; i++ {
		ghost.Send(t, "", result(bogus, 1, messages.Success, ""))
	}
	ghost.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "ghost", Workers: 1, ProtocolVersion: messages.Version})
	ghost.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	ghost.SetHeartbeat(testutil.Interval)
	if n := ghost.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeReregister }); n < 1 || n > 2 {
		t.Errorf("a burst of 5 messages from an unknown peer got %d Reregister replies; want one per interval", n)
	}
	id := e.push(t, 1, 1)[0]
	waitTask(t, ghost, id, 1, 5*time.Second)
	ghost.Send(t, "", result(id, 1, messages.Success, ""))
	e.waitUpResult(t, id, 1)
	for _, r := range e.fwd.Results(ep) {
		if r.ID == bogus {
			t.Errorf("a result from an unregistered manager was passed up: %+v", r)
		}
	}
}

func TestMalformedFromManager(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	good := e.manager(t, "good", 1, 0)
	reg, _ := (&messages.Registration{Role: messages.RoleManager, ID: "x", Workers: 1, ProtocolVersion: messages.Version}).Pack()
	hb, _ := (&messages.Heartbeat{}).Pack()
	rb, _ := result(testutil.NewTaskID(), 1, messages.Success, "payload").Pack()
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	random[0] = 0xAB // not a version byte
	huge := make([]byte, messages.MaxHeaderBytes+16)
	huge[0], huge[1] = messages.Version, byte(messages.TypeTaskBatch)
	cases := []struct {
		name   string
		frames [][]byte
		code   messages.ErrorCode
	}{
		{"random bytes", [][]byte{random}, messages.CodeVersion},
		{"wrong version", [][]byte{{messages.Version + 1, byte(messages.TypeHeartbeat), 0x90}}, messages.CodeVersion},
		{"unknown type", [][]byte{{messages.Version, 0xEE, 0x90}}, messages.CodeUnknownType},
		{"type zero", [][]byte{{messages.Version, 0, 0x90}}, messages.CodeUnknownType},
		{"no type byte", [][]byte{{messages.Version}}, messages.CodeMalformed},
		{"empty frame", [][]byte{{}}, messages.CodeMalformed},
		{"truncated registration", [][]byte{reg[0][:len(reg[0])/2]}, messages.CodeMalformed},
		{"trailing bytes", [][]byte{append(append([]byte(nil), hb[0]...), 0xC0)}, messages.CodeMalformed},
		{"extra frame", [][]byte{hb[0], []byte("extra")}, messages.CodeMalformed},
		{"payload does not match", [][]byte{rb[0], []byte("pay")}, messages.CodeMalformed},
		{"oversized header", [][]byte{huge}, messages.CodeOversized},
	}
	// From a peer that never registered and from a registered one.
	for _, who := range []string{"stranger", "good"} {
		var p *testutil.Peer
		if who == "good" {
			p = good
		} else {
			p = testutil.NewDealer(t, who, who, e.ix.ManagersAddr(), testutil.PeerOptions{})
		}
		for _, tc := range cases {
			t.Run(who+"/"+tc.name, func(t *testing.T) {
				before := e.metric(t, "malformed_messages_total", "link", "manager")
				if err := p.SendRaw("", tc.frames); err != nil {
					t.Fatal(err)
				}
				rep := p.Expect(t, 10*time.Second, "ErrorReply", func(r testutil.Received) bool {
					return r.Type() == messages.TypeErrorReply
				}).Msg.(*messages.ErrorReply)
				if rep.Code != tc.code || rep.Reason == "" {
					t.Errorf("ErrorReply %s %q, want code %s with a reason", rep.Code, rep.Reason, tc.code)
				}
				if v := e.metric(t, "malformed_messages_total", "link", "manager"); v != before+1 {
					t.Errorf("malformed_messages_total{link=manager} = %g, want %g", v, before+1)
				}
			})
		}
	}
	// The interchange still works: the registered manager gets a task.
	id := e.push(t, 1, 1)[0]
	waitTask(t, good, id, 1, 5*time.Second)
	good.Send(t, "", result(id, 1, messages.Success, ""))
	e.waitUpResult(t, id, 1)
	waitStatus(t, e, func(st interchange.StatusView) error {
		if st.Managers != 1 {
			return fmt.Errorf("managers = %d after malformed input, want 1", st.Managers)
		}
		return nil
	})
}

func TestMalformedFromForwarder(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	cases := []struct {
		name   string
		frames [][]byte
		code   messages.ErrorCode
	}{
		{"random", [][]byte{{0x77, 0x01, 0x02}}, messages.CodeVersion},
		{"unknown type", [][]byte{{messages.Version, 0x99}}, messages.CodeUnknownType},
		{"truncated batch", [][]byte{{messages.Version, byte(messages.TypeTaskBatch), 0x92}}, messages.CodeMalformed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.fwd.SendRaw(ep, tc.frames); err != nil {
				t.Fatal(err)
			}
			rep := e.fwd.ExpectType(t, 5*time.Second, ep, messages.TypeErrorReply).Msg.(*messages.ErrorReply)
			if rep.Code != tc.code {
				t.Errorf("ErrorReply %+v, want %s", rep, tc.code)
			}
			if v := e.metric(t, "malformed_messages_total", "link", "forwarder"); v != float64(i+1) {
				t.Errorf("malformed_messages_total{link=forwarder} = %g, want %d", v, i+1)
			}
		})
	}
	m := e.manager(t, "m1", 1, 0)
	id := e.push(t, 1, 1)[0]
	waitTask(t, m, id, 1, 5*time.Second)
}

// A manager that goes silent is declared lost after the threshold; its
// tasks go to another manager with attempt+1, and a result of the old
// attempt is ignored.
func TestLostManagerRequeuesAndStaleResultIgnored(t *testing.T) {
	const threshold = 300 * time.Millisecond
	e := start(t, interchange.Options{HeartbeatThreshold: threshold, MaxRetries: 2}, true)
	a := e.manager(t, "a", 2, 0)
	ids := e.push(t, 2, 1)
	for _, id := range ids {
		waitTask(t, a, id, 1, 5*time.Second)
	}
	a.Send(t, "", &messages.ManagerStatusReport{Workers: 2, Outstanding: 2,
		Deltas: []messages.Delta{{ID: ids[0], Code: messages.Running, Attempt: 1, At: time.Now().UnixNano()}}})
	b := e.manager(t, "b", 2, 0)

	a.SetHeartbeat(0)
	silent := time.Now()
	for _, id := range ids {
		waitTask(t, b, id, 2, 10*time.Second)
	}
	detected := time.Since(silent)
	t.Logf("silent manager's tasks re-dispatched %s after it went silent (threshold %s)", detected.Round(time.Millisecond), threshold)
	// Its last heartbeat left at most one interval before it went silent.
	if detected < threshold-testutil.Interval {
		t.Errorf("tasks moved after %s, before the threshold %s", detected, threshold)
	}
	if v := e.metric(t, "managers_lost_total", "reason", "heartbeat timeout"); v != 1 {
		t.Errorf("managers_lost_total{heartbeat timeout} = %g, want 1", v)
	}
	// The forwarder hears that the tasks went back to waiting-for-nodes
	// with the new attempt (or sees them launched again directly).
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, id := range ids {
			found := false
			for _, d := range e.fwd.Deltas(ep) {
				if d.ID == id && d.Attempt == 2 {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no delta with attempt 2 for %s", id)
			}
		}
		return nil
	})

	// The old manager wakes up: it is told to re-register, and its result
	// for attempt 1, sent before and after re-registering, is ignored.
	a.Send(t, "", result(ids[0], 1, messages.Success, "stale"))
	a.ExpectType(t, 5*time.Second, "", messages.TypeReregister)
	a.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "a", Workers: 2, ProtocolVersion: messages.Version})
	a.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	a.SetHeartbeat(testutil.Interval)
	before := e.metric(t, "stale_updates_total")
	a.Send(t, "", result(ids[0], 1, messages.Success, "stale"))
	a.Sync(t, "")
	if v := e.metric(t, "stale_updates_total"); v != before+1 {
		t.Errorf("stale_updates_total = %g, want %g", v, before+1)
	}
	// The real results of attempt 2 go up; the stale one never does.
	b.Send(t, "", result(ids[0], 2, messages.Success, "fresh"))
	b.Send(t, "", result(ids[1], 2, messages.Failed, ""))
	rs := e.waitUpResult(t, ids[0], 1)
	e.waitUpResult(t, ids[1], 1)
	for _, r := range e.fwd.Results(ep) {
		if r.Attempt != 2 || string(r.Payload) == "stale" {
			t.Errorf("forwarder got result %s attempt %d payload %q; want only attempt 2", r.ID, r.Attempt, r.Payload)
		}
	}
	if len(rs) != 1 || string(rs[0].Payload) != "fresh" {
		t.Errorf("results for the re-queued task: %+v", rs)
	}
}

func TestLostManagerFailsTaskAfterMaxRetries(t *testing.T) {
	const threshold = 300 * time.Millisecond
	e := start(t, interchange.Options{HeartbeatThreshold: threshold, MaxRetries: 1}, true)
	id := e.push(t, 1, 1)[0]
	for attempt := uint32(1); attempt <= 2; attempt++ {
		m := e.manager(t, fmt.Sprintf("m%d", attempt), 1, 0)
		waitTask(t, m, id, attempt, 10*time.Second)
		m.SetHeartbeat(0)
	}
	rs := e.waitUpResult(t, id, 1)
	r := rs[0]
	// It read attempts: 3 with "gave up after 2 attempts"; they agree now.
	if r.Code != messages.Failed || r.Attempt != 2 {
		t.Errorf("result %s attempt %d, want failed attempt 2", r.Code.State(), r.Attempt)
	}
	for _, w := range []string{"gave up after 2 attempts", "m2", "lost", "heartbeat timeout"} {
		if !strings.Contains(r.Error, w) {
			t.Errorf("error %q does not say %q", r.Error, w)
		}
	}
	waitStatus(t, e, func(st interchange.StatusView) error {
		if st.Outstanding != 0 || st.Queued != 0 {
			return fmt.Errorf("status after the task failed: %+v", st)
		}
		return nil
	})
}

func TestDuplicateResultAppliedOnce(t *testing.T) {
	t.Run("forwarder has not acked yet", func(t *testing.T) {
		e := start(t, interchange.Options{}, false)
		m := e.manager(t, "m1", 1, 0)
		id := e.push(t, 1, 1)[0]
		waitTask(t, m, id, 1, 5*time.Second)
		for i := 0; i < 3; i++ {
			m.Send(t, "", result(id, 1, messages.Success, "r"))
		}
		m.Sync(t, "")
		m.Sync(t, "")
		e.waitUpResult(t, id, 1)
		e.fwd.Sync(t, ep) // everything the interchange sent up before this has arrived
		if n := len(e.upResults(id)); n != 1 {
			t.Errorf("result passed up %d times, want 1", n)
		}
		if v := e.metric(t, "results_total", "state", "success"); v != 1 {
			t.Errorf("results_total{success} = %g, want 1", v)
		}
		if v := e.metric(t, "duplicates_total"); v != 2 {
			t.Errorf("duplicates_total = %g, want 2", v)
		}
		if n := m.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeAck }); n != 3 {
			t.Errorf("manager got %d Acks, want one per ResultBatch (3)", n)
		}
	})
	t.Run("after the forwarder acked", func(t *testing.T) {
		e := start(t, interchange.Options{}, true)
		m := e.manager(t, "m1", 1, 0)
		id := e.push(t, 1, 1)[0]
		waitTask(t, m, id, 1, 5*time.Second)
		m.Send(t, "", result(id, 1, messages.Success, "r"))
		e.waitUpResult(t, id, 1)
		testutil.WaitFor(t, 5*time.Second, func() error {
			if st := e.ix.Status(); st.ResultsUndelivered != 0 {
				return fmt.Errorf("results undelivered %d", st.ResultsUndelivered)
			}
			return nil
		})
		m.Send(t, "", result(id, 1, messages.Success, "r"))
		m.Sync(t, "")
		m.Sync(t, "")
		e.fwd.Sync(t, ep)
		if v := e.metric(t, "results_total", "state", "success"); v != 1 {
			t.Errorf("results_total{success} = %g, want 1", v)
		}
		// The interchange no longer knows the task and passes the copy up
		// for the forwarder to drop by id and attempt.
		t.Logf("a replayed result after the ack reached the forwarder %d times in all", len(e.upResults(id)))
	})
}

// waitStatus waits for the interchange's view, which it publishes at each
// housekeeping tick, to pass check.
func waitStatus(t *testing.T, e *env, check func(interchange.StatusView) error) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error { return check(e.ix.Status()) })
}

func TestDispatchRespectsWorkersPlusPrefetch(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	m := e.manager(t, "m1", 2, 1)
	ids := e.push(t, 10, 1)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(m.Tasks("")); n != 3 {
			return fmt.Errorf("manager has %d tasks, want 3", n)
		}
		return nil
	})
	// Even a report that claims more room does not get more than 3.
	m.Send(t, "", &messages.ManagerStatusReport{Workers: 2, IdleWorkers: 2, Capacity: 100})
	m.Sync(t, "")
	m.Sync(t, "")
	if n := len(m.Tasks("")); n != 3 {
		t.Fatalf("manager with 2 workers + 1 prefetch holds %d tasks", n)
	}
	waitStatus(t, e, func(st interchange.StatusView) error {
		if len(st.ManagerList) != 1 || st.Queued != 7 || st.ManagerList[0].Outstanding != 3 {
			return fmt.Errorf("status %+v; want 7 queued and 3 outstanding on m1", st)
		}
		return nil
	})
	// Each result frees exactly one slot.
	done := map[messages.TaskID]bool{}
	for round := 0; round < 7; round++ {
		var next messages.TaskID
		for _, x := range m.Tasks("") {
			if !done[x.ID] {
				next = x.ID
				break
			}
		}
		done[next] = true
		m.Send(t, "", result(next, 1, messages.Success, ""))
		want := 3 + round + 1
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := len(m.Tasks("")); n != want {
				return fmt.Errorf("manager received %d tasks, want %d", n, want)
			}
			return nil
		})
		m.Sync(t, "")
		m.Sync(t, "")
		if n := len(m.Tasks("")); n != want {
			t.Fatalf("round %d: manager received %d tasks, want %d", round, n, want)
		}
	}
	if len(ids) != 10 {
		t.Fatal(len(ids))
	}
	// A second manager shares what is left; neither goes over its limit.
	m2 := e.manager(t, "m2", 1, 0)
	e.push(t, 5, 1)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := e.ix.Status(); st.Queued != 4 {
			return fmt.Errorf("queued %d, want 4", st.Queued)
		}
		return nil
	})
	m.Sync(t, "")
	m2.Sync(t, "")
	m2.Sync(t, "")
	if n := len(m2.Tasks("")); n != 1 {
		t.Errorf("second manager (1 worker) holds %d tasks", n)
	}
	held := 0
	for _, x := range m.Tasks("") {
		if !done[x.ID] {
			held++
		}
	}
	if held != 3 {
		t.Errorf("first manager holds %d unfinished tasks, want 3", held)
	}
}

func TestResultsResentUntilAcked(t *testing.T) {
	t.Run("forwarder asks to re-register", func(t *testing.T) {
		e := start(t, interchange.Options{}, false)
		m := e.manager(t, "m1", 1, 0)
		id := e.push(t, 1, 1)[0]
		waitTask(t, m, id, 1, 5*time.Second)
		m.Send(t, "", result(id, 1, messages.Success, "out"))
		e.waitUpResult(t, id, 1)
		testutil.WaitFor(t, 5*time.Second, func() error {
			if st := e.ix.Status(); st.ResultsUndelivered != 1 {
				return fmt.Errorf("results undelivered %d, want 1", st.ResultsUndelivered)
			}
			return nil
		})
		regs := e.fwd.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration })
		e.fwd.Send(t, ep, &messages.Reregister{Reason: "forwarder restarted"})
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := e.fwd.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration }); n <= regs {
				return fmt.Errorf("no new Registration")
			}
			return nil
		})
		// The fake forwarder's heartbeat answers the registration.
		rs := e.waitUpResult(t, id, 2)
		if string(rs[1].Payload) != "out" || rs[1].Attempt != 1 {
			t.Errorf("re-sent result %+v", rs[1])
		}
		e.fwd.Send(t, ep, &messages.Ack{IDs: []messages.TaskID{id}})
		testutil.WaitFor(t, 5*time.Second, func() error {
			if st := e.ix.Status(); st.ResultsUndelivered != 0 {
				return fmt.Errorf("results undelivered %d after the ack", st.ResultsUndelivered)
			}
			return nil
		})
		e.fwd.Send(t, ep, &messages.Reregister{Reason: "again"})
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := e.fwd.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration }); n <= regs+1 {
				return fmt.Errorf("no second Registration")
			}
			return nil
		})
		e.fwd.Sync(t, ep)
		e.fwd.Sync(t, ep)
		if n := len(e.upResults(id)); n != 2 {
			t.Errorf("an acked result was re-sent: %d sends", n)
		}
	})
	t.Run("forwarder silent past the threshold", func(t *testing.T) {
		e := start(t, interchange.Options{HeartbeatThreshold: 300 * time.Millisecond}, false)
		m := e.manager(t, "m1", 1, 0)
		id := e.push(t, 1, 1)[0]
		waitTask(t, m, id, 1, 5*time.Second)
		m.Send(t, "", result(id, 1, messages.Success, "out"))
		e.waitUpResult(t, id, 1)
		e.fwd.SetHeartbeat(0)
		silent := time.Now()
		e.fwd.Expect(t, 10*time.Second, "Registration after the forwarder went silent", func(r testutil.Received) bool {
			return r.Type() == messages.TypeRegistration && r.At.After(silent)
		})
		t.Logf("interchange reconnected %s after the forwarder went silent", time.Since(silent).Round(time.Millisecond))
		if v := e.metric(t, "forwarder_lost_total"); v != 1 {
			t.Errorf("forwarder_lost_total = %g", v)
		}
		e.fwd.SetHeartbeat(testutil.Interval)
		e.waitUpResult(t, id, 2)
		e.fwd.SetAutoAck(true)
		e.fwd.Send(t, ep, &messages.Ack{IDs: []messages.TaskID{id}})
		testutil.WaitFor(t, 5*time.Second, func() error {
			if st := e.ix.Status(); st.ResultsUndelivered != 0 {
				return fmt.Errorf("results undelivered %d after the ack", st.ResultsUndelivered)
			}
			return nil
		})
	})
}

func TestDeltasForwarded(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	m := e.manager(t, "m1", 2, 0)
	ids := e.push(t, 2, 1)
	for _, id := range ids {
		waitTask(t, m, id, 1, 5*time.Second)
	}
	hasDelta := func(id messages.TaskID, code messages.TaskStatusCode, attempt uint32) bool {
		for _, d := range e.fwd.Deltas(ep) {
			if d.ID == id && d.Code == code && d.Attempt == attempt {
				return true
			}
		}
		return false
	}
	now := time.Now().UnixNano()
	m.Send(t, "", &messages.ManagerStatusReport{Workers: 2, Deltas: []messages.Delta{
		{ID: ids[0], Code: messages.Running, Attempt: 1, At: now},
		{ID: ids[1], Code: messages.Running, Attempt: 7, At: now},               // wrong attempt
		{ID: testutil.NewTaskID(), Code: messages.Running, Attempt: 1, At: now}, // unknown task
	}})
	// The interchange answers a status report at once with a Heartbeat.
	m.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !hasDelta(ids[0], messages.Running, 1) {
			return fmt.Errorf("no Running delta upstream")
		}
		return nil
	})
	if hasDelta(ids[1], messages.Running, 7) || hasDelta(ids[1], messages.Running, 1) {
		t.Errorf("a delta with the wrong attempt was passed up")
	}
	if v := e.metric(t, "stale_updates_total"); v != 2 {
		t.Errorf("stale_updates_total = %g, want 2", v)
	}
	rep := e.fwd.Expect(t, 5*time.Second, "EPStatusReport with totals", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.EPStatusReport)
		return ok && x.Managers == 1 && x.Workers == 2 && x.Outstanding == 2
	}).Msg.(*messages.EPStatusReport)
	if rep.ServingState != messages.NonePaused {
		t.Errorf("report serving state %s", rep.ServingState)
	}
}

func TestCancelFromForwarder(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	m := e.manager(t, "m1", 1, 0)
	ids := e.push(t, 2, 1) // one goes to the manager, one stays queued
	onManager := waitTask(t, m, ids[0], 1, 5*time.Second).ID
	queued := ids[1]
	e.fwd.Send(t, ep, &messages.Command{ID: 5, Op: messages.OpCancel, TaskIDs: []messages.TaskID{onManager, queued}})
	rep := e.fwd.Expect(t, 5*time.Second, "CommandReply 5", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.CommandReply)
		return ok && x.ID == 5
	}).Msg.(*messages.CommandReply)
	if !rep.OK() || !strings.Contains(rep.Message, "1 removed from the queue, 1 sent to managers") {
		t.Errorf("cancel reply %+v", rep)
	}
	r := e.waitUpResult(t, queued, 1)[0]
	if r.Code != messages.Cancelled {
		t.Errorf("queued task: %s", r.Code.State())
	}
	cmd := m.ExpectType(t, 5*time.Second, "", messages.TypeCommand).Msg.(*messages.Command)
	if cmd.Op != messages.OpCancel || len(cmd.TaskIDs) != 1 || cmd.TaskIDs[0] != onManager {
		t.Errorf("command to the manager %+v", cmd)
	}
	m.Send(t, "", result(onManager, 1, messages.Cancelled, ""))
	if r := e.waitUpResult(t, onManager, 1)[0]; r.Code != messages.Cancelled {
		t.Errorf("task on the manager: %s", r.Code.State())
	}
}

func TestDuplicateTaskFromForwarder(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	m := e.manager(t, "m1", 1, 0)
	b := &messages.TaskBatch{Tasks: []messages.Task{{ID: testutil.NewTaskID(), Attempt: 1, Payload: []byte(`{"kind":"noop"}`)}}}
	e.fwd.Send(t, ep, b)
	e.fwd.Send(t, ep, b)
	e.fwd.Sync(t, ep)
	m.Sync(t, "")
	m.Sync(t, "")
	if n := len(m.Tasks("")); n != 1 {
		t.Errorf("a task sent twice was dispatched %d times", n)
	}
	acks := 0
	for _, r := range e.fwd.All() {
		if a, ok := r.Msg.(*messages.Ack); ok && len(a.IDs) == 1 && a.IDs[0] == b.Tasks[0].ID {
			acks++
		}
	}
	if acks != 2 {
		t.Errorf("%d Acks for the two batches, want 2", acks)
	}
	if !bytes.Equal(m.Tasks("")[0].Payload, b.Tasks[0].Payload) {
		t.Errorf("payload changed on the way: %q", m.Tasks("")[0].Payload)
	}
}

// Two managers that expire in the same housekeeping pass are each
// declared lost once.
func TestManagersLostTogetherCountedOnce(t *testing.T) {
	// A 1s interval makes the housekeeping pass 100ms, so both silent
	// managers expire in the same pass.
	e := start(t, interchange.Options{HeartbeatInterval: time.Second, HeartbeatThreshold: 1500 * time.Millisecond}, true)
	a := e.manager(t, "a", 1, 0)
	b := e.manager(t, "b", 1, 0)
	c := e.manager(t, "c", 1, 0)
	_ = b
	a.SetHeartbeat(0)
	c.SetHeartbeat(0)
	a.Send(t, "", &messages.Heartbeat{})
	c.Send(t, "", &messages.Heartbeat{})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := e.ix.Status().Managers; n != 1 {
			return fmt.Errorf("%d managers registered, want 1", n)
		}
		return nil
	})
	e.fwd.Sync(t, ep)
	if v := e.metric(t, "managers_lost_total"); v != 2 {
		t.Errorf("managers_lost_total = %g after losing 2 managers", v)
	}
	waitStatus(t, e, func(st interchange.StatusView) error {
		if len(st.ManagerList) != 1 || st.ManagerList[0].ID != "b" {
			return fmt.Errorf("managers left: %+v", st.ManagerList)
		}
		return nil
	})
}

// A manager that restarts with the same id (ROUTER_HANDOVER) holds none of
// the tasks its previous process held; they must run again, not wait
// forever on a manager that no longer has them.
func TestManagerRestartWithSameIDRerunsItsTasks(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	old := e.manager(t, "m1", 1, 0)
	id := e.push(t, 1, 1)[0]
	waitTask(t, old, id, 1, 5*time.Second)
	old.Close()

	fresh := e.manager(t, "m1", 1, 0)
	// A restarted manager reports that it holds nothing.
	fresh.Send(t, "", &messages.ManagerStatusReport{Workers: 1, IdleWorkers: 1, Capacity: 1})
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, x := range fresh.Tasks("") {
			if x.ID == id {
				return nil
			}
		}
		st := e.ix.Status()
		return fmt.Errorf("the task held by the previous m1 was not re-dispatched; interchange: queued %d, outstanding %d, m1 holds %d",
			st.Queued, st.Outstanding, st.ManagerList[0].Outstanding)
	})
}

func TestServingStatePausesDispatch(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	c := e.ix.Client()
	// Queued before the pause (no manager yet)...
	ids := e.push(t, 2, 1)
	e.fwd.Expect(t, 5*time.Second, "the batch acknowledged", func(r testutil.Received) bool { return r.Type() == messages.TypeAck })
	resp, err := c.Send(testutil.Request{Method: "POST", Path: "/servingState", Body: testutil.Raw(`{"state":"PUSH_AND_DISPATCH_PAUSED"}`)})
	if err != nil || resp.Code != 200 {
		t.Fatalf("POST /servingState: %v %d %s", err, resp.Code, resp.Body)
	}
	// ...and a push while paused is given back, not queued.
	refused := e.push(t, 1, 1)
	nack := e.fwd.Expect(t, 5*time.Second, "a Nack of the batch pushed while paused", func(r testutil.Received) bool {
		return r.Type() == messages.TypeNack
	}).Msg.(*messages.Nack)
	if len(nack.IDs) != 1 || nack.IDs[0] != refused[0] {
		t.Fatalf("nack %+v, want the one task pushed while paused", nack)
	}
	m := e.manager(t, "m1", 2, 0)
	e.fwd.Expect(t, 5*time.Second, "a report with PUSH_AND_DISPATCH_PAUSED and 2 queued", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.EPStatusReport)
		return ok && x.ServingState == messages.PushAndDispatchPaused && x.Queued == 2
	})
	m.Sync(t, "")
	m.Sync(t, "")
	if n := len(m.Tasks("")); n != 0 {
		t.Fatalf("dispatch paused, yet the manager got %d tasks", n)
	}
	resp, err = c.Send(testutil.Request{Method: "POST", Path: "/servingState", Body: testutil.Raw(`{"state":""}`)})
	if err != nil || resp.Code != 200 {
		t.Fatalf("clear: %v %d %s", err, resp.Code, resp.Body)
	}
	for _, id := range ids {
		waitTask(t, m, id, 1, 5*time.Second)
	}
}

// Thousands of random multipart messages from a raw DEALER: every one that
// does not decode is counted and answered, and the interchange keeps
// serving a registered manager.
func TestRandomFrames(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	good := e.manager(t, "good", 1, 0)
	fuzz := testutil.NewDealer(t, "fuzzer", "fuzzer", e.ix.ManagersAddr(), testutil.PeerOptions{})
	rng := rand.New(rand.NewPCG(42, 43))
	// Real messages to mutate, so many inputs get deep into the decoders.
	seeds := []messages.Message{
		&messages.Heartbeat{}, &messages.HeartbeatReq{Nonce: 7},
		&messages.ManagerStatusReport{Workers: 2, Deltas: []messages.Delta{{ID: testutil.NewTaskID(), Code: messages.Running, Attempt: 1, At: 5}}},
		result(testutil.NewTaskID(), 1, messages.Success, "payload"),
		&messages.CommandReply{ID: 3, Message: "ok", Body: []byte("{}")},
		&messages.TaskBatch{Tasks: []messages.Task{{ID: testutil.NewTaskID(), Attempt: 1, Payload: []byte(`{"kind":"noop"}`)}}},
	}
	const n = 3000
	msgs := testutil.RandomMessages(rng, n, seeds)
	bad := testutil.Undecodable(msgs)
	for _, frames := range msgs {
		if err := fuzz.SendRaw("", frames); err != nil {
			t.Fatal(err)
		}
	}
	// The fuzzer's messages are ordered: once it registers and hears back,
	// all of them have been handled.
	fuzz.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "fuzzer", Workers: 1, ProtocolVersion: messages.Version})
	fuzz.ExpectType(t, 30*time.Second, "", messages.TypeHeartbeat)
	if v := e.metric(t, "malformed_messages_total", "link", "manager"); v != float64(bad) {
		t.Errorf("malformed_messages_total = %g, want %d", v, bad)
	}
	if n := fuzz.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply }); n != bad {
		t.Errorf("%d ErrorReplies for %d undecodable messages", n, bad)
	}
	t.Logf("%d random messages, %d undecodable, all answered; interchange still up", n, bad)
	id := e.push(t, 1, 1)[0]
	var on *testutil.Peer
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, p := range []*testutil.Peer{good, fuzz} {
			for _, x := range p.Tasks("") {
				if x.ID == id {
					on = p
					return nil
				}
			}
		}
		return fmt.Errorf("task not dispatched after the random input")
	})
	on.Send(t, "", result(id, 1, messages.Success, ""))
	e.waitUpResult(t, id, 1)
}

// A TaskBatch the manager never acknowledges (lost without a reconnect
// anyone noticed) is sent to it again after the threshold.
func TestUnacknowledgedTasksSentAgainToManager(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	p := testutil.NewDealer(t, "forgetful manager", "m1", e.ix.ManagersAddr(), testutil.PeerOptions{})
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "m1", Workers: 1,
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	p.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	p.SetHeartbeat(testutil.Interval)
	id := e.push(t, 1, 1)[0]
	testutil.WaitFor(t, 10*time.Second, func() error {
		n := 0
		for _, x := range p.Tasks("") {
			if x.ID == id {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("task sent %d times; want it again without an ack", n)
		}
		return nil
	})
}

// A push that finds the queue at the pause threshold is given back at
// once, and the next report says PUSH_PAUSED, without waiting for the
// once-a-second pressure check: a flood cannot pile up far past the
// threshold between two checks.
func TestFullQueueRefusesPushesAtOnce(t *testing.T) {
	e := start(t, interchange.Options{Pressure: servingstate.Thresholds{PauseQueued: 10, ResumeQueued: 5},
		HeartbeatInterval: 10 * time.Second, HeartbeatThreshold: 30 * time.Second}, true)
	e.push(t, 12, 1)
	e.fwd.Expect(t, 5*time.Second, "the first batch acknowledged", func(r testutil.Received) bool { return r.Type() == messages.TypeAck })
	refused := e.push(t, 3, 1)
	nack := e.fwd.Expect(t, 5*time.Second, "a Nack of the push past the threshold", func(r testutil.Received) bool {
		return r.Type() == messages.TypeNack
	}).Msg.(*messages.Nack)
	if len(nack.IDs) != 3 || nack.IDs[0] != refused[0] || !strings.Contains(nack.Reason, "queue is full") {
		t.Fatalf("nack %+v, want the 3 tasks pushed past the threshold", nack)
	}
	e.fwd.Expect(t, 5*time.Second, "a report with PUSH_PAUSED", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.EPStatusReport)
		return ok && x.ServingState == messages.PushPaused
	})
}

// A manager that does not acknowledge a task batch gets it again after the
// threshold; once it acknowledges, nothing more is re-sent.
func TestUnacknowledgedTasksResent(t *testing.T) {
	e := start(t, interchange.Options{HeartbeatThreshold: 300 * time.Millisecond}, false)
	mute := testutil.NewDealer(t, "fake manager mute", "mute", e.ix.ManagersAddr(), testutil.PeerOptions{})
	mute.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "mute", Workers: 1, Prefetch: 1,
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	mute.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	mute.SetHeartbeat(testutil.Interval)
	ids := e.push(t, 2, 1)
	sent := func(p *testutil.Peer, id messages.TaskID) int {
		n := 0
		for _, x := range p.Tasks("") {
			if x.ID == id {
				n++
			}
		}
		return n
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, id := range ids {
			if n := sent(mute, id); n < 2 {
				return fmt.Errorf("task %s sent %d times to a manager that never acks, want 2", id, n)
			}
		}
		return nil
	})
	if v := e.metric(t, "tasks_resent_total"); v < 2 {
		t.Errorf("tasks_resent_total = %g, want at least 2", v)
	}
	mute.Send(t, "", &messages.Ack{IDs: ids})
	before := len(mute.Tasks(""))
	acked := time.Now()
	// Nothing can be re-sent before two thresholds have passed; then a
	// HeartbeatReq is the fence: one connection keeps order, so a re-send
	// would arrive before its answer.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if d := time.Since(acked); d < 700*time.Millisecond {
			return fmt.Errorf("only %s since the acks", d)
		}
		return nil
	})
	mute.Send(t, "", &messages.HeartbeatReq{Nonce: 77})
	mute.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeatResp)
	if n := len(mute.Tasks("")); n != before {
		t.Errorf("%d task sends after the acks, want %d", n, before)
	}
	for _, id := range ids {
		mute.Send(t, "", result(id, 1, messages.Success, ""))
		e.waitUpResult(t, id, 1)
	}
}

// Each task's owner reaches the manager, in the first batch and when it
// is sent again, and survives a restart of the interchange.
func TestOwnersReachManagers(t *testing.T) {
	opts := interchange.Options{StateDir: t.TempDir()}
	e := start(t, opts, true)
	owners := []string{"alice", "bob", "alice", ""}
	b := &messages.TaskBatch{}
	for _, o := range owners {
		b.Tasks = append(b.Tasks, messages.Task{ID: testutil.NewTaskID(), Attempt: 1, Owner: o, Payload: taskspec.Spec{Kind: "noop"}.Encode()})
	}
	e.fwd.Send(t, ep, b)
	// A manager that never acknowledges is sent its tasks again.
	p := testutil.NewDealer(t, "forgetful manager", "m1", e.ix.ManagersAddr(), testutil.PeerOptions{})
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "m1", Workers: 4,
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	p.SetHeartbeat(testutil.Interval)
	check := func(p *testutil.Peer, times int) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, func() error {
			for _, want := range b.Tasks {
				n := 0
				for _, x := range p.Tasks("") {
					if x.ID != want.ID {
						continue
					}
					if x.Owner != want.Owner {
						t.Fatalf("task %s reached the manager owned by %q, not %q", x.ID, x.Owner, want.Owner)
					}
					n++
				}
				if n < times {
					return fmt.Errorf("task %s received %d times, want %d", want.ID, n, times)
				}
			}
			return nil
		})
	}
	check(p, 2)
	p.Close()
	e.ix.Stop()

	opts.Forwarder = e.fwd.Addr()
	opts.EndpointID = ep
	ix := testutil.StartInterchange(t, opts)
	p = testutil.NewDealer(t, "manager after the restart", "m1", ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true})
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "m1", Workers: 4,
		ProtocolVersion: messages.Version, SoftwareVersion: "test"})
	p.SetHeartbeat(testutil.Interval)
	p.Send(t, "", &messages.ManagerStatusReport{Workers: 4, IdleWorkers: 4, Capacity: 4})
	check(p, 1)
}

// A short task's result is not stored here: its manager keeps it, not
// acked, until the forwarder has acked it. One the forwarder leaves
// unacked is stored after a second and acked to the manager, and goes up
// again after a restart.
func TestShortResultsStayWithTheirManagerUntilTheForwarderHasThem(t *testing.T) {
	opts := interchange.Options{StateDir: t.TempDir()}
	e := start(t, opts, false)
	m := e.manager(t, "m1", 2, 0)
	ids := e.push(t, 2, 1)
	for _, id := range ids {
		waitTask(t, m, id, 1, 5*time.Second)
	}
	acked := func(id messages.TaskID) bool {
		return m.Count(func(r testutil.Received) bool {
			a, ok := r.Msg.(*messages.Ack)
			return ok && slices.Contains(a.IDs, id)
		}) > 0
	}
	unstored := func(want int) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := e.ix.Status().ResultsUnstored; n != want {
				return fmt.Errorf("%d results unstored, want %d", n, want)
			}
			return nil
		})
	}

	m.Send(t, "", result(ids[0], 1, messages.Success, "a"))
	e.waitUpResult(t, ids[0], 1)
	unstored(1)
	if acked(ids[0]) {
		t.Fatal("the manager was acked before the forwarder had the result")
	}
	e.fwd.Send(t, ep, &messages.Ack{IDs: ids[:1]})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !acked(ids[0]) {
			return fmt.Errorf("manager not acked after the forwarder's ack")
		}
		return nil
	})
	unstored(0)

	// The forwarder never acks this one.
	m.Send(t, "", result(ids[1], 1, messages.Success, "b"))
	e.waitUpResult(t, ids[1], 1)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !acked(ids[1]) {
			return fmt.Errorf("manager not acked while the forwarder is silent")
		}
		return nil
	})
	unstored(0)
	waitStatus(t, e, func(st interchange.StatusView) error {
		if st.ResultsUndelivered != 1 {
			return fmt.Errorf("%d results undelivered, want 1", st.ResultsUndelivered)
		}
		return nil
	})
	m.Close()
	e.ix.Stop()
	opts.Forwarder = e.fwd.Addr()
	opts.EndpointID = ep
	testutil.StartInterchange(t, opts)
	rs := e.waitUpResult(t, ids[1], 2)
	if string(rs[1].Payload) != "b" {
		t.Errorf("result after the restart: %+v", rs[1])
	}
}
