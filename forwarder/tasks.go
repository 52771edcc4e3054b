package forwarder

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/internal/seqarr"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/internal/textcap"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Task is the service-side record of one task.
type Task = taskstore.Task

// entry is a task that has not ended, or whose end is not yet durable.
// Task is guarded by taskTable.mu; delivery belongs to the loop, which
// holds entries in its own tables and so finds a task by id once on each
// path instead of once in every table.
type entry struct {
	Task
	// owner indexes Owner in taskTable.owners (for the journal).
	owner uint32
	// gone: the task has left tt.live (its end is stored, or it was
	// never stored); under tt.mu.
	gone bool
	slot uint32 // in tt.live, under tt.mu
	// delivery holds the task once pushed, in its endpoint's
	// deliveries, until it ends there; the loop's alone.
	delivery link.Delivery[entry]
}

// TaskView is the JSON form the API returns.
type TaskView struct {
	TaskID      string             `json:"task_id"`
	EndpointID  string             `json:"endpoint_id,omitempty"`
	Kind        string             `json:"kind,omitempty"`
	State       messages.TaskState `json:"state"`
	Attempts    uint32             `json:"attempts"`
	Runs        uint32             `json:"runs"`
	Result      json.RawMessage    `json:"result"`
	Error       string             `json:"error,omitempty"`
	CreatedAt   *time.Time         `json:"created_at,omitempty"`
	CompletedAt *time.Time         `json:"completed_at,omitempty"`
}

// viewOf renders a task for the API.
func viewOf(t *Task) TaskView {
	v := TaskView{TaskID: t.ID.String(), EndpointID: t.Endpoint, Kind: t.Kind, State: t.State,
		Attempts: shownAttempts(t), Runs: t.Runs, Error: t.Error}
	if len(t.Result) > 0 {
		v.Result = json.RawMessage(t.Result)
	}
	if t.CreatedAt != 0 {
		c := time.Unix(0, t.CreatedAt).UTC()
		v.CreatedAt = &c
	}
	if t.CompletedAt != 0 {
		c := time.Unix(0, t.CompletedAt).UTC()
		v.CompletedAt = &c
	}
	return v
}

// taskTable is the forwarder's view of every task, above its store: an
// index of every task, the tasks that have not ended (live), the ended
// journal, waiters, per-user quotas and counts for metrics. Each change is
// a compare-and-set under one lock: the caller states what it expects,
// terminal states are final, and stale attempts never apply. A task whose
// end is durable leaves memory but for its index entry and a DoneRef, and
// is read back from the store when asked for.
type taskTable struct {
	mu sync.RWMutex
	// index holds every task's seq, once for its whole life; ends holds,
	// by seq, a DoneRef when its end is durable, else its slot in live
	// (liveRef), so retiring a task rewrites an array entry, not a map.
	index   map[messages.TaskID]uint64
	ends    seqarr.Array[taskstore.DoneRef]
	live    []*entry // by slot; nil slots are in free
	free    []uint32
	waiters map[messages.TaskID]chan struct{}
	writes  atomic.Uint64 // stored state changes
	// transitions counts every state change, stored or not.
	transitions atomic.Uint64
	seq         uint64 // under mu
	st          taskstore.Store
	// byState counts tasks per state, for metrics.
	byState map[messages.TaskState]*atomic.Int64
	// open counts each owner's tasks that have not ended (under mu).
	open map[string]openTasks
	// adding holds the first seq of each batch being written to the
	// store (under mu): seqs are given out before the write, so a
	// follower of new tasks reads only up to storedSeq.
	adding  map[uint64]struct{}
	journal *journal // tasks that ended, for GET /v1/tasks/ended
	// owners names the owners of DoneRefs and journal entries.
	owners *taskstore.Owners
	// byOwner holds each owner's seqs in rising order, by owner index, so
	// listing one user's tasks reads hers, not everyone's (8 bytes a
	// task; pruned seqs leave at the next prune).
	byOwner [][]uint64
	// endLatency, when set, sees each result's time from acceptance.
	endLatency func(time.Duration)
	log        *logrus.Entry
	// byID: the store finds tasks this index does not know (another
	// forwarder stored them), so a miss asks it.
	byID bool
	// seqs, when set, numbers new tasks (forwarders sharing the store
	// must not number two alike).
	seqs taskstore.SeqSource
	// shared, when set, holds tasks this table may not (another
	// forwarder dispatches them): a cancel of those goes to it.
	shared taskstore.Shared
}

