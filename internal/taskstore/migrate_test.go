package taskstore

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/store/oldfiletest"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Tasks kept by an earlier version, in its append-only log (puts and
// deletes, a pruned task among them, and a torn last write) or in the
// B-tree file before it, and endpoints kept in endpoints.json, are copied
// into the Pebble store on the first start; the old files are renamed
// aside unchanged, and a second start copies nothing.
func TestOldFilesAreMigrated(t *testing.T) {
	for _, from := range []string{OldLogFile, OldBoltFile} {
		t.Run(from, func(t *testing.T) {
			dir := t.TempDir()
			done := &Task{ID: messages.TaskID(uuid.New()), Seq: 1, Endpoint: "ep", Owner: "alice", Kind: "noop", State: messages.StateSuccess,
				Result: []byte(`"done"`), CompletedAt: time.Now().UnixNano()}
			open := &Task{ID: messages.TaskID(uuid.New()), Seq: 2, Endpoint: "ep", Owner: "alice", Kind: "noop", State: messages.StateReceived}
			pruned := &Task{ID: messages.TaskID(uuid.New()), Seq: 3, Endpoint: "ep", Owner: "bob", Kind: "noop", State: messages.StateFailed}
			var ops []oldfiletest.Op
			for _, tk := range []*Task{done, open, pruned} {
				k, v, _ := AppendRecord(nil, tk)
				ops = append(ops, oldfiletest.Op{Record: oldfiletest.Record{Bucket: tasksBucket, Key: k, Value: v}})
			}
			ops = append(ops, oldfiletest.Op{Record: oldfiletest.Record{Bucket: "tokens", Key: []byte("hash-1"), Value: []byte(`{"token_id":"t1","user":"alice"}`)}},
				oldfiletest.Op{Record: oldfiletest.Record{Bucket: "tokens", Key: []byte("hash-2"), Value: []byte(`{"token_id":"t2","user":"bob"}`)}})
			path := filepath.Join(dir, from)
			if from == OldLogFile {
				// The log of the last version: pruned and revoked records
				// deleted, the open task's end written twice.
				ops = append(ops, oldfiletest.Op{Record: oldfiletest.Record{Bucket: tasksBucket, Key: SeqKey(3)}, Delete: true},
					oldfiletest.Op{Record: oldfiletest.Record{Bucket: "tokens", Key: []byte("hash-2")}, Delete: true})
				if err := oldfiletest.WriteLog(path, oldLogFormat, pebbleBuckets, ops...); err != nil {
					t.Fatal(err)
				}
				// A torn last write: never acknowledged, dropped.
				f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				f.Write([]byte{40, 1, 0, 8})
				f.Close()
			} else {
				var recs []oldfiletest.Record
				for _, op := range ops {
					if string(op.Key) == string(SeqKey(3)) || string(op.Key) == "hash-2" {
						continue
					}
					recs = append(recs, op.Record)
				}
				if err := oldfiletest.Write(path, oldBoltFormat, pebbleBuckets[:2], recs...); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := os.ReadFile(path)
			b, _ := json.Marshal(map[string]any{"endpoints": map[string]string{"ep": "key-of-ep"}})
			if err := os.WriteFile(filepath.Join(dir, oldEndpointsFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			for run := range 2 {
				s, existed, err := Open(Config{URL: "pebble", Dir: dir, Log: logx.Discard()})
				if err != nil || !existed {
					t.Fatalf("run %d: open: %v, existed %v", run, err, existed)
				}
				var seqs []uint64
				if err := s.Recover(func(t *Task) { seqs = append(seqs, t.Seq) }); err != nil || len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
					t.Fatalf("run %d: recovered seqs %v, %v; want 1 and 2", run, seqs, err)
				}
				out, found := make([]Task, 1), make([]bool, 1)
				if err := s.Get([]Key{KeyOf(done)}, out, found); err != nil || !found[0] || string(out[0].Result) != `"done"` || out[0].Owner != "alice" {
					t.Fatalf("run %d: finished task after migration: %+v %v", run, out[0], err)
				}
				toks, err := s.Tokens()
				if err != nil || len(toks) != 1 || toks[0].ID != "t1" {
					t.Fatalf("run %d: tokens after migration: %+v %v (a revoked one must not come back)", run, toks, err)
				}
				eps, err := s.Endpoints()
				if err != nil || len(eps) != 1 || eps[0].ID != "ep" || eps[0].PublicKey != "key-of-ep" {
					t.Fatalf("run %d: endpoints after migration: %+v %v", run, eps, err)
				}
				s.Close()
			}
			after, err := os.ReadFile(path + ".migrated")
			if err != nil || string(after) != string(before) {
				t.Fatalf("the old file was not kept aside unchanged: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, oldEndpointsFile+".migrated")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A record decodes to what was encoded.
func FuzzDecodeRecord(f *testing.F) {
	k, v, _ := AppendRecord(nil, &Task{ID: messages.TaskID(uuid.New()), Seq: 9, Endpoint: "ep", Owner: "o", Kind: "exec",
		Spec: []byte("{}"), State: messages.StateFailed, Attempts: 2, Error: "x", CreatedAt: 5})
	f.Add(k, v)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{1})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		tk, err := DecodeRecord(k, v)
		if err != nil {
			return
		}
		k2, v2, _ := AppendRecord(nil, tk)
		t2, err := DecodeRecord(k2, v2)
		if err != nil || t2.ID != tk.ID || t2.Seq != tk.Seq || t2.State != tk.State || t2.Owner != tk.Owner || string(t2.Spec) != string(tk.Spec) {
			t.Fatalf("re-encoded record reads %+v, %v; want %+v", t2, err, tk)
		}
	})
}
