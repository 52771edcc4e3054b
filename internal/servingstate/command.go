package servingstate

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Command carries out a serving-state Command on c (the interchange's or a
// manager's controller); who names the sender in the override record.
func Command(c *Controller, cmd *messages.Command, who string, log *logrus.Entry) *messages.CommandReply {
	now := time.Now()
	if cmd.Op == messages.OpSetServingState {
		var st *messages.ServingState
		if !cmd.Clear {
			s := cmd.State
			st = &s
		}
		msg, err := c.Set(st, time.Duration(cmd.Timeout), cmd.Force, who, now)
		if err != nil {
			code := messages.ReplyInvalid
			var hides *ErrHidesPressure
			if errors.As(err, &hides) {
				code = messages.ReplyConflict
			}
			return &messages.CommandReply{ID: cmd.ID, Code: code, Message: err.Error()}
		}
		log.WithFields(logrus.Fields{"state": cmd.State.String(), "clear": cmd.Clear, "force": cmd.Force, "from": who}).
			Info("serving state override: " + msg)
		body, _ := json.Marshal(c.Snapshot(now))
		return &messages.CommandReply{ID: cmd.ID, Message: msg, Body: body}
	}
	v := c.Snapshot(now)
	body, _ := json.Marshal(v)
	return &messages.CommandReply{ID: cmd.ID, Message: v.Text(), Body: body}
}
