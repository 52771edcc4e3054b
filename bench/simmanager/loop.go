package simmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// sim is one simulated manager; only its loop touches it.
type sim struct {
	id         string
	sock       *zmq.Socket
	registered bool
	lastSeen   time.Time
	lastSent   time.Time
	lastReg    time.Time
	nextReport time.Time
	// unacked results are kept until the interchange acks them and are
	// re-sent after every registration; outbox waits for a full pipe.
	unacked map[messages.TaskID]messages.Result
	outbox  []messages.Result
}

// loop owns a share of the fleet's sockets.
type loop struct {
	f    *Fleet
	sims []*sim
}

// maxRecvPerSocket bounds how long one busy socket can hold the loop.
const maxRecvPerSocket = 100

func (l *loop) run(ctx context.Context) error {
	defer func() {
		for _, s := range l.sims {
			if s.registered {
				l.f.c.registered.Add(-1)
			}
			zsock.Close(s.sock)
			s.sock = nil
		}
	}()
	poller := zmq.NewPoller()
	bySock := make(map[*zmq.Socket]*sim, len(l.sims))
	now := time.Now()
	for _, s := range l.sims {
		poller.Add(s.sock, zmq.POLLIN)
		bySock[s.sock] = s
		l.register(s, now)
	}
	o := l.f.opts
	// Timers are checked on a tick, not per socket: a tenth of an
	// interval is precise enough for reports and keeps idle loops idle.
	tick := min(max(o.HeartbeatInterval/10, time.Millisecond), 100*time.Millisecond)
	next := now
	for {
		if ctx.Err() != nil {
			return nil
		}
		timeout := min(max(time.Until(next), 0), 100*time.Millisecond)
		polled, err := poller.Poll(timeout)
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(4) { // EINTR
				continue
			}
			return fmt.Errorf("simmanager: poll: %w", err)
		}
		for _, p := range polled {
			s := bySock[p.Socket]
			for i := 0; i < maxRecvPerSocket; i++ {
				frames, ok, err := zsock.Recv(s.sock)
				if err != nil {
					return fmt.Errorf("simmanager: manager %s: recv: %w", s.id, err)
				}
				if !ok {
					break
				}
				l.handle(s, frames)
			}
		}
		now = time.Now()
		if !now.Before(next) {
			for _, s := range l.sims {
				l.timers(s, now)
			}
			next = now.Add(tick)
		}
	}
}

// send packs and sends m; it reports whether the socket took it.
func (l *loop) send(s *sim, m messages.Message) bool {
	frames, err := m.Pack()
	if err != nil {
		l.f.log.WithError(err).WithField("manager", s.id).Warn("cannot pack message")
		return false
	}
	if err := zsock.Send(s.sock, nil, frames); err != nil {
		l.f.c.sendFailures.Add(1)
		return false
	}
	s.lastSent = time.Now()
	l.f.c.sent[m.Type()].Add(1)
	return true
}

func (l *loop) register(s *sim, now time.Time) {
	s.lastReg = now
	o := l.f.opts
	l.send(s, &messages.Registration{Role: messages.RoleManager, ID: s.id, Hostname: "simulated",
		Workers: o.Workers, Prefetch: o.Prefetch, ProtocolVersion: messages.Version, SoftwareVersion: "simmanager"})
}

func (l *loop) setRegistered(s *sim, v bool) {
	if s.registered == v {
		return
	}
	s.registered = v
	if v {
		l.f.c.registered.Add(1)
	} else {
		l.f.c.registered.Add(-1)
	}
}

// timers sends the status report, the soft heartbeat, and registers again
// when the interchange has gone silent.
func (l *loop) timers(s *sim, now time.Time) {
	o := l.f.opts
	switch {
	case s.registered && now.Sub(s.lastSeen) > o.HeartbeatThreshold:
		l.setRegistered(s, false)
		l.f.c.reconns.Add(1)
		l.f.log.WithField("manager", s.id).Info("interchange silent; registering again")
		l.register(s, now)
	case !s.registered && now.Sub(s.lastReg) > o.HeartbeatThreshold:
		l.register(s, now)
	}
	if !s.registered {
		return
	}
	if !now.Before(s.nextReport) {
		w := o.Workers
		l.send(s, &messages.ManagerStatusReport{Workers: w, IdleWorkers: w, Capacity: w + o.Prefetch,
			ServingState: messages.NonePaused})
		s.nextReport = s.nextReport.Add(o.HeartbeatInterval)
		if s.nextReport.Before(now) {
			s.nextReport = now.Add(o.HeartbeatInterval)
		}
	}
	if now.Sub(s.lastSent) >= o.HeartbeatInterval {
		l.send(s, &messages.Heartbeat{})
	}
	l.flush(s)
}

