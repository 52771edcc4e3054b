package taskstore

import "github.com/switchyard-hpc/switchyard/messages"

// DoneRef is what an index keeps in memory of a task whose end is stored,
// packed into 8 bytes so a million ended tasks cost 8 MB: the completion
// time (unix seconds, 34 bits), the owner (an index into an Owners table,
// 28 bits, 0 when it did not fit) and the final state (2 bits, 0 while the
// task has not ended).
type DoneRef uint64

// MaxOwners is the most owners a DoneRef can name.
const MaxOwners = 1<<28 - 1

const secBits = 1<<34 - 1

// EndStates are the final states by their code in a DoneRef.
var EndStates = [...]messages.TaskState{messages.StateUnknown, messages.StateSuccess, messages.StateFailed, messages.StateCancelled}

// EndCode is the code of a final state, 0 for any other.
func EndCode(st messages.TaskState) uint8 {
	switch st {
	case messages.StateSuccess:
		return 1
	case messages.StateFailed:
		return 2
	case messages.StateCancelled:
		return 3
	}
	return 0
}

// NewDoneRef packs an end; owner 0 (or one past MaxOwners) says the owner
// must be read from the record.
func NewDoneRef(state messages.TaskState, completedNanos int64, owner uint32) DoneRef {
	var sec uint64
	if s := completedNanos / 1e9; s > 0 {
		sec = uint64(s) & secBits
	}
	if owner > MaxOwners {
		owner = 0
	}
	return DoneRef(sec<<30 | uint64(owner)<<2 | uint64(EndCode(state)))
}

// State is the final state, StateUnknown for a task not ended.
func (r DoneRef) State() messages.TaskState { return EndStates[r&3] }

// Ended says the task has a final state.
func (r DoneRef) Ended() bool { return r&3 != 0 }

// Completed is the completion time in unix seconds, 0 if unknown.
func (r DoneRef) Completed() int64 { return int64(r >> 30) }

// Owner is the owner's index, 0 if unknown.
func (r DoneRef) Owner() uint32 { return uint32(r>>2) & MaxOwners }

// Owners interns owner names so an index names each by a small number;
// index 0 is "not known". Not safe for concurrent use.
type Owners struct {
	names []string
	idx   map[string]uint32
}

// NewOwners makes an empty table.
func NewOwners() *Owners { return &Owners{names: []string{""}, idx: map[string]uint32{}} }

// Index names owner, adding it if new.
func (o *Owners) Index(owner string) uint32 {
	i, ok := o.idx[owner]
	if !ok {
		i = uint32(len(o.names))
		o.names = append(o.names, owner)
		o.idx[owner] = i
	}
	return i
}

// Lookup is owner's index if it has one.
func (o *Owners) Lookup(owner string) (uint32, bool) {
	i, ok := o.idx[owner]
	return i, ok
}

// Name is the owner of index i; ok is false for 0 or an unknown index.
func (o *Owners) Name(i uint32) (string, bool) {
	if i == 0 || int(i) >= len(o.names) {
		return "", false
	}
	return o.names[i], true
}
