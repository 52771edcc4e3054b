package interchange

import (
	"context"
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

// itask is a task the interchange holds, from its arrival until the
// forwarder has acknowledged its result: one entry in one map for its
// whole life, with its state in fields, so each step costs no more than
// a lookup by id.
type itask struct {
	id      messages.TaskID
	attempt uint32
	code    messages.TaskStatusCode
	queued  bool
	// dirty: it is in loop.dirty, for the next status report.
	dirty bool
	// fin: it has its result (res until the forwarder acknowledges it).
	fin     bool
	payload []byte
	mgr     *manager // nil while queued
	seq     uint64   // store key
	// queuedAt is when it was last queued, for the dispatch wait.
	queuedAt int64
	seen     int64 // unix ns of the last delta about it from its manager
	// stAt is when its state (code) last changed, for its delta.
	stAt int64
	res  *messages.Result
	// delivery holds it, once sent, until acknowledged: by its manager
	// (manager.sent) while it runs, then with its result (loop.results)
	// by the forwarder; never both at once.
	delivery link.Delivery[itask]
	// recovered: reloaded after a restart and not dispatched since, so a
	// manager may still hold it from before.
	recovered bool
	// started: a worker started it in its current dispatch; runs counts
	// such starts over its life. Both fit in padding, beside acct.
	started bool
	runs    uint16
	// acct is the task's POSIX account on a multi-user endpoint (an index
	// into multi.list, plus one); 0 otherwise. It fits in padding.
	acct uint32
	// stealing: a give-back command asks its manager for it now.
	stealing bool
	// long: it counts in its manager's nlong (sched.go).
	long bool
	// rewritten: its store record may have been put more than once (a
	// new attempt, or a previous run), so it must not be single-deleted.
	rewritten bool
	owner     owner
	// ackTo is the manager whose ack of this result waits for the
	// forwarder's (results.go, "unstored results"); nil otherwise.
	ackTo *manager
}

// loop owns the sockets and every table below; nothing here is locked.
type loop struct {
	// upTiming is the forwarder link's heartbeat timing: ours until the
	// forwarder announces its own.
	upTiming link.Timing
	ix       *Interchange
	log      *logrus.Entry
	up       *link.Uplink
	down     *link.Router
	quiet    *link.Quiet
	mgrs     map[string]*manager
	// order is the round-robin order of managers for dispatch.
	order []*manager
	rr    int
	// passResults and passUp count the results, and the tasks and acks,
	// taken in this loop pass.
	passResults, passUp int
	// maxIdle is the longest a manager waited for queued work (seconds).
	maxIdle float64
	// freeBuf and runBuf are dispatch's scratch lists of free slots and
	// idle workers per manager.
	freeBuf, runBuf []int
	// tasks holds every task from arrival to the forwarder's ack of its
	// result; nheld of them are finished.
	tasks map[messages.TaskID]*itask
	nheld int
	// q is the queue of a single-user endpoint; a multi-user one queues
	// per POSIX account. queued counts every queue's tasks.
	q      fqueue
	queued int
	// multi is the user map's state; nil on a single-user endpoint.
	multi *multiUser
	// results are the results held until the forwarder acknowledges them.
	results *link.Outbox[itask]
	// dirty are tasks whose state changed since the last status report.
	dirty   []*itask
	seq     uint64 // last store key handed out
	sendBuf []messages.Result
	sendPos []int
	dueBuf  []*itask
	// commands sent to managers, waiting for their reply.
	mgrCmds map[uint64]mgrCmd
	cmdSeq  uint64
	serving messages.ServingState
	// storeFull: the store refused writes when last looked at.
	storeFull bool
	poller    *zmq.Poller
	evs       []event
	// retryAt: a manager's pipe was full; dispatch waits until then.
	// upRetryAt: the forwarder's was; results wait. Apart, so a busy
	// forwarder never holds up dispatch.
	retryAt, upRetryAt time.Time
	// ops are store writes not yet handed to the store.
	ops []store.Op
	// nextBlocks is when the block strategy runs next.
	nextBlocks time.Time
	// hold delays dispatch after a recovery until managers re-synced the
	// tasks they still hold.
	hold *recoveryHold
	// owners interns the owners of tasks taken in.
	owners owners
	// steals are the give-back commands waiting for their manager's reply.
	steals map[uint64]*steal
	// mayIdle: a manager may have idle workers since stealing was last
	// looked at (results, acks, a registration).
	mayIdle bool
	// unstored lists results held only in memory, oldest first from
	// unstoredAt; ackLater the managers' acks that wait for the forwarder.
	unstored   []unstoredResult
	unstoredAt int
	nunstored  int // results whose ackTo is set
	ackLater   map[*manager][]messages.TaskID
}

func taskDelivery(t *itask) *link.Delivery[itask] { return &t.delivery }

type mgrCmd struct {
	upID     uint64
	deadline time.Time
}

func newLoop(ix *Interchange) *loop {
	l := &loop{ix: ix, log: ix.log, mgrs: make(map[string]*manager), tasks: make(map[messages.TaskID]*itask),
		results: link.NewOutbox(taskDelivery),
		mgrCmds: make(map[uint64]mgrCmd), down: ix.down, multi: ix.multi,
		quiet: link.NewQuiet(10 * time.Second), steals: make(map[uint64]*steal)}
	l.q.weight = ix.shareOf
	l.down.Malformed = l.malformed
	l.up = link.NewUplink(link.UplinkConfig{Ctx: ix.zctx, Addr: ix.opts.Forwarder, ID: ix.opts.EndpointID,
		Timing: ix.timing(), Keys: ix.upKeys(), Register: l.registration, Peer: "forwarder", Log: ix.log,
		MaxMsgSize: ix.opts.maxMsgSize()})
	l.upTiming = ix.timing()
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
			// What managers still hold for us is stored, in case they
			// are gone when we are back.
			l.storeUnacked(time.Time{})
			// Tell the forwarder at once, so it shows us gone now rather
			// than after the heartbeat threshold.
			if l.up.Registered() {
				l.up.TrySend(&messages.Goodbye{Reason: "interchange stopping", Final: true})
				l.up.CloseLinger(500 * time.Millisecond)
			}
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
		polled, err := zsock.Wait(l.poller, nextHK, l.retryAt, l.upRetryAt)
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
		if !l.upRetryAt.IsZero() && !now.Before(l.upRetryAt) {
			l.upRetryAt = time.Time{}
		}
		if err := l.ix.storeRefuses(); (err != nil) != l.storeFull {
			l.storeFull = err != nil
			if err != nil {
				l.log.WithError(err).Error("store refuses writes: task batches wait at the forwarder until space returns")
			} else {
				l.log.Info("store takes writes again: accepting task batches")
			}
		}
		if eff := l.ix.pushState(now); eff != l.serving {
			// A changed serving state goes up at once.
			l.serving = eff
			l.ix.status.soon()
		}
		l.dispatch()
		if l.ix.blocks != nil && !now.Before(l.nextBlocks) {
			l.tickBlocks(now)
		}
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
	l.passResults = 0
	for i := 0; i < 1000 && l.passResults < passBudget; i++ {
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

func (l *loop) handleEvent(ev *event) {
	switch ev.kind {
	case evReport:
		ev.report.Deltas = l.takeDeltas()
		l.up.TrySend(ev.report)
	case evDurable:
		ev.then(l)
	case evBlocks:
		l.tickBlocks(time.Now())
	case evDrainBlock:
		l.drainBlock(ev.block)
	case evReloadMap:
		l.reloadMap()
	}
}
