package forwarder

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) applyReport(ep *endpoint, r *messages.EPStatusReport) {
	now := time.Now().UnixNano()
	for i := range r.Deltas {
		if d := &r.Deltas[i]; d.Code == messages.Running && d.At > 0 && d.At <= now {
			l.f.m.runningDelay.Observe(time.Duration(now - d.At).Seconds())
		}
	}
	if n := l.f.tasks.applyDeltas(ep.id, r.Deltas); n > 0 {
		l.f.m.staleUpdates.Add(float64(n))
	}
	ep.holdPush = false
	wasPaused := !ep.report.ServingState.PushAllowed()
	r.Deltas = nil
	if len(r.ManagerList) == 0 && ep.connected {
		r.ManagerList = ep.report.ManagerList // only periodic reports carry it
	}
	ep.report = *r
	if wasPaused != !r.ServingState.PushAllowed() {
		l.f.log.WithFields(logrus.Fields{"endpoint": ep.id, "serving_state": r.ServingState.String()}).Info("endpoint serving state changed")
		if !wasPaused {
			l.holdPending(ep)
		}
	}
	l.f.publish(ep)
}

// holdPending shows the tasks a pause keeps here as waiting-for-endpoint,
// as are those submitted during it; tasks accepted just before the
// forwarder heard of the pause read "received" for as long as it lasted.
func (l *loop) holdPending(ep *endpoint) {
	var es []*entry
	ep.pending.each(func(e *entry) { es = append(es, e) })
	if len(es) > 0 {
		l.f.tasks.endpointLost(es) // moves only the tasks that may move
	}
}

func (l *loop) applyResults(ep *endpoint, b *messages.ResultBatch) {
	ack := make([]messages.TaskID, len(b.Results))
	for i := range b.Results {
		ack[i] = b.Results[i].ID
	}
	epID := ep.id
	es := l.resBuf[:0]
	for i := range b.Results {
		es = append(es, ep.inflight[b.Results[i].ID])
	}
	// Ack only once the results are durable; a crash before that makes
	// the interchange send them again.
	verdicts := l.f.tasks.completeBatch(ep.id, b.Results, es, l.verdicts[:0], func(err error) {
		if err != nil {
			l.f.log.WithError(err).WithField("endpoint", epID).Warn("results not stored; not acknowledged")
			return
		}
		l.f.mbox.Post(event{kind: evAck, ep: epID, ids: ack})
	})
	l.verdicts = verdicts
	var applied messages.StateCounts
	for i, v := range verdicts {
		r := &b.Results[i]
		switch v {
		case messages.Applied:
			if es[i] != nil {
				ep.release(es[i])
			}
			applied.Add(r.Code)
		case messages.Same, messages.Regress:
			if es[i] != nil {
				ep.release(es[i])
			}
			l.f.m.duplicates.Inc()
		default:
			l.f.m.staleUpdates.Inc()
		}
	}
	applied.Each(func(s messages.TaskState, n float64) { l.f.m.results.WithLabelValues(string(s)).Add(n) })
	clear(es)
	l.resBuf = es[:0]
}
