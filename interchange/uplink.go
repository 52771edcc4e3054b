package interchange

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) registration() messages.Message {
	return &messages.Registration{Role: messages.RoleInterchange, ID: l.ix.opts.EndpointID, Hostname: l.ix.hostname,
		ProtocolVersion: messages.Version, SoftwareVersion: l.ix.opts.Version}
}

func (l *loop) handleUpstream(frames [][]byte) {
	msg, err := messages.Unpack(frames)
	if err != nil {
		l.ix.m.malformed.WithLabelValues("forwarder").Inc()
		l.log.WithError(err).Warn("dropped undecodable message from forwarder")
		l.up.TrySend(messages.ReplyFor(err))
		return
	}
	registered, handled := l.up.Heard(msg, time.Now())
	if registered {
		l.log.WithField("held_results", l.nheld).Info("registered with forwarder")
		l.results.ResendAll()
	}
	if handled {
		return
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.ix.m.heartbeatsRecv.WithLabelValues("forwarder").Inc()
		l.adoptForwarderTiming(m)
	case *messages.TaskBatch:
		l.passUp += len(m.Tasks)
		l.acceptTasks(m)
	case *messages.Ack:
		l.passUp += len(m.IDs)
		for _, id := range m.IDs {
			l.resultAcked(id)
		}
		l.sendLaterAcks()
	case *messages.Command:
		if rep := l.command(m); rep != nil {
			l.up.TrySend(rep)
		}
	case *messages.ErrorReply:
		l.log.WithField("code", m.Code.String()).Warn("forwarder refused a message: " + m.Reason)
	default:
		l.log.WithField("type", msg.Type().String()).Warn("unexpected message type from forwarder")
	}
}

// acceptTasks queues new tasks; ids already held are dropped, and their
// current state is reported again so the forwarder can reconcile.
func (l *loop) acceptTasks(b *messages.TaskBatch) {
	eff := l.ix.serving.Effective(time.Now())
	full := l.queued >= l.ix.opts.Pressure.PauseQueued
	if serr := l.ix.storeRefuses(); full || serr != nil || !eff.PushAllowed() {
		// Paused, the store refuses writes (disk full), or the queue is
		// at the pause threshold before the pressure check (once a
		// second) has seen it: the tasks stay upstream until pushes are
		// allowed again.
		why := "interchange is " + eff.String()
		switch {
		case serr != nil:
			why = "interchange store refuses writes: " + serr.Error()
		case full:
			why = fmt.Sprintf("interchange queue is full (%d tasks, --pause-queued-tasks)", l.queued)
			// Say so in the serving state now, not at the next tick, so
			// the forwarder holds its pushes instead of retrying.
			l.ix.serving.MeasureQueue(l.queued, time.Now())
		}
		ids := make([]messages.TaskID, len(b.Tasks))
		for i := range b.Tasks {
			ids[i] = b.Tasks[i].ID
		}
		l.ix.m.refusedBatches.Inc()
		l.up.TrySend(&messages.Nack{IDs: ids, Reason: why})
		l.ix.status.soon()
		return
	}
	ids := make([]messages.TaskID, len(b.Tasks))
	tnow := time.Now()
	now := tnow.UnixNano()
	for i := range b.Tasks {
		t := &b.Tasks[i]
		ids[i] = t.ID
		if have, ok := l.tasks[t.ID]; ok {
			l.ix.m.duplicates.Inc()
			if have.fin {
				l.requeueResult(have)
			} else {
				l.noteStatus(have, now)
			}
			continue
		}
		it := &itask{id: t.ID, seq: l.nextSeq(), attempt: max(t.Attempt, 1), payload: t.Payload, owner: l.owners.intern(t.Owner)}
		l.tasks[t.ID] = it
		if l.ix.store != nil {
			l.ops = append(l.ops, taskOp(it))
		}
		l.placeTask(it, tnow)
		l.noteStatus(it, now)
	}
	l.ix.m.received.Add(float64(len(b.Tasks)))
	l.statusNoted()
	// Acknowledge only what is stored.
	l.persist(l.takeOps(), func(l *loop) { l.up.TrySend(&messages.Ack{IDs: ids}) })
}

// passBudget is how many tasks, results and acknowledged ids one loop
// pass takes in from each side: the rest wait in the sockets while
// dispatch has its turn, so a flood never leaves a manager idle for long.
const passBudget = 2000

func (l *loop) drainUpstream() {
	l.passUp = 0
	for i := 0; i < 1000 && l.passUp < passBudget; i++ {
		frames, ok, err := l.up.Recv()
		if err != nil {
			l.log.WithError(err).Warn("receive from forwarder failed")
			return
		}
		if !ok {
			return
		}
		l.handleUpstream(frames)
	}
}

// adoptForwarderTiming takes the forwarder's heartbeat timing, from its
// answer to our registration, for the link to it (the managers' link keeps
// ours): mismatched settings had each side declare the other lost, reconnect
// and send every held result again.
func (l *loop) adoptForwarderTiming(h *messages.Heartbeat) {
	if h.Interval <= 0 || h.Threshold <= h.Interval {
		return
	}
	t := link.Timing{Interval: time.Duration(h.Interval), Threshold: time.Duration(h.Threshold)}
	if t == l.upTiming {
		return
	}
	l.log.WithFields(logrus.Fields{"heartbeat_interval": t.Interval, "heartbeat_threshold": t.Threshold}).
		Info("heartbeat timing of the forwarder link taken from the forwarder")
	l.upTiming = t
	l.up.SetTiming(t)
}
