package forwarder

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/internal/seqarr"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Task is the service-side record of one task.
type Task struct {
	ID       messages.TaskID
	Seq      uint64 // order of acceptance; the store's key
	Endpoint string
	// Owner is the user who submitted the task; only they (and admins)
	// see it.
	Owner    string
	Kind     string
	Spec     []byte
	State    messages.TaskState
	Attempts uint32
	Result   []byte
	Error    string
	// Times are unix nanoseconds, 0 when unset: 8 bytes and no pointer
	// each, where a time.Time takes 24 and one.
	CreatedAt   int64
	UpdatedAt   int64
	CompletedAt int64
	Writes      uint32
	// owner indexes Owner in taskTable.owners; set when the table takes
	// the task.
	owner uint32
}

// entry is a task in the table. Task is guarded by taskTable.mu; sentAt
// belongs to the loop, which holds entries in its own tables and so finds
// a task by id once on each path instead of once in every table.
type entry struct {
	Task
	// gone: the task has left tt.live (retired, pruned or not stored);
	// under tt.mu.
	gone bool
	slot uint32 // in tt.live, under tt.mu
	// sentAt is when the loop pushed the task, until the interchange
	// acknowledges it (then 0); the loop's alone.
	sentAt int64
}

// TaskView is the JSON form the API returns.
type TaskView struct {
	TaskID      string             `json:"task_id"`
	EndpointID  string             `json:"endpoint_id,omitempty"`
	Kind        string             `json:"kind,omitempty"`
	State       messages.TaskState `json:"state"`
	Attempts    uint32             `json:"attempts"`
	Result      json.RawMessage    `json:"result"`
	Error       string             `json:"error,omitempty"`
	CreatedAt   *time.Time         `json:"created_at,omitempty"`
	CompletedAt *time.Time         `json:"completed_at,omitempty"`
}

