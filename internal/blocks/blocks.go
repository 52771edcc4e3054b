package blocks

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// Options configure a Blocks controller.
type Options struct {
	Config   *Config // validated
	Provider Provider
	// StateDir is the interchange's state directory; block i keeps its
	// files in StateDir/blocks/<block-id>.
	StateDir string
	Manager  ManagerCommand
	// Drain asks the block's managers to finish their tasks and exit. The
	// interchange's loop provides it; nil cancels the job instead (its
	// managers then get SIGTERM).
	Drain func(blockID string)
	// Wake is called from the controller's own goroutine when provider
	// results are ready; the loop then calls Tick. It must not block.
	Wake     func()
	Registry prometheus.Registerer
	Log      *logrus.Entry
	// SavedFile is where the live blocks are kept for a restart (default
	// StateDir/blocks/blocks.json); controllers sharing a StateDir each
	// need their own.
	SavedFile string
}

// Manager is what the loop tells the controller about one manager.
type Manager struct {
	BlockID  string
	Capacity int // its workers (prefetch is not capacity)
	Held     int // tasks it runs, at most Capacity
	// Draining: it said goodbye and finishes what it runs. It adds no
	// capacity but keeps its block alive until it exits.
	Draining bool
}

// Load is the loop's view of work and managers at a tick.
type Load struct {
	Queued   int // tasks waiting for a worker: queued, or prefetched and not started
	Managers []Manager
	// Capped: MaxBlocks caps blocks below the configured max this tick
	// (one user's share of what a multi-user endpoint's total leaves).
	Capped    bool
	MaxBlocks int
}

