package interchange

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The interchange stores the tasks it acknowledged upward and the results
// the forwarder has not acknowledged yet, so a restart loses neither.
// It also keeps the ids of registered managers, so that after a restart
// it knows whom to wait for before dispatching again.
const (
	tasksBucket    = "tasks"
	resultsBucket  = "results"
	managersBucket = "managers"
)

func managerOp(id string) store.Op {
	return store.Op{Bucket: managersBucket, Key: []byte(id), Value: []byte{1}}
}

func managerDeleteOp(id string) store.Op {
	return store.Op{Bucket: managersBucket, Key: []byte(id)}
}

// Keys are arrival sequence numbers, not task ids: they rise as tasks
// arrive, so the log indexes them in an array (tasks and results are
// sequenced buckets; 8 bytes of memory a key) instead of a map. The task
// id is in the value.

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// keyAndValue makes a record's key and the room for its value in one
// allocation.
func keyAndValue(seq uint64, size int) (key []byte, w binrec.Writer) {
	b := make([]byte, 8, 8+size)
	binary.BigEndian.PutUint64(b, seq)
	return b[:8:8], binrec.Writer{B: b[8:8]}
}

// taskRecordVersion starts a task record. Version 1 had no version: it
// started with its id's length, 16, so 16 is never a version, and a
// record whose first byte is 16 is read as version 1, owned by nobody.
// Version 2 adds the owner at the end.
const (
	taskRecordV1      = 16
	taskRecordVersion = 2
)

func taskOp(t *itask) store.Op {
	name := ownerName(t.owner)
	k, w := keyAndValue(t.seq, 33+len(t.payload)+len(name))
	w.Uvarint(taskRecordVersion)
	w.Bytes(t.id[:])
	w.Uvarint(uint64(t.attempt))
	w.Bytes(t.payload)
	w.String(name)
	return store.Op{Bucket: tasksBucket, Key: k, Value: w.B}
}

// readTask reads a task record of any version.
func readTask(seq uint64, v []byte, o *owners) (*itask, error) {
	r := binrec.Reader{B: v}
	ver := uint64(1)
	if len(v) == 0 || v[0] != taskRecordV1 {
		ver = r.Uvarint()
		if r.Err == nil && (ver < 2 || ver > taskRecordVersion) {
			return nil, fmt.Errorf("task record version %d, this build reads 1 to %d", ver, taskRecordVersion)
		}
	}
	id := r.Bytes()
	t := &itask{seq: seq, attempt: max(uint32(r.Uvarint()), 1), payload: r.Bytes()}
	if ver >= 2 {
		t.owner = o.intern(r.String())
	}
	if r.Err == nil && len(id) != 16 {
		r.Err = fmt.Errorf("task id of %d bytes", len(id))
	}
	if r.Err != nil {
		return nil, r.Err
	}
	copy(t.id[:], id)
	return t, nil
}

func taskDeleteOp(t *itask) store.Op {
	return store.Op{Bucket: tasksBucket, Key: seqKey(t.seq), SetOnce: !t.rewritten}
}

func resultOp(seq uint64, r *messages.Result) store.Op {
	k, w := keyAndValue(seq, 48+len(r.Error)+len(r.Payload)+len(r.Text))
	w.Bytes(r.ID[:])
	w.Uvarint(uint64(r.Attempt))
	w.Uvarint(uint64(r.Code))
	w.String(r.Error)
	w.Varint(r.Started)
	w.Varint(r.Finished)
	w.Bytes(r.Payload)
	// Last and optional, so records written before it read as they were.
	if r.Text != "" {
		w.String(r.Text)
	}
	return store.Op{Bucket: resultsBucket, Key: k, Value: w.B}
}

// resultDeleteOp deletes a result record, which is put once: a held
// result is never rewritten, and seqs are not reused while it is stored.
func resultDeleteOp(seq uint64) store.Op {
	return store.Op{Bucket: resultsBucket, Key: seqKey(seq), SetOnce: true}
}

