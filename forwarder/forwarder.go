// Package forwarder is the service side: an HTTP API for users, a task
// table, and a ZMQ ROUTER that endpoints' interchanges connect to.
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	zmq "github.com/pebbe/zmq4"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/heartbeat"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Forwarder is one service-side process.
type Forwarder struct {
	opts    Options
	log     *logrus.Entry
	zctx    *zmq.Context
	router  *zmq.Socket
	zmqAddr string
	http    *httpx.Server
	mbox    *zsock.Mailbox[event]
	tasks   *taskTable
	m       *metrics
	dir     *statedir.Dir

	// views is what the loop publishes about endpoints for HTTP readers.
	viewMu sync.RWMutex
	views  map[string]EndpointView

	cmdSeq uint64

	store      *store.Store
	res        daemon.Resources
	recovering bool
	recovered  map[string][]messages.TaskID

	// access holds tokens and created endpoints (access.go).
	access     *access
	adminToken string
	curveKey   curve.KeyPair
	// lastCompact is when the janitor last compacted the store.
	lastCompact time.Time
}

type evKind uint8

const (
	evSubmitted evKind = iota + 1
	evCancel
	evCommand
	evProbe
	evAck
	evEndpointDeleted
)

// event is what other goroutines hand the loop.
type event struct {
	kind  evKind
	ep    string
	ids   []messages.TaskID
	cmd   *messages.Command
	reply chan commandResult
}

type commandResult struct {
	reply *messages.CommandReply
	err   error
}

// New validates options, takes the state dir and binds both listeners.
func New(opts Options) (*Forwarder, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	f := &Forwarder{opts: opts, log: opts.Log, views: make(map[string]EndpointView)}
	fail := func(err error) (*Forwarder, error) {
		f.res.Close()
		return nil, err
	}
	var err error
	var st *store.Store
	f.dir, st, f.recovering, err = f.res.State(opts.StateDir, "forwarder", opts.NoPersist, "forwarder.db",
		"switchyard-forwarder-v1", []string{tasksBucket, tokensBucket, endpointsBucket}, opts.durability(), f.log)
	if err != nil {
		return fail(err)
	}
	f.store = st
	f.tasks = newTaskTable(st)
	total, unfinished, err := f.tasks.load()
	if err != nil {
		return fail(fmt.Errorf("forwarder: read %s: %w (move the file aside to start empty)", st.Path(), err))
	}
	f.recovered = unfinished
	if f.recovering {
		n := 0
		for _, ids := range unfinished {
			n += len(ids)
		}
		f.log.WithFields(logrus.Fields{"tasks": total, "unfinished": n, "endpoints": len(unfinished), "store": st.Path()}).
			Infof("recovering: %d tasks unfinished of %d stored", n, total)
	}
	if f.zctx, err = f.res.ZMQ(); err != nil {
		return fail(err)
	}
	if f.router, f.zmqAddr, err = zsock.NewRouter(f.zctx, opts.ListenZMQ); err != nil {
		return fail(fmt.Errorf("forwarder: %w", err))
	}
	f.res.Add(func() { zsock.Close(f.router) })
	if f.mbox, err = zsock.NewMailbox[event](f.zctx); err != nil {
		return fail(err)
	}
	f.res.Add(f.mbox.Close)
	f.m = newMetrics(opts.Registry, f)
	if f.store != nil {
		f.store.OnCommit(f.m.observeStore)
	}
	if f.http, err = httpx.ListenConfig(opts.ListenHTTP, f.routes(), opts.HTTP); err != nil {
		return fail(fmt.Errorf("forwarder: %w", err))
	}
	// After the bind, so a client that finds admin.token can connect.
	if err := f.setupAccess(); err != nil {
		f.http.Close()
		return fail(err)
	}
	return f, nil
}

// HTTPAddr is the bound HTTP address.
func (f *Forwarder) HTTPAddr() string { return f.http.Addr() }

// ZMQAddr is the bound ROUTER endpoint.
func (f *Forwarder) ZMQAddr() string { return f.zmqAddr }

// Run serves until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	f.log.WithFields(logrus.Fields{"http": f.HTTPAddr(), "zmq": f.zmqAddr}).Info("forwarder listening")
	bg := daemon.Start(ctx,
		func(c context.Context) error { return f.http.Serve(c, f.log) },
		func(c context.Context) error { f.janitor(c); return nil })
	loopErr := f.loop(ctx)
	httpErr := bg.Stop()
	f.res.Close()
	f.log.Info("forwarder stopped")
	if loopErr != nil {
		return loopErr
	}
	return httpErr
}

