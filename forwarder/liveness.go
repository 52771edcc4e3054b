package forwarder

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

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
	if l.f.shared != nil && !ep.held {
		// Accepted once this forwarder holds the endpoint's lease; the
		// latest registration is the one answered.
		if ep.claiming == nil {
			l.f.shared.claim(id)
		}
		ep.claiming = &claimReg{route: append([]byte(nil), env.Route...), user: env.User, reg: *reg}
		return
	}
	l.bindRegistration(ep, env, reg, now)
}

// bindRegistration makes env's connection the endpoint's and re-sends
// what it may have lost.
func (l *loop) bindRegistration(ep *endpoint, env link.Envelope, reg *messages.Registration, now time.Time) {
	id := ep.id
	for n, ch := range ep.probes {
		ch <- commandResult{err: errors.New("endpoint re-registered")}
		delete(ep.probes, n)
	}
	wasConnected := ep.connected
	l.router.Bind(&ep.Peer, env.Route, env.User, now)
	ep.reg = *reg
	ep.connected = true
	ep.lostReason = ""
	// Whatever the endpoint held may be gone; re-send it (those taken
	// out to go again are pending already). The interchange drops ids it
	// already has. Cancels go first.
	if ep.sent.Len() > 0 {
		resend := ep.sent.TakeAll(make([]*entry, 0, ep.sent.Len()))
		ep.pending.addFront(resend)
	}
	clear(ep.inflight)
	l.sendCancels(ep)
	l.f.log.WithFields(logrus.Fields{"endpoint": id, "host": reg.Hostname, "version": reg.SoftwareVersion,
		"reconnect": wasConnected, "pending": ep.pending.Len()}).Info("endpoint registered")
	// The answer carries our timing, which the interchange takes for
	// this link: with its own, a mismatch would have either side declare
	// the other lost again and again.
	t := l.f.timing()
	_ = l.send(ep, &messages.Heartbeat{Interval: int64(t.Interval), Threshold: int64(t.Threshold)})
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
	ep.holdPush = false
	ep.lostReason = reason
	ep.lostAt = now
	// All it held, those taken out to go again too (they are pending
	// already, and wait for the endpoint like the rest).
	es := make([]*entry, 0, len(ep.inflight))
	for _, e := range ep.inflight {
		ep.release(e)
		es = append(es, e)
	}
	back := l.f.tasks.endpointLost(es)
	ep.pending.addFront(back)
	for n, ch := range ep.probes {
		ch <- commandResult{err: errEndpointNotConnected}
		delete(ep.probes, n)
	}
	ep.report = messages.EPStatusReport{ServingState: ep.report.ServingState}
	if l.f.shared != nil && ep.held {
		// Another forwarder may take it now; its tasks are in the
		// database for whoever does.
		ep.held = false
		l.f.shared.release(ep.id)
		l.dropTasks(ep)
	}
	l.f.m.endpointsLost.WithLabelValues(reason).Inc()
	l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "reason": reason, "requeued": len(back),
		"silent_for": now.Sub(ep.LastSeen).Round(time.Millisecond).String()}).Warn("endpoint lost")
	l.f.publish(ep)
}

// resendUnacked sends again, once per threshold, the tasks the interchange
// did not acknowledge in time (a message lost in a reconnect that nobody
// noticed); the interchange drops ids it already has.
func (l *loop) resendUnacked(ep *endpoint, now time.Time) {
	// They stay in inflight until they end, and so count in the window.
	again := ep.sent.Due(now, l.f.opts.HeartbeatThreshold, nil)
	if len(again) > 0 {
		l.f.m.resent.Add(float64(len(again)))
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "tasks": len(again)}).Warn("endpoint did not acknowledge tasks; sending them again")
		ep.pending.addFront(again)
	}
}
