package interchange

import (
	"fmt"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// command runs a Command from the forwarder; a manager-bound command
// answers later (nil now).
func (l *loop) command(c *messages.Command) *messages.CommandReply {
	switch c.Op {
	case messages.OpCancel:
		byMgr := map[*manager][]messages.TaskID{}
		cancelled := 0
		now := time.Now().UnixNano()
		for _, id := range c.TaskIDs {
			t, ok := l.tasks[id]
			if !ok || t.fin {
				continue
			}
			if t.mgr == nil {
				l.finishTask(t, messages.Result{ID: id, Attempt: t.attempt, Code: messages.Cancelled, Error: "cancelled by request", Finished: now})
				cancelled++
				continue
			}
			byMgr[t.mgr] = append(byMgr[t.mgr], id)
		}
		for m, ids := range byMgr {
			l.cmdSeq++
			_ = l.sendManager(m, &messages.Command{ID: l.cmdSeq, Op: messages.OpCancel, TaskIDs: ids})
		}
		return &messages.CommandReply{ID: c.ID, Message: fmt.Sprintf("%d removed from the queue, %d sent to managers", cancelled, len(c.TaskIDs)-cancelled)}
	case messages.OpDrain:
		if c.Manager == "" {
			return &messages.CommandReply{ID: c.ID, Code: messages.ReplyInvalid, Message: "drain needs a manager id"}
		}
		return l.toManager(c)
	case messages.OpSetServingState, messages.OpGetServingState:
		if c.Manager != "" {
			return l.toManager(c)
		}
		return l.ix.servingCommand(c)
	}
	return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnsupported, Message: fmt.Sprintf("operation %s is not supported by the interchange", c.Op)}
}

// toManager passes a command on to the manager it names; the answer comes
// later, when the manager replies.
func (l *loop) toManager(c *messages.Command) *messages.CommandReply {
	m, ok := l.mgrs[c.Manager]
	if !ok {
		return &messages.CommandReply{ID: c.ID, Code: messages.ReplyNotFound, Message: fmt.Sprintf("unknown manager %q", c.Manager)}
	}
	l.cmdSeq++
	down := *c
	down.ID = l.cmdSeq
	down.Manager = ""
	if err := l.sendManager(m, &down); err != nil {
		return &messages.CommandReply{ID: c.ID, Code: messages.ReplyUnavailable, Message: "cannot reach manager: " + err.Error()}
	}
	l.mgrCmds[down.ID] = mgrCmd{upID: c.ID, deadline: time.Now().Add(10 * time.Second)}
	return nil
}