type endpoint struct {
	id         string
	identity   []byte
	connected  bool
	registered bool
	reg        messages.Registration
	lastSeen   time.Time
	lastSent   time.Time
	lostReason string
	lostAt     time.Time
	report     messages.EPStatusReport
	pending    []messages.TaskID
	inflight   map[messages.TaskID]struct{}
	// unacked are sent tasks the interchange has not acknowledged, with
	// when they were sent; they go again if the ack does not come.
	unacked    map[messages.TaskID]time.Time
	lastResend time.Time
	probes     map[uint64]chan commandResult
}

type loopState struct {
	eps      map[string]*endpoint
	commands map[uint64]pendingCmd
	retryAt  time.Time
	sendBuf  []messages.Task
	verdicts []messages.Verdict
	// reregAsked limits Reregister replies to one per interval per peer.
	reregAsked map[string]time.Time
}

type pendingCmd struct {
	ep       string
	reply    chan commandResult
	deadline time.Time
}

func (f *Forwarder) endpointFor(ls *loopState, id string) *endpoint {
	ep, ok := ls.eps[id]
	if !ok {
		ep = &endpoint{id: id, identity: []byte(id), inflight: make(map[messages.TaskID]struct{}),
			unacked: make(map[messages.TaskID]time.Time),
			probes:  make(map[uint64]chan commandResult), lostReason: "never connected"}
		ls.eps[id] = ep
	}
	return ep
}

func (f *Forwarder) loop(ctx context.Context) error {
	ls := &loopState{eps: make(map[string]*endpoint), commands: make(map[uint64]pendingCmd), reregAsked: make(map[string]time.Time)}
	for id, ids := range f.recovered {
		ep := f.endpointFor(ls, id)
		ep.pending = append(ep.pending, ids...)
		ep.lostReason = "forwarder restarted; waiting for the endpoint"
		f.publish(ep)
	}
	f.recovered = nil
	poller := zmq.NewPoller()
	poller.Add(f.router, zmq.POLLIN)
	poller.Add(f.mbox.Socket(), zmq.POLLIN)
	tick := heartbeat.Tick(f.opts.HeartbeatInterval)
	nextHK := time.Now().Add(tick)
	var evs []event
	for {
		if ctx.Err() != nil {
			return nil
		}
		polled, err := zsock.Wait(poller, nextHK, ls.retryAt)
		if err != nil {
			return err
		}
		for _, p := range polled {
			switch p.Socket {
			case f.router:
				for i := 0; i < 1000; i++ {
					frames, ok, err := zsock.Recv(f.router)
					if err != nil {
						return fmt.Errorf("recv: %w", err)
					}
					if !ok {
						break
					}
					f.handleZMQ(ls, frames)
				}
			case f.mbox.Socket():
				evs = f.mbox.Take(evs)
				for i := range evs {
					f.handleEvent(ls, &evs[i])
					evs[i] = event{}
				}
			}
		}
		now := time.Now()
		if !ls.retryAt.IsZero() && !now.Before(ls.retryAt) {
			ls.retryAt = time.Time{}
		}
		for _, ep := range ls.eps {
			if len(ep.pending) > 0 && ls.retryAt.IsZero() {
				f.flush(ls, ep)
			}
		}
		if !now.Before(nextHK) {
			f.housekeeping(ls, now)
			nextHK = now.Add(tick)
		}
	}
}

func (f *Forwarder) send(ls *loopState, ep *endpoint, m messages.Message) error {
	frames, err := m.Pack()
	if err != nil {
		return err
	}
	if err := zsock.Send(f.router, ep.identity, frames); err != nil {
		return err
	}
	ep.lastSent = time.Now()
	return nil
}

