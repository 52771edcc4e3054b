package forwarder

import (
	"time"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

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
