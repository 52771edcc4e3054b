package manager

import (
	"bytes"
	"context"
	"errors"
	"time"
	"unique"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

type loop struct {
	mg         *Manager
	log        *logrus.Entry
	up         *link.Uplink
	lastReport time.Time
	poller     *zmq.Poller
	// hb is the heartbeat timing in force: the options', or the
	// interchange's once adopted.
	hb link.Timing

	// byID holds the tasks held (out not set) and, until the interchange
	// acknowledges them, their results (held by results): one map operation
	// when a task comes and one when its result is acknowledged.
	byID    map[messages.TaskID]*mtask
	nTasks  int
	pending []*mtask
	work    chan *mtask
	workCtx context.Context
	// results are kept until the interchange acknowledges them.
	results *outbox
	deltas  map[messages.TaskID]messages.Delta
	evs     []event
	retryAt time.Time
	// drain is set once the manager is leaving; returned are the tasks
	// (and attempts) it gave back, whose late results are dropped.
	drain    *drain
	returned map[messages.TaskID]uint32
	// parkAt is the earliest parked result's deadline.
	parkAt time.Time
	// inFlight counts tasks handed to workers whose run the loop has not
	// seen end: queued in work or running.
	inFlight int
	// owners interns the owners of the tasks held.
	owners owners
	// flushAt: results wait until then for others to share their batch.
	flushAt time.Time
	// tookAt is when the loop last took the workers' events.
	tookAt time.Time
	// memPct is the memory use read at memAt (see memoryEvery).
	memPct float64
	memAt  time.Time
}

// owners interns owner names, so the tasks of one user share one copy of
// the name; it remembers the last, since a batch's tasks usually share
// their owner (and then their name string too).
type owners struct{ last string }

func (c *owners) intern(name string) string {
	if name == "" {
		return ""
	}
	if name != c.last {
		c.last = unique.Make(name).Value()
	}
	return c.last
}

func (l *loop) close() { l.up.Close() }

func (l *loop) registration() messages.Message {
	o := l.mg.opts
	return &messages.Registration{Role: messages.RoleManager, ID: o.ManagerID, Hostname: l.mg.hostname,
		Workers: uint32(o.Workers), Prefetch: uint32(o.Prefetch), ProtocolVersion: messages.Version,
		SoftwareVersion: o.Version, BlockID: o.BlockID, HTTPAddr: l.mg.advertisedHTTP(),
		AdaptivePrefetch: o.adaptive}
}

func (l *loop) run(ctx context.Context) error {
	l.up.Connect(time.Now())
	l.hb = link.Timing{Interval: l.mg.opts.HeartbeatInterval, Threshold: l.mg.opts.HeartbeatThreshold}
	nextHK := time.Now().Add(l.hb.Tick())
	for {
		if ctx.Err() != nil && l.drain == nil {
			l.startDrain("manager stopping (signal)", l.mg.opts.DrainGrace, time.Now())
		}
		if l.drained(time.Now()) {
			l.up.CloseLinger(time.Second)
			if ctx.Err() == nil {
				return errDrainedByCommand
			}
			return nil
		}
		if l.up.SocketChanged() || l.poller == nil {
			l.poller = zmq.NewPoller()
			l.poller.Add(l.mg.mbox.Socket(), zmq.POLLIN)
			if s := l.up.Socket(); s != nil {
				l.poller.Add(s, zmq.POLLIN)
			}
		}
		var reportAt time.Time
		if len(l.deltas) > 0 {
			reportAt = l.lastReport.Add(deltaDelay)
		}
		// Workers post their tasks' starts without waking the loop: it
		// looks at least every deltaDelay while tasks run.
		var takeAt time.Time
		if l.inFlight > 0 {
			takeAt = l.tookAt.Add(deltaDelay)
		}
		polled, err := zsock.Wait(l.poller, nextHK, l.retryAt, reportAt, l.parkAt, l.flushAt, takeAt)
		if err != nil {
			return err
		}
		took := false
		for _, p := range polled {
			if p.Socket == l.mg.mbox.Socket() {
				l.takeEvents()
				took = true
			} else if p.Socket == l.up.Socket() {
				for i := 0; i < 1000; i++ {
					frames, ok, err := l.up.Recv()
					if err != nil || !ok {
						break
					}
					l.handleMessage(frames)
				}
			}
		}
		now := time.Now()
		if !took && !takeAt.IsZero() && !now.Before(takeAt) {
			l.takeEvents()
		}
		if !l.retryAt.IsZero() && !now.Before(l.retryAt) {
			l.retryAt = time.Time{}
		}
		l.unpark(now)
		l.startWork()
		l.mg.m.flush()
		if now.Sub(l.lastReport) >= l.hb.Interval || (len(l.deltas) > 0 && now.Sub(l.lastReport) >= deltaDelay) {
			l.report(now)
		}
		l.flushResults()
		if !now.Before(nextHK) {
			l.housekeeping(now)
			nextHK = now.Add(l.hb.Tick())
		}
	}
}

// takeEvents handles what workers posted.
func (l *loop) takeEvents() {
	l.tookAt = time.Now()
	l.evs = l.mg.mbox.Take(l.evs)
	for i := range l.evs {
		l.handleEvent(&l.evs[i])
		l.evs[i] = event{}
	}
}

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evStarted:
		l.started(ev.t, ev.at)
	case evFinished:
		l.inFlight--
		l.finished(ev.t, ev.result)
	}
}

