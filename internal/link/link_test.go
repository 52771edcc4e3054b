package link

import (
	"fmt"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func id(b byte) messages.TaskID { return messages.TaskID{b} }

func TestOutboxHoldsUntilAcked(t *testing.T) {
	o := NewOutbox(func(r *messages.Result) messages.TaskID { return r.ID })
	o.Put(messages.Result{ID: id(1), Attempt: 1})
	o.Put(messages.Result{ID: id(2), Attempt: 1})
	if q := o.Queued(); len(q) != 2 || o.Len() != 2 {
		t.Fatalf("queued %d held %d, want 2 and 2", len(q), o.Len())
	}
	t0 := time.Unix(100, 0)
	o.Sent(2, t0.UnixNano())
	if len(o.Queued()) != 0 {
		t.Fatal("sent items still queued")
	}
	if _, ok := o.Ack(id(1)); !ok || o.Len() != 1 {
		t.Fatalf("ack of a held item: held %d", o.Len())
	}
	if _, ok := o.Ack(id(1)); ok {
		t.Fatal("a second ack found the item again")
	}
	th := time.Second
	if n := o.ResendDue(t0.Add(th/2), th); n != 0 {
		t.Fatalf("re-sent %d before the threshold", n)
	}
	if n := o.ResendDue(t0.Add(2*th), th); n != 1 || o.Queued()[0].ID != id(2) {
		t.Fatalf("re-sent %d after the threshold, want only the unacked one", n)
	}
	// At most once per threshold.
	o.Sent(1, t0.Add(2*th).UnixNano())
	if n := o.ResendDue(t0.Add(2*th+th/2), th); n != 0 {
		t.Fatalf("re-sent %d twice within one threshold", n)
	}
	o.ResendAll()
	if len(o.Queued()) != 1 {
		t.Fatalf("ResendAll queued %d, want the 1 held", len(o.Queued()))
	}
	if !o.Requeue(id(2)) || o.Requeue(id(9)) {
		t.Fatal("Requeue of held/unknown ids")
	}
}

func TestUnackedDue(t *testing.T) {
	u := NewUnacked()
	t0 := time.Unix(100, 0)
	u.Sent(id(1), t0.UnixNano())
	u.Sent(id(2), t0.Add(time.Second).UnixNano())
	u.Ack(id(3))
	due := u.Due(t0.Add(1500*time.Millisecond), time.Second, nil)
	if len(due) != 1 || due[0] != id(1) || u.Has(id(1)) || !u.Has(id(2)) {
		t.Fatalf("due %v; has1=%v has2=%v", due, u.Has(id(1)), u.Has(id(2)))
	}
}

func TestReasonStrings(t *testing.T) {
	for r, want := range map[Reason]string{ReasonSilent: "heartbeat timeout", ReasonGoodbye: "said goodbye",
		ReasonRevoked: "credential revoked", Reason(99): "unknown"} {
		if r.String() != want {
			t.Errorf("%d: %q, want %q", r, r.String(), want)
		}
	}
}

// server is a CURVE ROUTER whose ZAP handler admits one key as "good".
type server struct {
	ctx    *zmq.Context
	zap    *zsock.ZAP
	r      *Router
	addr   string
	keys   curve.KeyPair
	client curve.KeyPair
}

func newServer(t *testing.T, tm Timing) *server {
	t.Helper()
	s := &server{}
	var err error
	if s.ctx, err = zmq.NewContext(); err != nil {
		t.Fatal(err)
	}
	s.keys, _ = curve.NewKeyPair()
	s.client, _ = curve.NewKeyPair()
	if s.zap, err = zsock.StartZAP(s.ctx, func(domain, _, key string) (string, bool) {
		return "good", key == s.client.Public
	}); err != nil {
		t.Fatal(err)
	}
	sock, addr, err := zsock.NewRouter(s.ctx, "tcp://127.0.0.1:*", zsock.CurveServer(s.keys.Secret, "test"))
	if err != nil {
		t.Fatal(err)
	}
	s.addr, s.r = addr, NewRouter(sock, tm, true)
	t.Cleanup(func() {
		zsock.Close(sock)
		s.zap.Stop()
		_ = s.ctx.Term()
	})
	return s
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// pump runs both ends until done says stop or the deadline passes: the
// server registers what registers and answers with a heartbeat.
func pump(t *testing.T, s *server, u *Uplink, deadline time.Duration, done func(got []Envelope) bool) []Envelope {
	t.Helper()
	var got []Envelope
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		for {
			env, ok, err := s.r.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got = append(got, env)
			if m, err := messages.Unpack(env.Frames); err == nil {
				if reg, ok := m.(*messages.Registration); ok {
					p := &Peer{ID: reg.ID}
					s.r.Bind(p, env.Route, env.User, time.Now())
					_ = s.r.Send(p, &messages.Heartbeat{})
				}
			}
		}
		for {
			frames, ok, err := u.Recv()
			if err != nil || !ok {
				break
			}
			if m, err := messages.Unpack(frames); err == nil {
				u.Heard(m, time.Now())
			}
		}
		u.Timers(time.Now())
		if done(got) {
			return got
		}
		p := zmq.NewPoller()
		p.Add(s.r.Socket(), zmq.POLLIN)
		if us := u.Socket(); us != nil {
			p.Add(us, zmq.POLLIN)
		}
		if _, err := zsock.Wait(p, time.Now().Add(5*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

func newUplink(ctx *zmq.Context, addr string, tm Timing, keys *ClientKeys) *Uplink {
	return NewUplink(UplinkConfig{Ctx: ctx, Addr: addr, ID: "m1", Timing: tm, Keys: keys, Peer: "test server", Log: quiet(),
		Register: func() messages.Message {
			return &messages.Registration{Role: messages.RoleManager, ID: "m1", ProtocolVersion: messages.Version}
		}})
}

func TestUplinkRegistersOverCurveAndCarriesUser(t *testing.T) {
	tm := Timing{Interval: 20 * time.Millisecond, Threshold: 100 * time.Millisecond}
	s := newServer(t, tm)
	cctx, _ := zmq.NewContext()
	defer cctx.Term()
	u := newUplink(cctx, s.addr, tm, &ClientKeys{ServerKey: s.keys.Public, Public: s.client.Public, Secret: s.client.Secret})
	defer u.Close()
	u.Connect(time.Now())
	got := pump(t, s, u, 10*time.Second, func([]Envelope) bool { return u.Registered() })
	if !u.Registered() {
		t.Fatal("uplink never registered")
	}
	if len(got) == 0 || got[0].User != "good" {
		t.Fatalf("server saw %d messages, first User-Id %q; want the ZAP name \"good\"", len(got), got[0].User)
	}
	if id, ok := s.r.PeerID(got[0].Route); !ok || id != "m1" {
		t.Fatalf("route bound to %q %v", id, ok)
	}
}

func TestUplinkRefusedWithoutEnrolledKeyOrRightServer(t *testing.T) {
	tm := Timing{Interval: 20 * time.Millisecond, Threshold: 60 * time.Millisecond}
	stranger, _ := curve.NewKeyPair()
	impostor, _ := curve.NewKeyPair()
	for _, tc := range []struct {
		name string
		keys func(s *server) *ClientKeys
	}{
		{"key not enrolled", func(s *server) *ClientKeys {
			return &ClientKeys{ServerKey: s.keys.Public, Public: stranger.Public, Secret: stranger.Secret}
		}},
		{"server key not the expected one", func(s *server) *ClientKeys {
			return &ClientKeys{ServerKey: impostor.Public, Public: s.client.Public, Secret: s.client.Secret}
		}},
		{"plain client", func(*server) *ClientKeys { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tm)
			cctx, _ := zmq.NewContext()
			defer cctx.Term()
			u := newUplink(cctx, s.addr, tm, tc.keys(s))
			defer u.Close()
			u.Connect(time.Now())
			// Wait until it has given up on its first connection and tried
			// again: by then a handshake that could succeed would have.
			got := pump(t, s, u, 10*time.Second, func([]Envelope) bool { return u.Connects() >= 2 })
			if u.Connects() < 2 {
				t.Fatal("uplink never retried")
			}
			if len(got) != 0 || u.Registered() {
				t.Fatalf("server received %d messages; registered=%v", len(got), u.Registered())
			}
		})
	}
}

func TestQuietLimitsRepeats(t *testing.T) {
	q := NewQuiet(time.Hour)
	l := logrus.New()
	hook := &countHook{}
	l.AddHook(hook)
	l.SetOutput(discard{})
	for i := 0; i < 1000; i++ {
		q.Warn("same", logrus.NewEntry(l), "bad message")
		q.Warn(fmt.Sprint("k", i%2), logrus.NewEntry(l), "other")
	}
	if hook.n != 3 {
		t.Fatalf("%d lines logged for 2000 calls on 3 keys, want 3", hook.n)
	}
}

type countHook struct{ n int }

func (h *countHook) Levels() []logrus.Level   { return logrus.AllLevels }
func (h *countHook) Fire(*logrus.Entry) error { h.n++; return nil }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
