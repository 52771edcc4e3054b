package taskstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/seqarr"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

func init() { Register("log", openLog) }

// The log's file, its format and buckets; the order of the buckets is
// part of the format (a record names its bucket by index).
const (
	LogFile     = "forwarder.log"
	logFormat   = "switchyard-forwarder-v2"
	tasksBucket = "tasks"
	// OldLogFile is the B-tree file of earlier versions, read once.
	OldLogFile   = "forwarder.db"
	oldLogFormat = "switchyard-forwarder-v1"
	// oldEndpointsFile held created endpoints before they moved into
	// the store; it is read once.
	oldEndpointsFile = "endpoints.json"
)

var logBuckets = []string{tasksBucket, "tokens", "endpoints"}

// logStore keeps tasks in the append-only log of internal/store; finished
// tasks are read back from it when asked for, so memory holds only an
// index: each task's seq by id, and by seq a DoneRef.
type logStore struct {
	l   *store.Log
	log *logrus.Entry

	mu sync.RWMutex
	// index holds every stored task's seq; ends holds by seq a DoneRef,
	// with pendingRef for a task whose end is not stored.
	index  map[messages.TaskID]uint64
	ends   seqarr.Array[DoneRef]
	owners *Owners
}

// pendingRef marks a stored task that has not ended: not the zero value,
// which seqarr reads as absent, and no final state.
const pendingRef = DoneRef(1 << 30)

func openLog(cfg Config) (Store, bool, error) {
	if cfg.Dir == "" {
		return nil, false, errors.New("the log store needs a state directory (--state-dir)")
	}
	path, old := filepath.Join(cfg.Dir, LogFile), filepath.Join(cfg.Dir, OldLogFile)
	l, existed, copied, err := store.OpenLogFrom(path, logFormat, logBuckets,
		store.LogOptions{Durability: cfg.Durability, Sequenced: []string{tasksBucket}}, old, oldLogFormat)
	if err != nil {
		return nil, false, err
	}
	if copied > 0 {
		cfg.Log.WithFields(logrus.Fields{"records": copied, "from": old, "kept_as": old + ".migrated"}).
			Info("state moved from the B-tree file to the log")
	}
	if l.Dropped > 0 {
		cfg.Log.WithField("bytes", l.Dropped).Warn("the state log ended in a torn write (a crash while writing); that last write was never acknowledged and is dropped")
	}
	if cfg.OnCommit != nil {
		l.OnCommit(cfg.OnCommit)
	}
	s := &logStore{l: l, log: cfg.Log, index: make(map[messages.TaskID]uint64), owners: NewOwners()}
	moved, err := migrateEndpointsFile(s, filepath.Join(cfg.Dir, oldEndpointsFile))
	if err != nil {
		l.Close()
		return nil, false, err
	}
	if moved > 0 {
		cfg.Log.WithField("endpoints", moved).Info("created endpoints moved from endpoints.json into the store")
	}
	return s, existed || copied > 0, nil
}

func (s *logStore) Describe() string { return "log " + s.l.Path() }

func (s *logStore) Close() error { return s.l.Close() }

func (s *logStore) Err() error { return s.l.Err() }

func (s *logStore) Compact() error { return s.l.Compact() }

func (s *logStore) ref(t *Task) DoneRef {
	if !t.State.Terminal() {
		return pendingRef
	}
	return NewDoneRef(t.State, t.CompletedAt, s.owners.Index(t.Owner))
}

func (s *logStore) Recover(fn func(t *Task)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.l.ForEach(tasksBucket, func(k, v []byte) error {
		t, err := DecodeRecord(k, v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", k, err)
		}
		s.index[t.ID] = t.Seq
		s.ends.Put(t.Seq, s.ref(t))
		fn(t)
		return nil
	})
}

// records encodes ts into ops that share a few buffers.
func records(ts []*Task) []store.Op {
	ops := make([]store.Op, 0, len(ts))
	var arena []byte
	for i, t := range ts {
		if need := recordBound(t); cap(arena)-len(arena) < need {
			arena = make([]byte, 0, max(need, min(arenaChunk, need*(len(ts)-i))))
		}
		var k, v []byte
		k, v, arena = AppendRecord(arena, t)
		ops = append(ops, store.Op{Bucket: tasksBucket, Key: k, Value: v})
	}
	return ops
}

func (s *logStore) Add(ts []*Task) error {
	ops := records(ts)
	s.mu.Lock()
	for _, t := range ts {
		s.index[t.ID] = t.Seq
		s.ends.Put(t.Seq, s.ref(t))
	}
	s.mu.Unlock()
	err := s.l.WriteSync(ops)
	if err == nil {
		return nil
	}
	undo := make([]store.Op, len(ts))
	s.mu.Lock()
	for i, t := range ts {
		delete(s.index, t.ID)
		s.ends.Delete(t.Seq)
		undo[i] = store.Op{Bucket: tasksBucket, Key: SeqKey(t.Seq)}
	}
	s.mu.Unlock()
	s.l.Write(undo, nil)
	return err
}

// ended notes the ends of ts once they are durable. Ends are copied out
// first: the caller may change ts after Complete returns.
type endNote struct {
	seq uint64
	ref DoneRef
}

func (s *logStore) notes(ts []*Task) []endNote {
	out := make([]endNote, 0, len(ts))
	s.mu.Lock()
	for _, t := range ts {
		out = append(out, endNote{t.Seq, s.ref(t)})
	}
	s.mu.Unlock()
	return out
}

