package interchange

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

// validManagerID bounds what a registration may call itself.
func validManagerID(id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("manager id must be 1 to 200 bytes, got %d", len(id))
	}
	return nil
}

func (l *loop) registerManager(env link.Envelope, reg *messages.Registration, now time.Time) {
	if reg.Role != messages.RoleManager {
		l.down.Refuse(env.Route, messages.CodeRefused, "only managers connect here")
		return
	}
	if reg.ProtocolVersion != messages.Version {
		l.down.Refuse(env.Route, messages.CodeVersion,
			fmt.Sprintf("manager speaks protocol %d, interchange speaks %d", reg.ProtocolVersion, messages.Version))
		l.log.WithField("manager", reg.ID).Warn("manager with another protocol version refused")
		return
	}
	if l.down.Secure() && env.User != managerUser && l.multi == nil {
		l.down.Refuse(env.Route, messages.CodeRefused, "this key is not enrolled as a manager of this endpoint")
		return
	}
	if err := validManagerID(reg.ID); err != nil {
		l.down.Refuse(env.Route, messages.CodeRefused, err.Error())
		return
	}
	id := reg.ID
	m, known := l.mgrs[id]
	var acct *account
	if l.multi != nil {
		var why string
		if acct, why = l.bindAccount(m, known, env.User); acct == nil {
			l.down.Refuse(env.Route, messages.CodeRefused, why)
			l.quiet.Warn("badbind:"+id, l.log.WithFields(logrus.Fields{"manager": id, "key": env.User}), "multi-user: registration refused: "+why)
			return
		}
	}
	if !known {
		if l.ix.store != nil {
			l.ops = append(l.ops, managerOp(id))
		}
		m = &manager{Peer: link.Peer{ID: id}, outstanding: make(map[messages.TaskID]*itask), sent: link.NewDeliveries(taskDelivery)}
		l.mgrs[id] = m
		l.order = append(l.order, m)
		if acct != nil {
			m.acct = acct.idx
			acct.mgrs = append(acct.mgrs, m)
		}
	}
	if known && len(m.outstanding) > 0 {
		m.resyncUntil = now.Add(2 * l.ix.opts.HeartbeatInterval)
	}
	l.down.Bind(&m.Peer, env.Route, env.User, now)
	m.reg = *reg
	m.pf.adaptive = reg.AdaptivePrefetch
	m.resize()
	l.mayIdle = true
	m.idle = reg.Workers
	m.capacity = reg.Workers + reg.Prefetch
	m.serving = messages.NonePaused
	l.ix.m.registrations.Inc()
	f := logrus.Fields{"manager": id, "host": reg.Hostname, "workers": reg.Workers,
		"prefetch": reg.Prefetch, "prefetch_adaptive": reg.AdaptivePrefetch, "known": known, "held": len(m.outstanding)}
	if reg.BlockID != "" {
		f["block"] = reg.BlockID
	}
	if acct != nil {
		f["posix_user"] = acct.Name
	}
	l.log.WithFields(f).Info("manager registered")
	// The answer carries our timing: a manager that keeps its own default
	// would report too seldom for a short threshold here.
	_ = l.sendManager(m, &messages.Heartbeat{Interval: int64(l.ix.opts.HeartbeatInterval), Threshold: int64(l.ix.opts.HeartbeatThreshold)})
	l.waitsForWork(m, now.UnixNano())
	l.publishTotals()
}

// resyncDone ends a re-registered manager's grace period: tasks it did
// not report since are lost with it.
func (l *loop) resyncDone(m *manager, now time.Time) {
	m.resyncUntil = time.Time{}
	var gone []*itask
	for _, t := range m.outstanding {
		if t.seen < m.Registered.UnixNano() {
			gone = append(gone, t)
		}
	}
	if len(gone) == 0 {
		return
	}
	requeued, failed := l.requeue(m, gone, "re-registered without it", now)
	l.log.WithFields(logrus.Fields{"manager": m.ID, "requeued": requeued, "failed": failed}).
		Warn("manager re-registered without tasks it held; running them again")
}

// managerLost re-queues the manager's tasks, or fails them after too many
// attempts.
func (l *loop) managerLost(m *manager, why link.Reason, now time.Time) {
	if _, ok := l.mgrs[m.ID]; !ok || l.mgrs[m.ID] != m {
		return
	}
	reason := why.String()
	delete(l.mgrs, m.ID)
	if l.ix.store != nil {
		l.ops = append(l.ops, managerDeleteOp(m.ID))
	}
	l.resynced(m.ID, now) // a lost manager is not waited for
	l.down.Unbind(&m.Peer)
	l.unbindAccount(m)
	for i, x := range l.order {
		if x == m {
			l.order = append(l.order[:i:i], l.order[i+1:]...)
			break
		}
	}
	ts := make([]*itask, 0, len(m.outstanding))
	for _, t := range m.outstanding {
		ts = append(ts, t)
	}
	requeued, failed := l.requeue(m, ts, reason, now)
	l.ix.m.managersLost.WithLabelValues(reason).Inc()
	e := l.log.WithFields(logrus.Fields{"manager": m.ID, "reason": reason, "requeued": requeued, "failed": failed,
		"silent_for": now.Sub(m.LastSeen).Round(time.Millisecond).String()})
	if why == link.ReasonGoodbye && requeued+failed == 0 {
		e.Info("manager left")
	} else {
		e.Warn("manager lost")
	}
	l.publishTotals()
}

