package simmanager_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/bench/simmanager"
	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

const interval = 50 * time.Millisecond

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not met within %s: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// run starts fn in a goroutine and stops it at cleanup.
func run(t *testing.T, name string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

func startEndpoint(t *testing.T) (*forwarder.Forwarder, *interchange.Interchange) {
	t.Helper()
	fw, err := forwarder.New(forwarder.Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: true,
		HeartbeatInterval: interval, HeartbeatThreshold: 10 * interval, Log: quietLog()})
	if err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	run(t, "forwarder", fw.Run)
	creds, err := fw.CreateEndpoint("sim", false)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := interchange.New(interchange.Options{EndpointID: "sim", Forwarder: fw.ZMQAddr(), ListenManagers: "tcp://127.0.0.1:*",
		ListenHTTP: "127.0.0.1:0", NoPersist: true, HeartbeatInterval: interval, HeartbeatThreshold: 10 * interval, Log: quietLog(),
		Credentials: creds})
	if err != nil {
		t.Fatalf("interchange: %v", err)
	}
	run(t, "interchange", ix.Run)
	return fw, ix
}

func TestFleetRegistersAndCompletesTasks(t *testing.T) {
	fw, ix := startEndpoint(t)
	const k = 20
	fleet, err := simmanager.New(simmanager.Options{Interchange: ix.ManagersAddr(), Count: k, IDPrefix: "t-", Workers: 2,
		Credentials: ix.ManagerCredentials(), Prefetch: 8, HeartbeatInterval: interval, HeartbeatThreshold: 10 * interval, PerLoop: 7})
	if err != nil {
		t.Fatalf("simmanager.New: %v", err)
	}
	run(t, "fleet", fleet.Run)

	waitFor(t, 10*time.Second, func() error {
		st := ix.Status()
		if st.Managers != k || fleet.Stats().Registered != k {
			return fmt.Errorf("interchange sees %d managers, fleet has %d registered; want %d", st.Managers, fleet.Stats().Registered, k)
		}
		return nil
	})
	ids := map[string]bool{}
	for _, m := range ix.Status().ManagerList {
		ids[m.ID] = true
		if m.Workers != 2 || m.Prefetch != 8 {
			t.Errorf("manager %s registered %d workers, %d prefetch; want 2, 8", m.ID, m.Workers, m.Prefetch)
		}
	}
	for _, id := range fleet.IDs() {
		if !ids[id] {
			t.Errorf("simulated manager %s missing from the interchange's list", id)
		}
	}

	// Tasks submitted over the real API are run by the simulated managers.
	const n = 600
	taskIDs := submit(t, "http://"+fw.HTTPAddr(), fw.AdminToken(), "sim", n)
	waitFor(t, 20*time.Second, func() error {
		states, err := status(t, "http://"+fw.HTTPAddr(), fw.AdminToken(), taskIDs)
		if err != nil {
			return err
		}
		for i, s := range states {
			if s != "success" {
				return fmt.Errorf("task %d of %d is %s", i, n, s)
			}
		}
		return nil
	})
	// Reports flow every interval and each one is answered.
	waitFor(t, 5*time.Second, func() error {
		st := fleet.Stats()
		if st.TasksCompleted != n {
			return fmt.Errorf("fleet completed %d tasks, want %d", st.TasksCompleted, n)
		}
		if st.ResultsAcked != n {
			return fmt.Errorf("interchange acked %d results, want %d", st.ResultsAcked, n)
		}
		if st.Sent[messages.TypeManagerStatusReport] < 2*k || st.Received[messages.TypeHeartbeat] < 2*k {
			return fmt.Errorf("%d reports sent, %d heartbeats received", st.Sent[messages.TypeManagerStatusReport], st.Received[messages.TypeHeartbeat])
		}
		return nil
	})
	if st := fleet.Stats(); st.Undecodable != 0 || st.Received[messages.TypeErrorReply] != 0 {
		t.Errorf("fleet saw %d undecodable messages and %d ErrorReplies", st.Undecodable, st.Received[messages.TypeErrorReply])
	}
}

func submit(t *testing.T, api, token, ep string, n int) []string {
	t.Helper()
	tasks := make([]any, n)
	for i := range tasks {
		tasks[i] = map[string]string{"kind": "noop"}
	}
	ids, err := client.New(api, client.WithToken(token)).Submit(context.Background(), ep, tasks...)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return ids
}

func status(t *testing.T, api, token string, ids []string) ([]string, error) {
	ts, err := client.New(api, client.WithToken(token)).Status(context.Background(), ids)
	if err != nil {
		return nil, err
	}
	states := make([]string, len(ts))
	for i, x := range ts {
		states[i] = x.State
	}
	return states, nil
}

// fakeInterchange is a ROUTER the test drives by hand.
type fakeInterchange struct {
	t    *testing.T
	ctx  *zmq.Context
	sock *zmq.Socket
	addr string
}

func newFakeInterchange(t *testing.T) *fakeInterchange {
	t.Helper()
	ctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	s, addr, err := zsock.NewRouter(ctx, "tcp://127.0.0.1:*")
	if err != nil {
		t.Fatal(err)
	}
	fi := &fakeInterchange{t: t, ctx: ctx, sock: s, addr: addr}
	t.Cleanup(func() {
		zsock.Close(s)
		_ = ctx.Term()
	})
	return fi
}

