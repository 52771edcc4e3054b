package manager

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/link"
	"github.com/switchyard-hpc/switchyard/messages"
)

// adoptTiming takes the interchange's heartbeat timing from its answer
// to our registration, unless our own was set: an interchange with a
// short threshold would otherwise declare a busy manager lost between two
// of its reports.
func (l *loop) adoptTiming(h *messages.Heartbeat) {
	if !l.mg.opts.InheritHeartbeat || h.Interval <= 0 || h.Threshold <= h.Interval {
		return
	}
	t := link.Timing{Interval: time.Duration(h.Interval), Threshold: time.Duration(h.Threshold)}
	if t == l.hb {
		return
	}
	l.log.WithFields(logrus.Fields{"heartbeat_interval": t.Interval, "heartbeat_threshold": t.Threshold,
		"was_interval": l.hb.Interval, "was_threshold": l.hb.Threshold}).Info("heartbeat timing taken from the interchange")
	l.hb = t
	l.up.SetTiming(t)
}
