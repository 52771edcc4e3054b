package forwarder

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) endpointFor(id string) *endpoint {
	ep, ok := l.eps[id]
	if !ok {
		ep = &endpoint{Peer: link.Peer{ID: id}, id: id, inflight: make(map[messages.TaskID]*entry), sent: link.NewDeliveries(entryDelivery),
			probes: make(map[uint64]chan commandResult), lostReason: "never connected"}
		l.eps[id] = ep
	}
	return ep
}

func entryDelivery(e *entry) *link.Delivery[entry] { return &e.delivery }

func newLoop(f *Forwarder) *loop {
	l := &loop{f: f, router: f.router, quiet: link.NewQuiet(10 * time.Second), eps: make(map[string]*endpoint),
		commands: make(map[uint64]pendingCmd)}
	l.router.Malformed = l.malformed
	return l
}

func (l *loop) run(ctx context.Context) error {
	for id, es := range l.f.recovered {
		if l.f.shared != nil {
			// Read again when this forwarder takes the endpoint's lease.
			l.f.tasks.forget(es)
			continue
		}
		ep := l.endpointFor(id)
		ep.pending.add(es)
		ep.lostReason = "forwarder restarted; waiting for the endpoint"
		l.f.publish(ep)
	}
	l.f.recovered = nil
	poller := zmq.NewPoller()
	poller.Add(l.router.Socket(), zmq.POLLIN)
	poller.Add(l.f.mbox.Socket(), zmq.POLLIN)
	tick := heartbeat.Tick(l.f.opts.HeartbeatInterval)
	nextHK := time.Now().Add(tick)
	var evs []event
	for {
		if ctx.Err() != nil {
			return nil
		}
		polled, err := zsock.Wait(poller, nextHK, l.retryAt)
		if err != nil {
			return err
		}
		for _, p := range polled {
			switch p.Socket {
			case l.router.Socket():
				for i := 0; i < 1000; i++ {
					env, ok, err := l.router.Recv()
					if err != nil {
						return fmt.Errorf("recv: %w", err)
					}
					if !ok {
						break
					}
					l.handleZMQ(env)
				}
			case l.f.mbox.Socket():
				evs = l.f.mbox.Take(evs)
				for i := range evs {
					l.handleEvent(&evs[i])
					evs[i] = event{}
				}
			}
		}
		now := time.Now()
		if !l.retryAt.IsZero() && !now.Before(l.retryAt) {
			l.retryAt = time.Time{}
		}
		for _, ep := range l.eps {
			if len(ep.cancels) > 0 && l.retryAt.IsZero() {
				l.sendCancels(ep)
			}
			if ep.pending.Len() > 0 && l.retryAt.IsZero() {
				l.flush(ep)
			}
		}
		if !now.Before(nextHK) {
			l.housekeeping(now)
			nextHK = now.Add(tick)
		}
	}
}

// malformed counts a message the router dropped, and logs why.
func (l *loop) malformed(route []byte, err error) {
	l.f.m.malformed.Inc()
	if err != nil {
		l.quiet.Warn("undecodable:"+err.Error(), l.f.log.WithError(err).WithField("connection", string(route)), "dropped undecodable message")
	}
}

// live reports whether endpoint id is connected.
func (l *loop) live(id string) bool {
	ep := l.eps[id]
	return ep != nil && ep.connected
}

func (l *loop) send(ep *endpoint, m messages.Message) error { return l.router.Send(&ep.Peer, m) }

// release takes e out of what ep holds: it ended, or came back.
func (ep *endpoint) release(e *entry) {
	delete(ep.inflight, e.ID)
	ep.sent.Drop(e)
}

// maxCancelIDs bounds one cancel command.
const maxCancelIDs = 10000

// sendCancels sends the cancels ep is owed while it is connected; a
// failed send keeps them for the next pass.
func (l *loop) sendCancels(ep *endpoint) {
	for ep.connected && len(ep.cancels) > 0 {
		n := min(len(ep.cancels), maxCancelIDs)
		l.f.cmdSeq++
		err := l.send(ep, &messages.Command{ID: l.f.cmdSeq, Op: messages.OpCancel, TaskIDs: ep.cancels[:n]})
		if err != nil {
			l.retryAt = time.Now().Add(5 * time.Millisecond)
			l.f.log.WithError(err).WithField("endpoint", ep.id).Debug("cancel not sent; trying again")
			return
		}
		ep.cancels = ep.cancels[n:]
	}
	if len(ep.cancels) == 0 {
		ep.cancels = nil
	}
}

