package taskstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/messages"
)

func init() { Register("pebble", openPebble) }

// PebbleDir is the Pebble store's directory in the state dir.
const PebbleDir = "forwarder.pebble"

// Files of earlier versions, each read once into a new store and renamed
// aside: the append-only log, the B-tree file before it, and the created
// endpoints before they moved into the store.
const (
	tasksBucket      = "tasks"
	OldLogFile       = "forwarder.log"
	oldLogFormat     = "switchyard-forwarder-v2"
	OldBoltFile      = "forwarder.db"
	oldBoltFormat    = "switchyard-forwarder-v1"
	oldEndpointsFile = "endpoints.json"
)

// The buckets of the Pebble store; their order is part of the format.
var pebbleBuckets = []string{tasksBucket, "tokens", "endpoints"}

// PebbleBuckets names the buckets of the forwarder's store in order, for
// `switchyard store check|repair`.
func PebbleBuckets() []string { return slices.Clone(pebbleBuckets) }

// pebbleStore keeps tasks in Pebble (internal/store.DB: group commit,
// compaction in the background), keyed by seq. It holds no index: the
// task table above knows each task's seq.
type pebbleStore struct {
	db  *store.DB
	log *logrus.Entry

	mu sync.Mutex
	// pruned is the span of seqs deleted since the last Compact.
	prunedLo, prunedHi uint64
}

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
		store.Old{Path: filepath.Join(cfg.Dir, OldLogFile), Format: oldLogFormat},
		store.Old{Path: filepath.Join(cfg.Dir, OldBoltFile), Format: oldBoltFormat, Bolt: true})
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
	s := &pebbleStore{db: db, log: cfg.Log}
	moved, err := migrateEndpointsFile(s, filepath.Join(cfg.Dir, oldEndpointsFile))
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
	// The deletes first: Prune only queued them.
	if err := s.db.WriteSync(nil); err != nil {
		return err
	}
	return s.db.Forget(tasksBucket, SeqKey(lo), SeqKey(hi+1))
}

// records encodes ts into ops that share a few buffers (the DB copies
// them).
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

func (s *pebbleStore) Recover(fn func(t *Task)) error {
	return s.db.ForEach(tasksBucket, func(k, v []byte) error {
		t, err := DecodeRecord(k, v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", k, err)
		}
		fn(t)
		return nil
	})
}

func (s *pebbleStore) Add(ts []*Task) error { return s.db.WriteSync(records(ts)) }

func (s *pebbleStore) Complete(ts []*Task, done func(error)) {
	if len(ts) == 0 && done == nil {
		return
	}
	// With no ops of its own, done still waits for a commit: what it
	// confirms (a re-sent result, say) may rest on a write still queued.
	s.db.Write(records(ts), done)
}

func (s *pebbleStore) CompleteNow(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	return s.db.WriteSync(records(ts))
}

func (s *pebbleStore) Requeue(ts []*Task) {
	if len(ts) > 0 {
		s.db.Write(records(ts), nil)
	}
}

func (s *pebbleStore) Get(keys []Key, out []Task, found []bool) error {
	ks := make([][]byte, 0, len(keys))
	at := make([]int, 0, len(keys))
	for i, k := range keys {
		found[i] = false
		if k.Seq != 0 {
			ks = append(ks, SeqKey(k.Seq))
			at = append(at, i)
		}
	}
	return s.db.Get(tasksBucket, ks, func(j int, v []byte) error {
		if v == nil {
			return nil // pruned, or never stored
		}
		t, err := DecodeRecord(ks[j], v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", ks[j], err)
		}
		if id := keys[at[j]].ID; id != (messages.TaskID{}) && t.ID != id {
			return nil // another task's seq
		}
		out[at[j]], found[at[j]] = *t, true
		return nil
	})
}

func (s *pebbleStore) Census(keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	return census(s, keys, fn)
}

func (s *pebbleStore) List(f Filter, after uint64, fn func(t *Task) bool) error {
	return s.db.Scan(tasksBucket, SeqKey(after+1), func(k, v []byte) (bool, error) {
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

func (s *pebbleStore) Prune(keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	ops := make([]store.Op, len(keys))
	s.mu.Lock()
	for i, k := range keys {
		ops[i] = store.Op{Bucket: tasksBucket, Key: SeqKey(k.Seq)}
		if s.prunedHi == 0 || k.Seq < s.prunedLo {
			s.prunedLo = k.Seq
		}
		s.prunedHi = max(s.prunedHi, k.Seq)
	}
	s.mu.Unlock()
	// Deletes pass while the disk is full (they free space).
	s.db.Write(ops, nil)
	return nil
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