// liveRef is the ends entry of a live task in slot: no final state, and
// never zero (which the array reads as absent).
func liveRef(slot uint32) taskstore.DoneRef { return taskstore.DoneRef(uint64(slot+1) << 2) }

func slotOf(r taskstore.DoneRef) uint32 { return uint32(uint64(r)>>2) - 1 }

// doneRef packs the end of t, whose end is durable; tt.mu is held.
func (tt *taskTable) doneRef(e *entry) taskstore.DoneRef {
	return taskstore.NewDoneRef(e.State, e.CompletedAt, e.owner)
}

// find returns the live entry of id, or else its DoneRef and seq (known
// says there is one); tt.mu is held.
func (tt *taskTable) find(id messages.TaskID) (e *entry, r taskstore.DoneRef, seq uint64, known bool) {
	seq, known = tt.index[id]
	if !known {
		return nil, 0, 0, false
	}
	r, _ = tt.ends.Get(seq)
	if !r.Ended() {
		return tt.live[slotOf(r)], r, seq, true
	}
	return nil, r, seq, true
}

// insert makes e a live task; tt.mu is held.
func (tt *taskTable) insert(e *entry) {
	if n := len(tt.free); n > 0 {
		e.slot = tt.free[n-1]
		tt.free = tt.free[:n-1]
		tt.live[e.slot] = e
	} else {
		e.slot = uint32(len(tt.live))
		tt.live = append(tt.live, e)
	}
	tt.index[e.ID] = e.Seq
	tt.ends.Put(e.Seq, liveRef(e.slot))
}

// ownerSeq notes seq as a task of owner idx; tt.mu is held.
func (tt *taskTable) ownerSeq(idx uint32, seq uint64) {
	for int(idx) >= len(tt.byOwner) {
		tt.byOwner = append(tt.byOwner, nil)
	}
	tt.byOwner[idx] = append(tt.byOwner[idx], seq)
}

// dropOwnerSeqs removes from these owners' lists the seqs no longer
// indexed (0 in owners: every owner, for an owner a DoneRef cannot name);
// tt.mu is held.
func (tt *taskTable) dropOwnerSeqs(owners map[uint32]bool) {
	for i := range tt.byOwner {
		if !owners[uint32(i)] && !owners[0] {
			continue
		}
		tt.byOwner[i] = slices.DeleteFunc(tt.byOwner[i], func(seq uint64) bool {
			_, ok := tt.ends.Get(seq)
			return !ok
		})
	}
}

// unlive frees e's slot; the caller rewrites or deletes its index entry.
func (tt *taskTable) unlive(e *entry) {
	tt.live[e.slot] = nil
	tt.free = append(tt.free, e.slot)
	e.gone = true
}

func (tt *taskTable) move(t *Task, to messages.TaskState) {
	tt.byState[t.State].Add(-1)
	tt.byState[to].Add(1)
	if !t.State.Terminal() && to.Terminal() {
		tt.closeOwned(t)
	}
	t.State = to
}

// openTasks is what one owner's tasks that have not ended hold.
type openTasks struct {
	n     int
	bytes int64 // of their specs, which stay in memory until they end
}

func (tt *taskTable) closeOwned(t *Task) {
	o := tt.open[t.Owner]
	if o.n--; o.n > 0 {
		o.bytes -= int64(len(t.Spec))
		tt.open[t.Owner] = o
	} else {
		delete(tt.open, t.Owner)
	}
}

// quota caps one owner's tasks that have not ended (0: no cap).
type quota struct {
	tasks int
	bytes int64
}

// errTooManyTasks refuses a submission past a per-user limit.
type errTooManyTasks struct {
	open, adding, limit int
	bytes               bool // the limit is of bytes of specs
}