// requeue takes tasks away from m: attempt + 1 and back to the queue, or
// failed once they have used up their retries.
func (l *loop) requeue(m *manager, ts []*itask, reason string, now time.Time) (requeued, failed int) {
	var back []*itask
	for _, t := range ts {
		id := t.id
		l.takeBack(m, t)
		next, fail := afterLoss(t.attempt, l.ix.opts.MaxRetries)
		if fail {
			// The task ends on its last attempt, so its attempts and the
			// message agree.
			l.finishTask(t, messages.Result{ID: id, Attempt: t.attempt, Code: messages.Failed, Finished: now.UnixNano(),
				Error: fmt.Sprintf("gave up after %d attempts: manager %s was lost (%s)", t.attempt, m.ID, reason)})
			failed++
			continue
		}
		t.attempt = next
		back = append(back, t)
		if l.ix.store != nil {
			l.ops = append(l.ops, taskOp(t))
			t.rewritten = true
		}
		t.stAt = now.UnixNano()
		requeued++
	}
	l.enqueueFront(back...)
	if len(back) > 0 {
		// Tell the forwarder of the new attempts only once they are stored:
		// a restart must not fall back to an attempt it has already seen.
		l.persist(l.takeOps(), func(l *loop) {
			for _, t := range back {
				l.markDirty(t)
			}
			l.statusNoted()
		})
	}
	return requeued, failed
}

func (l *loop) housekeeping(now time.Time) {
	l.holdExpired(now)
	l.stealsExpired(now)
	l.storeUnacked(now.Add(-unstoredFor))
	switch l.up.Timers(now) {
	case link.TickLost:
		l.ix.m.forwarderLost.Inc()
	case link.TickHeartbeat:
		l.ix.m.heartbeatsSent.WithLabelValues("forwarder").Inc()
	}
	if l.up.Registered() {
		if n := l.results.ResendDue(now, l.ix.opts.HeartbeatThreshold); n > 0 {
			l.ix.m.resultsResent.Add(float64(n))
			l.log.WithField("results", n).Warn("forwarder did not acknowledge results; sending them again")
		}
	}
	l.down.Prune(now)
	var lost []*manager
	for _, m := range l.order {
		if m.Silent(now, l.ix.timing()) {
			lost = append(lost, m)
		} else if !m.resyncUntil.IsZero() && now.After(m.resyncUntil) {
			l.resyncDone(m, now)
		} else {
			l.resendTasks(m, now)
		}
	}
	for _, m := range lost {
		l.managerLost(m, link.ReasonSilent, now)
	}
	// Managers report every interval and each report is answered at once,
	// so this is only the fallback; half an interval of slack keeps it from
	// racing the answer and doubling the traffic.
	idle := l.ix.opts.HeartbeatInterval + l.ix.opts.HeartbeatInterval/2
	for _, m := range l.order {
		if l.down.HeartbeatDue(&m.Peer, now, idle) {
			_ = l.sendManager(m, &messages.Heartbeat{})
		}
	}
	for id, c := range l.mgrCmds {
		if now.After(c.deadline) {
			delete(l.mgrCmds, id)
			l.up.TrySend(&messages.CommandReply{ID: c.upID, Code: messages.ReplyUnavailable, Message: "manager did not answer in time"})
		}
	}
	l.publishTotals()
	l.publishView(now)
}

// takeBack takes t away from m: it no longer holds it, nor owes an ack.
func (l *loop) takeBack(m *manager, t *itask) {
	delete(m.outstanding, t.id)
	m.sent.Drop(t)
	t.mgr = nil
	t.stealing = false
	if t.long {
		t.long = false
		m.nlong--
	}
}

// managerGoodbye takes back the tasks a leaving manager returns: they are
// queued again with the same attempt (no node failed, so no retry is
// spent). A draining manager gets nothing new; a final goodbye removes it
// at once, and anything it still held counts as lost with it.
func (l *loop) managerGoodbye(m *manager, g *messages.Goodbye, now time.Time) {
	var back []*itask
	for _, id := range g.Returned {
		t, ok := m.outstanding[id]
		if !ok {
			continue
		}
		l.takeBack(m, t)
		back = append(back, t)
	}
	l.enqueueFront(back...)
	l.ix.m.returned.Add(float64(len(back)))
	if !m.draining {
		m.draining = true
		l.ix.status.soon()
	}
	l.log.WithFields(logrus.Fields{"manager": m.ID, "reason": g.Reason, "returned": len(back), "final": g.Final,
		"still_held": len(m.outstanding)}).Info("manager said goodbye")
	if g.Final {
		l.managerLost(m, link.ReasonGoodbye, now)
	}
	l.publishTotals()
}
