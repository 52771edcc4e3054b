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

// Tasks kept by an earlier version in the B-tree file, and endpoints kept
// in endpoints.json, are moved into the log on the first start.
func TestOldFilesAreMigrated(t *testing.T) {
	dir := t.TempDir()
	done := &Task{ID: messages.TaskID(uuid.New()), Seq: 1, Endpoint: "ep", Owner: "alice", Kind: "noop", State: messages.StateSuccess,
		Result: []byte(`"done"`), CompletedAt: time.Now().UnixNano()}
	open := &Task{ID: messages.TaskID(uuid.New()), Seq: 2, Endpoint: "ep", Owner: "alice", Kind: "noop", State: messages.StateReceived}
	var recs []oldfiletest.Record
	for _, tk := range []*Task{done, open} {
		k, v, _ := AppendRecord(nil, tk)
		recs = append(recs, oldfiletest.Record{Bucket: tasksBucket, Key: k, Value: v})
	}
	if err := oldfiletest.Write(filepath.Join(dir, OldLogFile), oldLogFormat, logBuckets[:2], recs...); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"endpoints": map[string]string{"ep": "key-of-ep"}})
	if err := os.WriteFile(filepath.Join(dir, oldEndpointsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, existed, err := Open(Config{URL: "log", Dir: dir, Log: logx.Discard()})
	if err != nil || !existed {
		t.Fatalf("open: %v, existed %v", err, existed)
	}
	defer s.Close()
	var unfinished []uint64
	if err := s.Recover(func(t *Task) {
		if !t.State.Terminal() {
			unfinished = append(unfinished, t.Seq)
		}
	}); err != nil || len(unfinished) != 1 || unfinished[0] != 2 {
		t.Fatalf("recover: %v %v", unfinished, err)
	}
	out, found := make([]Task, 1), make([]bool, 1)
	if err := s.Get([]Key{KeyOf(done)}, out, found); err != nil || !found[0] || string(out[0].Result) != `"done"` || out[0].Owner != "alice" {
		t.Fatalf("finished task after migration: %+v %v", out[0], err)
	}
	eps, err := s.Endpoints()
	if err != nil || len(eps) != 1 || eps[0].ID != "ep" || eps[0].PublicKey != "key-of-ep" {
		t.Fatalf("endpoints after migration: %+v %v", eps, err)
	}
	for _, f := range []string{OldLogFile, oldEndpointsFile} {
		if _, err := os.Stat(filepath.Join(dir, f+".migrated")); err != nil {
			t.Fatal(err)
		}
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