func (l *loop) handle(s *sim, frames [][]byte) {
	msg, err := messages.Unpack(frames)
	if err != nil {
		l.f.c.undecodable.Add(1)
		l.f.log.WithError(err).WithField("manager", s.id).Warn("undecodable message from interchange")
		l.send(s, messages.ReplyFor(err))
		return
	}
	l.f.c.received[msg.Type()].Add(1)
	now := time.Now()
	s.lastSeen = now
	if _, again := msg.(*messages.Reregister); !again && !s.registered {
		// Any answer to a Registration means it was accepted.
		l.setRegistered(s, true)
		l.resend(s)
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
	case *messages.TaskBatch:
		l.complete(s, m, now)
	case *messages.Ack:
		for _, id := range m.IDs {
			if _, ok := s.unacked[id]; ok {
				delete(s.unacked, id)
				l.f.c.acked.Add(1)
			}
		}
	case *messages.Reregister:
		if !s.registered && now.Sub(s.lastReg) < l.f.opts.HeartbeatInterval {
			return // our Registration is on its way
		}
		l.setRegistered(s, false)
		l.f.log.WithFields(logrus.Fields{"manager": s.id, "reason": m.Reason}).Info("asked to re-register")
		l.register(s, now)
	case *messages.HeartbeatReq:
		l.send(s, &messages.HeartbeatResp{Nonce: m.Nonce})
	case *messages.Command:
		l.send(s, command(m))
	case *messages.ErrorReply:
		l.f.log.WithFields(logrus.Fields{"manager": s.id, "code": m.Code.String()}).Warn("interchange refused a message: " + m.Reason)
	}
}

// complete answers every task at once as a successful no-op.
func (l *loop) complete(s *sim, b *messages.TaskBatch, now time.Time) {
	at := now.UnixNano()
	for i := range b.Tasks {
		t := &b.Tasks[i]
		if r, ok := s.unacked[t.ID]; ok && r.Attempt >= t.Attempt {
			s.outbox = append(s.outbox, r) // a duplicate: answer again
			continue
		}
		r := messages.Result{ID: t.ID, Attempt: t.Attempt, Code: messages.Success, Started: at, Finished: at}
		s.unacked[t.ID] = r
		s.outbox = append(s.outbox, r)
		l.f.c.completed.Add(1)
	}
	l.flush(s)
}

// flush sends waiting results in batches; a full pipe leaves the rest for
// the next tick.
func (l *loop) flush(s *sim) {
	if !s.registered {
		return
	}
	const batch = 1000
	for len(s.outbox) > 0 {
		n := min(len(s.outbox), batch)
		if !l.send(s, &messages.ResultBatch{Results: s.outbox[:n]}) {
			return
		}
		s.outbox = s.outbox[n:]
	}
	s.outbox = nil
}

// resend queues every unacked result again after a registration.
func (l *loop) resend(s *sim) {
	if len(s.unacked) == 0 {
		return
	}
	s.outbox = s.outbox[:0]
	for _, r := range s.unacked {
		s.outbox = append(s.outbox, r)
	}
	l.flush(s)
}

var errNotSupported = errors.New("not supported by a simulated manager")

func command(c *messages.Command) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		return &messages.CommandReply{ID: c.ID, OK: true, Message: fmt.Sprintf("cancelling 0 of %d tasks: simulated tasks finish at once", len(c.TaskIDs))}
	case messages.OpGetServingState:
		return &messages.CommandReply{ID: c.ID, OK: true, Message: "Current state: " + messages.NonePaused.String()}
	}
	return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("operation %s is %v", c.Op, errNotSupported)}
}
