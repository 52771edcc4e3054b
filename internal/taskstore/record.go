package taskstore

import (
	"encoding/binary"
	"fmt"

	"github.com/switchyard-hpc/switchyard/internal/binrec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// recordVersion starts every encoded task so the layout can change.
// Version 2 adds the owner at the end; version 1 records read as owned by
// nobody (admins only). Version 3 adds runs after it; older records read
// runs 0.
const recordVersion = 3

// recordBound is at least the size of t's key and record.
func recordBound(t *Task) int {
	return 8 + 133 + len(t.Endpoint) + len(t.Kind) + len(t.Spec) + len(t.State) + len(t.Result) + len(t.Error) + len(t.Owner)
}

// SeqKey is the 8-byte big-endian key of a sequence number.
func SeqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// AppendRecord appends t's key (its seq) and record to arena and returns
// both as sub-slices, so many records share one buffer.
func AppendRecord(arena []byte, t *Task) (key, value, out []byte) {
	need := recordBound(t)
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
	w.Uvarint(uint64(t.Runs))
	arena = w.B
	end := len(arena)
	return arena[start : start+8 : start+8], arena[start+8 : end : end], arena
}

// arenaChunk caps one shared buffer.
const arenaChunk = 32 << 10

// DecodeRecord reads a task from its key and record.
func DecodeRecord(k, v []byte) (*Task, error) {
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
	if ver >= 3 {
		t.Runs = uint32(r.Uvarint())
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
