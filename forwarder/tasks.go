package forwarder

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Task is the service-side record of one task.
type Task struct {
	ID          messages.TaskID
	Endpoint    string
	Kind        string
	Spec        []byte
	State       messages.TaskState
	Attempts    uint32
	Result      []byte
	Error       string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt time.Time
	Writes      uint32
	// Sent is true once the task went to the endpoint and no loss has
	// been declared since.
	Sent bool
}

// TaskView is the JSON form the API returns.
type TaskView struct {
	TaskID      string             `json:"task_id"`
	EndpointID  string             `json:"endpoint_id,omitempty"`
	Kind        string             `json:"kind,omitempty"`
	State       messages.TaskState `json:"state"`
	Attempts    uint32             `json:"attempts"`
	Result      json.RawMessage    `json:"result"`
	Error       string             `json:"error,omitempty"`
	CreatedAt   *time.Time         `json:"created_at,omitempty"`
	CompletedAt *time.Time         `json:"completed_at,omitempty"`
}

// View renders a task for the API.
func (t *Task) View() TaskView {
	v := TaskView{TaskID: t.ID.String(), EndpointID: t.Endpoint, Kind: t.Kind, State: t.State,
		Attempts: t.Attempts, Error: t.Error}
	if len(t.Result) > 0 {
		v.Result = json.RawMessage(t.Result)
	}
	if !t.CreatedAt.IsZero() {
		c := t.CreatedAt.UTC()
		v.CreatedAt = &c
	}
	if !t.CompletedAt.IsZero() {
		c := t.CompletedAt.UTC()
		v.CompletedAt = &c
	}
	return v
}

// taskTable holds every task. Each change is a compare-and-set under one
// lock: the caller states what it expects, terminal states are final, and
// stale attempts never apply.
type taskTable struct {
	mu      sync.RWMutex
	tasks   map[messages.TaskID]*Task
	waiters map[messages.TaskID]chan struct{}
	writes  atomic.Uint64
	onWrite func(*Task)
}

func newTaskTable() *taskTable {
	return &taskTable{tasks: make(map[messages.TaskID]*Task), waiters: make(map[messages.TaskID]chan struct{})}
}

func (tt *taskTable) touch(t *Task, now time.Time) {
	t.UpdatedAt = now
	t.Writes++
	tt.writes.Add(1)
	if tt.onWrite != nil {
		tt.onWrite(t)
	}
	if t.State.Terminal() {
		if t.CompletedAt.IsZero() {
			t.CompletedAt = now
		}
		if ch, ok := tt.waiters[t.ID]; ok {
			close(ch)
			delete(tt.waiters, t.ID)
		}
	}
}

func (tt *taskTable) add(ts []*Task) {
	now := time.Now()
	tt.mu.Lock()
	for _, t := range ts {
		tt.tasks[t.ID] = t
		tt.touch(t, now)
	}
	tt.mu.Unlock()
}

func (tt *taskTable) get(id messages.TaskID) (Task, bool) {
	tt.mu.RLock()
	t, ok := tt.tasks[id]
	var c Task
	if ok {
		c = *t
	}
	tt.mu.RUnlock()
	return c, ok
}

func (tt *taskTable) len() int {
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	return len(tt.tasks)
}

// forSend returns the tasks of ids that still need sending, marking them
// sent; cancelled or finished ones are skipped.
func (tt *taskTable) forSend(ids []messages.TaskID, out []messages.Task) []messages.Task {
	tt.mu.Lock()
	for _, id := range ids {
		t, ok := tt.tasks[id]
		if !ok || t.State.Terminal() {
			continue
		}
		t.Sent = true
		out = append(out, messages.Task{ID: id, Attempt: t.Attempts, Payload: t.Spec})
	}
	tt.mu.Unlock()
	return out
}

// applyDelta moves a task forward as the endpoint reports it.
func (tt *taskTable) applyDelta(endpoint string, d *messages.Delta) messages.Verdict {
	to := d.Code.State()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	t, ok := tt.tasks[d.ID]
	if !ok || t.Endpoint != endpoint {
		return messages.Stale
	}
	v := messages.Apply(t.State, t.Attempts, to, d.Attempt)
	if v != messages.Applied {
		return v
	}
	t.State = to
	t.Attempts = d.Attempt
	if to.Terminal() {
		t.Error = "reported " + string(to) + " without a result"
	}
	tt.touch(t, time.Now())
	return v
}

// complete stores a result; the first terminal state wins.
func (tt *taskTable) complete(endpoint string, r *messages.Result) messages.Verdict {
	to := r.Code.State()
	tt.mu.Lock()
	defer tt.mu.Unlock()
	t, ok := tt.tasks[r.ID]
	if !ok || t.Endpoint != endpoint {
		return messages.Stale
	}
	v := messages.Apply(t.State, t.Attempts, to, r.Attempt)
	if v != messages.Applied {
		return v
	}
	t.State = to
	t.Attempts = r.Attempt
	t.Error = r.Error
	if len(r.Payload) > 0 {
		t.Result = r.Payload
	}
	if r.Finished > 0 {
		t.CompletedAt = time.Unix(0, r.Finished)
	}
	tt.touch(t, time.Now())
	return v
}

// cancel ends a task unless it already ended; it reports the state the task
// is in afterwards and whether this call ended it.
func (tt *taskTable) cancel(id messages.TaskID) (Task, bool, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	t, ok := tt.tasks[id]
	if !ok {
		return Task{}, false, false
	}
	if t.State.Terminal() {
		return *t, true, false
	}
	t.State = messages.StateCancelled
	t.Error = "cancelled by request"
	tt.touch(t, time.Now())
	return *t, true, true
}

// endpointLost moves the endpoint's unfinished tasks back to
// waiting-for-endpoint and returns them for re-sending.
func (tt *taskTable) endpointLost(ids []messages.TaskID) []messages.TaskID {
	now := time.Now()
	out := ids[:0]
	tt.mu.Lock()
	for _, id := range ids {
		t, ok := tt.tasks[id]
		if !ok || t.State.Terminal() {
			continue
		}
		t.Sent = false
		if messages.Transition(t.State, messages.StateWaitingForEndpoint, messages.EventLost) {
			t.State = messages.StateWaitingForEndpoint
			tt.touch(t, now)
		}
		out = append(out, id)
	}
	tt.mu.Unlock()
	return out
}

// wait blocks until the task is terminal or ctx ends.
func (tt *taskTable) wait(ctx context.Context, id messages.TaskID) (Task, bool) {
	tt.mu.Lock()
	t, ok := tt.tasks[id]
	if !ok {
		tt.mu.Unlock()
		return Task{}, false
	}
	if t.State.Terminal() {
		c := *t
		tt.mu.Unlock()
		return c, true
	}
	ch, ok := tt.waiters[id]
	if !ok {
		ch = make(chan struct{})
		tt.waiters[id] = ch
	}
	tt.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return tt.get(id)
}