func (s *logStore) noteEnds(ns []endNote) {
	s.mu.Lock()
	for _, n := range ns {
		// A prune may have removed it meanwhile.
		if _, ok := s.ends.Get(n.seq); ok {
			s.ends.Put(n.seq, n.ref)
		}
	}
	s.mu.Unlock()
}

func (s *logStore) Complete(ts []*Task, done func(error)) {
	if len(ts) == 0 && done == nil {
		return
	}
	ops, ns := records(ts), s.notes(ts)
	// With no ops of its own, done still waits for a commit: what it
	// confirms (a re-sent result, say) may rest on a write still queued.
	s.l.Write(ops, func(err error) {
		if err == nil {
			s.noteEnds(ns)
		}
		if done != nil {
			done(err)
		}
	})
}

func (s *logStore) CompleteNow(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	ops, ns := records(ts), s.notes(ts)
	if err := s.l.WriteSync(ops); err != nil {
		return err
	}
	s.noteEnds(ns)
	return nil
}

func (s *logStore) Requeue(ts []*Task) {
	if len(ts) > 0 {
		s.l.Write(records(ts), nil)
	}
}

func (s *logStore) Get(ids []messages.TaskID, out []Task, found []bool) error {
	keys := make([][]byte, 0, len(ids))
	at := make([]int, 0, len(ids))
	s.mu.RLock()
	for i, id := range ids {
		found[i] = false
		if seq, ok := s.index[id]; ok {
			keys = append(keys, SeqKey(seq))
			at = append(at, i)
		}
	}
	s.mu.RUnlock()
	return s.l.Get(tasksBucket, keys, func(j int, v []byte) error {
		if v == nil {
			return nil // pruned meanwhile
		}
		t, err := DecodeRecord(keys[j], v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", keys[j], err)
		}
		out[at[j]], found[at[j]] = *t, true
		return nil
	})
}

func (s *logStore) Census(ids []messages.TaskID, fn func(id messages.TaskID, owner string, st messages.TaskState, known bool)) error {
	var read []messages.TaskID
	s.mu.RLock()
	for _, id := range ids {
		seq, ok := s.index[id]
		if !ok {
			fn(id, "", messages.StateUnknown, false)
			continue
		}
		r, _ := s.ends.Get(seq)
		if owner, ok := s.owners.Name(r.Owner()); ok && r.Ended() {
			fn(id, owner, r.State(), true)
			continue
		}
		read = append(read, id)
	}
	s.mu.RUnlock()
	if len(read) == 0 {
		return nil
	}
	out, found := make([]Task, len(read)), make([]bool, len(read))
	err := s.Get(read, out, found)
	for i, id := range read {
		fn(id, out[i].Owner, out[i].State, found[i])
	}
	return err
}

func (s *logStore) List(f Filter, after uint64, fn func(t *Task) bool) error {
	return s.l.Scan(tasksBucket, SeqKey(after+1), func(k, v []byte) (bool, error) {
		t, err := DecodeRecord(k, v)
		if err != nil {
			return false, fmt.Errorf("task record %x: %w", k, err)
		}
		if !f.MatchStored(t) {
			return true, nil
		}
		return fn(t), nil
	})
}

func (s *logStore) Prune(cutoff time.Time) (map[messages.TaskState]int, error) {
	var ops []store.Op
	gone := map[messages.TaskState]int{}
	before := cutoff.Unix()
	s.mu.Lock()
	for id, seq := range s.index {
		r, _ := s.ends.Get(seq)
		if c := r.Completed(); r.Ended() && c != 0 && c < before {
			delete(s.index, id)
			s.ends.Delete(seq)
			gone[r.State()]++
			ops = append(ops, store.Op{Bucket: tasksBucket, Key: SeqKey(seq)})
		}
	}
	s.mu.Unlock()
	if len(ops) == 0 {
		return gone, nil
	}
	s.l.Write(ops, nil)
	return gone, nil
}

func (s *logStore) Tokens() ([]Token, error) {
	var out []Token
	err := s.l.ForEach("tokens", func(k, v []byte) error {
		var t Token
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("token record: %w", err)
		}
		t.Hash = string(k)
		out = append(out, t)
		return nil
	})
	return out, err
}

func (s *logStore) PutToken(t Token) error {
	b, _ := json.Marshal(t)
	return s.l.WriteSync([]store.Op{{Bucket: "tokens", Key: []byte(t.Hash), Value: b}})
}

func (s *logStore) DeleteTokens(hashes []string) error {
	ops := make([]store.Op, len(hashes))
	for i, h := range hashes {
		ops[i] = store.Op{Bucket: "tokens", Key: []byte(h)}
	}
	return s.l.WriteSync(ops)
}

func (s *logStore) Endpoints() ([]Endpoint, error) {
	var out []Endpoint
	err := s.l.ForEach("endpoints", func(k, v []byte) error {
		var e Endpoint
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("endpoint record %q: %w", k, err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func (s *logStore) PutEndpoint(e Endpoint) error {
	b, _ := json.Marshal(e)
	return s.l.WriteSync([]store.Op{{Bucket: "endpoints", Key: []byte(e.ID), Value: b}})
}

func (s *logStore) DeleteEndpoint(id string) error {
	return s.l.WriteSync([]store.Op{{Bucket: "endpoints", Key: []byte(id)}})
}