// end takes t out of the tasks held; its result, if any, takes its place.
func (l *loop) end(t *mtask) {
	t.out = true
	l.nTasks--
	if len(l.deltas) > 0 {
		delete(l.deltas, t.task.ID)
	}
}

// drop takes t out of the tasks held without a result.
func (l *loop) drop(t *mtask) {
	l.end(t)
	delete(l.byID, t.task.ID)
}

// finished takes the result of t's run.
func (l *loop) finished(t *mtask, r messages.Result) {
	if t.out {
		if a, ok := l.returned[r.ID]; ok && a >= r.Attempt {
			return // given back: another manager runs it now
		}
		// A newer attempt replaced this run: its result is stale and must
		// not take the newer one's place.
		l.mg.m.duplicates.Inc()
		return
	}
	if r.Code == messages.Failed && l.park(t, r) {
		return
	}
	l.end(t)
	// No longer needed, and it may pin the batch it came in.
	t.task.Payload = nil
	l.results.put(t, r)
	ran := time.Duration(-1)
	if r.Started > 0 && r.Finished >= r.Started {
		ran = time.Duration(r.Finished - r.Started)
	}
	l.mg.m.ended(r.Code, ran)
}

// noopPayload is a bare no-op task as the forwarder encodes it.
var noopPayload = taskspec.Spec{Kind: taskspec.KindNoop}.Encode()

// startWork hands pending tasks to idle workers.
func (l *loop) startWork() {
	if l.drain != nil {
		return
	}
	now := time.Now()
	open := l.mg.serving.Effective(now).DispatchAllowed()
	l.mg.gate.set(open)
	if !open {
		return
	}
	for len(l.work) < cap(l.work) && len(l.pending) > 0 {
		t := l.pending[0]
		l.pending[0] = nil
		l.pending = l.pending[1:]
		if t.out {
			continue // cancelled or replaced while pending
		}
		if l.inFlight < l.mg.opts.Workers && bytes.Equal(t.task.Payload, noopPayload) {
			// A worker is free and a no-op has nothing to run: end it
			// here, without a context and a hand-off per task.
			at := now.UnixNano()
			l.finished(t, messages.Result{ID: t.task.ID, Attempt: t.task.Attempt, Code: messages.Success, Started: at, Finished: at})
			continue
		}
		t.handed = true
		t.ctx, t.cancel = context.WithCancelCause(l.workCtx)
		l.inFlight++
		l.work <- t
	}
	if len(l.pending) == 0 {
		l.pending = nil
	}
}

func (l *loop) handleMessage(frames [][]byte) {
	msg, err := messages.Unpack(frames)
	if err != nil {
		l.mg.m.malformed.Inc()
		l.log.WithError(err).Warn("dropped undecodable message from interchange")
		l.up.TrySend(messages.ReplyFor(err))
		return
	}
	now := time.Now()
	registered, handled := l.up.Heard(msg, now)
	if registered {
		l.log.WithFields(logrus.Fields{"held_results": l.results.len(), "tasks": l.nTasks}).Info("registered with interchange")
		l.resync(now)
	}
	if handled {
		return
	}
	switch m := msg.(type) {
	case *messages.Heartbeat:
		l.mg.m.heartbeatsRecv.Inc()
		l.adoptTiming(m)
	case *messages.TaskBatch:
		l.acceptTasks(m)
	case *messages.Ack:
		for _, id := range m.IDs {
			l.results.ack(id)
		}
	case *messages.Command:
		l.up.TrySend(l.command(m))
	case *messages.ErrorReply:
		l.log.WithField("code", m.Code.String()).Warn("interchange refused a message: " + m.Reason)
	default:
		l.log.WithField("type", msg.Type().String()).Warn("unexpected message type from interchange")
	}
}

