package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
		ep = &endpoint{Peer: link.Peer{ID: id}, id: id, inflight: make(map[messages.TaskID]struct{}),
			unacked: link.NewUnacked(), probes: make(map[uint64]chan commandResult), lostReason: "never connected"}
		l.eps[id] = ep
	}
	return ep
}

func newLoop(f *Forwarder) *loop {
	return &loop{f: f, router: f.router, quiet: link.NewQuiet(10 * time.Second), eps: make(map[string]*endpoint),
		commands: make(map[uint64]pendingCmd)}
}

func (l *loop) run(ctx context.Context) error {
	for id, ids := range l.f.recovered {
		ep := l.endpointFor(id)
		ep.pending = append(ep.pending, ids...)
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
			if len(ep.pending) > 0 && l.retryAt.IsZero() {
				l.flush(ep)
			}
		}
		if !now.Before(nextHK) {
			l.housekeeping(now)
			nextHK = now.Add(tick)
		}
	}
}

func (l *loop) send(ep *endpoint, m messages.Message) error { return l.router.Send(&ep.Peer, m) }

func (l *loop) handleZMQ(env link.Envelope) {
	if env.Frames == nil {
		l.f.m.malformed.Inc()
		return
	}
	msg, err := messages.Unpack(env.Frames)
	if err != nil {
		l.f.m.malformed.Inc()
		l.quiet.Warn("undecodable:"+err.Error(), l.f.log.WithError(err).WithField("connection", string(env.Route)), "dropped undecodable message")
		l.router.Reply(env.Route, messages.ReplyFor(err))
		return
	}
	now := time.Now()
	if reg, ok := msg.(*messages.Registration); ok {
		l.register(env, reg, now)
		return
	}
	var ep *endpoint
	if id, ok := l.router.PeerID(env.Route); ok {
		ep = l.eps[id]
	}
	if ep == nil || !ep.connected {
		// A connection we do not know (or expired) must register again.
		if l.router.AskReregister(env.Route, "unknown or expired endpoint; send Registration", now) {
			l.quiet.Info("rereg", l.f.log.WithFields(logrus.Fields{"connection": string(env.Route), "type": msg.Type().String()}),
				"message from unregistered endpoint; asked it to re-register")
		}
		return
	}
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
			ep.unacked.Ack(id)
		}
	case *messages.CommandReply:
		if pc, ok := l.commands[m.ID]; ok && pc.ep == ep.id {
			pc.reply <- commandResult{reply: m}
			delete(l.commands, m.ID)
		}
	case *messages.ErrorReply:
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "code": m.Code.String()}).Warn("endpoint refused a message: " + m.Reason)
	default:
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "type": msg.Type().String()}).Warn("unexpected message type from endpoint")
	}
}

func (l *loop) register(env link.Envelope, reg *messages.Registration, now time.Time) {
	id := reg.ID
	refuse := func(code messages.ErrorCode, why string) {
		l.f.m.refusedRegistrations.Inc()
		l.quiet.Warn("refused:"+string(env.Route), l.f.log.WithFields(logrus.Fields{"endpoint": id, "connection": string(env.Route)}),
			"registration refused: "+why)
		l.router.Refuse(env.Route, code, why)
	}
	if reg.Role != messages.RoleInterchange || ValidEndpointID(id) != nil {
		refuse(messages.CodeRefused, "only interchanges with a valid endpoint id connect to a forwarder")
		return
	}
	if reg.ProtocolVersion != messages.Version {
		refuse(messages.CodeVersion, fmt.Sprintf("interchange speaks protocol %d, forwarder speaks %d", reg.ProtocolVersion, messages.Version))
		return
	}
	if l.router.Secure() {
		// The ZAP handler named the connection after the endpoint its key
		// was enrolled for: it may register as that endpoint only.
		user, key, _ := strings.Cut(env.User, "|")
		if user != id {
			refuse(messages.CodeRefused, fmt.Sprintf("this key is enrolled for endpoint %q, not %q", user, id))
			return
		}
		if k, ok := l.f.enrolled.keyOf(id); !ok || k != key {
			refuse(messages.CodeRefused, fmt.Sprintf("endpoint %q was deleted or given a new key", id))
			return
		}
	}
	ep := l.endpointFor(id)
	for n, ch := range ep.probes {
		ch <- commandResult{err: errors.New("endpoint re-registered")}
		delete(ep.probes, n)
	}
	wasConnected := ep.connected
	l.router.Bind(&ep.Peer, env.Route, env.User, now)
	ep.reg = *reg
	ep.connected = true
	ep.lostReason = ""
	// Whatever the endpoint held may be gone; re-send it. The interchange
	// drops ids it already has.
	if n := len(ep.inflight); n > 0 {
		resend := make([]messages.TaskID, 0, n)
		for id := range ep.inflight {
			resend = append(resend, id)
		}
		clear(ep.inflight)
		ep.unacked.Clear()
		ep.pending = append(resend, ep.pending...)
	}
	l.f.log.WithFields(logrus.Fields{"endpoint": id, "host": reg.Hostname, "version": reg.SoftwareVersion,
		"reconnect": wasConnected, "pending": len(ep.pending)}).Info("endpoint registered")
	_ = l.send(ep, &messages.Heartbeat{})
	l.f.publish(ep)
}

