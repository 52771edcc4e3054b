package interchange

import (
	"encoding/json"
	"math"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Scheduling (docs/contract.md, "Scheduling"): how many tasks a manager
// holds beyond its workers, and taking back tasks a manager holds but has
// not started when another has idle workers.

// prefetch is what the interchange measures of one manager to size its
// prefetch, when the manager left that to it.
type prefetch struct {
	adaptive bool
	// runTime is the mean run time of its tasks; rtt the round trip from
	// sending it a batch to its ack (seconds, EWMA).
	runTime
	rtt   float64
	depth int
}

// runTime is a mean task run time (seconds, EWMA), once known.
type runTime struct {
	dur   float64
	known bool
}

// ranFor takes a result's run time into the mean.
func (r *runTime) ranFor(res *messages.Result) {
	if res.Started <= 0 || res.Finished < res.Started {
		return
	}
	d := time.Duration(res.Finished - res.Started).Seconds()
	if !r.known {
		r.dur, r.known = d, true
		return
	}
	r.dur += ewmaAlpha * (d - r.dur)
}

const (
	// ewmaAlpha weighs each new sample.
	ewmaAlpha = 0.1
	// prefetchMargin: queued work for this many round trips, since
	// results and batches travel in bursts, not one by one.
	prefetchMargin = 4
	// resultPath is what a refill takes beyond the batch's round trip
	// the ack times: the result waits for the manager's flush and our
	// store commit before the next batch leaves.
	resultPath = time.Millisecond
	// stealMin: a manager's unstarted backlog shorter than this (in run
	// time) is not worth a round trip to take back.
	stealMin = 2 * time.Millisecond
)

// prefetchDepth is how many tasks beyond its workers a manager should
// hold: enough to keep every worker busy while a result goes up and the
// next batch comes down (margin included), within [0, ceiling]. Before any task of it ended, as many as
// its workers; tasks that take no measurable time: the ceiling.
func prefetchDepth(workers int, rtt, dur float64, haveDur bool, ceiling int) int {
	if !haveDur {
		return min(workers, ceiling)
	}
	if dur <= 0 {
		return ceiling
	}
	d := prefetchMargin * float64(workers) * (rtt + resultPath.Seconds()) / dur
	if d >= float64(ceiling) {
		return ceiling
	}
	return int(math.Round(d))
}

// prefetch is how many tasks m may hold beyond its workers.
func (m *manager) prefetch() int {
	if !m.pf.adaptive {
		return int(m.reg.Prefetch)
	}
	return m.pf.depth
}

func (m *manager) resize() {
	m.pf.depth = prefetchDepth(int(m.reg.Workers), m.pf.rtt, m.pf.dur, m.pf.known, int(m.reg.Prefetch))
}

// ackedAfter takes a batch's round trip into m's mean.
func (m *manager) ackedAfter(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	s := rtt.Seconds()
	if m.pf.rtt == 0 {
		m.pf.rtt = s
		return
	}
	m.pf.rtt += ewmaAlpha * (s - m.pf.rtt)
}

// Long tasks. A manager's prefetch follows the mean run time of all its
// tasks, so behind one user's no-ops it holds a thousand; another user's
// sleeps would queue there behind each other once its workers run some.
// So each queue keeps a mean run time per owner, and a task whose owner's
// tasks run long at a manager (or have not run yet, at a manager whose
// prefetch is sized by what it ran) goes there only while it holds fewer
// long tasks than its workers plus the prefetch those tasks would get on
// their own. The rest wait here for the next free worker, on whichever
// manager.

// runMean is an owner's mean task run time in one queue.
type runMean struct {
	owner owner
	runTime
}

// longCap is how many long tasks m may hold when they are r's owner's:
// its workers plus the prefetch her tasks alone would get, or its
// workers while none of hers has run; -1 when her tasks are short there
// (they would get a prefetch per worker), when m's prefetch is explicit
// (honoured as it is), or when m has run nothing itself and none of hers
// has run either (its prefetch is then its workers' number, sized for
// nothing in particular).
func (m *manager) longCap(r *runMean) int {
	if m == nil || !m.pf.adaptive || r == nil {
		return -1
	}
	w := int(m.reg.Workers)
	if !r.known {
		if !m.pf.known {
			return -1
		}
		return w
	}
	d := prefetchDepth(w, m.pf.rtt, r.dur, true, int(m.reg.Prefetch))
	if d >= w {
		return -1
	}
	return w + d
}

// steal is a give-back command waiting for its manager's answer.
type steal struct {
	m        *manager
	ids      []messages.TaskID
	deadline time.Time
}

// stealFor asks managers of mgrs holding tasks they have not started to
// give some back when others of mgrs have idle workers, and nothing is
// queued for them. The manager decides what it has not started; only
// what it names comes back.
func (l *loop) stealFor(mgrs []*manager, now time.Time) {
	if !l.mayIdle {
		return
	}
	l.mayIdle = false
	idle := 0
	for _, m := range mgrs {
		idle += m.runnable()
	}
	if idle == 0 {
		return
	}
	for _, v := range mgrs {
		if idle == 0 {
			break
		}
		extra := len(v.outstanding) - int(v.reg.Workers)
		if extra <= 0 || v.stealing != 0 || v.noGiveBack || v.resyncUntil.After(now) {
			continue
		}
		// Not worth a round trip when its backlog is over sooner.
		if v.pf.known && time.Duration(float64(extra)*v.pf.dur/float64(max(v.reg.Workers, 1))*float64(time.Second)) < max(stealMin, 2*time.Duration(v.pf.rtt*float64(time.Second))) {
			continue
		}
		ids := l.unstarted(v, min(idle, extra))
		if len(ids) == 0 {
			continue
		}
		l.cmdSeq++
		if err := l.sendManager(v, &messages.Command{ID: l.cmdSeq, Op: messages.OpGiveBack, TaskIDs: ids}); err != nil {
			for _, id := range ids {
				l.tasks[id].stealing = false
			}
			continue
		}
		v.stealing = l.cmdSeq
		l.steals[l.cmdSeq] = &steal{m: v, ids: ids, deadline: now.Add(l.ix.opts.HeartbeatThreshold)}
		l.ix.m.stealsAsked.Add(float64(len(ids)))
		idle -= len(ids)
	}
}

// unstarted picks up to n tasks m has acknowledged and not reported
// running, newest first: those furthest from a worker.
func (l *loop) unstarted(m *manager, n int) []messages.TaskID {
	var ids []messages.TaskID
	m.sent.Newest(func(t *itask) bool {
		if t.code == messages.WaitingForLaunch && !t.stealing && !t.fin {
			t.stealing = true
			ids = append(ids, t.id)
		}
		return len(ids) < n
	})
	return ids
}

// stealReply takes back the tasks a manager says it dropped unstarted and
// queues them at the head, same attempt: dispatch hands them to idle
// workers first.
func (l *loop) stealReply(m *manager, s *steal, rep *messages.CommandReply) {
	if m.stealing == rep.ID {
		m.stealing = 0
	}
	for _, id := range s.ids {
		if t, ok := l.tasks[id]; ok {
			t.stealing = false
		}
	}
	if rep.Code == messages.ReplyUnsupported {
		m.noGiveBack = true
		l.log.WithField("manager", m.ID).Info("manager cannot give back tasks (an older version); not asked again")
		return
	}
	var body struct {
		Returned []messages.TaskID `json:"returned"`
	}
	if !rep.OK() || json.Unmarshal(rep.Body, &body) != nil {
		return
	}
	back := make([]*itask, 0, len(body.Returned))
	for _, id := range body.Returned {
		t, ok := l.tasks[id]
		if !ok || t.fin || t.mgr != m {
			continue
		}
		l.takeBack(m, t)
		back = append(back, t)
	}
	l.enqueueFront(back...)
	l.ix.m.stolen.Add(float64(len(back)))
	l.mayIdle = true
	if len(back) > 0 {
		l.log.WithFields(logrus.Fields{"manager": m.ID, "asked": len(s.ids), "returned": len(back)}).Debug("took back unstarted tasks for idle workers")
	}
}

// stealsExpired forgets give-back commands never answered (the manager
// went away): their tasks may be asked for again.
func (l *loop) stealsExpired(now time.Time) {
	for id, s := range l.steals {
		if now.Before(s.deadline) {
			continue
		}
		delete(l.steals, id)
		if s.m.stealing == id {
			s.m.stealing = 0
		}
		for _, tid := range s.ids {
			if t, ok := l.tasks[tid]; ok && t.mgr == s.m {
				t.stealing = false
			}
		}
	}
}

// shareOf is an owner's weight in the fair share (--share USER=WEIGHT).
func (ix *Interchange) shareOf(o owner) float64 {
	if w, ok := ix.opts.Shares[ownerName(o)]; ok && w > 0 {
		return w
	}
	return 1
}
