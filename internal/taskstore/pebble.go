package taskstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/seqarr"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

func init() { Register("pebble", openPebble) }

// PebbleDir is the Pebble store's directory in the state dir.
const PebbleDir = "forwarder.pebble"

// The buckets of the Pebble store; their order is part of the format.
var pebbleBuckets = []string{"tasks", "tokens", "endpoints"}

// pebbleStore keeps tasks in Pebble (internal/store.DB: group commit,
// compaction in the background). Memory holds only an index: each task's
// seq by id, and by seq a DoneRef, so Census and Prune read no records.
type pebbleStore struct {
	db  *store.DB
	log *logrus.Entry

	mu     sync.RWMutex
	index  map[messages.TaskID]uint64
	ends   seqarr.Array[DoneRef]
	owners *Owners
	// pruned is the span of seqs deleted since the last Compact.
	prunedLo, prunedHi uint64
}

// pebblePending marks a stored task that has not ended: not the zero
// value, which seqarr reads as absent, and no final state.
const pebblePending = DoneRef(1 << 30)

func openPebble(cfg Config) (Store, bool, error) {
	if cfg.Dir == "" {
		return nil, false, errors.New("the pebble store needs a state directory (--state-dir)")
	}
	dir := filepath.Join(cfg.Dir, PebbleDir)
	// "pebble:/path" puts the store elsewhere.
	if _, rest, _ := strings.Cut(cfg.URL, ":"); strings.TrimPrefix(rest, "//") != "" {
		dir = strings.TrimPrefix(rest, "//")
	}
	db, existed, from, copied, err := store.OpenDBFrom(dir, pebbleBuckets, store.DBOptions{Durability: cfg.Durability, Log: cfg.Log},
		store.Old{Path: filepath.Join(cfg.Dir, "forwarder.log"), Format: "switchyard-forwarder-v2"},
		store.Old{Path: filepath.Join(cfg.Dir, "forwarder.db"), Format: "switchyard-forwarder-v1", Bolt: true})
	if err != nil {
		return nil, false, err
	}
	if from != nil {
		cfg.Log.WithFields(logrus.Fields{"records": copied, "from": from.Path, "kept_as": from.Path + ".migrated", "into": dir}).
			Info("state copied into the pebble store")
	}
	if cfg.OnCommit != nil {
		db.OnCommit(cfg.OnCommit)
	}
	s := &pebbleStore{db: db, log: cfg.Log, index: make(map[messages.TaskID]uint64), owners: NewOwners()}
	moved, err := migrateEndpointsFile(s, filepath.Join(cfg.Dir, "endpoints.json"))
	if err != nil {
		db.Close()
		return nil, false, err
	}
	if moved > 0 {
		cfg.Log.WithField("endpoints", moved).Info("created endpoints moved from endpoints.json into the store")
	}
	return s, existed, nil
}

func (s *pebbleStore) Describe() string { return "pebble " + s.db.Path() }
func (s *pebbleStore) Close() error     { return s.db.Close() }
func (s *pebbleStore) Err() error       { return s.db.Err() }

// Compact makes the tasks pruned since the last call leave the disk.
func (s *pebbleStore) Compact() error {
	s.mu.Lock()
	lo, hi := s.prunedLo, s.prunedHi
	s.prunedLo, s.prunedHi = 0, 0
	s.mu.Unlock()
	if hi == 0 {
		return nil
	}
	return s.db.Forget("tasks", SeqKey(lo), SeqKey(hi+1))
}

func (s *pebbleStore) ref(t *Task) DoneRef {
	if !t.State.Terminal() {
		return pebblePending
	}
	return NewDoneRef(t.State, t.CompletedAt, s.owners.Index(t.Owner))
}

