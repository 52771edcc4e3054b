package taskstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sirupsen/logrus"

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

// logStore keeps tasks in the append-only log of internal/store, keyed
// by seq (the log indexes seq keys in arrays, 8 bytes a task); finished
// tasks are read back from it when asked for.
type logStore struct {
	l   *store.Log
	log *logrus.Entry
}

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
	s := &logStore{l: l, log: cfg.Log}
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

func (s *logStore) Recover(fn func(t *Task)) error {
	return s.l.ForEach(tasksBucket, func(k, v []byte) error {
		t, err := DecodeRecord(k, v)
		if err != nil {
			return fmt.Errorf("task record %x: %w", k, err)
		}
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
	err := s.l.WriteSync(records(ts))
	if err == nil {
		return nil
	}
	// Some may be in the log's buffer still: they must not come back.
	undo := make([]store.Op, len(ts))
	for i, t := range ts {
		undo[i] = store.Op{Bucket: tasksBucket, Key: SeqKey(t.Seq)}
	}
	s.l.Write(undo, nil)
	return err
}

func (s *logStore) Complete(ts []*Task, done func(error)) {
	if len(ts) == 0 && done == nil {
		return
	}
	// With no ops of its own, done still waits for a commit: what it
	// confirms (a re-sent result, say) may rest on a write still queued.
	s.l.Write(records(ts), done)
}

func (s *logStore) CompleteNow(ts []*Task) error {
	if len(ts) == 0 {
		return nil
	}
	return s.l.WriteSync(records(ts))
}

func (s *logStore) Requeue(ts []*Task) {
	if len(ts) > 0 {
		s.l.Write(records(ts), nil)
	}
}

func (s *logStore) Get(keys []Key, out []Task, found []bool) error {
	ks := make([][]byte, 0, len(keys))
	at := make([]int, 0, len(keys))
	for i, k := range keys {
		found[i] = false
		if k.Seq != 0 {
			ks = append(ks, SeqKey(k.Seq))
			at = append(at, i)
		}
	}
	return s.l.Get(tasksBucket, ks, func(j int, v []byte) error {
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

func (s *logStore) Census(keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	return census(s, keys, fn)
}

// census answers Census from whole records.
func census(s Store, keys []Key, fn func(k Key, owner string, st messages.TaskState, known bool)) error {
	out, found := make([]Task, len(keys)), make([]bool, len(keys))
	err := s.Get(keys, out, found)
	for i, k := range keys {
		fn(k, out[i].Owner, out[i].State, found[i])
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

func (s *logStore) Prune(keys []Key) error {
	if len(keys) == 0 {
		return nil
	}
	ops := make([]store.Op, len(keys))
	for i, k := range keys {
		ops[i] = store.Op{Bucket: tasksBucket, Key: SeqKey(k.Seq)}
	}
	s.l.Write(ops, nil)
	return nil
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