func (e *errTooManyTasks) Error() string {
	if e.bytes {
		return fmt.Sprintf("%d bytes of tasks not yet ended plus %d new would pass the limit of %d per user; wait for some to end", e.open, e.adding, e.limit)
	}
	return fmt.Sprintf("%d tasks not yet ended plus %d new would pass the limit of %d per user; wait for some to end", e.open, e.adding, e.limit)
}

// countByState reads the per-state counts.
func (tt *taskTable) countByState() map[messages.TaskState]int64 {
	out := make(map[messages.TaskState]int64, len(tt.byState))
	for s, c := range tt.byState {
		out[s] = c.Load()
	}
	return out
}

func newTaskTable(st taskstore.Store, log *logrus.Entry) *taskTable {
	tt := &taskTable{log: log, journal: newJournal(journalSize), owners: taskstore.NewOwners(), index: make(map[messages.TaskID]uint64),
		waiters: make(map[messages.TaskID]chan struct{}), st: st,
		byState: make(map[messages.TaskState]*atomic.Int64), open: make(map[string]openTasks), adding: make(map[uint64]struct{})}
	for _, s := range messages.AllStates {
		tt.byState[s] = new(atomic.Int64)
	}
	tt.byState[messages.StateUnknown] = new(atomic.Int64)
	if f, ok := st.(taskstore.IDFinder); ok {
		tt.byID = f.FindsByID()
	}
	if s, ok := st.(taskstore.SeqSource); ok {
		tt.seqs = s
	}
	if s, ok := st.(taskstore.Shared); ok {
		tt.shared = s
	}
	return tt
}