func (s *pebbleStore) Recover(fn func(t *Task)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.ForEach("tasks", func(k, v []byte) error {
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

// ops encodes ts into store ops sharing one buffer (the DB copies them).
func pebbleOps(ts []*Task) []store.Op {
	ops := make([]store.Op, 0, len(ts))
	var arena []byte
	for _, t := range ts {
		var k, v []byte
		k, v, arena = AppendRecord(arena, t)
		ops = append(ops, store.Op{Bucket: "tasks", Key: k, Value: v})
	}
	return ops
}

func (s *pebbleStore) Add(ts []*Task) error {
	if err := s.db.WriteSync(pebbleOps(ts)); err != nil {
		return err
	}
	s.mu.Lock()
	for _, t := range ts {
		s.index[t.ID] = t.Seq
		s.ends.Put(t.Seq, s.ref(t))
	}
	s.mu.Unlock()
	return nil
}

type pebbleEnd struct {
	seq uint64
	ref DoneRef
}

// notes copies the ends out of ts: the caller may change ts once
// Complete returns.
func (s *pebbleStore) notes(ts []*Task) []pebbleEnd {
	out := make([]pebbleEnd, 0, len(ts))
	s.mu.Lock()
	for _, t := range ts {
		out = append(out, pebbleEnd{t.Seq, s.ref(t)})
	}
	s.mu.Unlock()
	return out
}

func (s *pebbleStore) noteEnds(ns []pebbleEnd) {
	s.mu.Lock()
	for _, n := range ns {
		// A prune may have removed it meanwhile.
		if _, ok := s.ends.Get(n.seq); ok {
			s.ends.Put(n.seq, n.ref)
		}
	}
	s.mu.Unlock()
}

func (s *pebbleStore) Complete(ts []*Task, done func(error)) {
	if len(ts) == 0 && done == nil {
		return
	}
	ops, ns := pebbleOps(ts), s.notes(ts)
	// With no ops of its own, done still waits for a commit: what it
	// confirms may rest on a write still queued.
	s.db.Write(ops, func(err error) {
		if err == nil {
			s.noteEnds(ns)
		}
		if done != nil {
			done(err)
		}
	})
}

func (s *pebbleStore) CompleteNow(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	ops, ns := pebbleOps(ts), s.notes(ts)
	if err := s.db.WriteSync(ops); err != nil {
		return err
	}
	s.noteEnds(ns)
	return nil
}

func (s *pebbleStore) Requeue(ts []*Task) {
	if len(ts) > 0 {
		s.db.Write(pebbleOps(ts), nil)
	}
}

func (s *pebbleStore) Get(ids []messages.TaskID, out []Task, found []bool) error {
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
	return s.db.Get("tasks", keys, func(j int, v []byte) error {
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

func (s *pebbleStore) Census(ids []messages.TaskID, fn func(id messages.TaskID, owner string, st messages.TaskState, known bool)) error {
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

func (s *pebbleStore) List(f Filter, after uint64, fn func(t *Task) bool) error {
	return s.db.Scan("tasks", SeqKey(after+1), func(k, v []byte) (bool, error) {
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

func (s *pebbleStore) Prune(cutoff time.Time) (map[messages.TaskState]int, error) {
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
			ops = append(ops, store.Op{Bucket: "tasks", Key: SeqKey(seq)})
			if s.prunedHi == 0 || seq < s.prunedLo {
				s.prunedLo = seq
			}
			s.prunedHi = max(s.prunedHi, seq)
		}
	}
	s.mu.Unlock()
	if len(ops) == 0 {
		return gone, nil
	}
	return gone, s.db.WriteSync(ops)
}

func (s *pebbleStore) Tokens() ([]Token, error) {
	var out []Token
	err := s.db.ForEach("tokens", func(k, v []byte) error {
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

func (s *pebbleStore) PutToken(t Token) error {
	b, _ := json.Marshal(t)
	return s.db.WriteSync([]store.Op{{Bucket: "tokens", Key: []byte(t.Hash), Value: b}})
}

func (s *pebbleStore) DeleteTokens(hashes []string) error {
	ops := make([]store.Op, len(hashes))
	for i, h := range hashes {
		ops[i] = store.Op{Bucket: "tokens", Key: []byte(h)}
	}
	return s.db.WriteSync(ops)
}

func (s *pebbleStore) Endpoints() ([]Endpoint, error) {
	var out []Endpoint
	err := s.db.ForEach("endpoints", func(k, v []byte) error {
		var e Endpoint
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("endpoint record %q: %w", k, err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func (s *pebbleStore) PutEndpoint(e Endpoint) error {
	b, _ := json.Marshal(e)
	return s.db.WriteSync([]store.Op{{Bucket: "endpoints", Key: []byte(e.ID), Value: b}})
}

func (s *pebbleStore) DeleteEndpoint(id string) error {
	return s.db.WriteSync([]store.Op{{Bucket: "endpoints", Key: []byte(id)}})
}
