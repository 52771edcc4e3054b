package interchange

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/internal/daemon"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/store/oldfiletest"
	"github.com/switchyard-hpc/switchyard/messages"
)

// State kept by an earlier version in its append-only log (a deleted
// task among it) or its bbolt file is copied into the Pebble store once:
// the restarted interchange recovers the same tasks, results and
// managers, and the old file is kept aside.
func TestOldStateFileIsMigrated(t *testing.T) {
	for _, old := range []string{oldLogFile, oldStateFile} {
		t.Run(old, func(t *testing.T) { testOldStateFileIsMigrated(t, old) })
	}
}

func testOldStateFileIsMigrated(t *testing.T, oldFile string) {
	dir := t.TempDir()
	sd, err := statedir.Open(dir, "interchange")
	if err != nil {
		t.Fatal(err)
	}
	t1 := &itask{id: messages.TaskID(uuid.New()), attempt: 1, payload: []byte(`{"kind":"noop"}`), seq: 7}
	t2 := &itask{id: messages.TaskID(uuid.New()), attempt: 2, payload: []byte(`{"kind":"sleep","args":["1"]}`), seq: 9}
	gone := &itask{id: messages.TaskID(uuid.New()), attempt: 1, payload: []byte(`{"kind":"noop"}`), seq: 10}
	h := &heldResult{Result: messages.Result{ID: messages.TaskID(uuid.New()), Attempt: 1, Code: messages.Success, Payload: []byte(`"ok"`)}, seq: 8}
	rec := func(op store.Op) oldfiletest.Record {
		return oldfiletest.Record{Bucket: op.Bucket, Key: op.Key, Value: op.Value}
	}
	recs := []oldfiletest.Record{rec(taskOp(t1)), rec(taskOp(t2)),
		rec(resultOp(h.seq, &h.Result)), rec(managerOp("node-1"))}
	if oldFile == oldLogFile {
		ops := make([]oldfiletest.Op, 0, len(recs)+2)
		for _, r := range recs {
			ops = append(ops, oldfiletest.Op{Record: r})
		}
		ops = append(ops, oldfiletest.Op{Record: rec(taskOp(gone))},
			oldfiletest.Op{Record: rec(taskDeleteOp(gone)), Delete: true})
		err = oldfiletest.WriteLog(sd.File(oldLogFile), oldLogFormat, stateBuckets, ops...)
	} else {
		err = oldfiletest.Write(sd.File(oldStateFile), oldStateFormat, stateBuckets, recs...)
	}
	if err != nil {
		t.Fatal(err)
	}

	for run := 0; run < 2; run++ {
		ix := &Interchange{opts: Options{}, log: logx.Discard(), dir: sd, res: daemon.Resources{}}
		st, existed, err := ix.openStore()
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		rec, err := loadState(st)
		if err != nil {
			t.Fatal(err)
		}
		if !existed || len(rec.tasks) != 2 || rec.tasks[0].id != t1.id || rec.tasks[1].attempt != 2 ||
			string(rec.tasks[1].payload) != string(t2.payload) || len(rec.results) != 1 || string(rec.results[0].Payload) != `"ok"` ||
			len(rec.managers) != 1 || rec.managers[0] != "node-1" || rec.maxSeq != 9 {
			t.Fatalf("run %d recovered %d tasks, %d results, managers %v, max seq %d", run, len(rec.tasks), len(rec.results), rec.managers, rec.maxSeq)
		}
		ix.res.Close()
		if _, err := os.Stat(filepath.Join(dir, oldFile+".migrated")); err != nil {
			t.Fatalf("old file not kept aside: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, oldFile)); !os.IsNotExist(err) {
			t.Fatalf("old file still in place: %v", err)
		}
	}
	sd.Close()
}

// Task records keep their owner; a record of version 1 (written before
// records had a version or an owner) still reads, owned by nobody.
func TestTaskRecordVersions(t *testing.T) {
	var names owners
	id := messages.TaskID(uuid.New())
	in := &itask{id: id, attempt: 3, payload: []byte(`{"kind":"noop"}`), seq: 5, owner: names.intern("alice")}
	op := taskOp(in)
	out, err := readTask(5, op.Value, &names)
	if err != nil {
		t.Fatal(err)
	}
	if out.id != id || out.attempt != 3 || string(out.payload) != `{"kind":"noop"}` || out.owner != in.owner || ownerName(out.owner) != "alice" {
		t.Fatalf("version 2 read back as %+v (owner %q)", out, ownerName(out.owner))
	}
	// Version 1: id, attempt, payload and nothing else.
	v1 := binrec.Writer{}
	v1.Bytes(id[:])
	v1.Uvarint(2)
	v1.Bytes([]byte("p"))
	out, err = readTask(6, v1.B, &names)
	if err != nil {
		t.Fatal(err)
	}
	if out.id != id || out.attempt != 2 || string(out.payload) != "p" || ownerName(out.owner) != "" {
		t.Fatalf("version 1 read back as %+v (owner %q)", out, ownerName(out.owner))
	}
	if _, err := readTask(7, []byte{9, 16}, &names); err == nil {
		t.Fatalf("a record of an unknown version was read")
	}
	if ownerName((&itask{}).owner) != "" || names.intern("") != (owner{}) {
		t.Fatalf("no owner is not the zero handle")
	}
}
