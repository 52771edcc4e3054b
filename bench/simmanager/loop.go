package simmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// sim is one simulated manager; only its loop touches it.
type sim struct {
	id         string
	up         *link.Uplink
	registered bool // as last counted in the fleet's gauge
	nextReport time.Time
	// results are kept until the interchange acks them and are re-sent
	// after every registration; byID finds them by task id.
	results *link.Outbox[simResult]
	byID    map[messages.TaskID]*simResult
	buf     []messages.Result
}

// simResult is a result held until the interchange acks it.
type simResult struct {
	r messages.Result
	d link.Delivery[simResult]
}

func resultDelivery(r *simResult) *link.Delivery[simResult] { return &r.d }

// loop owns a share of the fleet's sockets.
type loop struct {
	f    *Fleet
	sims []*sim
}

// maxRecvPerSocket bounds how long one busy socket can hold the loop.
const maxRecvPerSocket = 100

func (l *loop) registration(s *sim) func() messages.Message {
	o := l.f.opts
	return func() messages.Message {
		l.f.c.sent[messages.TypeRegistration].Add(1)
		return &messages.Registration{Role: messages.RoleManager, ID: s.id, Hostname: "simulated",
			Workers: o.Workers, Prefetch: o.Prefetch, ProtocolVersion: messages.Version, SoftwareVersion: "simmanager"}
	}
}

func (l *loop) run(ctx context.Context) error {
	defer func() {
		for _, s := range l.sims {
			l.setRegistered(s, false)
			s.up.Close()
		}
	}()
	now := time.Now()
	for _, s := range l.sims {
		s.up.Connect(now)
	}
	var poller *zmq.Poller
	bySock := make(map[*zmq.Socket]*sim, len(l.sims))
	o := l.f.opts
	// Timers are checked on a tick, not per socket: a tenth of an
	// interval is precise enough for reports and keeps idle loops idle.
	tick := min(max(o.HeartbeatInterval/10, time.Millisecond), 100*time.Millisecond)
	next := now
	for {
		if ctx.Err() != nil {
			return nil
		}
		changed := poller == nil
		for _, s := range l.sims {
			if s.up.SocketChanged() {
				changed = true
			}
		}
		if changed {
			poller = zmq.NewPoller()
			clear(bySock)
			for _, s := range l.sims {
				if sock := s.up.Socket(); sock != nil {
					poller.Add(sock, zmq.POLLIN)
					bySock[sock] = s
				}
			}
		}
		polled, err := zsock.Wait(poller, next)
		if err != nil {
			return fmt.Errorf("simmanager: %w", err)
		}
		for _, p := range polled {
			s := bySock[p.Socket]
			if s == nil {
				continue
			}
			for i := 0; i < maxRecvPerSocket; i++ {
				frames, ok, err := s.up.Recv()
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
	if err := s.up.Send(m); err != nil {
		l.f.c.sendFailures.Add(1)
		return false
	}
	l.f.c.sent[m.Type()].Add(1)
	return true
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

// timers sends the status report, and lets the link send the soft
// heartbeat and reconnect when the interchange has gone silent.
func (l *loop) timers(s *sim, now time.Time) {
	o := l.f.opts
	switch s.up.Timers(now) {
	case link.TickLost:
		l.f.c.reconns.Add(1)
	case link.TickHeartbeat:
		l.f.c.sent[messages.TypeHeartbeat].Add(1)
	}
	l.setRegistered(s, s.up.Registered())
	if !s.up.Registered() {
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
	s.results.ResendDue(now, o.HeartbeatThreshold)
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
	registered, handled := s.up.Heard(msg, now)
	l.setRegistered(s, s.up.Registered())
	if registered {
		s.results.ResendAll()
		l.flush(s)
	}
	if handled {
		return
	}
	switch m := msg.(type) {
	case *messages.TaskBatch:
		l.complete(s, m, now)
	case *messages.Ack:
		for _, id := range m.IDs {
			if r, ok := s.byID[id]; ok {
				delete(s.byID, id)
				s.results.Ack(r)
				l.f.c.acked.Add(1)
			}
		}
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
		r, ok := s.byID[t.ID]
		if ok && r.r.Attempt >= t.Attempt {
			s.results.Requeue(r) // a duplicate: answer again
			continue
		}
		if !ok {
			r = &simResult{}
			s.byID[t.ID] = r
		}
		r.r = messages.Result{ID: t.ID, Attempt: t.Attempt, Code: messages.Success, Started: at, Finished: at}
		s.results.Put(r)
		l.f.c.completed.Add(1)
	}
	l.flush(s)
}

// flush sends waiting results in batches; a full pipe leaves the rest for
// the next tick.
func (l *loop) flush(s *sim) {
	if !s.up.Registered() {
		return
	}
	const batch = 1000
	for q := s.results.Queued(); len(q) > 0; q = s.results.Queued() {
		n := min(len(q), batch)
		s.buf = s.buf[:0]
		for _, r := range q[:n] {
			s.buf = append(s.buf, r.r)
		}
		if !l.send(s, &messages.ResultBatch{Results: s.buf}) {
			return
		}
		s.results.Sent(n, time.Now().UnixNano())
	}
}

var errNotSupported = errors.New("not supported by a simulated manager")

func command(c *messages.Command) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("cancelling 0 of %d tasks: simulated tasks finish at once", len(c.TaskIDs))}
	case messages.OpGetServingState:
		return &messages.CommandReply{ID: c.ID, Message: "Current state: " + messages.NonePaused.String()}
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is %v", c.Op, errNotSupported)}
}
