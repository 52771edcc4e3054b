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
	idle        uint32
	capacity    uint32 // what it last reported it would accept
	serving     messages.ServingState
	blocked     bool // its pipe was full this round
	sendBuf     []messages.Task
	// resyncUntil: after a re-registration, tasks it does not report by
	// then are taken as lost (it may be a new process with the same id).
	resyncUntil time.Time
	// unacked are tasks sent to it that it has not acknowledged yet.
	unacked *link.Unacked
}

// validManagerID bounds what a registration may call itself.
func validManagerID(id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("manager id must be 1 to 200 bytes, got %d", len(id))
	}
	return nil
}

// free is how many more tasks the manager may hold.
func (m *manager) free() int {
	if !m.serving.PushAllowed() {
		return 0
	}
	limit := int(m.reg.Workers + m.reg.Prefetch)
	return limit - len(m.outstanding)
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

func (l *loop) handleManager(env link.Envelope) {
	if env.Frames == nil {
		l.ix.m.malformed.WithLabelValues("manager").Inc()
		return
	}
	msg, err := messages.Unpack(env.Frames)
	if err != nil {
		l.ix.m.malformed.WithLabelValues("manager").Inc()
		l.quiet.Warn("undecodable:"+err.Error(), l.log.WithError(err).WithField("connection", string(env.Route)), "dropped undecodable message from manager")
		l.down.Reply(env.Route, messages.ReplyFor(err))
		return
	}
	now := time.Now()
	if reg, ok := msg.(*messages.Registration); ok {
		l.registerManager(env, reg, now)
		return
	}
	var m *manager
	if id, ok := l.down.PeerID(env.Route); ok {
		m = l.mgrs[id]
	}
	if m == nil {
		if l.down.AskReregister(env.Route, "unknown or expired manager; send Registration", now) {
			l.ix.m.reregisters.Inc()
			l.quiet.Info("rereg:"+msg.Type().String(), l.log.WithFields(logrus.Fields{"connection": string(env.Route), "type": msg.Type().String()}),
				"message from unknown or expired manager; asked it to re-register")
		}
		return
	}
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
		if c, ok := l.mgrCmds[x.ID]; ok {
			delete(l.mgrCmds, x.ID)
			rep := &messages.CommandReply{ID: c.upID, Code: x.Code, Message: x.Message, Body: x.Body}
			if c.reply != nil {
				c.reply <- rep
			} else {
				l.up.TrySend(rep)
			}
		}
	case *messages.Ack:
		// The manager holds these tasks.
		for _, id := range x.IDs {
			m.unacked.Ack(id)
		}
	case *messages.HeartbeatReq:
		_ = l.sendManager(m, &messages.HeartbeatResp{Nonce: x.Nonce})
	case *messages.ErrorReply:
		l.log.WithFields(logrus.Fields{"manager": m.ID, "code": x.Code.String()}).Warn("manager refused a message: " + x.Reason)
	default:
		l.log.WithFields(logrus.Fields{"manager": m.ID, "type": msg.Type().String()}).Warn("unexpected message type from manager")
	}
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
	if l.down.Secure() && env.User != managerUser {
		l.down.Refuse(env.Route, messages.CodeRefused, "this key is not enrolled as a manager of this endpoint")
		return
	}
	if err := validManagerID(reg.ID); err != nil {
		l.down.Refuse(env.Route, messages.CodeRefused, err.Error())
		return
	}
	id := reg.ID
	m, known := l.mgrs[id]
	if !known {
		m = &manager{Peer: link.Peer{ID: id}, outstanding: make(map[messages.TaskID]*itask), unacked: link.NewUnacked()}
		l.mgrs[id] = m
		l.order = append(l.order, m)
	}
	if known && len(m.outstanding) > 0 {
		m.resyncUntil = now.Add(2 * l.ix.opts.HeartbeatInterval)
	}
	l.down.Bind(&m.Peer, env.Route, env.User, now)
	m.reg = *reg
	m.idle = reg.Workers
	m.capacity = reg.Workers + reg.Prefetch
	m.serving = messages.NonePaused
	l.ix.m.registrations.Inc()
	l.log.WithFields(logrus.Fields{"manager": id, "host": reg.Hostname, "workers": reg.Workers,
		"prefetch": reg.Prefetch, "block": reg.BlockID, "known": known, "held": len(m.outstanding)}).Info("manager registered")
	_ = l.sendManager(m, &messages.Heartbeat{})
	l.publishTotals()
}

