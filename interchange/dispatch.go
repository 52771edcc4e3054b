package interchange

import (
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// manager is one registered manager as the loop sees it.
type manager struct {
	link.Peer
	reg         messages.Registration
	outstanding map[messages.TaskID]*itask
	// sent holds the outstanding tasks sent to it until it acknowledges
	// them, to send again when the ack does not come.
	sent     *link.Deliveries[itask]
	idle     uint32
	capacity uint32 // what it last reported it would accept
	serving  messages.ServingState
	sendBuf  []messages.Task
	// resyncUntil: after a re-registration, tasks it does not report by
	// then are taken as lost (it may be a new process with the same id).
	resyncUntil time.Time
	// draining: it said goodbye; it gets nothing new.
	draining bool
	// freedAt is when it got free slots while tasks were queued (unix
	// nanoseconds; 0 when not waiting): how long it idles for work we hold.
	freedAt int64
	// acct is the account it runs as on a multi-user endpoint (an index
	// into multi.list, plus one); it gets that account's tasks only.
	acct uint32
	// pf sizes its prefetch when it did not set one (sched.go).
	pf prefetch
	// stealing is the give-back command it has not answered yet (0: none);
	// noGiveBack: it cannot (an older manager).
	stealing   uint64
	noGiveBack bool
	// nlong is how many long tasks it holds (sched.go, longCap).
	nlong int
}

// waitsForWork starts m's idle clock when it has room and tasks wait.
func (l *loop) waitsForWork(m *manager, now int64) {
	if m.freedAt == 0 && l.queued > 0 && m.free() > 0 {
		m.freedAt = now
	}
}

// gotWork stops m's idle clock.
func (l *loop) gotWork(m *manager, now int64) {
	if m.freedAt == 0 {
		return
	}
	d := time.Duration(now - m.freedAt).Seconds()
	m.freedAt = 0
	l.ix.m.idleWhileQueued.Observe(d)
	if d > l.maxIdle {
		l.maxIdle = d
		l.ix.m.idleWhileQueuedMax.Set(d)
	}
}

// free is how many more tasks the manager may hold.
func (m *manager) free() int {
	if !m.serving.PushAllowed() || m.draining {
		return 0
	}
	limit := int(m.reg.Workers) + m.prefetch()
	return limit - len(m.outstanding)
}

// runnable is how many of its free slots are idle workers: tasks sent
// there start at once.
func (m *manager) runnable() int {
	return max(0, min(m.free(), int(m.reg.Workers)-len(m.outstanding)))
}

func (l *loop) sendManager(m *manager, msg messages.Message) error {
	if err := l.down.Send(&m.Peer, msg); err != nil {
		return err
	}
	if msg.Type() == messages.TypeHeartbeat {
		l.ix.m.heartbeatsSent.WithLabelValues("manager").Inc()
	}
	return nil
}

// malformed counts a message from a manager the router dropped, and logs why.
func (l *loop) malformed(route []byte, err error) {
	l.ix.m.malformed.WithLabelValues("manager").Inc()
	if err != nil {
		l.quiet.Warn("undecodable:"+err.Error(), l.log.WithError(err).WithField("connection", string(route)), "dropped undecodable message from manager")
	}
}

// live reports whether manager id is registered.
func (l *loop) live(id string) bool { return l.mgrs[id] != nil }

func (l *loop) handleManager(env link.Envelope) {
	now := time.Now()
	in := l.down.Accept(env, now, l.live, "unknown or expired manager; send Registration")
	msg := in.Msg
	switch in.Verdict {
	case link.Malformed:
		return
	case link.Registering:
		l.registerManager(env, msg.(*messages.Registration), now)
		return
	case link.Unknown:
		if in.Asked {
			l.ix.m.reregisters.Inc()
			l.quiet.Info("rereg:"+msg.Type().String(), l.log.WithFields(logrus.Fields{"connection": string(env.Route), "type": msg.Type().String()}),
				"message from unknown or expired manager; asked it to re-register")
		}
		return
	}
	m := l.mgrs[in.PeerID]
	m.LastSeen = now
	switch x := msg.(type) {
	case *messages.Heartbeat:
		l.ix.m.heartbeatsRecv.WithLabelValues("manager").Inc()
	case *messages.ManagerStatusReport:
		l.ix.m.reportsRecv.Inc()
		l.managerReport(m, x)
		// Answer at once so the manager knows we are alive.
		_ = l.sendManager(m, &messages.Heartbeat{})
	case *messages.ResultBatch:
		l.managerResults(m, x)
	case *messages.CommandReply:
		if s, ok := l.steals[x.ID]; ok && s.m == m {
			delete(l.steals, x.ID)
			l.stealReply(m, s, x)
		} else if c, ok := l.mgrCmds[x.ID]; ok {
			delete(l.mgrCmds, x.ID)
			rep := &messages.CommandReply{ID: c.upID, Code: x.Code, Message: x.Message, Body: x.Body}
			l.up.TrySend(rep)
		}
	case *messages.Ack:
		// The manager holds these tasks; the first one sent times the trip.
		var at int64
		for _, id := range x.IDs {
			if t, ok := m.outstanding[id]; ok {
				if at == 0 {
					at = t.delivery.SentAt()
				}
				m.sent.Ack(t)
			}
		}
		if at > 0 {
			m.ackedAfter(time.Duration(now.UnixNano() - at))
			m.resize()
		}
		l.mayIdle = true
	case *messages.Goodbye:
		l.managerGoodbye(m, x, now)
	case *messages.HeartbeatReq:
		_ = l.sendManager(m, &messages.HeartbeatResp{Nonce: x.Nonce})
	case *messages.ErrorReply:
		l.log.WithFields(logrus.Fields{"manager": m.ID, "code": x.Code.String()}).Warn("manager refused a message: " + x.Reason)
	default:
		l.log.WithFields(logrus.Fields{"manager": m.ID, "type": msg.Type().String()}).Warn("unexpected message type from manager")
	}
}

func (l *loop) managerResults(m *manager, b *messages.ResultBatch) {
	l.passResults += len(b.Results)
	ack := make([]messages.TaskID, 0, len(b.Results))
	now := time.Now().UnixNano()
	var ended messages.StateCounts
	defer ended.Each(func(s messages.TaskState, n float64) { l.ix.m.results.WithLabelValues(string(s)).Add(n) })
	for i := range b.Results {
		r := b.Results[i]
		ack = append(ack, r.ID)
		t, ok := l.tasks[r.ID]
		switch {
		case len(r.Payload)+len(r.Error)+len(r.Text) > l.ix.opts.MaxResultBytes:
			// Refused and not acknowledged: nothing changes.
			ack = ack[:len(ack)-1]
			l.ix.m.refused.WithLabelValues("oversized-result").Inc()
			l.down.Refuse(m.Route, messages.CodeOversized, fmt.Sprintf("result for task %s is %d bytes; the limit is %d (--max-result-bytes)",
				r.ID, len(r.Payload)+len(r.Error)+len(r.Text), l.ix.opts.MaxResultBytes))
		case ok && t.fin:
			// Its result is held already.
			l.ix.m.duplicates.Inc()
			if t.ackTo != nil {
				// Acked once the forwarder has it, to the manager that
				// holds it now.
				ack = ack[:len(ack)-1]
				t.ackTo = m
			}
		case ok && r.Attempt == t.attempt && (t.mgr == m || t.mgr == nil && t.recovered && t.acct == m.acct):
			// From the manager it was handed to, or one that held it across
			// our restart (nobody holds it since; on a multi-user endpoint
			// one of its owner's account).
			if r.Started != 0 {
				t.countStart() // it ended before a report said it ran
			}
			l.finish(t, r, m, now)
			if t.ackTo != nil {
				ack = ack[:len(ack)-1]
			}
			m.pf.ranFor(&r)
			l.queueOf(t).runOf(t.owner).ranFor(&r)
			ended.Add(r.Code)
		case ok && r.Attempt == t.attempt:
			l.ix.m.refused.WithLabelValues("not-your-task").Inc()
			l.quiet.Warn("notyours:"+m.ID, l.log.WithFields(logrus.Fields{"manager": m.ID, "task_id": r.ID.String()}),
				"result for a task handed to another manager refused")
		case ok:
			l.ix.m.staleUpdates.Inc()
		default:
			// Not held here: never handed to anyone (it may still wait at
			// the forwarder), or its result went up already. Acknowledged,
			// so the manager forgets it, and dropped: a result counts only
			// from the manager its attempt was handed to.
			l.ix.m.refused.WithLabelValues("not-held").Inc()
			l.quiet.Warn("notheld:"+m.ID, l.log.WithFields(logrus.Fields{"manager": m.ID, "task_id": r.ID.String()}),
				"result for a task this interchange does not hold refused")
		}
	}
	m.resize()
	l.mayIdle = true
	l.waitsForWork(m, time.Now().UnixNano())
	// The manager forgets a result once acked, so ack only what is stored.
	mid := m.ID
	l.persist(l.takeOps(), func(l *loop) {
		m, ok := l.mgrs[mid]
		if !ok {
			return
		}
		if len(ack) == 0 {
			return
		}
		if err := l.sendManager(m, &messages.Ack{IDs: ack}); err != nil {
			l.log.WithError(err).WithField("manager", m.ID).Debug("ack not sent; manager will re-send")
		}
	})
}

// dispatch hands queued tasks to managers with free slots, round robin.
func (l *loop) dispatch() {
	if len(l.order) == 0 || !l.retryAt.IsZero() || !l.ix.serving.Effective(time.Now()).DispatchAllowed() ||
		l.hold != nil {
		return
	}
	now := time.Now()
	if l.multi != nil {
		l.dispatchMulti(now)
		l.idleClocks()
		return
	}
	if l.queued == 0 {
		l.stealFor(l.order, now)
		return
	}
	l.dispatchTo(l.order, &l.q, &l.rr)
	l.idleClocks()
}

// dispatchTo shares q among mgrs: first their idle workers, so a task
// never waits in one manager's prefetch while another's workers idle,
// then their prefetch; each manager gets its part in one batch. A manager
// that may take no more long tasks leaves them to the others, which get
// them in a second round.
func (l *loop) dispatchTo(mgrs []*manager, q *fqueue, rr *int) {
	for round := 0; round < 2 && q.n > 0; round++ {
		if l.dispatchRound(mgrs, q, rr) == 0 || !l.retryAt.IsZero() {
			return
		}
	}
}

// dispatchRound is one round of dispatchTo; it reports how many tasks
// of their shares managers left queued for a cap on long tasks.
func (l *loop) dispatchRound(mgrs []*manager, q *fqueue, rr *int) (capped int) {
	n := len(mgrs)
	free := l.freeBuf[:0]
	run := l.runBuf[:0]
	for _, m := range mgrs {
		f := max(0, m.free())
		free = append(free, f)
		run = append(run, m.runnable())
	}
	l.freeBuf, l.runBuf = free, run
	// One fair share each per pass, from the whole queue at once.
	share := shares(q.n, run, *rr)
	left := q.n
	for i, s := range share {
		left -= s
		free[i] -= s
	}
	if left > 0 {
		more := shares(left, free, *rr)
		for i := range share {
			share[i] += more[i]
		}
	}
	*rr = (*rr + 1) % n
	for i, m := range mgrs {
		for share[i] > 0 {
			sent := l.sendTasks(m, share[i], q)
			if sent == 0 {
				break
			}
			share[i] -= sent
		}
		if !l.retryAt.IsZero() {
			return 0
		}
		if share[i] > 0 && q.n > 0 {
			capped += share[i]
			// Its room is for tasks other than those queued: it does
			// not idle for them.
			m.freedAt = 0
		}
	}
	return capped
}

// idleClocks stops the idle clocks without counting when nothing is left
// to wait for.
func (l *loop) idleClocks() {
	if l.queued == 0 {
		for _, m := range l.order {
			m.freedAt = 0
		}
	}
}

// sendTasks sends m up to want queued tasks in one batch and reports how
// many went; a full pipe puts them back and retries shortly.
func (l *loop) sendTasks(m *manager, want int, q *fqueue) int {
	m.sendBuf = m.sendBuf[:0]
	var sent []*itask
	size := 0
	long := m.nlong
	for len(m.sendBuf) < want && size < messages.MaxBatchBytes {
		t := l.pop(q, m, &long)
		if t == nil {
			break
		}
		size += len(t.payload) + 32
		sent = append(sent, t)
		m.sendBuf = append(m.sendBuf, messages.Task{ID: t.id, Attempt: t.attempt, Payload: t.payload, Owner: ownerName(t.owner)})
	}
	if len(sent) == 0 {
		return 0
	}
	if err := l.sendManager(m, &messages.TaskBatch{Tasks: m.sendBuf}); err != nil {
		l.enqueueFront(sent...)
		if errors.Is(err, zsock.ErrWouldBlock) {
			l.retryAt = time.Now().Add(5 * time.Millisecond)
		}
		return 0
	}
	now := time.Now().UnixNano()
	l.gotWork(m, now)
	for _, t := range sent {
		l.ix.m.dispatchWait.Observe(time.Duration(now - t.queuedAt).Seconds())
		// Counts as heard of for a re-registration's re-sync.
		t.seen = now
		t.recovered = false
		t.started = false // a new dispatch: its start is a new run
		m.sent.Sent(t, now)
		t.mgr = m
		t.code = messages.WaitingForLaunch
		m.outstanding[t.id] = t
		if t.long {
			m.nlong++
		}
		l.noteStatus(t, now)
	}
	l.statusNoted()
	l.ix.m.dispatched.Add(float64(len(sent)))
	return len(sent)
}

// resendTasks sends a manager again, once per threshold, the tasks it has
// not acknowledged in time (a batch lost in a reconnect nobody noticed);
// the manager drops ids it already holds.
func (l *loop) resendTasks(m *manager, now time.Time) {
	l.dueBuf = m.sent.Due(now, l.ix.opts.HeartbeatThreshold, l.dueBuf[:0])
	if len(l.dueBuf) == 0 {
		return
	}
	again := make([]messages.Task, 0, len(l.dueBuf))
	for i, t := range l.dueBuf {
		// Counted as sent even if the pipe is full: due again later.
		m.sent.Sent(t, now.UnixNano())
		again = append(again, messages.Task{ID: t.id, Attempt: t.attempt, Payload: t.payload, Owner: ownerName(t.owner)})
		l.dueBuf[i] = nil
	}
	for len(again) > 0 {
		n := messages.ChunkTasks(again, 1000)
		if err := l.sendManager(m, &messages.TaskBatch{Tasks: again[:n]}); err != nil {
			return
		}
		l.ix.m.tasksResent.Add(float64(n))
		again = again[n:]
	}
}
