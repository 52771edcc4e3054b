package chain_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Each test replays an attack that worked before CurveZMQ (issue 13) and
// checks that it fails while real work goes on.

var oneManager = testutil.ChainOptions{Managers: 1, Workers: 2, Interval: 100 * time.Millisecond, Threshold: 5 * time.Second}

func freshKeys(t *testing.T) curve.KeyPair {
	t.Helper()
	k, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// runNoops submits n noops to the chain's endpoint and checks they all
// succeed.
func runNoops(t *testing.T, c *testutil.Chain, n int) {
	t.Helper()
	specs := make([]any, n)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "noop"}
	}
	ids, err := c.Client.Submit(c.Endpoint, specs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range c.Client.WaitTerminal(t, ids, 30*time.Second) {
		if v.State != "success" {
			t.Fatalf("real task %s ended %s: %s", v.TaskID, v.State, v.Error)
		}
	}
}

func ixMetric(t *testing.T, c *testutil.Chain, name string, labels ...string) float64 {
	t.Helper()
	return testutil.Metric(t, c.Interchange.Reg, "switchyard_interchange_"+name, labels...)
}

func TestAttackManagerWithoutEnrolledKeyGetsNothing(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	creds := &curve.Credentials{Kind: curve.KindManager, ServerKey: c.Interchange.ManagerCredentials().ServerKey, Client: freshKeys(t)}
	rogue := testutil.NewDealer(t, "rogue manager", "rogue", c.Interchange.ManagersAddr(), testutil.PeerOptions{Credentials: creds})
	// Its handshake never completes, so the send may not even be queued.
	_ = rogue.TrySend("", &messages.Registration{Role: messages.RoleManager, ID: "rogue", Workers: 1000000,
		ProtocolVersion: messages.Version})
	runNoops(t, c, 200)
	if n := len(rogue.All()); n != 0 {
		t.Fatalf("the rogue manager received %d messages", n)
	}
	if st := c.Interchange.Status(); st.Managers != 1 {
		t.Fatalf("interchange lists %d managers, want only the real one", st.Managers)
	}
	if n := ixMetric(t, c, "manager_registrations_total"); n != 1 {
		t.Fatalf("%g registrations accepted, want 1", n)
	}
}

// insider registers a second manager with the endpoint's real manager key
// and no capacity, so it is handed nothing.
func insider(t *testing.T, c *testutil.Chain) *testutil.Peer {
	t.Helper()
	p := testutil.NewDealer(t, "insider", "insider", c.Interchange.ManagersAddr(),
		testutil.PeerOptions{Credentials: c.Interchange.ManagerCredentials()})
	p.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "insider", ProtocolVersion: messages.Version})
	p.ExpectType(t, 10*time.Second, "", messages.TypeHeartbeat)
	return p
}

// runningTask submits an exec task that runs long enough to be forged
// against, and waits until it runs.
func runningTask(t *testing.T, c *testutil.Chain) string {
	t.Helper()
	ids, err := c.Client.Submit(c.Endpoint, taskspec.Spec{Kind: "exec", Args: []string{"sh", "-c", "sleep 1; echo real"}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		v, err := c.Client.Get(ids[0])
		if err != nil {
			return err
		}
		if v.State != "running" && v.State != "waiting-for-launch" {
			return fmt.Errorf("task is %s", v.State)
		}
		return nil
	})
	return ids[0]
}

func forge(t *testing.T, p *testutil.Peer, id string, payload []byte) {
	t.Helper()
	tid, err := messages.ParseTaskID(id)
	if err != nil {
		t.Fatal(err)
	}
	p.Send(t, "", &messages.ResultBatch{Results: []messages.Result{{ID: tid, Attempt: 1, Code: messages.Success,
		Finished: time.Now().UnixNano(), Payload: payload}}})
}

