package manager

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

func (l *loop) command(c *messages.Command) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		n := 0
		now := time.Now().UnixNano()
		for _, id := range c.TaskIDs {
			t, ok := l.byID[id]
			if !ok || t.out {
				continue
			}
			n++
			if t.handed {
				if !t.claim.CompareAndSwap(0, 2) {
					// A worker has it: stop the run, the worker reports it.
					t.cancel(errCancelled)
					continue
				}
				l.inFlight-- // no worker will run it
			}
			if t.cancel != nil {
				t.cancel(errCancelled)
			}
			l.end(t)
			t.code = messages.Cancelled
			l.results.put(t, messages.Result{ID: id, Attempt: t.task.Attempt, Code: messages.Cancelled, Error: errCancelled.Error(), Finished: now})
		}
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("cancelling %d of %d tasks", n, len(c.TaskIDs))}
	case messages.OpGiveBack:
		return l.giveBackUnstarted(c)
	case messages.OpSetServingState, messages.OpGetServingState:
		return servingCommand(l.mg, c)
	case messages.OpDrain:
		if l.drain != nil {
			return &messages.CommandReply{ID: c.ID, Message: "already draining"}
		}
		running := l.nTasks
		l.startDrain("drain requested", time.Duration(c.Timeout), time.Now())
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("draining: %d tasks returned to the queue, %d running tasks finish first, then the manager exits",
			running-l.nTasks, l.nTasks)}
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is not supported by the manager", c.Op)}
}

// GiveBack is the body of the reply to a give-back command.
type GiveBack struct {
	Returned []messages.TaskID `json:"returned"`
}

// giveBackUnstarted drops those of the asked tasks that no worker has
// started and names them in the reply: only those may run elsewhere. The
// claim decides, once, between a worker starting a task and this.
func (l *loop) giveBackUnstarted(c *messages.Command) *messages.CommandReply {
	back := make([]messages.TaskID, 0, len(c.TaskIDs))
	for _, id := range c.TaskIDs {
		t, ok := l.byID[id]
		if !ok || t.out || t.parked != nil {
			continue
		}
		if t.handed {
			if !t.claim.CompareAndSwap(0, 2) {
				continue // a worker has it
			}
			l.inFlight-- // no worker will run it
			t.cancel(errCancelled)
		}
		l.drop(t)
		back = append(back, id)
	}
	l.mg.m.givenBack.Add(float64(len(back)))
	body, _ := json.Marshal(GiveBack{Returned: back})
	return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("gave back %d of %d tasks", len(back), len(c.TaskIDs)), Body: body}
}
