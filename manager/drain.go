package manager

import (
	"errors"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

// errDrainedByCommand ends the loop of a manager drained on request.
var errDrainedByCommand = errors.New("drained on request")

// errDrainStopped is the cause given to a task stopped at the end of a
// drain grace: it goes back to the queue, it did not fail.
var errDrainStopped = errors.New("stopped at the end of the manager's drain grace; returned to the queue")

// drain is a manager on its way out: it takes nothing new, gives back what
// it has not started, and leaves once what runs has finished or the grace
// has passed (then it stops those tasks and gives them back too).
type drain struct {
	reason   string
	deadline time.Time // zero: wait for running tasks however long
	started  time.Time
}

// startDrain begins a drain; grace 0 waits for running tasks to end.
func (l *loop) startDrain(reason string, grace time.Duration, now time.Time) {
	if l.drain != nil {
		return
	}
	l.drain = &drain{reason: reason, started: now}
	if grace > 0 {
		l.drain.deadline = now.Add(grace)
	}
	l.mg.draining.Store(true)
	var back []messages.TaskID
	for id, t := range l.byID {
		if t.out {
			continue
		}
		// Not handed to a worker yet, or handed but not started (the
		// claim keeps a worker from starting it now), or killed by the
		// signal that ends this manager too.
		claimed := t.handed && t.parked == nil && t.claim.CompareAndSwap(0, 2)
		if claimed {
			l.inFlight-- // no worker will run it
		}
		if !t.handed || t.parked != nil || claimed {
			back = append(back, id)
			l.giveBack(id, t)
		}
	}
	l.pending = nil
	l.log.WithFields(logrus.Fields{"reason": reason, "returned": len(back), "running": l.nTasks,
		"grace": graceText(grace)}).Warn("draining: taking no new tasks, returning those not started")
	l.up.TrySend(&messages.Goodbye{Reason: reason, Returned: back})
	l.report(now)
}

func graceText(d time.Duration) string {
	if d == 0 {
		return "until running tasks end"
	}
	return d.String()
}

func (l *loop) giveBack(id messages.TaskID, t *mtask) {
	l.drop(t)
	l.returned[id] = t.task.Attempt
	l.mg.m.returned.Inc()
}

// drained reports whether the drain is over; when it is, the final
// Goodbye (with the tasks stopped at the deadline) has been sent after
// every result, on the same connection, so the interchange sees the
// results first.
func (l *loop) drained(now time.Time) bool {
	d := l.drain
	if d == nil {
		return false
	}
	if l.nTasks == 0 && l.results.waiting() == 0 {
		l.log.WithField("took", now.Sub(d.started).Round(time.Millisecond).String()).Info("drained: every task finished")
		l.up.TrySend(&messages.Goodbye{Reason: d.reason, Final: true})
		return true
	}
	if d.deadline.IsZero() || now.Before(d.deadline) {
		return false
	}
	l.flushResults()
	var back []messages.TaskID
	for id, t := range l.byID {
		if t.out {
			continue
		}
		if t.cancel != nil {
			t.cancel(errDrainStopped)
		}
		back = append(back, id)
		l.giveBack(id, t)
	}
	l.log.WithFields(logrus.Fields{"returned": len(back), "results_unacked": l.results.len()}).
		Warn("drain grace over: stopped running tasks and returned them to the queue")
	l.up.TrySend(&messages.Goodbye{Reason: d.reason, Final: true, Returned: back})
	return true
}

// signalled reports whether a task ended because a signal killed its
// process, or a shell whose child a signal killed (exit 128+N), and not by
// our own cancel, which reads differently: what a batch scheduler does to
// every process of a job it ends.
func signalled(r *messages.Result) bool {
	if r.Code != messages.Failed {
		return false
	}
	for _, sig := range []string{"signal: terminated", "signal: killed", "signal: interrupt", "signal: hangup",
		"exit status 143", "exit status 137", "exit status 130", "exit status 129"} {
		if strings.HasPrefix(r.Error, sig) {
			return true
		}
	}
	return false
}

// parkGrace is how long a task killed by a signal waits for the manager's
// own SIGTERM before its failure is reported: the scheduler signals the
// task and the manager at the same moment, in no fixed order.
const parkGrace = 500 * time.Millisecond

// park holds a signal death back; it reports whether it did.
func (l *loop) park(t *mtask, r messages.Result) bool {
	if !signalled(&r) {
		return false
	}
	now := time.Now()
	if l.drain != nil {
		// Ended by whatever ends this manager: give it back.
		l.giveBack(r.ID, t)
		l.up.TrySend(&messages.Goodbye{Reason: l.drain.reason, Returned: []messages.TaskID{r.ID}})
		return true
	}
	t.parked = &r
	t.parkedUntil = now.Add(parkGrace)
	if l.parkAt.IsZero() || t.parkedUntil.Before(l.parkAt) {
		l.parkAt = t.parkedUntil
	}
	return true
}

// unpark reports the failures of signal deaths no drain followed.
func (l *loop) unpark(now time.Time) {
	if l.parkAt.IsZero() || now.Before(l.parkAt) {
		return
	}
	l.parkAt = time.Time{}
	for _, t := range l.byID {
		if t.out || t.parked == nil {
			continue
		}
		if now.Before(t.parkedUntil) {
			if l.parkAt.IsZero() || t.parkedUntil.Before(l.parkAt) {
				l.parkAt = t.parkedUntil
			}
			continue
		}
		r := *t.parked
		l.end(t)
		l.results.put(t, r)
		l.mg.m.ended(r.Code, -1)
	}
}
