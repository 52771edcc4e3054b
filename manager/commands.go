package manager

import (
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
			t, ok := l.tasks[id]
			if !ok {
				continue
			}
			n++
			if t.handed && !t.claim.CompareAndSwap(0, 2) {
				// A worker has it: stop the run, the worker reports it.
				t.cancel(errCancelled)
				continue
			}
			if t.cancel != nil {
				t.cancel(errCancelled)
			}
			delete(l.tasks, id)
			delete(l.deltas, id)
			t.code = messages.Cancelled
			l.results.Put(messages.Result{ID: id, Attempt: t.task.Attempt, Code: messages.Cancelled, Error: errCancelled.Error(), Finished: now})
		}
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("cancelling %d of %d tasks", n, len(c.TaskIDs))}
	case messages.OpSetServingState, messages.OpGetServingState:
		return servingCommand(l.mg, c)
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is not supported by the manager", c.Op)}
}