// heldResult is a stored result waiting for the forwarder's ack.
type heldResult struct {
	messages.Result
	seq uint64
}

// recovered is what a restarted interchange found in its store.
type recovered struct {
	managers []string
	tasks    []*itask
	results  []*heldResult
	maxSeq   uint64
}

// The store's directory; the order of the buckets is part of its format.
// The log and the B-tree file of earlier versions are read once, copied
// into a new store, and renamed aside.
const (
	stateDir       = "interchange.pebble"
	oldLogFile     = "interchange.log"
	oldLogFormat   = "switchyard-interchange-v2"
	oldStateFile   = "interchange.db"
	oldStateFormat = "switchyard-interchange-v1"
)

var stateBuckets = []string{tasksBucket, resultsBucket, managersBucket}

// StoreDir is the store's directory in the state dir.
const StoreDir = stateDir

// StoreBuckets names the store's buckets in order, for `switchyard store
// check|repair`.
func StoreBuckets() []string { return slices.Clone(stateBuckets) }

// openStore opens the Pebble store and closes it with the interchange.
func (ix *Interchange) openStore() (*store.DB, bool, error) {
	dir := ix.dir.File(stateDir)
	st, existed, from, copied, err := store.OpenDBFrom(dir, stateBuckets, store.DBOptions{Durability: ix.opts.durability(), Log: ix.log},
		store.Old{Path: ix.dir.File(oldLogFile), Format: oldLogFormat},
		store.Old{Path: ix.dir.File(oldStateFile), Format: oldStateFormat, Bolt: true})
	if err != nil {
		return nil, false, err
	}
	ix.res.Add(func() {
		if err := st.Close(); err != nil {
			ix.log.WithError(err).Error("closing the store")
		}
	})
	if from != nil {
		ix.log.WithFields(logrus.Fields{"records": copied, "from": from.Path, "kept_as": from.Path + ".migrated", "into": dir}).
			Info("state copied into the pebble store")
	}
	return st, existed, nil
}