// resync re-sends held results and reports every task held, after a
// (re-)registration.
func (l *loop) resync(now time.Time) {
	l.results.resendAll()
	for id, t := range l.byID {
		if t.out {
			continue
		}
		l.deltas[id] = messages.Delta{ID: id, Code: t.code, Attempt: t.task.Attempt, At: now.UnixNano()}
	}
	l.report(now)
}

func (l *loop) acceptTasks(b *messages.TaskBatch) {
	if l.drain != nil {
		// Sent before the interchange heard we are leaving: give them back.
		back := make([]messages.TaskID, len(b.Tasks))
		for i := range b.Tasks {
			back[i] = b.Tasks[i].ID
			l.returned[back[i]] = b.Tasks[i].Attempt
		}
		l.up.TrySend(&messages.Ack{IDs: back})
		l.up.TrySend(&messages.Goodbye{Reason: l.drain.reason, Returned: back})
		return
	}
	for i := range b.Tasks {
		t := b.Tasks[i]
		have, ok := l.byID[t.ID]
		if ok && !have.out && have.task.Attempt >= t.Attempt {
			l.mg.m.duplicates.Inc()
			continue
		}
		if ok && !have.out && have.handed {
			// A newer attempt replaces one handed to a worker here (we were
			// taken for lost): keep it from starting, or stop its run; any
			// result of it is stale.
			if have.claim.CompareAndSwap(0, 2) {
				l.inFlight-- // no worker will run it
			}
			have.cancel(errCancelled)
		}
		r := have
		if !ok || !l.results.held(have) {
			r = l.results.older(t.ID)
		}
		if r != nil && r.res.Attempt >= t.Attempt {
			l.mg.m.duplicates.Inc()
			l.results.requeue(r)
			continue
		}
		if ok && !have.out {
			have.out = true
			l.nTasks--
		} else if ok {
			l.results.supersede(have)
		}
		t.Owner = l.owners.intern(t.Owner)
		mt := &mtask{task: t, code: messages.WaitingForLaunch}
		l.byID[t.ID] = mt
		l.nTasks++
		l.pending = append(l.pending, mt)
	}
	l.mg.m.received.Add(float64(len(b.Tasks)))
	// Tell the interchange we hold them, so it need not send them again.
	ids := make([]messages.TaskID, len(b.Tasks))
	for i := range b.Tasks {
		ids[i] = b.Tasks[i].ID
	}
	l.up.TrySend(&messages.Ack{IDs: ids})
}

// resultHold is how long a result waits, while workers still run tasks,
// for others to share its batch: a busy manager sends results (and so
// gets refills) in batches, not one message per task.
const (
	resultHold     = time.Millisecond
	resultHoldMost = 256
)

func (l *loop) flushResults() {
	w := l.results.waiting()
	if w == 0 {
		l.flushAt = time.Time{}
		return
	}
	if !l.up.Registered() {
		return
	}
	if l.inFlight > 0 && w < resultHoldMost && l.drain == nil {
		now := time.Now()
		if l.flushAt.IsZero() {
			l.flushAt = now.Add(resultHold)
		}
		if now.Before(l.flushAt) {
			return
		}
	}
	l.flushAt = time.Time{}
	q := l.results.queued()
	for len(q) > 0 {
		n := messages.ChunkResults(q, 1000)
		if err := l.up.Send(&messages.ResultBatch{Results: q[:n]}); err != nil {
			if errors.Is(err, zsock.ErrWouldBlock) {
				l.retryAt = time.Now().Add(5 * time.Millisecond)
			}
			return
		}
		l.results.sent(n, time.Now().UnixNano())
		q = q[n:]
	}
}

func (l *loop) housekeeping(now time.Time) {
	switch l.up.Timers(now) {
	case link.TickLost:
		l.mg.m.interchangeLost.Inc()
		l.log.WithFields(logrus.Fields{"running": l.nTasks, "held_results": l.results.len()}).Warn("interchange lost; keeping tasks and results until it is back")
	case link.TickHeartbeat:
		l.mg.m.heartbeatsSent.Inc()
	}
	if l.up.Registered() {
		if n := l.results.resendDue(now, l.hb.Threshold); n > 0 {
			l.log.WithField("results", n).Warn("interchange did not acknowledge results; sending them again")
		}
	}
	l.publishView(now)
}
