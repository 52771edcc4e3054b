package messages

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Version is the protocol version byte that starts every message.
const Version byte = 1

// Limits enforced while decoding. A peer that needs more must split its batch.
const (
	MaxHeaderBytes = 16 << 20
	MaxItems       = 1 << 20
	MaxStringBytes = 1 << 20
)

// Type is the second byte of the first frame.
type Type byte

const (
	TypeInvalid Type = iota
	TypeRegistration
	TypeHeartbeat
	TypeHeartbeatReq
	TypeHeartbeatResp
	TypeTaskBatch
	TypeResultBatch
	TypeManagerStatusReport
	TypeEPStatusReport
	TypeCommand
	TypeCommandReply
	TypeAck
	TypeReregister
	TypeErrorReply
	TypeGoodbye
	TypeNack
	typeCount
)

var typeNames = [...]string{"Invalid", "Registration", "Heartbeat", "HeartbeatReq", "HeartbeatResp",
	"TaskBatch", "ResultBatch", "ManagerStatusReport", "EPStatusReport", "Command", "CommandReply",
	"Ack", "Reregister", "ErrorReply", "Goodbye", "Nack"}

func (t Type) String() string {
	if t < typeCount {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", byte(t))
}

// TaskID is a UUID carried as 16 raw bytes on the wire.
type TaskID [16]byte

func (id TaskID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

var errTaskID = errors.New("task id must be a UUID like 5f0c1e2a-0b1c-4d2e-8f90-123456789abc")

// ParseTaskID reads the canonical 36-character UUID form.
func ParseTaskID(s string) (TaskID, error) {
	var id TaskID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, errTaskID
	}
	var compact [32]byte
	copy(compact[0:8], s[0:8])
	copy(compact[8:12], s[9:13])
	copy(compact[12:16], s[14:18])
	copy(compact[16:20], s[19:23])
	copy(compact[20:32], s[24:36])
	if _, err := hex.Decode(id[:], compact[:]); err != nil {
		return id, errTaskID
	}
	return id, nil
}

// MarshalText lets TaskID appear as a UUID string in JSON.
func (id TaskID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *TaskID) UnmarshalText(b []byte) error {
	v, err := ParseTaskID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Role says what kind of peer registers.
type Role byte

const (
	RoleManager Role = iota + 1
	RoleInterchange
)

func (r Role) String() string {
	switch r {
	case RoleManager:
		return "manager"
	case RoleInterchange:
		return "interchange"
	}
	return fmt.Sprintf("role(%d)", byte(r))
}

// CommandOp is what a Command asks for.
type CommandOp byte

const (
	OpSetServingState CommandOp = iota + 1
	OpCancel
	OpDrain
	_ // 4 was shutdown, never carried out; reserved
	OpGetServingState
	// OpGiveBack asks a manager for the listed tasks it has not started:
	// it drops those and replies with their ids (JSON in Body), so the
	// interchange can hand them to an idle manager with the same attempt.
	OpGiveBack
)

func (o CommandOp) String() string {
	switch o {
	case OpSetServingState:
		return "set-serving-state"
	case OpCancel:
		return "cancel"
	case OpDrain:
		return "drain"
	case OpGetServingState:
		return "get-serving-state"
	case OpGiveBack:
		return "give-back"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// MaxBatchBytes bounds the payload bytes senders put in one TaskBatch or
// ResultBatch, far below the sockets' message limit, so no batch is ever
// too big to deliver.
const MaxBatchBytes = 16 << 20

// ChunkTasks is how many leading tasks go in one batch: at least one, at
// most maxItems, payloads within MaxBatchBytes.
func ChunkTasks(ts []Task, maxItems int) int {
	size := 0
	for i := range ts {
		size += len(ts[i].Payload) + 32
		if i > 0 && (i >= maxItems || size > MaxBatchBytes) {
			return i
		}
	}
	return len(ts)
}

// ChunkResults is ChunkTasks for results.
func ChunkResults(rs []Result, maxItems int) int {
	size := 0
	for i := range rs {
		size += len(rs[i].Payload) + len(rs[i].Error) + len(rs[i].Text) + 48
		if i > 0 && (i >= maxItems || size > MaxBatchBytes) {
			return i
		}
	}
	return len(rs)
}
