package messages

import "fmt"

// Message is any value that Unpack returns.
type Message interface {
	Type() Type
	Pack() ([][]byte, error)
}

// Registration introduces a manager to an interchange, or an interchange
// to a forwarder (its ID is then the endpoint id).
type Registration struct {
	Role            Role
	ID              string
	Hostname        string
	Workers         uint32
	Prefetch        uint32
	ProtocolVersion uint8
	SoftwareVersion string
	BlockID         string
	// HTTPAddr is where a manager serves /metrics (host:port), or "";
	// left off the wire when empty, and older peers skip it.
	HTTPAddr string
	// AdaptivePrefetch: the manager was not given --prefetch, so the
	// interchange decides how many tasks it holds beyond its workers, up
	// to Prefetch. A manager that predates it reads as explicit.
	AdaptivePrefetch bool
}

// Heartbeat is one-way and never answered; any traffic counts as one.
// The interchange's answer to a manager's registration carries its own
// heartbeat interval and threshold (nanoseconds; 0 when absent, as from
// an older peer), which a manager adopts unless told otherwise.
type Heartbeat struct {
	Interval  int64
	Threshold int64
}

// HeartbeatReq is the one synchronous probe; the peer echoes Nonce.
type HeartbeatReq struct{ Nonce uint64 }

// HeartbeatResp answers a HeartbeatReq.
type HeartbeatResp struct{ Nonce uint64 }

// Task is one unit of work. Payload is opaque to brokers.
type Task struct {
	ID      TaskID
	Attempt uint32
	Payload []byte
	// Owner is the user who submitted it; "" from a sender that predates
	// owners. Managers never let one owner's task run where another's did.
	Owner string
}

// TaskBatch carries tasks downward. Payloads travel in the last frame.
type TaskBatch struct{ Tasks []Task }

// Result is a task's outcome. Payload is opaque to brokers.
type Result struct {
	ID       TaskID
	Attempt  uint32
	Code     TaskStatusCode
	Error    string
	Started  int64 // unix nanoseconds
	Finished int64
	Payload  []byte
	// Text is a short readable form of a python result (its repr() or
	// exception), for people; Payload stays the authority.
	Text string
	// Runs is how many times a worker started the task, as the
	// interchange counted (0: not counted, as from a manager or an older
	// peer; left off the wire then).
	Runs uint32
}

// ResultBatch carries results upward.
type ResultBatch struct{ Results []Result }

// Delta is one observed change of a task's state.
type Delta struct {
	ID      TaskID
	Code    TaskStatusCode
	Attempt uint32
	At      int64 // unix nanoseconds
	// Runs: as in Result; only the interchange sets it.
	Runs uint32
}

// ManagerStatusReport is sent by a manager every heartbeat interval.
type ManagerStatusReport struct {
	Deltas       []Delta
	Workers      uint32
	IdleWorkers  uint32
	Capacity     uint32 // tasks it will accept now
	Outstanding  uint32 // tasks it holds (queued + running)
	ServingState ServingState
}

// EPStatusReport is sent by an interchange every heartbeat interval.
type EPStatusReport struct {
	Deltas       []Delta
	Managers     uint32
	Workers      uint32
	IdleWorkers  uint32
	Queued       uint32
	Outstanding  uint32
	ServingState ServingState
	// Blocks is the JSON list of the endpoint's blocks (batch jobs of
	// managers), opaque to the forwarder, which shows it as it is; empty
	// without a provider.
	Blocks []byte
	// ManagerList is the JSON list of the endpoint's managers, opaque to
	// the forwarder; it rides on the periodic reports only (empty: keep
	// the last one).
	ManagerList []byte
	// QueuedByOwner is Queued per task owner, for owners with queued
	// tasks ("" for tasks without one).
	QueuedByOwner []OwnerCount
}

// OwnerCount is one owner's count of tasks.
type OwnerCount struct {
	Owner string
	N     uint32
}

// Command asks a peer to act; the answer is a CommandReply with the same ID.
type Command struct {
	ID      uint64
	Op      CommandOp
	State   ServingState // the override to set, unless Clear
	Clear   bool         // clear the override instead
	Timeout int64        // nanoseconds; 0 means until cleared
	Force   bool
	Manager string // target manager; empty means the interchange itself
	TaskIDs []TaskID
}

// ReplyCode says how a Command went; callers act on it, never on the
// message text (the forwarder maps it to an HTTP status).
type ReplyCode uint8

// Reply codes.
const (
	ReplyOK          ReplyCode = iota
	ReplyInvalid               // a bad argument
	ReplyConflict              // refused: it would hide real pressure without force
	ReplyNotFound              // no such manager
	ReplyUnavailable           // the target could not be reached or did not answer
	ReplyUnsupported           // this peer does not do that operation
	replyLimit
)

var replyNames = [...]string{"ok", "invalid", "conflict", "not-found", "unavailable", "unsupported"}

func (c ReplyCode) String() string {
	if c < replyLimit {
		return replyNames[c]
	}
	return fmt.Sprintf("ReplyCode(%d)", uint8(c))
}

// CommandReply answers a Command.
type CommandReply struct {
	ID      uint64
	Code    ReplyCode
	Message string
	Body    []byte // JSON detail for the caller, opaque to brokers
}

// OK reports whether the command was carried out.
func (r *CommandReply) OK() bool { return r.Code == ReplyOK }

// Ack tells the sender which ids the receiver has taken responsibility for.
type Ack struct{ IDs []TaskID }

// Goodbye tells the other side that the sender is leaving. Draining (Final
// false): take nothing new from it, it finishes what it runs. Final: it is
// gone now. Returned are tasks it gives back unfinished (never started, or
// stopped at the end of its drain grace): they go back to the queue with
// the same attempt, since no node failed.
type Goodbye struct {
	Reason   string
	Final    bool
	Returned []TaskID
}

// Nack gives back tasks of a TaskBatch the receiver did not take (it is
// push-paused); the sender keeps them until it may push again.
type Nack struct {
	IDs    []TaskID
	Reason string
}

// Reregister tells a peer the receiver no longer knows it.
type Reregister struct{ Reason string }

// ErrorReply refuses a message with a reason.
type ErrorReply struct {
	Code   ErrorCode
	Reason string
}

func (*Registration) Type() Type        { return TypeRegistration }
func (*Heartbeat) Type() Type           { return TypeHeartbeat }
func (*HeartbeatReq) Type() Type        { return TypeHeartbeatReq }
func (*HeartbeatResp) Type() Type       { return TypeHeartbeatResp }
func (*TaskBatch) Type() Type           { return TypeTaskBatch }
func (*ResultBatch) Type() Type         { return TypeResultBatch }
func (*ManagerStatusReport) Type() Type { return TypeManagerStatusReport }
func (*EPStatusReport) Type() Type      { return TypeEPStatusReport }
func (*Command) Type() Type             { return TypeCommand }
func (*CommandReply) Type() Type        { return TypeCommandReply }
func (*Ack) Type() Type                 { return TypeAck }
func (*Reregister) Type() Type          { return TypeReregister }
func (*ErrorReply) Type() Type          { return TypeErrorReply }
func (*Goodbye) Type() Type             { return TypeGoodbye }
func (*Nack) Type() Type                { return TypeNack }