func TestAttackForgedResultForAnotherManagersTask(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	evil := insider(t, c)
	id := runningTask(t, c)
	forge(t, evil, id, []byte(`{"exit_code":0,"stdout":"forged\n","stderr":""}`))
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := ixMetric(t, c, "refused_total", "reason", "not-your-task"); n != 1 {
			return fmt.Errorf("refused{not-your-task} = %g", n)
		}
		return nil
	})
	v := c.Client.WaitTerminal(t, []string{id}, 20*time.Second)[0]
	if v.State != "success" || !bytes.Contains(v.Result, []byte("real")) {
		t.Fatalf("task ended %s with %s; want the real manager's result", v.State, v.Result)
	}
}

func TestAttackOversizedResultRefused(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	evil := insider(t, c)
	id := runningTask(t, c)
	forge(t, evil, id, bytes.Repeat([]byte("x"), 11<<20))
	r := evil.Expect(t, 10*time.Second, "an error reply", func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply })
	if e := r.Msg.(*messages.ErrorReply); e.Code != messages.CodeOversized || !strings.Contains(e.Reason, "--max-result-bytes") {
		t.Fatalf("reply %+v", e)
	}
	// A message over the socket limit is cut off by libzmq before it is
	// read; the interchange goes on.
	forge(t, evil, id, bytes.Repeat([]byte("y"), 100<<20))
	v := c.Client.WaitTerminal(t, []string{id}, 20*time.Second)[0]
	if v.State != "success" || !bytes.Contains(v.Result, []byte("real")) {
		t.Fatalf("task ended %s with %.100s", v.State, v.Result)
	}
	runNoops(t, c, 50)
}

func TestAttackEndpointTakeoverRefused(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	other := c.Forwarder.Enroll(t, "ep2")
	fwdMetric := func(name string) float64 {
		return testutil.Metric(t, c.Forwarder.Reg, "switchyard_forwarder_"+name)
	}
	// With another endpoint's key, registering as ep1 is refused.
	thief := testutil.NewDealer(t, "thief", c.Endpoint, c.Forwarder.ZMQAddr(), testutil.PeerOptions{Credentials: other})
	thief.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: c.Endpoint, ProtocolVersion: messages.Version})
	r := thief.Expect(t, 10*time.Second, "a refusal", func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply })
	if e := r.Msg.(*messages.ErrorReply); !strings.Contains(e.Reason, `enrolled for endpoint "ep2"`) {
		t.Fatalf("refusal %+v", e)
	}
	// Without any enrolled key, nothing gets through at all.
	stranger := &curve.Credentials{Kind: curve.KindEndpoint, ID: c.Endpoint, ServerKey: c.Forwarder.ServerKey(), Client: freshKeys(t)}
	ghost := testutil.NewDealer(t, "ghost", c.Endpoint, c.Forwarder.ZMQAddr(), testutil.PeerOptions{Credentials: stranger})
	_ = ghost.TrySend("", &messages.Registration{Role: messages.RoleInterchange, ID: c.Endpoint, ProtocolVersion: messages.Version})
	runNoops(t, c, 200)
	if n := thief.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeTaskBatch }); n != 0 {
		t.Fatalf("the thief received %d task batches", n)
	}
	if n := len(ghost.All()); n != 0 {
		t.Fatalf("the unenrolled peer received %d messages", n)
	}
	if n := fwdMetric("registrations_refused_total"); n != 1 {
		t.Fatalf("registrations refused = %g, want 1", n)
	}
	if v, ok := c.Forwarder.Endpoint(c.Endpoint); !ok || !v.Connected {
		t.Fatalf("the real endpoint lost its connection: %+v", v)
	}
}

