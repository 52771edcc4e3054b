package forwarder

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evSubmitted, evAdopt:
		if !l.f.EndpointEnrolled(ev.ep) {
			return // deleted meanwhile; deleteEndpoint failed these tasks
		}
		ep := l.endpointFor(ev.ep)
		if l.f.shared != nil && !ep.held && ep.claiming == nil {
			// Another forwarder dispatches them, told by NOTIFY.
			l.f.tasks.forget(ev.tasks)
			return
		}
		ep.pending.add(ev.tasks)
		l.f.publish(ep)
	case evLease:
		l.leaseDecided(ev)
	case evLeaseLost:
		l.leaseLost(ev.ep)
	case evCancel:
		ep, ok := l.eps[ev.ep]
		if !ok {
			return
		}
		// Every id goes, in flight or not: the endpoint may hold a task
		// pushed before it went away and came back (its registration
		// can be handled before this event), and it drops ids it
		// does not know.
		for _, id := range ev.ids {
			if e, ok := ep.inflight[id]; ok {
				ep.release(e)
			}
			ep.cancels = append(ep.cancels, id)
		}
		l.sendCancels(ep)
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
		l.commands[ev.cmd.ID] = pendingCmd{ep: ev.ep, cmd: ev.cmd, reply: ev.reply, deadline: time.Now().Add(30 * time.Second)}
		if c := ev.cmd; c.Op == messages.OpSetServingState && c.Manager == "" && !c.Clear && !c.State.PushAllowed() {
			// A pause holds from now: no batch leaves after the command.
			ep.holdPush = true
		}
	case evAck:
		if ep, ok := l.eps[ev.ep]; ok && ep.connected {
			_ = l.send(ep, &messages.Ack{IDs: ev.ids})
		}
	case evRevoke, evDeleted:
		// Only the connection that used the revoked key: a new key's
		// interchange may already have registered.
		if ep, ok := l.eps[ev.ep]; ok && ep.connected && strings.HasSuffix(ep.User, "|"+ev.key) {
			l.router.Refuse(ep.Route, messages.CodeRefused, "endpoint "+ep.id+" was deleted or given a new key")
			l.endpointLost(ep, link.ReasonRevoked, time.Now())
		}
		if ev.kind == evDeleted && !l.f.enrolled.has(ev.ep) {
			l.forget(ev.ep) // unless it was created again meanwhile
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

// commandDone applies what a command's reply says about the endpoint: a
// serving state set on the interchange takes effect here at once, not at
// the next status report.
func (l *loop) commandDone(ep *endpoint, pc pendingCmd, rep *messages.CommandReply) {
	if pc.cmd == nil || pc.cmd.Op != messages.OpSetServingState || pc.cmd.Manager != "" {
		return
	}
	var v struct {
		Current string `json:"current_state"`
	}
	if rep.OK() && json.Unmarshal(rep.Body, &v) == nil {
		if st, err := messages.ParseServingState(v.Current); err == nil {
			ep.report.ServingState = st
			l.f.publish(ep)
		}
	}
	ep.holdPush = false
}

// nacked puts tasks the endpoint gave back (it is paused) in front of the
// pending ones; they go again once it accepts pushes.
func (l *loop) nacked(ep *endpoint, n *messages.Nack) {
	back := make([]*entry, 0, len(n.IDs))
	for _, id := range n.IDs {
		if e, ok := ep.inflight[id]; ok {
			ep.release(e)
			back = append(back, e)
		}
	}
	// They wait here now, as for an endpoint that went away.
	back = l.f.tasks.endpointLost(back)
	ep.pending.addFront(back)
	ep.holdPush = true
	l.f.m.nacked.Add(float64(len(back)))
	l.quiet.Info("nack:"+ep.id, l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "tasks": len(back), "reason": n.Reason}),
		"endpoint gave tasks back; holding them until it accepts pushes")
	l.f.publish(ep)
}