// load reads the store and returns the unfinished tasks per endpoint in
// acceptance order.
func (tt *taskTable) load() (total int, unfinished map[string][]*entry, err error) {
	unfinished = map[string][]*entry{}
	var open []*entry
	tt.mu.Lock()
	err = tt.st.Recover(func(t *Task) {
		tt.byState[t.State].Add(1)
		tt.seq = max(tt.seq, t.Seq)
		e := &entry{Task: *t, owner: tt.owners.Index(t.Owner)}
		tt.ownerSeq(e.owner, t.Seq)
		if t.State.Terminal() {
			tt.index[t.ID] = t.Seq
			tt.ends.Put(t.Seq, tt.doneRef(e))
			return
		}
		tt.insert(e)
		open = append(open, e)
		o := tt.open[t.Owner]
		o.n++
		o.bytes += int64(len(t.Spec))
		tt.open[t.Owner] = o
	})
	total = len(tt.index)
	for _, seqs := range tt.byOwner {
		slices.Sort(seqs)
	}
	tt.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	slices.SortFunc(open, func(a, b *entry) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, e := range open {
		unfinished[e.Endpoint] = append(unfinished[e.Endpoint], e)
	}
	return total, unfinished, nil
}

// retire drops from memory all but a DoneRef of the tasks whose end is
// now durable.
func (tt *taskTable) retire(es []*entry) {
	if len(es) == 0 {
		return
	}
	tt.mu.Lock()
	for _, e := range es {
		if !e.gone && e.State.Terminal() {
			tt.ends.Put(e.Seq, tt.doneRef(e))
			tt.unlive(e)
		}
	}
	tt.mu.Unlock()
}

// touch records a state change; stored says it goes to the store.
// Intermediate states reported by the endpoint are kept in memory only:
// after a crash the endpoint reports them again. Acceptance,
// cancellation, loss and the end are stored.
func (tt *taskTable) touch(e *entry, now time.Time, stored bool) {
	t := &e.Task
	t.UpdatedAt = now.UnixNano()
	tt.transitions.Add(1)
	if stored {
		t.Writes++
		tt.writes.Add(1)
	}
	if t.State.Terminal() {
		if t.CompletedAt == 0 {
			t.CompletedAt = t.UpdatedAt
		}
		if ch, ok := tt.waiters[t.ID]; ok {
			close(ch)
			delete(tt.waiters, t.ID)
		}
		tt.journal.record(e)
	}
}

// storeErr is why new work is refused, or nil.
func (tt *taskTable) storeErr() error { return tt.st.Err() }

// tasksOf lists the tasks of entries for the store.
func tasksOf(es []*entry) []*Task {
	out := make([]*Task, len(es))
	for i, e := range es {
		out[i] = &e.Task
	}
	return out
}

// add stores new tasks of one owner and returns once they are durable; on
// failure they are removed again. limit caps the owner's tasks that have
// not ended.
func (tt *taskTable) add(ts []*entry, limit quota) error {
	if len(ts) == 0 {
		return nil
	}
	var size int64
	for _, t := range ts {
		size += int64(len(t.Spec))
	}
	var next uint64
	if tt.seqs != nil {
		// Before the lock: it may be a round trip to the database.
		first, err := tt.seqs.NextSeqs(len(ts))
		if err != nil {
			return err
		}
		next = first
	}
	now := time.Now()
	tt.mu.Lock()
	owner := ts[0].Owner
	o := tt.open[owner]
	if limit.tasks > 0 && o.n+len(ts) > limit.tasks {
		tt.mu.Unlock()
		return &errTooManyTasks{open: o.n, adding: len(ts), limit: limit.tasks}
	}
	if limit.bytes > 0 && o.bytes+size > limit.bytes {
		tt.mu.Unlock()
		return &errTooManyTasks{open: int(o.bytes), adding: int(size), limit: int(limit.bytes), bytes: true}
	}
	idx := tt.owners.Index(owner)
	o.n += len(ts)
	o.bytes += size
	tt.open[owner] = o
	if next == 0 {
		next = tt.seq + 1
	}
	first := next
	tt.adding[first] = struct{}{}
	for _, t := range ts {
		t.owner = idx
		t.Seq = next
		next++
		tt.seq = max(tt.seq, t.Seq)
		tt.ownerSeq(idx, t.Seq)
		tt.insert(t)
		tt.byState[t.State].Add(1)
		tt.touch(t, now, true)
	}
	tt.mu.Unlock()
	// A task is read only by id, and its id is not yet given out, so
	// nobody changes these while they are written.
	err := tt.st.Add(tasksOf(ts))
	tt.mu.Lock()
	delete(tt.adding, first)
	if err == nil {
		tt.mu.Unlock()
		return nil
	}
	for _, t := range ts {
		delete(tt.index, t.ID)
		tt.ends.Delete(t.Seq)
		tt.unlive(t)
		tt.byState[t.State].Add(-1)
		if !t.State.Terminal() {
			tt.closeOwned(&t.Task)
		}
	}
	tt.dropOwnerSeqs(map[uint32]bool{idx: true})
	tt.mu.Unlock()
	return err
}

func (tt *taskTable) get(id messages.TaskID) (Task, bool) {
	ts, found := tt.getMany([]messages.TaskID{id})
	return ts[0], found[0]
}

// getMany copies the tasks of ids; found[i] is false for an unknown id.
func (tt *taskTable) getMany(ids []messages.TaskID) ([]Task, []bool) {
	out := make([]Task, len(ids))
	found := make([]bool, len(ids))
	var at []int
	var keys []taskstore.Key
	tt.mu.RLock()
	for i, id := range ids {
		if t, _, seq, ok := tt.find(id); t != nil {
			out[i], found[i] = t.Task, true
		} else if ok || tt.byID {
			at = append(at, i)
			keys = append(keys, taskstore.Key{ID: id, Seq: seq})
		}
	}
	tt.mu.RUnlock()
	if len(keys) == 0 {
		return out, found
	}
	stored, ok := make([]Task, len(keys)), make([]bool, len(keys))
	if err := tt.st.Get(keys, stored, ok); err != nil {
		// Repeats are rate-limited by the daemon's log formatter.
		tt.log.WithError(err).Warn("cannot read finished tasks from the store; they read as unknown")
	}
	for j, i := range at {
		out[i], found[i] = stored[j], ok[j]
	}
	return out, found
}

// census calls fn with the owner and state of each id; a retired task's
// owner is read from the store only when its DoneRef cannot name it.
func (tt *taskTable) census(ids []messages.TaskID, fn func(id messages.TaskID, owner string, st messages.TaskState, known bool)) {
	var keys []taskstore.Key
	tt.mu.RLock()
	for _, id := range ids {
		t, r, seq, ok := tt.find(id)
		switch {
		case t != nil:
			fn(id, t.Owner, t.State, true)
		case !ok && tt.byID:
			keys = append(keys, taskstore.Key{ID: id})
		case !ok:
			fn(id, "", messages.StateUnknown, false)
		default:
			if owner, named := tt.owners.Name(r.Owner()); named {
				fn(id, owner, r.State(), true)
			} else {
				keys = append(keys, taskstore.Key{ID: id, Seq: seq})
			}
		}
	}
	tt.mu.RUnlock()
	if len(keys) == 0 {
		return
	}
	if err := tt.st.Census(keys, func(k taskstore.Key, owner string, st messages.TaskState, known bool) {
		fn(k.ID, owner, st, known)
	}); err != nil {
		tt.log.WithError(err).Warn("cannot read finished tasks from the store; they read as unknown")
	}
}

func (tt *taskTable) len() int {
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	return len(tt.index)
}

// forSend returns the tasks of es that still need sending, skipping
// cancelled or finished ones, up to one batch's worth of payload bytes,
// and appends their entries to sent; it also says how many of es it used.
func (tt *taskTable) forSend(es []*entry, out []messages.Task, sent []*entry) ([]messages.Task, []*entry, int) {
	size := 0
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	for i, t := range es {
		if t.gone || t.State.Terminal() {
			continue
		}
		size += len(t.Spec) + 32
		if len(out) > 0 && size > messages.MaxBatchBytes {
			return out, sent, i
		}
		out = append(out, messages.Task{ID: t.ID, Attempt: t.Attempts, Payload: t.Spec, Owner: t.Owner})
		sent = append(sent, t)
	}
	return out, sent, len(es)
}

// applyDeltas moves tasks forward as the endpoint reports them and
// returns how many were stale or regressing.
func (tt *taskTable) applyDeltas(endpoint string, ds []messages.Delta) (ignored int) {
	now := time.Now()
	tt.mu.Lock()
	for i := range ds {
		d := &ds[i]
		to := d.Code.State()
		t, _, _, _ := tt.find(d.ID)
		if t == nil || t.Endpoint != endpoint {
			ignored++
			continue
		}
		// A terminal code without a result is only a hint; the result
		// itself ends the task.
		if to.Terminal() {
			continue
		}
		if d.Runs > t.Runs && d.Attempt >= t.Attempts {
			t.Runs = d.Runs // counted by the interchange; never goes back
		}
		switch messages.Apply(t.State, t.Attempts, to, d.Attempt) {
		case messages.Applied:
			tt.move(&t.Task, to)
			t.Attempts = d.Attempt
			tt.touch(t, now, false)
		case messages.Same:
		default:
			ignored++
		}
	}
	tt.mu.Unlock()
	return ignored
}

// completeBatch stores results (the first terminal state wins) and calls
// done once they are durable. es, when not nil, holds the entries of the
// results' tasks that the caller knows, nil for the others.
func (tt *taskTable) completeBatch(endpoint string, rs []messages.Result, es []*entry, verdicts []messages.Verdict, done func(error)) []messages.Verdict {
	now := time.Now()
	ended := make([]*entry, 0, len(rs))
	tt.mu.Lock()
	for i := range rs {
		r := &rs[i]
		to := r.Code.State()
		var t *entry
		if es != nil {
			t = es[i]
		}
		var d taskstore.DoneRef
		var known bool
		if t == nil || t.gone {
			t, d, _, known = tt.find(r.ID)
		}
		if t == nil {
			// A result again for a task whose end is stored: the
			// interchange missed our ack.
			v := messages.Stale
			if known {
				v = messages.Apply(d.State(), 0, to, r.Attempt)
			}
			verdicts = append(verdicts, v)
			continue
		}
		if t.Endpoint != endpoint {
			verdicts = append(verdicts, messages.Stale)
			continue
		}
		v := messages.Apply(t.State, t.Attempts, to, r.Attempt)
		verdicts = append(verdicts, v)
		if v != messages.Applied {
			continue
		}
		tt.move(&t.Task, to)
		t.Attempts = r.Attempt
		t.Runs = max(t.Runs, r.Runs)
		t.Error = r.Error
		if len(r.Payload) > 0 {
			t.Result = jsonResult(t.Kind, r.Payload, r.Text)
		}
		if r.Finished > 0 {
			t.CompletedAt = r.Finished
			if tt.endLatency != nil {
				tt.endLatency(time.Duration(now.UnixNano() - t.CreatedAt))
			}
		}
		tt.touch(t, now, true)
		ended = append(ended, t)
	}
	tt.mu.Unlock()
	// Ended tasks no longer change, so the store reads them unlocked.
	tt.st.Complete(tasksOf(ended), func(err error) {
		if err == nil {
			tt.retire(ended)
		}
		if done != nil {
			done(err)
		}
	})
	return verdicts
}

// cancel ends tasks that have not ended. For each id it reports the state
// afterwards, whether the id is known, and whether this call ended it. It
// returns once the change is durable.
func (tt *taskTable) cancel(ids []messages.TaskID) ([]Task, []bool, []bool, error) {
	now := time.Now()
	out := make([]Task, len(ids))
	known := make([]bool, len(ids))
	changed := make([]bool, len(ids))
	var ended []*entry
	var stored, elsewhere []int
	tt.mu.Lock()
	for i, id := range ids {
		t, _, _, ok := tt.find(id)
		if t == nil {
			if ok {
				stored = append(stored, i)
			} else if tt.shared != nil {
				elsewhere = append(elsewhere, i)
			}
			continue
		}
		known[i] = true
		if !t.State.Terminal() {
			tt.move(&t.Task, messages.StateCancelled)
			t.Error = "cancelled by request"
			tt.touch(t, now, true)
			changed[i] = true
			ended = append(ended, t)
		}
		out[i] = t.Task
	}
	tt.mu.Unlock()
	if len(elsewhere) > 0 {
		// Not in memory here: cancelled in the database, and the
		// forwarder holding their endpoint is told.
		sub := make([]messages.TaskID, len(elsewhere))
		for j, i := range elsewhere {
			sub[j] = ids[i]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done, err := tt.shared.CancelStored(ctx, sub, "cancelled by request", now.UnixNano())
		cancel()
		if err != nil {
			return nil, nil, nil, err
		}
		at := make(map[messages.TaskID]int, len(elsewhere))
		for _, i := range elsewhere {
			at[ids[i]] = i
		}
		for _, t := range done {
			i := at[t.ID]
			out[i], known[i], changed[i] = *t, true, true
		}
		for _, i := range elsewhere {
			if !changed[i] {
				stored = append(stored, i)
			}
		}
	}
	if len(stored) > 0 {
		sub := make([]messages.TaskID, len(stored))
		for j, i := range stored {
			sub[j] = ids[i]
		}
		ts, found := tt.getMany(sub)
		for j, i := range stored {
			out[i], known[i] = ts[j], found[j]
		}
	}
	err := tt.st.CompleteNow(tasksOf(ended))
	if err == nil {
		tt.retire(ended)
	}
	return out, known, changed, err
}

// failEndpoint ends the tasks of a deleted endpoint that have not ended,
// as failed with reason, and returns how many once that is durable.
func (tt *taskTable) failEndpoint(endpoint, reason string) (int, error) {
	now := time.Now()
	var ended []*entry
	tt.mu.Lock()
	for _, t := range tt.live {
		if t == nil || t.Endpoint != endpoint || t.State.Terminal() {
			continue
		}
		tt.move(&t.Task, messages.StateFailed)
		t.Error = reason
		tt.touch(t, now, true)
		ended = append(ended, t)
	}
	tt.mu.Unlock()
	err := tt.st.CompleteNow(tasksOf(ended))
	if err == nil {
		tt.retire(ended)
	}
	return len(ended), err
}

// endpointLost moves the endpoint's unfinished tasks back to
// waiting-for-endpoint and returns them for re-sending.
func (tt *taskTable) endpointLost(es []*entry) []*entry {
	now := time.Now()
	out := es[:0]
	var moved []*Task
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, t := range es {
		if t.gone || t.State.Terminal() {
			continue
		}
		if messages.Transition(t.State, messages.StateWaitingForEndpoint, messages.EventLost) {
			tt.move(&t.Task, messages.StateWaitingForEndpoint)
			tt.touch(t, now, true)
			moved = append(moved, &t.Task)
		}
		out = append(out, t)
	}
	// Under the lock: these tasks may still change (a cancel), and the
	// store encodes them before it returns.
	tt.st.Requeue(moved)
	return out
}

// wait blocks until the task is terminal or ctx ends.
func (tt *taskTable) wait(ctx context.Context, id messages.TaskID) (Task, bool) {
	tt.mu.Lock()
	t, _, _, known := tt.find(id)
	if t == nil {
		tt.mu.Unlock()
		if !known && tt.byID {
			return tt.waitStored(ctx, id)
		}
		return tt.get(id)
	}
	if t.State.Terminal() {
		c := t.Task
		tt.mu.Unlock()
		return c, true
	}
	ch, ok := tt.waiters[id]
	if !ok {
		ch = make(chan struct{})
		tt.waiters[id] = ch
	}
	tt.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	if t, ok := tt.get(id); ctx.Err() != nil || !ok || t.State.Terminal() || !tt.byID {
		return t, ok
	}
	// Forgotten here: another forwarder dispatches it.
	return tt.waitStored(ctx, id)
}

// waitStored polls the store for a task another forwarder holds until it
// ends or ctx ends; that forwarder's end reaches only the database.
func (tt *taskTable) waitStored(ctx context.Context, id messages.TaskID) (Task, bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		t, ok := tt.get(id)
		if !ok || t.State.Terminal() {
			return t, ok
		}
		select {
		case <-ctx.Done():
			return t, ok
		case <-tick.C:
		}
	}
}

// jsonResult keeps a result that is JSON as it is and wraps anything else,
// so one odd payload cannot break the API's answers. A python task's
// result is the worker's serialized bytes, with the manager's readable
// form beside it when there is one: {"payload": "<base64>", "text": "..."}.
func jsonResult(kind string, p []byte, text string) []byte {
	if kind == taskspec.KindPython {
		b, _ := json.Marshal(pythonResult{Payload: p, Text: textcap.Cap(text, MaxResultText)})
		return b
	}
	if json.Valid(p) {
		return p
	}
	b, _ := json.Marshal(map[string]string{"raw_base64": base64.StdEncoding.EncodeToString(p)})
	return b
}

// MaxResultText caps the readable form of a python result kept beside its
// payload: it is for people, and the payload has the whole value.
const MaxResultText = 2048

// pythonResult is a python task's result as the API shows it.
type pythonResult struct {
	Payload []byte `json:"payload"`
	Text    string `json:"text,omitempty"`
}

// prune forgets ended tasks completed before cutoff, in memory and in
// the store, and returns how many. Tasks whose end is not yet durable stay
// until it is.
func (tt *taskTable) prune(cutoff time.Time) int {
	var keys []taskstore.Key
	before := cutoff.Unix()
	owners := map[uint32]bool{}
	tt.mu.Lock()
	for id, seq := range tt.index {
		r, _ := tt.ends.Get(seq)
		if c := r.Completed(); r.Ended() && c != 0 && c < before {
			delete(tt.index, id)
			tt.ends.Delete(seq)
			tt.byState[r.State()].Add(-1)
			keys = append(keys, taskstore.Key{ID: id, Seq: seq})
			owners[r.Owner()] = true
		}
	}
	tt.dropOwnerSeqs(owners)
	tt.mu.Unlock()
	if err := tt.st.Prune(keys); err != nil {
		tt.log.WithError(err).Warn("pruning finished tasks from the store failed; they stay on disk until the next try")
	}
	return len(keys)
}

// shownAttempts is attempts as the API shows it: 0 while the task waits
// and no worker has started it, 1 once it is handed to a manager, more
// after each node lost with it. The wire keeps counting from 1, so
// attempt comparisons do not change.
func shownAttempts(t *Task) uint32 {
	if t.Runs == 0 && t.Attempts <= 1 && (t.State == messages.StateWaitingForEndpoint || t.State == messages.StateWaitingForNodes) {
		return 0
	}
	return t.Attempts
}