func (l *loop) handleZMQ(env link.Envelope) {
	now := time.Now()
	in := l.router.Accept(env, now, l.live, "unknown or expired endpoint; send Registration")
	msg := in.Msg
	switch in.Verdict {
	case link.Malformed:
		return
	case link.Registering:
		l.register(env, msg.(*messages.Registration), now)
		return
	case link.Unknown:
		if in.Asked {
			l.quiet.Info("rereg", l.f.log.WithFields(logrus.Fields{"connection": string(env.Route), "type": msg.Type().String()}),
				"message from unregistered endpoint; asked it to re-register")
		}
		return
	}
	ep := l.eps[in.PeerID]
	ep.LastSeen = now
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.f.m.heartbeatsRecv.Inc()
	case *messages.HeartbeatReq:
		_ = l.send(ep, &messages.HeartbeatResp{Nonce: m.Nonce})
	case *messages.HeartbeatResp:
		if ch, ok := ep.probes[m.Nonce]; ok {
			ch <- commandResult{reply: &messages.CommandReply{ID: m.Nonce, Message: "endpoint answered"}}
			delete(ep.probes, m.Nonce)
		}
	case *messages.EPStatusReport:
		l.applyReport(ep, m)
	case *messages.ResultBatch:
		l.applyResults(ep, m)
	case *messages.Ack:
		// The interchange has stored these tasks.
		for _, id := range m.IDs {
			if e, ok := ep.inflight[id]; ok {
				ep.sent.Ack(e)
			}
		}
	case *messages.CommandReply:
		if pc, ok := l.commands[m.ID]; ok && pc.ep == ep.id {
			l.commandDone(ep, pc, m)
			pc.reply <- commandResult{reply: m}
			delete(l.commands, m.ID)
		}
	case *messages.Nack:
		l.nacked(ep, m)
	case *messages.Goodbye:
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "reason": m.Reason}).Info("endpoint said goodbye")
		l.endpointLost(ep, link.ReasonGoodbye, now)
	case *messages.ErrorReply:
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "code": m.Code.String()}).Warn("endpoint refused a message: " + m.Reason)
	default:
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "type": msg.Type().String()}).Warn("unexpected message type from endpoint")
	}
}

// flush sends an endpoint's pending tasks while it accepts them, up to
// MaxInflight not yet ended and MaxUnacked not yet acknowledged.
func (l *loop) flush(ep *endpoint) {
	if !ep.connected || ep.holdPush || !ep.report.ServingState.PushAllowed() || len(ep.inflight) >= l.f.opts.MaxInflight {
		return
	}
	now := time.Now().UnixNano()
	for ep.pending.Len() > 0 && len(ep.inflight) < l.f.opts.MaxInflight && ep.sent.Unacked() < l.f.opts.MaxUnacked {
		var n int
		batch := ep.pending.take(min(l.f.opts.BatchSize, l.f.opts.MaxInflight-len(ep.inflight), l.f.opts.MaxUnacked-ep.sent.Unacked()))
		l.sendBuf, l.sentBuf, n = l.f.tasks.forSend(batch, l.sendBuf[:0], l.sentBuf[:0])
		if len(l.sendBuf) > 0 {
			err := l.send(ep, &messages.TaskBatch{Tasks: l.sendBuf})
			if err != nil {
				// Back-pressure: keep them pending and retry shortly.
				ep.pending.addFront(batch)
				clear(l.sentBuf)
				l.retryAt = time.Now().Add(5 * time.Millisecond)
				if !errors.Is(err, zsock.ErrWouldBlock) {
					l.f.log.WithError(err).WithField("endpoint", ep.id).Debug("task batch not sent")
				}
				return
			}
			l.f.m.sentBatches.Inc()
			l.f.m.sentTasks.Add(float64(len(l.sendBuf)))
			for i, e := range l.sentBuf {
				ep.inflight[e.ID] = e
				ep.sent.Sent(e, now)
				l.sendBuf[i], l.sentBuf[i] = messages.Task{}, nil
			}
		}
		// Past one batch's bytes: the rest go first next time.
		ep.pending.addFront(batch[n:])
		clear(batch)
	}
	l.f.publish(ep)
}