func (f *Forwarder) handleZMQ(ls *loopState, frames [][]byte) {
	if len(frames) < 2 {
		f.m.malformed.Inc()
		return
	}
	ident := frames[0]
	if len(ident) > 0 && ident[0] == 0 {
		// libzmq's temporary id for a connection replaced by a newer one
		// with the same identity (ROUTER_HANDOVER): its leftovers are stale.
		return
	}
	id := string(ident)
	msg, err := messages.Unpack(frames[1:])
	if err != nil {
		f.m.malformed.Inc()
		f.log.WithError(err).WithField("endpoint", id).Warn("dropped undecodable message")
		if fr, perr := messages.ReplyFor(err).Pack(); perr == nil {
			_ = zsock.Send(f.router, ident, fr)
		}
		return
	}
	ep, known := ls.eps[id]
	if reg, ok := msg.(*messages.Registration); ok {
		f.register(ls, id, reg)
		return
	}
	if !known || !ep.connected {
		// A peer we do not know (or expired) must register again; ask
		// once per interval, not once per message.
		now := time.Now()
		if last := ls.reregAsked[id]; now.Sub(last) >= f.opts.HeartbeatInterval {
			ls.reregAsked[id] = now
			if fr, perr := (&messages.Reregister{Reason: "unknown or expired endpoint; send Registration"}).Pack(); perr == nil {
				_ = zsock.Send(f.router, ident, fr)
			}
			f.log.WithFields(logrus.Fields{"endpoint": id, "type": msg.Type().String()}).Info("message from unregistered endpoint; asked it to re-register")
		}
		return
	}
	ep.lastSeen = time.Now()
	switch m := msg.(type) {
	case *messages.Heartbeat:
		f.m.heartbeatsRecv.Inc()
	case *messages.HeartbeatReq:
		_ = f.send(ls, ep, &messages.HeartbeatResp{Nonce: m.Nonce})
	case *messages.HeartbeatResp:
		if ch, ok := ep.probes[m.Nonce]; ok {
			ch <- commandResult{reply: &messages.CommandReply{ID: m.Nonce, OK: true, Message: "endpoint answered"}}
			delete(ep.probes, m.Nonce)
		}
	case *messages.EPStatusReport:
		f.applyReport(ls, ep, m)
	case *messages.ResultBatch:
		f.applyResults(ls, ep, m)
	case *messages.Ack:
		// The interchange has stored these tasks.
		for _, id := range m.IDs {
			delete(ep.unacked, id)
		}
	case *messages.CommandReply:
		if pc, ok := ls.commands[m.ID]; ok && pc.ep == id {
			pc.reply <- commandResult{reply: m}
			delete(ls.commands, m.ID)
		}
	case *messages.ErrorReply:
		f.log.WithFields(logrus.Fields{"endpoint": id, "code": m.Code.String()}).Warn("endpoint refused a message: " + m.Reason)
	default:
		f.log.WithFields(logrus.Fields{"endpoint": id, "type": msg.Type().String()}).Warn("unexpected message type from endpoint")
	}
}

func (f *Forwarder) register(ls *loopState, id string, reg *messages.Registration) {
	if reg.Role != messages.RoleInterchange || ValidEndpointID(id) != nil {
		f.log.WithField("peer", id).Warn("registration from a non-interchange refused")
		if fr, err := (&messages.ErrorReply{Code: messages.CodeRefused, Reason: "only interchanges connect to a forwarder"}).Pack(); err == nil {
			_ = zsock.Send(f.router, []byte(id), fr)
		}
		return
	}
	if !f.admitted(id) {
		return
	}
	ep := f.endpointFor(ls, id)
	now := time.Now()
	delete(ls.reregAsked, id)
	for n, ch := range ep.probes {
		ch <- commandResult{err: errors.New("endpoint re-registered")}
		delete(ep.probes, n)
	}
	wasConnected := ep.connected
	ep.reg = *reg
	ep.connected = true
	ep.registered = true
	ep.lastSeen = now
	ep.lostReason = ""
	// Whatever the endpoint held may be gone; re-send it. The interchange
	// drops ids it already has.
	if n := len(ep.inflight); n > 0 {
		resend := make([]messages.TaskID, 0, n)
		for id := range ep.inflight {
			resend = append(resend, id)
		}
		clear(ep.inflight)
		clear(ep.unacked)
		ep.pending = append(resend, ep.pending...)
	}
	f.log.WithFields(logrus.Fields{"endpoint": id, "host": reg.Hostname, "version": reg.SoftwareVersion,
		"reconnect": wasConnected, "pending": len(ep.pending)}).Info("endpoint registered")
	_ = f.send(ls, ep, &messages.Heartbeat{})
	f.publish(ep)
}

func (f *Forwarder) applyReport(ls *loopState, ep *endpoint, r *messages.EPStatusReport) {
	if n := f.tasks.applyDeltas(ep.id, r.Deltas); n > 0 {
		f.m.staleUpdates.Add(float64(n))
	}
	wasPaused := !ep.report.ServingState.PushAllowed()
	r.Deltas = nil
	ep.report = *r
	if wasPaused != !r.ServingState.PushAllowed() {
		f.log.WithFields(logrus.Fields{"endpoint": ep.id, "serving_state": r.ServingState.String()}).Info("endpoint serving state changed")
	}
	f.publish(ep)
}