// expect returns the next message of type want from any peer, skipping
// status reports and heartbeats unless they are what is wanted.
func (fi *fakeInterchange) expect(want messages.Type, timeout time.Duration) (string, messages.Message) {
	fi.t.Helper()
	p := zmq.NewPoller()
	p.Add(fi.sock, zmq.POLLIN)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := p.Poll(time.Until(deadline)); err != nil {
			fi.t.Fatalf("poll: %v", err)
		}
		for {
			frames, ok, err := zsock.Recv(fi.sock)
			if err != nil {
				fi.t.Fatalf("recv: %v", err)
			}
			if !ok {
				break
			}
			msg, err := messages.Unpack(frames[1:])
			if err != nil {
				fi.t.Fatalf("undecodable message from %q: %v", frames[0], err)
			}
			if msg.Type() == want {
				return string(frames[0]), msg
			}
		}
	}
	fi.t.Fatalf("no %s within %s", want, timeout)
	return "", nil
}

func (fi *fakeInterchange) send(to string, m messages.Message) {
	fi.t.Helper()
	frames, err := m.Pack()
	if err != nil {
		fi.t.Fatal(err)
	}
	if err := zsock.Send(fi.sock, []byte(to), frames); err != nil {
		fi.t.Fatalf("send %s to %s: %v", m.Type(), to, err)
	}
}

func TestFleetReregistersAndResendsUnacked(t *testing.T) {
	fi := newFakeInterchange(t)
	fleet, err := simmanager.New(simmanager.Options{Interchange: fi.addr, Count: 1, IDPrefix: "solo-", Workers: 4,
		HeartbeatInterval: interval, HeartbeatThreshold: 100 * interval})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "fleet", fleet.Run)

	who, m := fi.expect(messages.TypeRegistration, 5*time.Second)
	reg := m.(*messages.Registration)
	if !strings.HasPrefix(who, "solo-0/") || reg.ID != "solo-0" || reg.Role != messages.RoleManager || reg.Workers != 4 || reg.ProtocolVersion != messages.Version {
		t.Fatalf("registration from %q: %+v", who, reg)
	}
	fi.send(who, &messages.Heartbeat{})
	// A status report every interval, answered with a heartbeat.
	fi.expect(messages.TypeManagerStatusReport, 5*time.Second)
	fi.send(who, &messages.Heartbeat{})

	tasks := []messages.Task{{ID: messages.TaskID{1}, Attempt: 1, Payload: []byte(`{"kind":"noop"}`)},
		{ID: messages.TaskID{2}, Attempt: 3}}
	fi.send(who, &messages.TaskBatch{Tasks: tasks})
	_, m = fi.expect(messages.TypeResultBatch, 5*time.Second)
	rb := m.(*messages.ResultBatch)
	if len(rb.Results) != 2 || rb.Results[0].ID != tasks[0].ID || rb.Results[1].Attempt != 3 || rb.Results[0].Code != messages.Success {
		t.Fatalf("results %+v", rb.Results)
	}
	// Ack only the first; after Reregister the second is sent again.
	fi.send(who, &messages.Ack{IDs: []messages.TaskID{tasks[0].ID}})
	fi.send(who, &messages.Reregister{Reason: "test"})
	fi.expect(messages.TypeRegistration, 5*time.Second)
	fi.send(who, &messages.Heartbeat{})
	_, m = fi.expect(messages.TypeResultBatch, 5*time.Second)
	rb = m.(*messages.ResultBatch)
	if len(rb.Results) != 1 || rb.Results[0].ID != tasks[1].ID {
		t.Fatalf("re-sent results %+v, want only the unacked task 2", rb.Results)
	}
	// Probes and commands are answered.
	fi.send(who, &messages.HeartbeatReq{Nonce: 77})
	_, m = fi.expect(messages.TypeHeartbeatResp, 5*time.Second)
	if m.(*messages.HeartbeatResp).Nonce != 77 {
		t.Fatalf("nonce %d", m.(*messages.HeartbeatResp).Nonce)
	}
	fi.send(who, &messages.Command{ID: 9, Op: messages.OpDrain})
	_, m = fi.expect(messages.TypeCommandReply, 5*time.Second)
	if rep := m.(*messages.CommandReply); rep.ID != 9 || rep.OK() {
		t.Fatalf("reply to an unsupported command: %+v", rep)
	}
	if st := fleet.Stats(); st.TasksCompleted != 2 || st.ResultsAcked != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		opts simmanager.Options
		want string
	}{
		{"no address", simmanager.Options{}, "Interchange address is required"},
		{"threshold", simmanager.Options{Interchange: "tcp://127.0.0.1:1", HeartbeatInterval: time.Second, HeartbeatThreshold: time.Second}, "must be longer"},
		{"count", simmanager.Options{Interchange: "tcp://127.0.0.1:1", Count: -1}, "Count -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := simmanager.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// A fleet that never ran can be closed.
	f, err := simmanager.New(simmanager.Options{Interchange: "tcp://127.0.0.1:1", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f.Close()
}
