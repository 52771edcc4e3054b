package taskstore

import (
	"testing"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Version 3 records keep runs; version 2 records (no runs) read runs 0.
func TestRecordRuns(t *testing.T) {
	tk := &Task{ID: messages.TaskID(uuid.New()), Seq: 7, Endpoint: "ep", Owner: "alice", Kind: "noop",
		State: messages.StateSuccess, Attempts: 2, Runs: 3}
	k, v, _ := AppendRecord(nil, tk)
	got, err := DecodeRecord(k, v)
	if err != nil || got.Runs != 3 || got.Attempts != 2 || got.Owner != "alice" {
		t.Fatalf("v3 record: %+v, %v", got, err)
	}
	// The same task as version 2 wrote it: the owner last, no runs.
	w := binrec.Writer{}
	w.Uvarint(2)
	w.Bytes(tk.ID[:])
	w.String(tk.Endpoint)
	w.String(tk.Kind)
	w.Bytes(tk.Spec)
	w.String(string(tk.State))
	w.Uvarint(uint64(tk.Attempts))
	w.Bytes(tk.Result)
	w.String(tk.Error)
	w.Varint(0)
	w.Varint(0)
	w.Varint(0)
	w.Uvarint(0)
	w.String(tk.Owner)
	old, err := DecodeRecord(k, w.B)
	if err != nil || old.Runs != 0 || old.Attempts != 2 || old.Owner != "alice" {
		t.Fatalf("v2 record: %+v, %v", old, err)
	}
}