func (f *Forwarder) applyResults(ls *loopState, ep *endpoint, b *messages.ResultBatch) {
	ack := make([]messages.TaskID, len(b.Results))
	for i := range b.Results {
		ack[i] = b.Results[i].ID
	}
	epID := ep.id
	// Ack only once the results are durable; a crash before that makes
	// the interchange send them again.
	verdicts := f.tasks.completeBatch(ep.id, b.Results, ls.verdicts[:0], func(err error) {
		if err != nil {
			f.log.WithError(err).WithField("endpoint", epID).Warn("results not stored; not acknowledged")
			return
		}
		f.mbox.Post(event{kind: evAck, ep: epID, ids: ack})
	})
	ls.verdicts = verdicts
	now := time.Now()
	for i, v := range verdicts {
		r := &b.Results[i]
		switch v {
		case messages.Applied:
			delete(ep.inflight, r.ID)
			delete(ep.unacked, r.ID)
			f.m.results.WithLabelValues(string(r.Code.State())).Inc()
			if r.Finished > 0 {
				if t, ok := f.tasks.get(r.ID); ok {
					f.m.latency.Observe(now.Sub(t.CreatedAt).Seconds())
				}
			}
		case messages.Same, messages.Regress:
			delete(ep.inflight, r.ID)
			delete(ep.unacked, r.ID)
			f.m.duplicates.Inc()
		default:
			f.m.staleUpdates.Inc()
		}
	}
}

func (f *Forwarder) handleEvent(ls *loopState, ev *event) {
	switch ev.kind {
	case evSubmitted:
		ep := f.endpointFor(ls, ev.ep)
		ep.pending = append(ep.pending, ev.ids...)
		f.publish(ep)
	case evCancel:
		ep, ok := ls.eps[ev.ep]
		if !ok || !ep.connected {
			return
		}
		var down []messages.TaskID
		for _, id := range ev.ids {
			if _, ok := ep.inflight[id]; ok {
				delete(ep.inflight, id)
				down = append(down, id)
			}
		}
		if len(down) > 0 {
			f.cmdSeq++
			_ = f.send(ls, ep, &messages.Command{ID: f.cmdSeq, Op: messages.OpCancel, TaskIDs: down})
		}
	case evCommand:
		ep, ok := ls.eps[ev.ep]
		if !ok || !ep.connected {
			ev.reply <- commandResult{err: errEndpointNotConnected}
			return
		}
		f.cmdSeq++
		ev.cmd.ID = f.cmdSeq
		if err := f.send(ls, ep, ev.cmd); err != nil {
			ev.reply <- commandResult{err: err}
			return
		}
		ls.commands[ev.cmd.ID] = pendingCmd{ep: ev.ep, reply: ev.reply, deadline: time.Now().Add(30 * time.Second)}
	case evEndpointDeleted:
		f.forgetEndpoint(ls, ev.ep)
	case evAck:
		if ep, ok := ls.eps[ev.ep]; ok && ep.connected {
			_ = f.send(ls, ep, &messages.Ack{IDs: ev.ids})
		}
	case evProbe:
		ep, ok := ls.eps[ev.ep]
		if !ok || !ep.connected {
			ev.reply <- commandResult{err: errEndpointNotConnected}
			return
		}
		f.cmdSeq++
		if err := f.send(ls, ep, &messages.HeartbeatReq{Nonce: f.cmdSeq}); err != nil {
			ev.reply <- commandResult{err: err}
			return
		}
		ep.probes[f.cmdSeq] = ev.reply
	}
}

var errEndpointNotConnected = errors.New("endpoint is not connected")