// View renders a task for the API.
func (t *Task) View() TaskView {
	v := TaskView{TaskID: t.ID.String(), EndpointID: t.Endpoint, Kind: t.Kind, State: t.State,
		Attempts: t.Attempts, Error: t.Error}
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

const tasksBucket = "tasks"

// The state file: an indexed log (finished tasks are read back from it).
// The order of the buckets is part of the format.
const (
	stateFile   = "forwarder.log"
	stateFormat = "switchyard-forwarder-v2"
	// oldStateFile is the B-tree file of earlier versions, read once.
	oldStateFile   = "forwarder.db"
	oldStateFormat = "switchyard-forwarder-v1"
)

var stateBuckets = []string{tasksBucket, tokensBucket}

// logOptions: task keys are sequence numbers.
func logOptions(d store.Durability) store.LogOptions {
	return store.LogOptions{Durability: d, Sequenced: []string{tasksBucket}}
}

// openStore opens the state log and closes it with the forwarder; an old
// B-tree file is copied into it once and renamed aside.
func (f *Forwarder) openStore() (*store.Log, bool, error) {
	path, old := f.dir.File(stateFile), f.dir.File(oldStateFile)
	st, existed, copied, err := store.OpenLogFrom(path, stateFormat, stateBuckets,
		logOptions(f.opts.durability()), old, oldStateFormat)
	if err != nil {
		return nil, false, err
	}
	f.res.Add(func() {
		if err := st.Close(); err != nil {
			f.log.WithError(err).Error("closing the store")
		}
	})
	if copied > 0 {
		f.log.WithFields(logrus.Fields{"records": copied, "from": old, "kept_as": old + ".migrated"}).
			Info("state moved from the B-tree file to the log")
	}
	if st.Dropped > 0 {
		f.log.WithField("bytes", st.Dropped).Warn("the state log ended in a torn write (a crash while writing); that last write was never acknowledged and is dropped")
	}
	return st, existed || copied > 0, nil
}

// recordVersion starts every stored task so the layout can change.
// Version 2 adds the owner at the end; version 1 records read as owned by
// nobody (admins only).
const recordVersion = 2

func encodeTask(t *Task) store.Op {
	op, _ := encodeTaskIn(make([]byte, 0, recordBound(t)), t)
	return op
}

// records are the store ops of one change to many tasks. Their keys and
// values share a few buffers instead of taking two allocations each.
type records struct {
	ops   []store.Op
	arena []byte
	n     int // tasks expected, to size the buffers
}

// arenaChunk caps one shared buffer.
const arenaChunk = 32 << 10

func newRecords(n int) *records { return &records{ops: make([]store.Op, 0, n), n: n} }

func (r *records) add(t *Task) {
	need := recordBound(t)
	if cap(r.arena)-len(r.arena) < need {
		r.arena = make([]byte, 0, max(need, min(arenaChunk, need*(r.n-len(r.ops)))))
	}
	var op store.Op
	op, r.arena = encodeTaskIn(r.arena, t)
	r.ops = append(r.ops, op)
}

// recordBound is at least the size of t's key and record.
func recordBound(t *Task) int {
	return 8 + 128 + len(t.Endpoint) + len(t.Kind) + len(t.Spec) + len(t.State) + len(t.Result) + len(t.Error) + len(t.Owner)
}

func encodeTaskIn(arena []byte, t *Task) (store.Op, []byte) {
	need := 8 + 128 + len(t.Endpoint) + len(t.Kind) + len(t.Spec) + len(t.State) + len(t.Result) + len(t.Error) + len(t.Owner)
	if cap(arena)-len(arena) < need {
		arena = make([]byte, 0, max(need, arenaChunk))
	}
	start := len(arena)
	arena = binary.BigEndian.AppendUint64(arena, t.Seq)
	w := binrec.Writer{B: arena}
	w.Uvarint(recordVersion)
	w.Bytes(t.ID[:])
	w.String(t.Endpoint)
	w.String(t.Kind)
	w.Bytes(t.Spec)
	w.String(string(t.State))
	w.Uvarint(uint64(t.Attempts))
	w.Bytes(t.Result)
	w.String(t.Error)
	w.Varint(t.CreatedAt)
	w.Varint(t.UpdatedAt)
	w.Varint(t.CompletedAt)
	w.Uvarint(uint64(t.Writes))
	w.String(t.Owner)
	arena = w.B
	end := len(arena)
	return store.Op{Bucket: tasksBucket, Key: arena[start : start+8 : start+8], Value: arena[start+8 : end : end]}, arena
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

func decodeTask(k, v []byte) (*Task, error) {
	if len(k) != 8 {
		return nil, fmt.Errorf("key of %d bytes", len(k))
	}
	r := binrec.Reader{B: v}
	ver := r.Uvarint()
	if r.Err == nil && (ver < 1 || ver > recordVersion) {
		return nil, fmt.Errorf("record version %d, this build reads 1 to %d", ver, recordVersion)
	}
	id := r.Bytes()
	t := &Task{Seq: binary.BigEndian.Uint64(k), Endpoint: r.String(), Kind: r.String(), Spec: r.Bytes()}
	state := r.String()
	t.Attempts = uint32(r.Uvarint())
	t.Result = r.Bytes()
	t.Error = r.String()
	t.CreatedAt = r.Varint()
	t.UpdatedAt = r.Varint()
	t.CompletedAt = r.Varint()
	t.Writes = uint32(r.Uvarint())
	if ver >= 2 {
		t.Owner = r.String()
	}
	if r.Err != nil {
		return nil, r.Err
	}
	if len(id) != 16 {
		return nil, fmt.Errorf("task id of %d bytes", len(id))
	}
	copy(t.ID[:], id)
	st, err := messages.ParseTaskState(state)
	if err != nil {
		return nil, err
	}
	t.State = st
	return t, nil
}

// taskTable holds every task. Each change is a compare-and-set under one
// lock: the caller states what it expects, terminal states are final, and
// stale attempts never apply. Changes are persisted by group commit.
//
// With a store, a task whose end is durable leaves memory but for a
// doneRef: its arguments and result are read back from the store when
// asked for, so tasks kept for the retention time cost tens of bytes of
// RAM each, not kilobytes.
type taskTable struct {
	mu sync.RWMutex
	// index holds every task's seq, once for its whole life; ends holds,
	// by seq, a doneRef's end when its end is durable, else its slot in
	// live (not ended, or ended but not yet durable), so retiring a task
	// rewrites an array entry, not a map's.
	index   map[messages.TaskID]uint64
	ends    seqarr.Array[uint64]
	live    []*entry // by slot; nil slots are in free
	free    []uint32
	waiters map[messages.TaskID]chan struct{}
	writes  atomic.Uint64 // stored state changes
	// transitions counts every state change, stored or not.
	transitions atomic.Uint64
	seq         uint64 // under mu
	st          *store.Log
	// byState counts tasks per state, for metrics.
	byState map[messages.TaskState]*atomic.Int64
	// open counts each owner's tasks that have not ended (under mu).
	open    map[string]int
	journal *journal // tasks that ended, for GET /v1/tasks/ended
	// owners are the owners of retired tasks, named by index in a
	// doneRef; index 0 is a placeholder.
	owners   []string
	ownerIdx map[string]uint32
	// endLatency, when set, sees each result's time from acceptance.
	endLatency func(time.Duration)
	log        *logrus.Entry
}

// doneRef is what stays in memory of a task whose end is stored: its seq
// (in the index) and end (in ends), about 40 bytes with the map's share.
// Final states code 1 to 3; code 0 marks a live task, whose slot in
// taskTable.live is in end.
type doneRef struct {
	seq uint64
	// end packs the completion time (unix seconds, 0 if unknown; 34
	// bits), the owner (an index into taskTable.owners, 0 if not there;
	// 28 bits) and the final state (2 bits).
	end uint64
}

var endStates = [...]messages.TaskState{messages.StateUnknown, messages.StateSuccess, messages.StateFailed, messages.StateCancelled}

const maxOwners = 1<<28 - 1

// endCode is the index of a final state in endStates, 0 for others.
func endCode(st messages.TaskState) uint8 {
	switch st {
	case messages.StateSuccess:
		return 1
	case messages.StateFailed:
		return 2
	case messages.StateCancelled:
		return 3
	}
	return 0
}

// ownerIndex names owner by its index in tt.owners, adding it if new;
// tt.mu is held.
func (tt *taskTable) ownerIndex(owner string) uint32 {
	i, ok := tt.ownerIdx[owner]
	if !ok {
		i = uint32(len(tt.owners))
		tt.owners = append(tt.owners, owner)
		tt.ownerIdx[owner] = i
	}
	return i
}

// refOf makes a task's doneRef; tt.mu is held.
func (tt *taskTable) refOf(t *Task) doneRef {
	var sec uint64
	if s := t.CompletedAt / 1e9; s > 0 {
		sec = uint64(s) & (1<<34 - 1)
	}
	owner := t.owner
	if owner > maxOwners {
		owner = 0
	}
	return doneRef{seq: t.Seq, end: sec<<30 | uint64(owner)<<2 | uint64(endCode(t.State))}
}

func (r doneRef) state() messages.TaskState { return endStates[r.end&3] }

func (r doneRef) isLive() bool { return r.end&3 == 0 }

// liveEnd is the end of a live task in slot.
func liveEnd(slot uint32) uint64 { return uint64(slot+1) << 2 }

func (r doneRef) slot() uint32 { return uint32(r.end>>2) - 1 }

// getEnd is the end of the task of seq; tt.mu is held.
func (tt *taskTable) getEnd(seq uint64) uint64 {
	end, _ := tt.ends.Get(seq)
	return end
}

// find returns the live entry of id, or else its doneRef (known says
// there is one); tt.mu is held.
func (tt *taskTable) find(id messages.TaskID) (e *entry, r doneRef, known bool) {
	seq, known := tt.index[id]
	if !known {
		return nil, doneRef{}, false
	}
	r = doneRef{seq: seq, end: tt.getEnd(seq)}
	if r.isLive() {
		return tt.live[r.slot()], r, true
	}
	return nil, r, true
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
	tt.ends.Put(e.Seq, liveEnd(e.slot))
}

// unlive frees e's slot; the caller rewrites or deletes its index entry.
func (tt *taskTable) unlive(e *entry) {
	tt.live[e.slot] = nil
	tt.free = append(tt.free, e.slot)
	e.gone = true
}

// completed is the completion time in unix seconds, 0 if unknown.
func (r doneRef) completed() int64 { return int64(r.end >> 30) }

// owner is the task's owner; ok is false when it must be read from the
// store (more owners than a doneRef can name).
func (tt *taskTable) owner(r doneRef) (string, bool) {
	i := uint32(r.end>>2) & maxOwners
	if i == 0 || int(i) >= len(tt.owners) {
		return "", false
	}
	return tt.owners[i], true
}

func (tt *taskTable) move(t *Task, to messages.TaskState) {
	tt.byState[t.State].Add(-1)
	tt.byState[to].Add(1)
	if !t.State.Terminal() && to.Terminal() {
		tt.closeOwned(t)
	}
	t.State = to
}

func (tt *taskTable) closeOwned(t *Task) {
	if n := tt.open[t.Owner] - 1; n > 0 {
		tt.open[t.Owner] = n
	} else {
		delete(tt.open, t.Owner)
	}
}

// errTooManyTasks refuses a submission past the per-user limit.
type errTooManyTasks struct{ open, adding, limit int }

func (e *errTooManyTasks) Error() string {
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

func newTaskTable(st *store.Log, log *logrus.Entry) *taskTable {
	tt := &taskTable{log: log, journal: newJournal(journalSize), owners: []string{""}, ownerIdx: map[string]uint32{}, index: make(map[messages.TaskID]uint64), waiters: make(map[messages.TaskID]chan struct{}), st: st,
		byState: make(map[messages.TaskState]*atomic.Int64), open: make(map[string]int)}
	for _, s := range messages.AllStates {
		tt.byState[s] = new(atomic.Int64)
	}
	tt.byState[messages.StateUnknown] = new(atomic.Int64)
	return tt
}

// load reads the store and returns the unfinished tasks per endpoint in
// acceptance order.
func (tt *taskTable) load() (total int, unfinished map[string][]*entry, err error) {
	unfinished = map[string][]*entry{}
	if tt.st == nil {
		return 0, unfinished, nil
	}
	var open []*entry
	err = tt.st.ForEach(tasksBucket, func(k, v []byte) error {
		t, err := decodeTask(k, v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", k, err)
		}
		tt.byState[t.State].Add(1)
		tt.seq = max(tt.seq, t.Seq)
		t.owner = tt.ownerIndex(t.Owner)
		if t.State.Terminal() {
			tt.index[t.ID] = t.Seq
			tt.ends.Put(t.Seq, tt.refOf(t).end)
			return nil
		}
		e := &entry{Task: *t}
		tt.insert(e)
		open = append(open, e)
		tt.open[t.Owner]++
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	sort.Slice(open, func(i, j int) bool { return open[i].Seq < open[j].Seq })
	for _, e := range open {
		unfinished[e.Endpoint] = append(unfinished[e.Endpoint], e)
	}
	return len(tt.index), unfinished, nil
}

// retire drops from memory all but a doneRef of the tasks whose end is
// now durable.
func (tt *taskTable) retire(es []*entry) {
	if tt.st == nil || len(es) == 0 {
		return
	}
	tt.mu.Lock()
	for _, e := range es {
		if !e.gone && e.State.Terminal() {
			tt.ends.Put(e.Seq, tt.refOf(&e.Task).end)
			tt.unlive(e)
		}
	}
	tt.mu.Unlock()
}

// readStored reads retired tasks back from the store; found[i] says
// whether seqs[i] was still there (a prune may have removed it).
func (tt *taskTable) readStored(seqs []uint64) ([]Task, []bool, error) {
	out := make([]Task, len(seqs))
	found := make([]bool, len(seqs))
	keys := make([][]byte, len(seqs))
	for i, s := range seqs {
		keys[i] = seqKey(s)
	}
	err := tt.st.Get(tasksBucket, keys, func(i int, v []byte) error {
		if v == nil {
			return nil
		}
		t, err := decodeTask(keys[i], v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", keys[i], err)
		}
		out[i], found[i] = *t, true
		return nil
	})
	return out, found, err
}

// touch records a state change. Intermediate states reported by the
// endpoint are kept in memory only (ops nil): after a crash the endpoint
// reports them again. Acceptance, cancellation, loss and the end are
// stored.
func (tt *taskTable) touch(t *Task, now time.Time, rec *records) {
	t.UpdatedAt = now.UnixNano()
	tt.transitions.Add(1)
	if rec != nil {
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
		tt.journal.record(t)
	}
	if tt.st != nil && rec != nil {
		rec.add(t)
	}
}

func (tt *taskTable) persist(ops []store.Op, cb func(error)) {
	if tt.st == nil || (len(ops) == 0 && cb == nil) {
		if cb != nil {
			cb(nil)
		}
		return
	}
	// With no ops of its own, cb still waits for a commit: what it
	// confirms (a re-sent result, say) may rest on a write still queued
	// because the store is failing.
	tt.st.Write(ops, cb)
}

// storeErr is why new work is refused, or nil.
func (tt *taskTable) storeErr() error {
	if tt.st == nil {
		return nil
	}
	return tt.st.Err()
}

// add stores new tasks of one owner and returns once they are durable; on
// failure they are removed again. limit > 0 caps the owner's tasks that
// have not ended.
func (tt *taskTable) add(ts []*entry, limit int) error {
	now := time.Now()
	rec := newRecords(len(ts))
	tt.mu.Lock()
	if len(ts) > 0 && limit > 0 {
		if open := tt.open[ts[0].Owner]; open+len(ts) > limit {
			tt.mu.Unlock()
			return &errTooManyTasks{open: open, adding: len(ts), limit: limit}
		}
	}
	owner, ownerName := uint32(0), ""
	for i, t := range ts {
		if i == 0 || t.Owner != ownerName {
			owner, ownerName = tt.ownerIndex(t.Owner), t.Owner
		}
		t.owner = owner
		tt.open[t.Owner]++
		tt.seq++
		t.Seq = tt.seq
		tt.insert(t)
		tt.byState[t.State].Add(1)
		tt.touch(&t.Task, now, rec)
	}
	tt.mu.Unlock()
	if tt.st == nil {
		return nil
	}
	err := tt.st.WriteSync(rec.ops)
	if err == nil {
		return nil
	}
	var undo []store.Op
	tt.mu.Lock()
	for _, t := range ts {
		delete(tt.index, t.ID)
		tt.ends.Delete(t.Seq)
		tt.unlive(t)
		tt.byState[t.State].Add(-1)
		if !t.State.Terminal() {
			tt.closeOwned(&t.Task)
		}
		undo = append(undo, store.Op{Bucket: tasksBucket, Key: seqKey(t.Seq)})
	}
	tt.mu.Unlock()
	tt.st.Write(undo, nil)
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
	var seqs []uint64
	tt.mu.RLock()
	for i, id := range ids {
		if t, r, ok := tt.find(id); t != nil {
			out[i], found[i] = t.Task, true
		} else if ok {
			at = append(at, i)
			seqs = append(seqs, r.seq)
		}
	}
	tt.mu.RUnlock()
	if len(seqs) == 0 {
		return out, found
	}
	stored, ok, err := tt.readStored(seqs)
	if err != nil {
		// Repeats are rate-limited by the daemon's log formatter.
		tt.log.WithError(err).Warn("cannot read finished tasks from the store; they read as unknown")
	}
	for j, i := range at {
		out[i], found[i] = stored[j], ok[j]
	}
	return out, found
}

// census calls fn with the owner and state of each id; a retired task's
// owner is read from the store only when the state alone cannot answer.
func (tt *taskTable) census(ids []messages.TaskID, fn func(id messages.TaskID, owner string, st messages.TaskState, known bool)) {
	var retired []messages.TaskID
	tt.mu.RLock()
	for _, id := range ids {
		if t, r, ok := tt.find(id); t != nil {
			fn(id, t.Owner, t.State, true)
		} else if ok {
			if owner, ok := tt.owner(r); ok {
				fn(id, owner, r.state(), true)
			} else {
				retired = append(retired, id)
			}
		} else {
			fn(id, "", messages.StateUnknown, false)
		}
	}
	tt.mu.RUnlock()
	if len(retired) == 0 {
		return
	}
	ts, found := tt.getMany(retired)
	for i, id := range retired {
		fn(id, ts[i].Owner, ts[i].State, found[i])
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
		t, _, _ := tt.find(d.ID)
		if t == nil || t.Endpoint != endpoint {
			ignored++
			continue
		}
		// A terminal code without a result is only a hint; the result
		// itself ends the task.
		if to.Terminal() {
			continue
		}
		switch messages.Apply(t.State, t.Attempts, to, d.Attempt) {
		case messages.Applied:
			tt.move(&t.Task, to)
			t.Attempts = d.Attempt
			tt.touch(&t.Task, now, nil)
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
	rec := newRecords(len(rs))
	ended := make([]*entry, 0, len(rs))
	tt.mu.Lock()
	for i := range rs {
		r := &rs[i]
		to := r.Code.State()
		var t *entry
		if es != nil {
			t = es[i]
		}
		var d doneRef
		var known bool
		if t == nil || t.gone {
			t, d, known = tt.find(r.ID)
		}
		if t == nil {
			// A result again for a task whose end is stored: the
			// interchange missed our ack.
			v := messages.Stale
			if known {
				v = messages.Apply(d.state(), 0, to, r.Attempt)
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
		t.Error = r.Error
		if len(r.Payload) > 0 {
			t.Result = jsonResult(t.Kind, r.Payload)
		}
		if r.Finished > 0 {
			t.CompletedAt = r.Finished
			if tt.endLatency != nil {
				tt.endLatency(time.Duration(now.UnixNano() - t.CreatedAt))
			}
		}
		tt.touch(&t.Task, now, rec)
		ended = append(ended, t)
	}
	tt.mu.Unlock()
	tt.persist(rec.ops, func(err error) {
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
	rec := newRecords(len(ids))
	out := make([]Task, len(ids))
	known := make([]bool, len(ids))
	changed := make([]bool, len(ids))
	var ended []*entry
	var stored []int
	tt.mu.Lock()
	for i, id := range ids {
		t, _, ok := tt.find(id)
		if t == nil {
			if ok {
				stored = append(stored, i)
			}
			continue
		}
		known[i] = true
		if !t.State.Terminal() {
			tt.move(&t.Task, messages.StateCancelled)
			t.Error = "cancelled by request"
			tt.touch(&t.Task, now, rec)
			changed[i] = true
			ended = append(ended, t)
		}
		out[i] = t.Task
	}
	tt.mu.Unlock()
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
	var err error
	if tt.st != nil && len(rec.ops) > 0 {
		if err = tt.st.WriteSync(rec.ops); err == nil {
			tt.retire(ended)
		}
	}
	return out, known, changed, err
}

// failEndpoint ends the tasks of a deleted endpoint that have not ended,
// as failed with reason, and returns how many once that is durable.
func (tt *taskTable) failEndpoint(endpoint, reason string) (int, error) {
	now := time.Now()
	rec := newRecords(0)
	var ended []*entry
	tt.mu.Lock()
	for _, t := range tt.live {
		if t == nil || t.Endpoint != endpoint || t.State.Terminal() {
			continue
		}
		tt.move(&t.Task, messages.StateFailed)
		t.Error = reason
		tt.touch(&t.Task, now, rec)
		ended = append(ended, t)
	}
	tt.mu.Unlock()
	if tt.st == nil || len(rec.ops) == 0 {
		return len(ended), nil
	}
	err := tt.st.WriteSync(rec.ops)
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
	rec := newRecords(len(es))
	tt.mu.Lock()
	for _, t := range es {
		if t.gone || t.State.Terminal() {
			continue
		}
		if messages.Transition(t.State, messages.StateWaitingForEndpoint, messages.EventLost) {
			tt.move(&t.Task, messages.StateWaitingForEndpoint)
			tt.touch(&t.Task, now, rec)
		}
		out = append(out, t)
	}
	tt.mu.Unlock()
	tt.persist(rec.ops, nil)
	return out
}

// wait blocks until the task is terminal or ctx ends.
func (tt *taskTable) wait(ctx context.Context, id messages.TaskID) (Task, bool) {
	tt.mu.Lock()
	t, _, _ := tt.find(id)
	if t == nil {
		tt.mu.Unlock()
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
	return tt.get(id)
}

// jsonResult keeps a result that is JSON as it is and wraps anything else,
// so one odd payload cannot break the API's answers. A python task's
// result is the worker's serialized bytes: {"payload": "<base64>"}.
func jsonResult(kind string, p []byte) []byte {
	if kind == taskspec.KindPython {
		b, _ := json.Marshal(map[string][]byte{"payload": p})
		return b
	}
	if json.Valid(p) {
		return p
	}
	b, _ := json.Marshal(map[string]string{"raw_base64": base64.StdEncoding.EncodeToString(p)})
	return b
}

// prune forgets finished tasks completed before cutoff, in memory and in
// the store, and returns how many.
func (tt *taskTable) prune(cutoff time.Time) int {
	var ops []store.Op
	n := 0
	tt.mu.Lock()
	for _, t := range tt.live {
		if t != nil && t.State.Terminal() && t.CompletedAt != 0 && t.CompletedAt < cutoff.UnixNano() {
			delete(tt.index, t.ID)
			tt.ends.Delete(t.Seq)
			tt.unlive(t)
			tt.byState[t.State].Add(-1)
			n++
			if tt.st != nil {
				ops = append(ops, store.Op{Bucket: tasksBucket, Key: seqKey(t.Seq)})
			}
		}
	}
	before := cutoff.Unix()
	for id, seq := range tt.index {
		r := doneRef{seq: seq, end: tt.getEnd(seq)}
		if c := r.completed(); !r.isLive() && c != 0 && c < before {
			delete(tt.index, id)
			tt.ends.Delete(seq)
			tt.byState[r.state()].Add(-1)
			n++
			ops = append(ops, store.Op{Bucket: tasksBucket, Key: seqKey(r.seq)})
		}
	}
	tt.mu.Unlock()
	tt.persist(ops, nil)
	return n
}