func (l *loop) managerReport(m *manager, r *messages.ManagerStatusReport) {
	m.idle = r.IdleWorkers
	m.capacity = r.Capacity
	m.serving = r.ServingState
	var fwd []messages.Delta
	for i := range r.Deltas {
		d := &r.Deltas[i]
		t, ok := l.tasks[d.ID]
		if ok && t.mgr == nil && t.queued && d.Attempt == t.attempt {
			// After our restart: the manager still holds this task.
			l.unqueue(t)
			t.mgr = m
			m.outstanding[t.id] = t
		}
		if !ok || t.mgr != m || d.Attempt != t.attempt {
			l.ix.m.staleUpdates.Inc()
			continue
		}
		t.seen = time.Now().UnixNano()
		if messages.Apply(t.code.State(), t.attempt, d.Code.State(), d.Attempt) != messages.Applied {
			continue
		}
		t.code = d.Code
		fwd = append(fwd, *d)
	}
	if len(fwd) > 0 {
		l.ix.status.add(fwd...)
	}
}

func (l *loop) managerResults(m *manager, b *messages.ResultBatch) {
	ack := make([]messages.TaskID, 0, len(b.Results))
	for i := range b.Results {
		r := b.Results[i]
		ack = append(ack, r.ID)
		t, ok := l.tasks[r.ID]
		switch {
		case len(r.Payload)+len(r.Error) > l.ix.opts.MaxResultBytes:
			// Refused and not acknowledged: nothing changes.
			ack = ack[:len(ack)-1]
			l.ix.m.refused.WithLabelValues("oversized-result").Inc()
			l.down.Refuse(m.Route, messages.CodeOversized, fmt.Sprintf("result for task %s is %d bytes; the limit is %d (--max-result-bytes)",
				r.ID, len(r.Payload)+len(r.Error), l.ix.opts.MaxResultBytes))
		case ok && r.Attempt == t.attempt && (t.mgr == m || t.mgr == nil):
			// From the manager it was handed to, or one that held it across
			// our restart (nobody holds it now).
			l.finish(r)
			l.ix.m.results.WithLabelValues(string(r.Code.State())).Inc()
		case ok && r.Attempt == t.attempt:
			l.ix.m.refused.WithLabelValues("not-your-task").Inc()
			l.quiet.Warn("notyours:"+m.ID, l.log.WithFields(logrus.Fields{"manager": m.ID, "task_id": r.ID.String()}),
				"result for a task handed to another manager refused")
		case ok:
			l.ix.m.staleUpdates.Inc()
		default:
			if _, dup := l.held.Get(r.ID); dup {
				l.ix.m.duplicates.Inc()
				continue
			}
			// Unknown here (we restarted, or it was cancelled): pass it
			// up; the forwarder decides by task id and attempt.
			l.finish(r)
		}
	}
	// The manager forgets a result once acked, so ack only what is stored.
	mid := m.ID
	l.persist(l.takeOps(), func(l *loop) {
		m, ok := l.mgrs[mid]
		if !ok {
			return
		}
		if err := l.sendManager(m, &messages.Ack{IDs: ack}); err != nil {
			l.log.WithError(err).WithField("manager", m.ID).Debug("ack not sent; manager will re-send")
		}
	})
}

// dispatch hands queued tasks to managers with free slots, round robin.
func (l *loop) dispatch() {
	if l.queued == 0 || len(l.order) == 0 || !l.retryAt.IsZero() || !l.ix.serving.Effective(time.Now()).DispatchAllowed() ||
		(!l.holdUntil.IsZero() && time.Now().Before(l.holdUntil)) {
		return
	}
	n := len(l.order)
	progress := true
	for l.queued > 0 && progress {
		progress = false
		for k := 0; k < n && l.queued > 0; k++ {
			m := l.order[(l.rr+k)%n]
			free := m.free()
			if free <= 0 || m.blocked {
				continue
			}
			// Spread a big queue: no manager takes more than its share per pass.
			share := max(1, min(free, (l.queued+n-1)/n))
			m.sendBuf = m.sendBuf[:0]
			var sent []*itask
			size := 0
			for len(m.sendBuf) < share && size < messages.MaxBatchBytes {
				t := l.pop()
				if t == nil {
					break
				}
				size += len(t.payload) + 32
				sent = append(sent, t)
				m.sendBuf = append(m.sendBuf, messages.Task{ID: t.id, Attempt: t.attempt, Payload: t.payload})
			}
			if len(sent) == 0 {
				break
			}
			if err := l.sendManager(m, &messages.TaskBatch{Tasks: m.sendBuf}); err != nil {
				l.enqueueFront(sent...)
				if errors.Is(err, zsock.ErrWouldBlock) {
					m.blocked = true
					l.retryAt = time.Now().Add(5 * time.Millisecond)
				}
				continue
			}
			progress = true
			deltas := make([]messages.Delta, len(sent))
			now := time.Now().UnixNano()
			for i, t := range sent {
				l.ix.m.dispatchWait.Observe(time.Duration(now - t.at).Seconds())
				// Counts as heard of for a re-registration's re-sync.
				t.seen = now
				t.at = now
				m.unacked.Sent(t.id, now)
				t.mgr = m
				t.code = messages.WaitingForLaunch
				m.outstanding[t.id] = t
				deltas[i] = messages.Delta{ID: t.id, Code: messages.WaitingForLaunch, Attempt: t.attempt, At: now}
			}
			l.ix.status.add(deltas...)
			l.ix.m.dispatched.Add(float64(len(sent)))
		}
		l.rr = (l.rr + 1) % n
	}
	for _, m := range l.order {
		m.blocked = false
	}
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
	l.down.Unbind(&m.Peer)
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
	l.log.WithFields(logrus.Fields{"manager": m.ID, "reason": reason, "requeued": requeued, "failed": failed,
		"silent_for": now.Sub(m.LastSeen).Round(time.Millisecond).String()}).Warn("manager lost")
	l.publishTotals()
}