// flush sends an endpoint's pending tasks while it accepts them.
func (f *Forwarder) flush(ls *loopState, ep *endpoint) {
	if !ep.connected || !ep.report.ServingState.PushAllowed() {
		return
	}
	now := time.Now()
	for len(ep.pending) > 0 {
		var n int
		ls.sendBuf, n = f.tasks.forSend(ep.pending[:min(len(ep.pending), f.opts.BatchSize)], ls.sendBuf[:0])
		if len(ls.sendBuf) > 0 {
			err := f.send(ls, ep, &messages.TaskBatch{Tasks: ls.sendBuf})
			if err != nil {
				// Back-pressure: keep them pending and retry shortly.
				ls.retryAt = time.Now().Add(5 * time.Millisecond)
				if !errors.Is(err, zsock.ErrWouldBlock) {
					f.log.WithError(err).WithField("endpoint", ep.id).Debug("task batch not sent")
				}
				return
			}
			f.m.sentBatches.Inc()
			f.m.sentTasks.Add(float64(len(ls.sendBuf)))
			for i := range ls.sendBuf {
				ep.inflight[ls.sendBuf[i].ID] = struct{}{}
				ep.unacked[ls.sendBuf[i].ID] = now
				ls.sendBuf[i] = messages.Task{}
			}
		}
		ep.pending = ep.pending[n:]
	}
	ep.pending = nil
	f.publish(ep)
}

func (f *Forwarder) housekeeping(ls *loopState, now time.Time) {
	for _, ep := range ls.eps {
		if !ep.connected {
			continue
		}
		if now.Sub(ep.lastSeen) > f.opts.HeartbeatThreshold {
			f.endpointLost(ep, "heartbeat timeout", now)
			continue
		}
		if now.Sub(ep.lastSent) >= f.opts.HeartbeatInterval {
			if err := f.send(ls, ep, &messages.Heartbeat{}); err == nil {
				f.m.heartbeatsSent.Inc()
			}
		}
		f.resendUnacked(ep, now)
	}
	for id, at := range ls.reregAsked {
		if now.Sub(at) > f.opts.HeartbeatThreshold {
			delete(ls.reregAsked, id)
		}
	}
	for id, pc := range ls.commands {
		if now.After(pc.deadline) {
			pc.reply <- commandResult{err: errors.New("endpoint did not answer the command in time")}
			delete(ls.commands, id)
		}
	}
}

func (f *Forwarder) endpointLost(ep *endpoint, reason string, now time.Time) {
	ep.connected = false
	ep.lostReason = reason
	ep.lostAt = now
	ids := make([]messages.TaskID, 0, len(ep.inflight))
	for id := range ep.inflight {
		ids = append(ids, id)
	}
	clear(ep.inflight)
	clear(ep.unacked)
	back := f.tasks.endpointLost(ids)
	ep.pending = append(back, ep.pending...)
	for n, ch := range ep.probes {
		ch <- commandResult{err: errEndpointNotConnected}
		delete(ep.probes, n)
	}
	ep.report = messages.EPStatusReport{ServingState: ep.report.ServingState}
	f.m.endpointsLost.WithLabelValues(reason).Inc()
	f.log.WithFields(logrus.Fields{"endpoint": ep.id, "reason": reason, "requeued": len(back),
		"silent_for": now.Sub(ep.lastSeen).Round(time.Millisecond).String()}).Warn("endpoint lost")
	f.publish(ep)
}

func (f *Forwarder) connectedCount() int {
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	n := 0
	for _, v := range f.views {
		if v.Connected {
			n++
		}
	}
	return n
}

// resendUnacked sends again, once per threshold, the tasks the interchange
// did not acknowledge in time (a message lost in a reconnect that nobody
// noticed); the interchange drops ids it already has.
func (f *Forwarder) resendUnacked(ep *endpoint, now time.Time) {
	th := f.opts.HeartbeatThreshold
	if len(ep.unacked) == 0 || now.Sub(ep.lastResend) < th {
		return
	}
	ep.lastResend = now
	var again []messages.TaskID
	for id, at := range ep.unacked {
		if now.Sub(at) > th {
			again = append(again, id)
			delete(ep.unacked, id)
		}
	}
	if len(again) > 0 {
		f.m.resent.Add(float64(len(again)))
		f.log.WithFields(logrus.Fields{"endpoint": ep.id, "tasks": len(again)}).Warn("endpoint did not acknowledge tasks; sending them again")
		ep.pending = append(again, ep.pending...)
	}
}

// janitor forgets finished tasks older than the retention period, so a
// long-running forwarder does not grow without bound.
func (f *Forwarder) janitor(ctx context.Context) {
	if f.opts.Retention < 0 {
		return
	}
	t := time.NewTicker(min(max(f.opts.Retention/10, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := f.tasks.prune(now.Add(-f.opts.Retention)); n > 0 {
				f.m.pruned.Add(float64(n))
				f.log.WithFields(logrus.Fields{"tasks": n, "retention": f.opts.Retention.String()}).Info("forgot finished tasks past retention")
				f.compactAfterPrune(now)
			}
		}
	}
}
