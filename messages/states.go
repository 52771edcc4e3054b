package messages

import "fmt"

// TaskStatusCode is the compact endpoint-side state sent on the wire.
type TaskStatusCode uint8

const (
	CodeNone TaskStatusCode = iota
	WaitingForNodes
	WaitingForLaunch
	Running
	Success
	Failed
	Cancelled
	codeLimit
)

// Valid reports whether c is a code a peer may send.
func (c TaskStatusCode) Valid() bool { return c > CodeNone && c < codeLimit }

// Terminal reports whether c ends a task.
func (c TaskStatusCode) Terminal() bool { return c == Success || c == Failed || c == Cancelled }

func (c TaskStatusCode) String() string { return string(c.State()) }

// TaskState is the service-side state that users see.
type TaskState string

const (
	StateUnknown            TaskState = ""
	StateReceived           TaskState = "received"
	StateWaitingForEndpoint TaskState = "waiting-for-endpoint"
	StateWaitingForNodes    TaskState = "waiting-for-nodes"
	StateWaitingForLaunch   TaskState = "waiting-for-launch"
	StateRunning            TaskState = "running"
	StateSuccess            TaskState = "success"
	StateFailed             TaskState = "failed"
	StateCancelled          TaskState = "cancelled"
	// StateNotFound is what the API answers for an id it does not know
	// (never created, another user's, or forgotten after retention).
	StateNotFound TaskState = "unknown"
)

// State is the one conversion from wire codes to user-visible states.
func (c TaskStatusCode) State() TaskState {
	switch c {
	case WaitingForNodes:
		return StateWaitingForNodes
	case WaitingForLaunch:
		return StateWaitingForLaunch
	case Running:
		return StateRunning
	case Success:
		return StateSuccess
	case Failed:
		return StateFailed
	case Cancelled:
		return StateCancelled
	}
	return StateUnknown
}

// StateCounts counts codes by state, so that a labelled counter is added
// to once a batch: looking it up for each task cost more than the rest of
// a result's bookkeeping.
type StateCounts [codeLimit]float64

// Add counts c; a code with no state counts as StateUnknown.
func (n *StateCounts) Add(c TaskStatusCode) {
	if c >= codeLimit {
		c = CodeNone
	}
	n[c]++
}

// Each calls fn with each state counted and its count.
func (n *StateCounts) Each(fn func(s TaskState, count float64)) {
	for c, k := range n {
		if k > 0 {
			fn(TaskStatusCode(c).State(), k)
		}
	}
}

// Code is the inverse of State; the two service-only states have no code.
func (s TaskState) Code() (TaskStatusCode, bool) {
	switch s {
	case StateWaitingForNodes:
		return WaitingForNodes, true
	case StateWaitingForLaunch:
		return WaitingForLaunch, true
	case StateRunning:
		return Running, true
	case StateSuccess:
		return Success, true
	case StateFailed:
		return Failed, true
	case StateCancelled:
		return Cancelled, true
	}
	return CodeNone, false
}

// AllStates lists the states in their forward order.
var AllStates = []TaskState{StateReceived, StateWaitingForEndpoint, StateWaitingForNodes,
	StateWaitingForLaunch, StateRunning, StateSuccess, StateFailed, StateCancelled}

// ParseTaskState accepts the names in AllStates.
func ParseTaskState(s string) (TaskState, error) {
	for _, v := range AllStates {
		if string(v) == s {
			return v, nil
		}
	}
	return StateUnknown, fmt.Errorf("unknown task state %q", s)
}

// Terminal reports whether s is final.
func (s TaskState) Terminal() bool {
	return s == StateSuccess || s == StateFailed || s == StateCancelled
}

func (s TaskState) rank() int {
	switch s {
	case StateReceived:
		return 1
	case StateWaitingForEndpoint:
		return 2
	case StateWaitingForNodes:
		return 3
	case StateWaitingForLaunch:
		return 4
	case StateRunning:
		return 5
	case StateSuccess, StateFailed, StateCancelled:
		return 6
	}
	return 0
}

// Event is why a transition is attempted.
type Event uint8

const (
	// EventProgress is an ordinary report from the holder of the task.
	EventProgress Event = iota
	// EventLost is the node or endpoint holding the task declared lost.
	EventLost
)

// Transition says whether a task may move from -> to. Terminal states are
// final; moving backwards is legal only when the holder was lost, and only
// into a waiting state.
func Transition(from, to TaskState, ev Event) bool {
	fr, tr := from.rank(), to.rank()
	if fr == 0 || tr == 0 || from.Terminal() || from == to {
		return false
	}
	if tr > fr {
		return true
	}
	if ev != EventLost {
		return false
	}
	// Any waiting state: merged deltas may show a re-queued task already
	// handed to its next node.
	return to == StateWaitingForEndpoint || to == StateWaitingForNodes || to == StateWaitingForLaunch
}

// Verdict is the outcome of applying a status update to a task.
type Verdict uint8

const (
	Applied Verdict = iota
	Stale           // older attempt than the one held
	Regress         // would move backwards or out of a terminal state
	Same            // no change
)

var verdictNames = [...]string{"applied", "stale", "regress", "same"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Apply decides an update (to, attempt) against a task held at (from, cur).
// A newer attempt means the holder was lost and the task re-queued, so it
// may move backwards; an older attempt is stale and never applied.
func Apply(from TaskState, cur uint32, to TaskState, attempt uint32) Verdict {
	if from.Terminal() {
		if from == to {
			return Same
		}
		return Regress
	}
	if attempt < cur {
		return Stale
	}
	if from == to && attempt == cur {
		return Same
	}
	ev := EventProgress
	if attempt > cur {
		ev = EventLost
	}
	if from == to || Transition(from, to, ev) {
		return Applied
	}
	return Regress
}
