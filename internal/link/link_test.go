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

// rec is a caller's record with its delivery state embedded.
type rec struct {
	id messages.TaskID
	d  Delivery[rec]
}

func delivery(r *rec) *Delivery[rec] { return &r.d }

func ids(rs []*rec) []messages.TaskID {
	var out []messages.TaskID
	for _, r := range rs {
		out = append(out, r.id)
	}
	return out
}

func TestDeliveriesHoldAckDueAndTakeAll(t *testing.T) {
	s := NewDeliveries(delivery)
	r1, r2, r3 := &rec{id: id(1)}, &rec{id: id(2)}, &rec{id: id(3)}
	t0 := time.Unix(100, 0)
	th := time.Second
	s.Sent(r1, t0.UnixNano())
	s.Sent(r2, t0.Add(th/2).UnixNano())
	s.Sent(r3, t0.Add(th/2).UnixNano())
	if s.Len() != 3 || s.Unacked() != 3 || !s.Waiting(r1) {
		t.Fatalf("held %d unacked %d", s.Len(), s.Unacked())
	}
	if !s.Ack(r3) || s.Ack(r3) || s.Waiting(r3) || s.Len() != 3 || s.Unacked() != 2 {
		t.Fatalf("after ack: held %d unacked %d", s.Len(), s.Unacked())
	}
	if due := s.Due(t0.Add(th/2), th, nil); len(due) != 0 {
		t.Fatalf("due %v before the threshold", ids(due))
	}
	// Only the one sent longer than the threshold ago, and held still.
	due := s.Due(t0.Add(th+th/2), th, nil)
	if len(due) != 1 || due[0] != r1 || s.Waiting(r1) || s.Unacked() != 1 {
		t.Fatalf("due %v, unacked %d", ids(due), s.Unacked())
	}
	// At most once per threshold: r2 is due too by now, but not yet looked for.
	if due := s.Due(t0.Add(2*th), th, nil); len(due) != 0 {
		t.Fatalf("due %v twice within one threshold", ids(due))
	}
	if due := s.Due(t0.Add(3*th), th, nil); len(due) != 1 || due[0] != r2 {
		t.Fatalf("due %v after the next threshold, want 2", ids(due))
	}
	s.Sent(r1, t0.Add(3*th).UnixNano())
	if !s.Drop(r2) || s.Drop(r2) {
		t.Fatal("drop of one taken out to be sent again")
	}
	// After a re-registration: everything sent, acknowledged or not.
	all := s.TakeAll(nil)
	if len(all) != 2 || all[0] != r3 || all[1] != r1 || s.Len() != 0 {
		t.Fatalf("TakeAll %v, held %d", ids(all), s.Len())
	}
	if !s.Drop(r1) || !s.Drop(r3) || s.Drop(r3) {
		t.Fatal("dropping what TakeAll returned")
	}
}

func TestDeliveriesDropFromTheMiddle(t *testing.T) {
	s := NewDeliveries(delivery)
	rs := []*rec{{id: id(1)}, {id: id(2)}, {id: id(3)}, {id: id(4)}}
	for i, r := range rs {
		s.Sent(r, int64(i+1))
	}
	s.Drop(rs[1])
	s.Ack(rs[3])
	s.Drop(rs[0])
	if due := s.Due(time.Unix(0, 100), 1, nil); len(due) != 1 || due[0] != rs[2] {
		t.Fatalf("due %v, want 3", ids(due))
	}
	if all := s.TakeAll(nil); len(all) != 1 || all[0] != rs[3] {
		t.Fatalf("TakeAll %v, want 4", ids(all))
	}
}

func TestOutboxHoldsUntilAcked(t *testing.T) {
	o := NewOutbox(delivery)
	r1, r2 := &rec{id: id(1)}, &rec{id: id(2)}
	o.Put(r1)
	o.Put(r2)
	if q := o.Queued(); len(q) != 2 || !o.Held(r1) {
		t.Fatalf("queued %v", ids(q))
	}
	t0 := time.Unix(100, 0)
	o.Sent(2, t0.UnixNano())
	if len(o.Queued()) != 0 || o.Unacked() != 2 {
		t.Fatalf("sent items still queued, or not waiting: unacked %d", o.Unacked())
	}
	if !o.Ack(r1) || o.Ack(r1) || o.Held(r1) || o.Len() != 1 {
		t.Fatalf("ack of a held item: held %d", o.Len())
	}
	th := time.Second
	if n := o.ResendDue(t0.Add(th/2), th); n != 0 {
		t.Fatalf("re-sent %d before the threshold", n)
	}
	if n := o.ResendDue(t0.Add(2*th), th); n != 1 || o.Queued()[0] != r2 {
		t.Fatalf("re-sent %d after the threshold, want only the unacked one", n)
	}
	o.Sent(1, t0.Add(2*th).UnixNano())
	if n := o.ResendDue(t0.Add(2*th+th/2), th); n != 0 {
		t.Fatalf("re-sent %d twice within one threshold", n)
	}
	// Acked while queued: skipped when sent, and not held again.
	o.Put(r1)
	o.Ack(r1)
	o.Sent(1, t0.Add(3*th).UnixNano())
	if o.Held(r1) || o.Len() != 1 {
		t.Fatalf("a dropped record came back: held %d", o.Len())
	}
	if n := o.ResendAll(); n != 1 || len(o.Queued()) != 1 || o.Queued()[0] != r2 {
		t.Fatalf("ResendAll queued %v, want the 1 held", ids(o.Queued()))
	}
	if !o.Requeue(r2) || o.Requeue(r1) {
		t.Fatal("Requeue of held/unknown records")
	}
}

func TestDeliveriesAllocateNothing(t *testing.T) {
	s := NewDeliveries(delivery)
	rs := make([]*rec, 64)
	for i := range rs {
		rs[i] = &rec{id: id(byte(i))}
	}
	buf := make([]*rec, 0, len(rs))
	n := testing.AllocsPerRun(100, func() {
		for i, r := range rs {
			s.Sent(r, int64(i+1))
		}
		for _, r := range rs[:32] {
			s.Ack(r)
		}
		buf = s.TakeAll(buf[:0])
		for _, r := range buf {
			s.Drop(r)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
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