func (l *loop) applyReport(ep *endpoint, r *messages.EPStatusReport) {
	if n := l.f.tasks.applyDeltas(ep.id, r.Deltas); n > 0 {
		l.f.m.staleUpdates.Add(float64(n))
	}
	wasPaused := !ep.report.ServingState.PushAllowed()
	r.Deltas = nil
	ep.report = *r
	if wasPaused != !r.ServingState.PushAllowed() {
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "serving_state": r.ServingState.String()}).Info("endpoint serving state changed")
	}
	l.f.publish(ep)
}

func (l *loop) applyResults(ep *endpoint, b *messages.ResultBatch) {
	ack := make([]messages.TaskID, len(b.Results))
	for i := range b.Results {
		ack[i] = b.Results[i].ID
	}
	epID := ep.id
	// Ack only once the results are durable; a crash before that makes
	// the interchange send them again.
	verdicts := l.f.tasks.completeBatch(ep.id, b.Results, l.verdicts[:0], func(err error) {
		if err != nil {
			l.f.log.WithError(err).WithField("endpoint", epID).Warn("results not stored; not acknowledged")
			return
		}
		l.f.mbox.Post(event{kind: evAck, ep: epID, ids: ack})
	})
	l.verdicts = verdicts
	now := time.Now()
	for i, v := range verdicts {
		r := &b.Results[i]
		switch v {
		case messages.Applied:
			delete(ep.inflight, r.ID)
			ep.unacked.Ack(r.ID)
			l.f.m.results.WithLabelValues(string(r.Code.State())).Inc()
			if r.Finished > 0 {
				if t, ok := l.f.tasks.get(r.ID); ok {
					l.f.m.latency.Observe(now.Sub(t.CreatedAt).Seconds())
				}
			}
		case messages.Same, messages.Regress:
			delete(ep.inflight, r.ID)
			ep.unacked.Ack(r.ID)
			l.f.m.duplicates.Inc()
		default:
			l.f.m.staleUpdates.Inc()
		}
	}
}

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evSubmitted:
		ep := l.endpointFor(ev.ep)
		ep.pending = append(ep.pending, ev.ids...)
		l.f.publish(ep)
	case evCancel:
		ep, ok := l.eps[ev.ep]
		if !ok || !ep.connected {
			return
		}
		var down []messages.TaskID
		for _, id := range ev.ids {
			if _, ok := ep.inflight[id]; ok {
				delete(ep.inflight, id)
				down = append(down, id)
			}
		}
		if len(down) > 0 {
			l.f.cmdSeq++
			_ = l.send(ep, &messages.Command{ID: l.f.cmdSeq, Op: messages.OpCancel, TaskIDs: down})
		}
	case evCommand:
		ep, ok := l.eps[ev.ep]
		if !ok || !ep.connected {
			ev.reply <- commandResult{err: errEndpointNotConnected}
			return
		}
		l.f.cmdSeq++
		ev.cmd.ID = l.f.cmdSeq
		if err := l.send(ep, ev.cmd); err != nil {
			ev.reply <- commandResult{err: err}
			return
		}
		l.commands[ev.cmd.ID] = pendingCmd{ep: ev.ep, reply: ev.reply, deadline: time.Now().Add(30 * time.Second)}
	case evAck:
		if ep, ok := l.eps[ev.ep]; ok && ep.connected {
			_ = l.send(ep, &messages.Ack{IDs: ev.ids})
		}
	case evRevoke:
		if ep, ok := l.eps[ev.ep]; ok && ep.connected {
			l.router.Refuse(ep.Route, messages.CodeRefused, "endpoint "+ep.id+" was deleted or given a new key")
			l.endpointLost(ep, link.ReasonRevoked, time.Now())
		}
	case evProbe:
		ep, ok := l.eps[ev.ep]
		if !ok || !ep.connected {
			ev.reply <- commandResult{err: errEndpointNotConnected}
			return
		}
		l.f.cmdSeq++
		if err := l.send(ep, &messages.HeartbeatReq{Nonce: l.f.cmdSeq}); err != nil {
			ev.reply <- commandResult{err: err}
			return
		}
		ep.probes[l.f.cmdSeq] = ev.reply
	}
}