func loadState(st *store.DB) (*recovered, error) {
	rec := &recovered{}
	if err := st.ForEach(managersBucket, func(k, _ []byte) error {
		rec.managers = append(rec.managers, string(k))
		return nil
	}); err != nil {
		return nil, err
	}
	var names owners
	err := st.ForEach(tasksBucket, func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("task key of %d bytes", len(k))
		}
		t, err := readTask(binary.BigEndian.Uint64(k), v, &names)
		if err != nil {
			return fmt.Errorf("task record %x: %w", k, err)
		}
		rec.tasks = append(rec.tasks, t)
		rec.maxSeq = max(rec.maxSeq, t.seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = st.ForEach(resultsBucket, func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("result key of %d bytes", len(k))
		}
		r := binrec.Reader{B: v}
		id := r.Bytes()
		h := &heldResult{seq: binary.BigEndian.Uint64(k)}
		h.Attempt, h.Code, h.Error = uint32(r.Uvarint()), messages.TaskStatusCode(r.Uvarint()), r.String()
		h.Started, h.Finished, h.Payload = r.Varint(), r.Varint(), r.Bytes()
		if r.Err == nil && len(r.B) > 0 {
			h.Text = r.String()
		}
		if r.Err == nil && len(id) != 16 {
			r.Err = fmt.Errorf("task id of %d bytes", len(id))
		}
		if r.Err != nil {
			return fmt.Errorf("result record %x: %w", k, r.Err)
		}
		copy(h.ID[:], id)
		if !h.Code.Terminal() {
			return fmt.Errorf("result record %x with code %d", k, h.Code)
		}
		rec.results = append(rec.results, h)
		rec.maxSeq = max(rec.maxSeq, h.seq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// persist writes ops and runs then on the loop once they are durable.
func (l *loop) persist(ops []store.Op, then func(*loop)) {
	st := l.ix.store
	// With nothing to write, then still waits for writes that failed and
	// are retried: what it confirms may rest on them.
	if st == nil || len(ops) == 0 && !st.Retrying() {
		if then != nil {
			then(l)
		}
		return
	}
	st.Write(ops, func(err error) {
		if err != nil {
			l.ix.log.WithError(err).Warn("state not stored; acknowledgement held back")
			return
		}
		if then != nil {
			l.ix.mbox.Post(event{kind: evDurable, then: then})
		}
	})
}

// storeRefuses is why the store takes no new work now (the disk is
// nearly full), or nil; it clears by itself once space returns.
func (ix *Interchange) storeRefuses() error {
	if ix.store == nil {
		return nil
	}
	return ix.store.Err()
}

// pushState is the serving state the forwarder is told: the effective
// one, paused for pushes too while the store refuses writes, so tasks
// wait upstream instead of being sent and given back.
func (ix *Interchange) pushState(now time.Time) messages.ServingState {
	eff := ix.serving.Effective(now)
	if eff == messages.NonePaused && ix.storeRefuses() != nil {
		return messages.PushPaused
	}
	return eff
}

// recover reloads what a previous run stored.
func (l *loop) recover() {
	rec := l.ix.recovery
	l.ix.recovery = nil
	if rec == nil {
		return
	}
	ops := l.ops
	now := time.Now()
	for _, h := range rec.results {
		t := &itask{id: h.ID, seq: h.seq, attempt: h.Attempt}
		l.tasks[t.id] = t
		l.holdResult(t, h.Result)
	}
	l.ops = ops // the results are stored already
	for _, t := range rec.tasks {
		if _, done := l.tasks[t.id]; done {
			// Its result is stored too: the record a crash kept.
			continue
		}
		t.recovered, t.rewritten = true, true
		l.tasks[t.id] = t
		l.placeTask(t, now)
	}
	l.seq = rec.maxSeq
	l.log.WithFields(logrus.Fields{"unfinished": len(rec.tasks), "undelivered": len(rec.results)}).
		Infof("recovering: %d tasks unfinished, %d results undelivered", len(rec.tasks), len(rec.results))
	if len(rec.tasks) > 0 && len(rec.managers) > 0 {
		// Managers that held tasks before the restart may still run them:
		// wait until they have re-registered and reported what they hold,
		// not longer than two intervals (a manager that stays away is lost).
		l.hold = &recoveryHold{since: now, until: now.Add(2 * l.ix.opts.HeartbeatInterval), waiting: map[string]bool{}}
		for _, id := range rec.managers {
			l.hold.waiting[id] = true
		}
		l.log.WithFields(logrus.Fields{"managers": rec.managers, "queued": len(rec.tasks),
			"at_most": (2 * l.ix.opts.HeartbeatInterval).String()}).
			Info("recovering: dispatch waits until these managers re-register and report the tasks they hold")
	}
	l.publishTotals()
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

// recoveryHold keeps a restarted interchange from dispatching tasks that a
// manager may still be running, until every manager it knew has reported.
type recoveryHold struct {
	since, until time.Time
	waiting      map[string]bool // manager ids not yet re-synced
}

// resynced notes that manager id reported after a restart, and ends the
// hold once every known manager has.
func (l *loop) resynced(id string, now time.Time) {
	if l.hold == nil || !l.hold.waiting[id] {
		return
	}
	delete(l.hold.waiting, id)
	if len(l.hold.waiting) == 0 {
		l.log.WithField("after", now.Sub(l.hold.since).Round(time.Millisecond).String()).
			Info("recovered: every manager re-synced; dispatching again")
		l.hold = nil
	}
}

// holdExpired ends the hold when its time is up, naming who did not come.
func (l *loop) holdExpired(now time.Time) {
	if l.hold == nil || now.Before(l.hold.until) {
		return
	}
	missing := make([]string, 0, len(l.hold.waiting))
	for id := range l.hold.waiting {
		missing = append(missing, id)
	}
	l.log.WithFields(logrus.Fields{"missing": missing, "after": now.Sub(l.hold.since).Round(time.Millisecond).String()}).
		Warn("recovery: managers did not come back; dispatching their tasks elsewhere")
	l.hold = nil
}