// View is one block in GET /v1/endpoints/{ep}.
type View struct {
	BlockID     string     `json:"block_id"`
	JobID       string     `json:"job_id"`
	State       string     `json:"state"`
	Managers    int        `json:"managers"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	// User is the POSIX account the block runs as (multi-user endpoints).
	User string `json:"user,omitempty"`
}

type block struct {
	id, jobID   string
	dir         string
	state       State
	submittedAt time.Time
	startedAt   time.Time
	drainedAt   time.Time
	cancelledAt time.Time
	endedAt     time.Time
	reason      string
	managers    int
	busy        bool
	idleSince   time.Time
	everManaged bool // a manager of it registered once
	firstSeen   time.Time
	adopted     bool // saved by a previous run of the interchange
}

// Blocks keeps an endpoint's blocks. The interchange's loop owns it and
// calls its methods; slow provider calls run on the controller's own
// goroutine, one at a time, and their results come back through Tick.
//
// Wiring in the interchange: cfg := AddFlags(fs) and cfg.Validate() in
// cmd/switchyard; New with the provider (NewLocal or NewSlurm), the state
// dir, the managers' address and credentials, Drain (send the drain
// command to the managers whose block id matches) and Wake (post to the
// loop's mailbox); the loop calls Tick every Period and on Wake with the
// demand (queued plus prefetched, not started) and its managers (block
// id, workers, tasks running), serves View under "blocks", and calls Close
// on shutdown.
type Blocks struct {
	cfg  *Config
	opts Options
	log  *logrus.Entry
	m    *metrics

	blocks  map[string]*block
	order   []string // live and ended blocks, oldest first
	started bool
	// failures in a row of block starts, and when the last one was
	failures    int
	lastFailure time.Time
	lastBackoff int // failures count last logged as a back-off
	observedCap int
	polling     bool
	lastPoll    time.Time
	// recovering: blocks adopted from a previous run wait for their jobs'
	// state; nothing is decided until then.
	recovering  bool
	recoverFrom time.Time
	saved       []byte // blocks.json as last written

	work    chan op
	mu      sync.Mutex
	results []result
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

type opKind int

const (
	opSubmit opKind = iota
	opStatus
	opCancel
)

type op struct {
	kind  opKind
	block string
	spec  Spec
	jobID string
	ids   []string
}

type result struct {
	op       op
	jobID    string
	statuses map[string]JobStatus
	err      error
	took     time.Duration
}

// New makes a controller and starts its goroutine. Close stops it.
func New(opts Options) (*Blocks, error) {
	if opts.Config == nil || !opts.Config.Enabled() {
		return nil, errors.New("blocks: no provider configured")
	}
	if opts.Provider == nil {
		return nil, errors.New("blocks: Provider is nil")
	}
	if opts.StateDir == "" {
		return nil, errors.New("blocks need a --state-dir for their job scripts and logs")
	}
	if opts.Log == nil {
		opts.Log = logrus.NewEntry(logrus.New())
	}
	if opts.Manager.Binary == "" {
		bin, err := Binary()
		if err != nil {
			return nil, err
		}
		opts.Manager.Binary = bin
	}
	opts.Manager.Args = append(append([]string(nil), opts.Manager.Args...), opts.Config.ManagerArgs...)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Blocks{cfg: opts.Config, opts: opts, log: opts.Log.WithField("provider", opts.Provider.Name()),
		m: newMetrics(opts.Registry), blocks: map[string]*block{}, work: make(chan op, 1024),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if err := b.load(time.Now()); err != nil {
		cancel()
		return nil, err
	}
	go b.worker()
	return b, nil
}

// Period is how often the loop should call Tick.
func (b *Blocks) Period() time.Duration { return b.cfg.Period }

func (b *Blocks) worker() {
	defer close(b.done)
	for {
		select {
		case <-b.ctx.Done():
			return
		case o := <-b.work:
			r := result{op: o}
			ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
			start := time.Now()
			switch o.kind {
			case opSubmit:
				r.jobID, r.err = b.opts.Provider.Submit(ctx, o.spec)
			case opStatus:
				r.statuses, r.err = b.opts.Provider.Status(ctx, o.ids)
			case opCancel:
				r.err = b.opts.Provider.Cancel(ctx, o.jobID)
			}
			r.took = time.Since(start)
			cancel()
			b.mu.Lock()
			b.results = append(b.results, r)
			b.mu.Unlock()
			if b.opts.Wake != nil {
				b.opts.Wake()
			}
		}
	}
}

// enqueue hands an op to the worker; a full queue drops status polls only.
func (b *Blocks) enqueue(o op) bool {
	select {
	case b.work <- o:
		return true
	default:
		if o.kind != opStatus {
			b.log.WithField("block", o.block).Error("provider queue full; dropping a call")
		}
		return false
	}
}

// Tick takes the provider's results, updates blocks from the managers the
// loop reports, runs the strategy and starts what it decided. The loop
// calls it every Period and when Wake fired.
func (b *Blocks) Tick(now time.Time, load Load) []Decision {
	b.collect(now)
	b.observe(now, load)
	if b.recovered(now, false); b.recovering {
		b.poll(now)
		b.gauge()
		return nil
	}
	free := 0
	for _, m := range load.Managers {
		if !m.Draining {
			free += max(m.Capacity-m.Held, 0)
		}
	}
	in := Input{Now: now, Queued: load.Queued, Free: free, BlockCapacity: b.blockCapacity(),
		Started: b.started, Failures: b.failures, LastFailure: b.lastFailure}
	for _, id := range b.order {
		bl := b.blocks[id]
		if bl.state.ended() {
			continue
		}
		in.Blocks = append(in.Blocks, BlockInfo{ID: id, State: bl.state, SubmittedAt: bl.submittedAt, StartedAt: bl.startedAt,
			DrainedAt: bl.drainedAt, Managers: bl.managers, Busy: bl.busy, IdleSince: bl.idleSince})
	}
	cfg := b.cfg
	if load.Capped && load.MaxBlocks < cfg.MaxBlocks {
		c := *cfg
		c.MaxBlocks = load.MaxBlocks
		cfg = &c
	}
	ds := Decide(cfg, in)
	b.started = true
	for _, d := range ds {
		b.apply(now, d)
	}
	b.poll(now)
	b.prune()
	b.gauge()
	b.save()
	return ds
}

func (b *Blocks) blockCapacity() int {
	per := max(b.cfg.WorkersPerNode, 1)
	if b.observedCap > 0 {
		per = b.observedCap
	}
	return per * b.cfg.NodesPerBlock
}

// observe counts each block's managers and whether they are busy.
func (b *Blocks) observe(now time.Time, load Load) {
	type agg struct{ n, held int }
	per := map[string]*agg{}
	for _, m := range load.Managers {
		if m.BlockID == "" {
			continue
		}
		if m.Capacity > b.observedCap && !m.Draining {
			b.observedCap = m.Capacity
		}
		a := per[m.BlockID]
		if a == nil {
			a = &agg{}
			per[m.BlockID] = a
		}
		a.n++
		a.held += m.Held
	}
	for _, bl := range b.blocks {
		if bl.state.ended() {
			continue
		}
		a := per[bl.id]
		if a == nil {
			a = &agg{}
		}
		bl.managers = a.n
		if a.n > 0 {
			bl.everManaged = true
			if bl.state == Pending {
				b.markRunning(bl, now, "first manager registered")
			}
		}
		bl.busy = a.held > 0
		switch {
		case bl.busy || bl.state != Running:
			bl.idleSince = time.Time{}
		case bl.idleSince.IsZero():
			bl.idleSince = now
		}
	}
}

func (b *Blocks) markRunning(bl *block, now time.Time, why string) {
	bl.state = Running
	if bl.startedAt.IsZero() {
		bl.startedAt = now
	}
	b.failures = 0 // a block started: the back-off is over
	b.log.WithFields(logrus.Fields{"block": bl.id, "job": bl.jobID, "pending_for": now.Sub(bl.submittedAt).Round(time.Millisecond)}).
		Infof("block running: %s", why)
}

func (b *Blocks) apply(now time.Time, d Decision) {
	// A back-off holds for many ticks; it counts once per failure.
	if d.Kind != Backoff || b.lastBackoff != b.failures {
		b.m.decisions.WithLabelValues(d.Kind.String()).Inc()
	}
	log := b.log.WithFields(logrus.Fields{"decision": d.Kind.String(), "reason": d.Reason})
	switch d.Kind {
	case Submit:
		for range d.Count {
			b.submit(now, log)
		}
	case Replace:
		// The replacement is on its way before the old block stops taking
		// tasks.
		b.submit(now, log)
		b.drain(now, d.Block, log)
	case Drain:
		b.drain(now, d.Block, log)
	case Cancel:
		b.cancelBlock(now, d.Block, log)
	case Backoff:
		if b.lastBackoff != b.failures {
			b.lastBackoff = b.failures
			log.Warn("not starting blocks yet")
		}
	}
}

func (b *Blocks) submit(now time.Time, log *logrus.Entry) {
	id := "b" + uuid.NewString()[:8]
	bl := &block{id: id, state: Pending, submittedAt: now, dir: filepath.Join(b.opts.StateDir, "blocks", id)}
	b.blocks[id] = bl
	b.order = append(b.order, id)
	b.m.submits.Inc()
	spec := Spec{BlockID: id, Dir: bl.dir, Nodes: b.cfg.NodesPerBlock, WorkersPerNode: b.cfg.WorkersPerNode,
		Walltime: b.cfg.Walltime, WorkerInit: b.cfg.WorkerInit, Manager: b.opts.Manager}
	log.WithField("block", id).Info("submitting block")
	if !b.enqueue(op{kind: opSubmit, block: id, spec: spec}) {
		b.fail(bl, now, "provider queue full", true)
	}
}

func (b *Blocks) drain(now time.Time, id string, log *logrus.Entry) {
	bl := b.blocks[id]
	if bl == nil || bl.state != Running {
		return
	}
	bl.state = Draining
	bl.drainedAt = now
	log.WithFields(logrus.Fields{"block": id, "job": bl.jobID, "managers": bl.managers}).Info("draining block")
	if b.opts.Drain != nil {
		b.opts.Drain(id)
	} else {
		b.cancelBlock(now, id, log)
	}
}

func (b *Blocks) cancelBlock(now time.Time, id string, log *logrus.Entry) {
	bl := b.blocks[id]
	if bl == nil || bl.state.ended() {
		return
	}
	// Do not repeat a cancel every tick; again only after the drain timeout.
	if !bl.cancelledAt.IsZero() && now.Sub(bl.cancelledAt) < b.cfg.DrainTimeout {
		return
	}
	if bl.state != Draining {
		bl.state = Draining
		bl.drainedAt = now
	}
	bl.cancelledAt = now
	if bl.jobID == "" {
		return // submission in flight: cancelled when its job id arrives
	}
	log.WithFields(logrus.Fields{"block": id, "job": bl.jobID}).Info("cancelling block")
	b.enqueue(op{kind: opCancel, block: id, jobID: bl.jobID})
}

// poll asks the provider about every live job, at most once a period.
func (b *Blocks) poll(now time.Time) {
	if b.polling || now.Sub(b.lastPoll) < b.cfg.Period {
		return
	}
	var ids []string
	for _, id := range b.order {
		if bl := b.blocks[id]; !bl.state.ended() && bl.jobID != "" {
			ids = append(ids, bl.jobID)
		}
	}
	if len(ids) == 0 {
		return
	}
	if b.enqueue(op{kind: opStatus, ids: ids}) {
		b.polling = true
		b.lastPoll = now
	}
}

// collect applies what the worker finished.
func (b *Blocks) collect(now time.Time) {
	b.mu.Lock()
	rs := b.results
	b.results = nil
	b.mu.Unlock()
	for _, r := range rs {
		switch r.op.kind {
		case opSubmit:
			bl := b.blocks[r.op.block]
			if bl == nil {
				continue
			}
			if r.err != nil {
				b.fail(bl, now, fmt.Sprintf("submit: %v", r.err), true)
				continue
			}
			bl.jobID = r.jobID
			bl.firstSeen = now
			b.log.WithFields(logrus.Fields{"block": bl.id, "job": r.jobID, "took": r.took.Round(time.Millisecond)}).Info("block submitted")
			if !bl.cancelledAt.IsZero() {
				b.enqueue(op{kind: opCancel, block: bl.id, jobID: bl.jobID})
			}
		case opCancel:
			if r.err != nil {
				b.log.WithError(r.err).WithFields(logrus.Fields{"block": r.op.block, "job": r.op.jobID}).Warn("cancel failed")
			}
		case opStatus:
			b.polling = false
			if r.err != nil {
				b.log.WithError(r.err).Warn("job status failed")
				continue
			}
			b.statuses(now, r.statuses)
			b.recovered(now, true)
		}
	}
}

func (b *Blocks) statuses(now time.Time, st map[string]JobStatus) {
	for _, bl := range b.blocks {
		if bl.state.ended() || bl.jobID == "" {
			continue
		}
		s, ok := st[bl.jobID]
		if !ok {
			// Just submitted jobs may not show yet; later, gone means ended.
			// An adopted job has no such grace.
			if bl.adopted || now.Sub(bl.firstSeen) > 3*b.cfg.Period {
				b.end(bl, now, Done, "job no longer known to the provider")
			}
			continue
		}
		switch s.State {
		case JobPending:
			bl.reason = s.Reason
			if bl.reason == "None" {
				bl.reason = "" // squeue's word for no reason
			}
		case JobRunning:
			bl.reason = "" // a pending reason no longer holds
			if bl.state == Pending {
				if !s.Since.IsZero() && s.Since.Before(now) {
					bl.startedAt = s.Since
				}
				b.markRunning(bl, now, "job running")
			}
		case JobDone:
			b.end(bl, now, Done, s.Reason)
		case JobFailed:
			// A job that never had a manager failed to start: back off.
			b.fail(bl, now, s.Reason, !bl.everManaged)
			if bl.jobID != "" {
				b.enqueue(op{kind: opCancel, block: bl.id, jobID: bl.jobID}) // a hopeless pending job leaves the queue
			}
		}
	}
}

func (b *Blocks) fail(bl *block, now time.Time, reason string, backoff bool) {
	b.m.failures.Inc()
	if backoff {
		b.failures++
		b.lastFailure = now
	}
	b.log.WithFields(logrus.Fields{"block": bl.id, "job": bl.jobID, "failures_in_a_row": b.failures,
		"backoff": BackoffDelay(b.cfg, b.failures)}).Error("block failed: " + reason)
	b.end(bl, now, Failed, reason)
}

func (b *Blocks) end(bl *block, now time.Time, s State, reason string) {
	bl.state, bl.reason, bl.endedAt, bl.managers = s, reason, now, 0
	if s == Done {
		b.log.WithFields(logrus.Fields{"block": bl.id, "job": bl.jobID, "reason": reason}).Info("block ended")
	}
}

// prune forgets ended blocks beyond KeepEnded, oldest first.
func (b *Blocks) prune() {
	ended := 0
	for _, id := range b.order {
		if b.blocks[id].state.ended() {
			ended++
		}
	}
	if ended <= b.cfg.KeepEnded {
		return
	}
	keep := b.order[:0]
	for _, id := range b.order {
		if ended > b.cfg.KeepEnded && b.blocks[id].state.ended() {
			delete(b.blocks, id)
			ended--
			continue
		}
		keep = append(keep, id)
	}
	b.order = keep
}

func (b *Blocks) gauge() {
	var n [len(stateNames)]int
	for _, bl := range b.blocks {
		n[bl.state]++
	}
	for i, s := range stateNames {
		b.m.blocks.WithLabelValues(s).Set(float64(n[i]))
	}
}

// View lists the blocks, oldest first: live ones and the last ended ones.
func (b *Blocks) View() []View {
	out := make([]View, 0, len(b.order))
	for _, id := range b.order {
		bl := b.blocks[id]
		v := View{BlockID: id, JobID: bl.jobID, State: bl.state.String(), Managers: bl.managers, SubmittedAt: bl.submittedAt.UTC(), Reason: bl.reason}
		if !bl.startedAt.IsZero() {
			t := bl.startedAt.UTC()
			v.StartedAt = &t
		}
		out = append(out, v)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].SubmittedAt.Before(out[j].SubmittedAt) })
	return out
}

// Live is how many blocks count against --max-blocks: pending and
// running ones (draining ones do not).
func (b *Blocks) Live() int {
	n := 0
	for _, bl := range b.blocks {
		if bl.state == Pending || bl.state == Running {
			n++
		}
	}
	return n
}

// Pending reports whether a block is on its way (pending), so tasks wait
// for nodes rather than for nothing.
func (b *Blocks) Pending() bool {
	for _, bl := range b.blocks {
		if bl.state == Pending {
			return true
		}
	}
	return false
}

// Close stops the controller's goroutine and closes the provider (the
// local provider stops its managers; Slurm jobs keep running).
func (b *Blocks) Close(ctx context.Context) error {
	b.cancel()
	<-b.done
	var err error
	if b.cfg.CancelOnExit {
		err = b.cancelAll(ctx)
	} else {
		b.save()
	}
	return errors.Join(err, b.opts.Provider.Close(ctx))
}
