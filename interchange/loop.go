package interchange

import (
	"context"
	"errors"
	"fmt"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// itask is a task the interchange holds.
type itask struct {
	id      messages.TaskID
	attempt uint32
	code    messages.TaskStatusCode
	queued  bool
	payload []byte
	mgr     *manager // nil while queued
	seq     uint64   // store key
	// at is, while queued, when it was queued; once sent to a manager,
	// when it was sent, and 0 once the manager acknowledged it.
	at   int64
	seen int64 // unix ns of the last delta about it from its manager
}

// loop owns the sockets and every table below; nothing here is locked.
type loop struct {
	ix    *Interchange
	log   *logrus.Entry
	up    *link.Uplink
	down  *link.Router
	quiet *link.Quiet
	mgrs  map[string]*manager
	// order is the round-robin order of managers for dispatch.
	order  []*manager
	rr     int
	tasks  map[messages.TaskID]*itask
	queue  []*itask
	qhead  int
	queued int
	// held are results not yet acknowledged by the forwarder.
	held    *link.Outbox[heldResult]
	seq     uint64 // last store key handed out
	sendBuf []messages.Result
	// commands sent to managers, waiting for their reply.
	mgrCmds map[uint64]mgrCmd
	cmdSeq  uint64
	serving messages.ServingState
	poller  *zmq.Poller
	evs     []event
	retryAt time.Time
	// ops are store writes not yet handed to the store.
	ops []store.Op
	// holdUntil delays dispatch after a recovery so managers can re-sync
	// the tasks they already hold.
	holdUntil time.Time
}

type mgrCmd struct {
	upID     uint64
	reply    chan *messages.CommandReply
	deadline time.Time
}

func newLoop(ix *Interchange) *loop {
	l := &loop{ix: ix, log: ix.log, mgrs: make(map[string]*manager), tasks: make(map[messages.TaskID]*itask),
		held: link.NewOutbox(heldID), mgrCmds: make(map[uint64]mgrCmd), down: ix.down,
		quiet: link.NewQuiet(10 * time.Second)}
	l.up = link.NewUplink(link.UplinkConfig{Ctx: ix.zctx, Addr: ix.opts.Forwarder, ID: ix.opts.EndpointID,
		Timing: ix.timing(), Keys: ix.upKeys(), Register: l.registration, Peer: "forwarder", Log: ix.log,
		MaxMsgSize: ix.opts.maxMsgSize()})
	return l
}

func (l *loop) close() { l.up.Close() }

func (l *loop) run(ctx context.Context) error {
	l.recover()
	l.up.Connect(time.Now())
	tick := heartbeat.Tick(l.ix.opts.HeartbeatInterval)
	nextHK := time.Now().Add(tick)
	for {
		if ctx.Err() != nil {
			return nil
		}
		if l.up.SocketChanged() || l.poller == nil {
			l.poller = zmq.NewPoller()
			l.poller.Add(l.down.Socket(), zmq.POLLIN)
			l.poller.Add(l.ix.mbox.Socket(), zmq.POLLIN)
			if s := l.up.Socket(); s != nil {
				l.poller.Add(s, zmq.POLLIN)
			}
		}
		polled, err := zsock.Wait(l.poller, nextHK, l.retryAt)
		if err != nil {
			return err
		}
		for _, p := range polled {
			switch p.Socket {
			case l.down.Socket():
				if err := l.drainManagers(); err != nil {
					return err
				}
			case l.ix.mbox.Socket():
				l.evs = l.ix.mbox.Take(l.evs)
				for i := range l.evs {
					l.handleEvent(&l.evs[i])
					l.evs[i] = event{}
				}
			case l.up.Socket():
				l.drainUpstream()
			}
		}
		now := time.Now()
		if !l.retryAt.IsZero() && !now.Before(l.retryAt) {
			l.retryAt = time.Time{}
		}
		l.dispatch()
		l.flushResults()
		if len(l.ops) > 0 {
			l.persist(l.takeOps(), nil)
		}
		if !now.Before(nextHK) {
			l.housekeeping(now)
			nextHK = now.Add(tick)
		}
	}
}

func (l *loop) drainManagers() error {
	for i := 0; i < 1000; i++ {
		env, ok, err := l.down.Recv()
		if err != nil {
			return fmt.Errorf("recv from managers: %w", err)
		}
		if !ok {
			return nil
		}
		l.handleManager(env)
	}
	return nil
}

func (l *loop) drainUpstream() {
	for i := 0; i < 1000; i++ {
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

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evReport:
		l.serving = ev.report.ServingState
		l.up.TrySend(ev.report)
	case evDurable:
		ev.then(l)
	case evCommand:
		// A local admin request: run it like a forwarder command.
		if rep := l.command(ev.cmd, ev.reply); rep != nil {
			ev.reply <- rep
		}
	}
}

// --- queue

func (l *loop) enqueueBack(t *itask) {
	t.at = time.Now().UnixNano()
	t.queued = true
	t.mgr = nil
	t.code = messages.WaitingForNodes
	l.queue = append(l.queue, t)
	l.queued++
}

// enqueueFront puts tasks back at the head of the queue, in order, with
// one copy however many there are.
func (l *loop) enqueueFront(ts ...*itask) {
	now := time.Now().UnixNano()
	for _, t := range ts {
		t.at = now
		t.queued = true
		t.mgr = nil
		t.code = messages.WaitingForNodes
	}
	l.queued += len(ts)
	if len(ts) <= l.qhead {
		l.qhead -= len(ts)
		copy(l.queue[l.qhead:], ts)
		return
	}
	rest := l.queue[l.qhead:]
	q := make([]*itask, 0, len(ts)+len(rest)+len(rest)/4)
	q = append(q, ts...)
	l.queue = append(q, rest...)
	l.qhead = 0
}

// pop returns the next queued task, skipping those removed meanwhile.
func (l *loop) pop() *itask {
	for l.qhead < len(l.queue) {
		t := l.queue[l.qhead]
		l.queue[l.qhead] = nil
		l.qhead++
		if t.queued {
			t.queued = false
			l.queued--
			l.compact()
			return t
		}
	}
	l.queue = l.queue[:0]
	l.qhead = 0
	return nil
}

// compact keeps the queue's backing array from growing with every task
// ever queued: reset when drained, slide down when the dead head is large.
func (l *loop) compact() {
	switch {
	case l.qhead == len(l.queue):
		l.queue = l.queue[:0]
		l.qhead = 0
	case l.qhead > 4096 && l.qhead > len(l.queue)/2:
		n := copy(l.queue, l.queue[l.qhead:])
		clear(l.queue[n:])
		l.queue = l.queue[:n]
		l.qhead = 0
	}
}

func (l *loop) unqueue(t *itask) {
	if t.queued {
		t.queued = false
		l.queued--
	}
}

// --- results

// finish takes a task's result: it is held until the forwarder acks it.
func (l *loop) finish(r messages.Result) {
	var seq uint64
	if t, ok := l.tasks[r.ID]; ok {
		l.unqueue(t)
		if t.mgr != nil {
			delete(t.mgr.outstanding, r.ID)
		}
		delete(l.tasks, r.ID)
		seq = t.seq
		if l.ix.store != nil {
			l.ops = append(l.ops, taskDeleteOp(seq))
		}
	}
	if _, dup := l.held.Get(r.ID); dup {
		return
	}
	if seq == 0 {
		seq = l.nextSeq()
	}
	h := heldResult{Result: r, seq: seq}
	l.held.Put(h)
	if l.ix.store != nil {
		l.ops = append(l.ops, resultOp(&h))
	}
}

func (l *loop) nextSeq() uint64 {
	l.seq++
	return l.seq
}

func (l *loop) takeOps() []store.Op {
	ops := l.ops
	l.ops = nil
	return ops
}

// recover reloads what a previous run stored.
func (l *loop) recover() {
	rec := l.ix.recovery
	l.ix.recovery = nil
	if rec == nil {
		return
	}
	for _, t := range rec.tasks {
		l.tasks[t.id] = t
		l.enqueueBack(t)
	}
	for _, h := range rec.results {
		l.held.Put(*h)
	}
	l.seq = rec.maxSeq
	l.holdUntil = time.Now().Add(2 * l.ix.opts.HeartbeatInterval)
	l.log.WithFields(logrus.Fields{"unfinished": len(rec.tasks), "undelivered": len(rec.results)}).
		Infof("recovering: %d tasks unfinished, %d results undelivered", len(rec.tasks), len(rec.results))
	l.publishTotals()
}

func (l *loop) flushResults() {
	q := l.held.Queued()
	if len(q) == 0 || !l.up.Registered() {
		return
	}
	for len(q) > 0 {
		n := min(len(q), 1000)
		l.sendBuf = l.sendBuf[:0]
		for i := range q[:n] {
			l.sendBuf = append(l.sendBuf, q[i].Result)
		}
		n = messages.ChunkResults(l.sendBuf, 1000)
		chunk := l.sendBuf[:n]
		if err := l.up.Send(&messages.ResultBatch{Results: chunk}); err != nil {
			if errors.Is(err, zsock.ErrWouldBlock) {
				l.retryAt = time.Now().Add(5 * time.Millisecond)
			}
			return
		}
		l.ix.status.dropResults(chunk)
		l.held.Sent(n, time.Now().UnixNano())
		l.ix.m.resultsUp.Add(float64(n))
		q = l.held.Queued()
	}
	clear(l.sendBuf)
}

// --- totals

func (l *loop) publishTotals() {
	var t messages.EPStatusReport
	t.Managers = uint32(len(l.mgrs))
	for _, m := range l.mgrs {
		t.Workers += m.reg.Workers
		t.IdleWorkers += m.idle
	}
	t.Queued = uint32(l.queued)
	t.Outstanding = uint32(len(l.tasks))
	l.ix.status.setTotals(t)
}

func (l *loop) housekeeping(now time.Time) {
	switch l.up.Timers(now) {
	case link.TickLost:
		l.ix.m.forwarderLost.Inc()
	case link.TickHeartbeat:
		l.ix.m.heartbeatsSent.WithLabelValues("forwarder").Inc()
	}
	if l.up.Registered() {
		if n := l.held.ResendDue(now, l.ix.opts.HeartbeatThreshold); n > 0 {
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
			if c.reply != nil {
				c.reply <- &messages.CommandReply{ID: c.upID, Code: messages.ReplyUnavailable, Message: "manager did not answer in time"}
			} else {
				l.up.TrySend(&messages.CommandReply{ID: c.upID, Code: messages.ReplyUnavailable, Message: "manager did not answer in time"})
			}
		}
	}
	l.publishTotals()
	l.publishView(now)
}