func TestAttackRegistrationFloodLeavesNoState(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	other := c.Forwarder.Enroll(t, "ep2")
	before := len(c.Forwarder.Endpoints())
	p := testutil.NewDealer(t, "flood", "ep2", c.Forwarder.ZMQAddr(), testutil.PeerOptions{Credentials: other})
	const n = 500
	for i := 0; i < n; i++ {
		p.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: fmt.Sprintf("random-%d", i),
			ProtocolVersion: messages.Version})
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		if got := testutil.Metric(t, c.Forwarder.Reg, "switchyard_forwarder_registrations_refused_total"); got != n {
			return fmt.Errorf("%g of %d refused so far", got, n)
		}
		return nil
	})
	if after := len(c.Forwarder.Endpoints()); after != before {
		t.Fatalf("endpoints listed: %d before, %d after %d refused registrations", before, after, n)
	}
	if got := len(testutil.MetricLabels(t, c.Forwarder.Reg, "switchyard_forwarder_endpoint_connected")); got != before {
		t.Fatalf("%d endpoint metric series, want %d", got, before)
	}
	logged := strings.Count(c.Forwarder.Log.String(), "registration refused")
	if logged > 5 {
		t.Fatalf("%d log lines for %d identical refusals", logged, n)
	}
	runNoops(t, c, 20)
}

func TestRevokedEndpointDroppedAtOnce(t *testing.T) {
	c := testutil.StartChain(t, oneManager)
	if err := c.Forwarder.DeleteEndpoint(c.Endpoint); err != nil {
		t.Fatal(err)
	}
	// Dropped as revoked, then forgotten: a deleted endpoint has no view.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n, _ := testutil.MetricValue(c.Forwarder.Reg, "switchyard_forwarder_endpoints_lost_total", "reason", "credential revoked"); n != 1 {
			return fmt.Errorf("%g endpoints lost as revoked", n)
		}
		if v, ok := c.Forwarder.Endpoint(c.Endpoint); ok {
			return fmt.Errorf("endpoint view %+v", v)
		}
		return nil
	})
	// Its interchange tries again and is refused: the key is gone.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, c.Forwarder.Reg, "switchyard_forwarder_registrations_refused_total"); n < 1 {
			return fmt.Errorf("no refused registration yet")
		}
		return nil
	})
	if v, ok := c.Forwarder.Endpoint(c.Endpoint); ok {
		t.Fatalf("a revoked endpoint connected again: %+v", v)
	}
}

func TestManagerRefusesAnImpostorInterchange(t *testing.T) {
	// A process listening where the interchange should be, with its own key.
	fake := testutil.NewRouter(t, "impostor", "", testutil.PeerOptions{})
	creds := &curve.Credentials{Kind: curve.KindManager, ServerKey: freshKeys(t).Public, Client: freshKeys(t)}
	m := testutil.StartManager(t, manager.Options{Interchange: fake.Addr(), ManagerID: "m1", Credentials: creds,
		HeartbeatInterval: 20 * time.Millisecond, HeartbeatThreshold: 60 * time.Millisecond})
	testutil.WaitFor(t, 20*time.Second, func() error {
		if st := m.Status(); st.ReconnectWait == "" {
			return fmt.Errorf("manager has not retried yet: %+v", st)
		}
		return nil
	})
	if n := len(fake.All()); n != 0 {
		b, _ := json.Marshal(fake.All())
		t.Fatalf("the impostor received %d messages: %s", n, b)
	}
}

func TestAttackForgedResultForQueuedTask(t *testing.T) {
	o := oneManager
	o.Workers, o.Prefetch = 1, 0
	c := testutil.StartChain(t, o)
	evil := insider(t, c)
	ids, err := c.Client.Submit(c.Endpoint, taskspec.Spec{Kind: "sleep", Args: []string{"1"}},
		taskspec.Spec{Kind: "exec", Args: []string{"echo", "real"}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := c.Interchange.Status(); st.Queued != 1 {
			return fmt.Errorf("queued %d, want 1", st.Queued)
		}
		return nil
	})
	forge(t, evil, ids[1], []byte(`{"exit_code":0,"stdout":"forged\n","stderr":""}`))
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := ixMetric(t, c, "refused_total", "reason", "not-your-task"); n != 1 {
			return fmt.Errorf("refused{not-your-task} = %g", n)
		}
		return nil
	})
	v := c.Client.WaitTerminal(t, ids[1:], 20*time.Second)[0]
	if v.State != "success" || !bytes.Contains(v.Result, []byte("real")) {
		t.Fatalf("queued task ended %s with %s; want the real run's result", v.State, v.Result)
	}
}