// requeue takes tasks away from m: attempt + 1 and back to the queue, or
// failed once they have used up their retries.
func (l *loop) requeue(m *manager, ts []*itask, reason string, now time.Time) (requeued, failed int) {
	var deltas []messages.Delta
	var back []*itask
	for _, t := range ts {
		id := t.id
		delete(m.outstanding, id)
		t.attempt++
		t.mgr = nil
		if int(t.attempt) > l.ix.opts.MaxRetries+1 {
			l.finish(messages.Result{ID: id, Attempt: t.attempt, Code: messages.Failed, Finished: now.UnixNano(),
				Error: fmt.Sprintf("gave up after %d attempts: manager %s was lost (%s)", t.attempt-1, m.ID, reason)})
			failed++
			continue
		}
		back = append(back, t)
		if l.ix.store != nil {
			l.ops = append(l.ops, taskOp(t))
		}
		deltas = append(deltas, messages.Delta{ID: id, Code: messages.WaitingForNodes, Attempt: t.attempt, At: now.UnixNano()})
		requeued++
	}
	l.enqueueFront(back...)
	if len(deltas) > 0 {
		// Tell the forwarder of the new attempts only once they are stored:
		// a restart must not fall back to an attempt it has already seen.
		l.persist(l.takeOps(), func(l *loop) { l.ix.status.add(deltas...) })
	}
	return requeued, failed
}

// command runs a Command from the forwarder or the admin API. reply is
// set for local callers; a manager-bound command answers later.
func (l *loop) command(c *messages.Command, reply chan *messages.CommandReply) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		byMgr := map[*manager][]messages.TaskID{}
		cancelled := 0
		now := time.Now().UnixNano()
		for _, id := range c.TaskIDs {
			t, ok := l.tasks[id]
			if !ok {
				continue
			}
			if t.mgr == nil {
				l.finish(messages.Result{ID: id, Attempt: t.attempt, Code: messages.Cancelled, Error: "cancelled by request", Finished: now})
				cancelled++
				continue
			}
			byMgr[t.mgr] = append(byMgr[t.mgr], id)
		}
		for m, ids := range byMgr {
			l.cmdSeq++
			_ = l.sendManager(m, &messages.Command{ID: l.cmdSeq, Op: messages.OpCancel, TaskIDs: ids})
		}
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("%d removed from the queue, %d sent to managers", cancelled, len(c.TaskIDs)-cancelled)}
	case messages.OpSetServingState, messages.OpGetServingState:
		if c.Manager != "" {
			m, ok := l.mgrs[c.Manager]
			if !ok {
				return &messages.CommandReply{ID: c.ID, Code: messages.ReplyNotFound, Message: fmt.Sprintf("unknown manager %q", c.Manager)}
			}
			l.cmdSeq++
			down := *c
			down.ID = l.cmdSeq
			down.Manager = ""
			if err := l.sendManager(m, &down); err != nil {
				return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnavailable, Message: "cannot reach manager: " + err.Error()}
			}
			l.mgrCmds[down.ID] = mgrCmd{upID: c.ID, reply: reply, deadline: time.Now().Add(10 * time.Second)}
			return nil
		}
		return l.ix.servingCommand(c)
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is not supported by the interchange", c.Op)}
}

// resendTasks sends a manager again, once per threshold, the tasks it has
// not acknowledged in time (a batch lost in a reconnect nobody noticed);
// the manager drops ids it already holds.
func (l *loop) resendTasks(m *manager, now time.Time) {
	due := m.unacked.Due(now, l.ix.opts.HeartbeatThreshold, nil)
	var again []messages.Task
	for _, id := range due {
		if t, ok := m.outstanding[id]; ok {
			m.unacked.Sent(id, now.UnixNano())
			again = append(again, messages.Task{ID: t.id, Attempt: t.attempt, Payload: t.payload})
		}
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