// flush sends an endpoint's pending tasks while it accepts them.
func (l *loop) flush(ep *endpoint) {
	if !ep.connected || !ep.report.ServingState.PushAllowed() {
		return
	}
	now := time.Now().UnixNano()
	for len(ep.pending) > 0 {
		var n int
		l.sendBuf, n = l.f.tasks.forSend(ep.pending[:min(len(ep.pending), l.f.opts.BatchSize)], l.sendBuf[:0])
		if len(l.sendBuf) > 0 {
			err := l.send(ep, &messages.TaskBatch{Tasks: l.sendBuf})
			if err != nil {
				// Back-pressure: keep them pending and retry shortly.
				l.retryAt = time.Now().Add(5 * time.Millisecond)
				if !errors.Is(err, zsock.ErrWouldBlock) {
					l.f.log.WithError(err).WithField("endpoint", ep.id).Debug("task batch not sent")
				}
				return
			}
			l.f.m.sentBatches.Inc()
			l.f.m.sentTasks.Add(float64(len(l.sendBuf)))
			for i := range l.sendBuf {
				ep.inflight[l.sendBuf[i].ID] = struct{}{}
				ep.unacked.Sent(l.sendBuf[i].ID, now)
				l.sendBuf[i] = messages.Task{}
			}
		}
		ep.pending = ep.pending[n:]
	}
	ep.pending = nil
	l.f.publish(ep)
}

func (l *loop) housekeeping(now time.Time) {
	for _, ep := range l.eps {
		if !ep.connected {
			continue
		}
		if ep.Silent(now, l.f.timing()) {
			l.endpointLost(ep, link.ReasonSilent, now)
			continue
		}
		if l.router.HeartbeatDue(&ep.Peer, now, l.f.opts.HeartbeatInterval) {
			if err := l.send(ep, &messages.Heartbeat{}); err == nil {
				l.f.m.heartbeatsSent.Inc()
			}
		}
		l.resendUnacked(ep, now)
	}
	l.router.Prune(now)
	for id, pc := range l.commands {
		if now.After(pc.deadline) {
			pc.reply <- commandResult{err: errors.New("endpoint did not answer the command in time")}
			delete(l.commands, id)
		}
	}
}

func (l *loop) endpointLost(ep *endpoint, why link.Reason, now time.Time) {
	reason := why.String()
	l.router.Unbind(&ep.Peer)
	ep.connected = false
	ep.lostReason = reason
	ep.lostAt = now
	ids := make([]messages.TaskID, 0, len(ep.inflight))
	for id := range ep.inflight {
		ids = append(ids, id)
	}
	clear(ep.inflight)
	ep.unacked.Clear()
	back := l.f.tasks.endpointLost(ids)
	ep.pending = append(back, ep.pending...)
	for n, ch := range ep.probes {
		ch <- commandResult{err: errEndpointNotConnected}
		delete(ep.probes, n)
	}
	ep.report = messages.EPStatusReport{ServingState: ep.report.ServingState}
	l.f.m.endpointsLost.WithLabelValues(reason).Inc()
	l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "reason": reason, "requeued": len(back),
		"silent_for": now.Sub(ep.LastSeen).Round(time.Millisecond).String()}).Warn("endpoint lost")
	l.f.publish(ep)
}

// resendUnacked sends again, once per threshold, the tasks the interchange
// did not acknowledge in time (a message lost in a reconnect that nobody
// noticed); the interchange drops ids it already has.
func (l *loop) resendUnacked(ep *endpoint, now time.Time) {
	again := ep.unacked.Due(now, l.f.opts.HeartbeatThreshold, l.dueBuf[:0])
	if len(again) > 0 {
		l.f.m.resent.Add(float64(len(again)))
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "tasks": len(again)}).Warn("endpoint did not acknowledge tasks; sending them again")
		ep.pending = append(append([]messages.TaskID(nil), again...), ep.pending...)
	}
	l.dueBuf = again[:0]
}
