package interchange

import (
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// upstream is the DEALER link to the forwarder, owned by the loop. A lost
// forwarder gets a new socket each time, with backoff.
type upstream struct {
	ix         *Interchange
	log        *logrus.Entry
	sock       *zmq.Socket
	registered bool // we heard back since our last Registration
	lastSeen   time.Time
	lastSent   time.Time
	lastTry    time.Time
	backoff    time.Duration
	connects   int
}

func newUpstream(ix *Interchange) (*upstream, error) {
	return &upstream{ix: ix, log: ix.log.WithField("peer", "forwarder")}, nil
}

func (u *upstream) close() {
	zsock.Close(u.sock)
	u.sock = nil
}

// connect makes a new socket and registers.
func (u *upstream) connect(now time.Time) {
	u.close()
	s, err := zsock.NewDealer(u.ix.zctx, u.ix.opts.EndpointID, u.ix.opts.Forwarder)
	u.lastTry = now
	u.registered = false
	if err != nil {
		u.log.WithError(err).Error("cannot connect to forwarder")
		return
	}
	u.sock = s
	u.connects++
	reg := &messages.Registration{Role: messages.RoleInterchange, ID: u.ix.opts.EndpointID, Hostname: u.ix.hostname,
		ProtocolVersion: messages.Version, SoftwareVersion: u.ix.opts.Version}
	u.send(reg)
}

func (u *upstream) sendErr(m messages.Message) error {
	if u.sock == nil {
		return zsock.ErrSocketGone
	}
	frames, err := m.Pack()
	if err != nil {
		return err
	}
	if err := zsock.Send(u.sock, nil, frames); err != nil {
		return err
	}
	u.lastSent = time.Now()
	return nil
}

func (u *upstream) send(m messages.Message) {
	if err := u.sendErr(m); err != nil {
		u.log.WithError(err).WithField("type", m.Type().String()).Debug("message to forwarder not sent")
	}
}

func (u *upstream) housekeeping(l *loop, now time.Time) {
	switch {
	case u.registered && now.Sub(u.lastSeen) > u.ix.opts.HeartbeatThreshold:
		u.registered = false
		u.ix.m.forwarderLost.Inc()
		u.log.WithField("silent_for", now.Sub(u.lastSeen).Round(time.Millisecond).String()).Warn("forwarder lost; reconnecting")
		u.backoff = u.ix.opts.HeartbeatInterval
		u.connect(now)
		l.pollerOK = false
	case !u.registered && now.Sub(u.lastTry) > u.backoff+u.ix.opts.HeartbeatThreshold:
		u.backoff = heartbeat.NextBackoff(u.backoff, u.ix.opts.HeartbeatInterval, u.ix.opts.HeartbeatThreshold)
		u.log.WithField("next_try_in", u.backoff.String()).Info("no answer from forwarder; reconnecting")
		u.connect(now)
		l.pollerOK = false
	case u.registered && now.Sub(u.lastSent) >= u.ix.opts.HeartbeatInterval:
		u.send(&messages.Heartbeat{})
		u.ix.m.heartbeatsSent.WithLabelValues("forwarder").Inc()
	}
}

func (l *loop) handleUpstream(frames [][]byte) {
	u := l.up
	msg, err := messages.Unpack(frames)
	if err != nil {
		l.ix.m.malformed.WithLabelValues("forwarder").Inc()
		l.log.WithError(err).Warn("dropped undecodable message from forwarder")
		u.send(messages.ReplyFor(err))
		return
	}
	now := time.Now()
	u.lastSeen = now
	if !u.registered {
		if _, again := msg.(*messages.Reregister); !again {
			u.registered = true
			u.backoff = 0
			l.log.WithField("held_results", len(l.held)).Info("registered with forwarder")
			l.resendHeld()
		}
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.ix.m.heartbeatsRecv.WithLabelValues("forwarder").Inc()
	case *messages.TaskBatch:
		l.acceptTasks(m)
	case *messages.Ack:
		for _, id := range m.IDs {
			if h, ok := l.held[id]; ok {
				delete(l.held, id)
				if l.ix.store != nil {
					l.ops = append(l.ops, resultDeleteOp(h.seq))
				}
			}
		}
	case *messages.Command:
		if rep := l.command(m, nil); rep != nil {
			u.send(rep)
		}
	case *messages.HeartbeatReq:
		u.send(&messages.HeartbeatResp{Nonce: m.Nonce})
	case *messages.Reregister:
		if !u.registered && now.Sub(u.lastTry) < u.ix.opts.HeartbeatInterval {
			return // our Registration is on its way
		}
		l.log.WithField("reason", m.Reason).Info("forwarder asked us to re-register")
		reg := &messages.Registration{Role: messages.RoleInterchange, ID: l.ix.opts.EndpointID, Hostname: l.ix.hostname,
			ProtocolVersion: messages.Version, SoftwareVersion: l.ix.opts.Version}
		u.registered = false
		u.lastTry = now
		u.send(reg)
	case *messages.ErrorReply:
		l.log.WithField("code", m.Code.String()).Warn("forwarder refused a message: " + m.Reason)
	default:
		l.log.WithField("type", msg.Type().String()).Warn("unexpected message type from forwarder")
	}
}

// acceptTasks queues new tasks; ids already held are dropped, and their
// current state is reported again so the forwarder can reconcile.
func (l *loop) acceptTasks(b *messages.TaskBatch) {
	ids := make([]messages.TaskID, len(b.Tasks))
	now := time.Now().UnixNano()
	var deltas []messages.Delta
	for i := range b.Tasks {
		t := &b.Tasks[i]
		ids[i] = t.ID
		if have, ok := l.tasks[t.ID]; ok {
			l.ix.m.duplicates.Inc()
			deltas = append(deltas, messages.Delta{ID: t.ID, Code: have.code, Attempt: have.attempt, At: now})
			continue
		}
		if h, ok := l.held[t.ID]; ok {
			l.ix.m.duplicates.Inc()
			l.outbox = append(l.outbox, h.Result)
			continue
		}
		it := &itask{id: t.ID, seq: l.nextSeq(), attempt: max(t.Attempt, 1), payload: t.Payload}
		l.tasks[t.ID] = it
		l.enqueueBack(it)
		if l.ix.store != nil {
			l.ops = append(l.ops, taskOp(it))
		}
		deltas = append(deltas, messages.Delta{ID: t.ID, Code: messages.WaitingForNodes, Attempt: it.attempt, At: now})
	}
	l.ix.m.received.Add(float64(len(b.Tasks)))
	l.ix.status.add(deltas...)
	// Acknowledge only what is stored.
	l.persist(l.takeOps(), func(l *loop) { l.up.send(&messages.Ack{IDs: ids}) })
}
