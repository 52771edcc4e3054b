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
