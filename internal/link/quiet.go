package link

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Quiet rate-limits repeated log lines about peers: one line per key per
// period, carrying how many were suppressed since. Owned by one loop, so a
// flood of bad messages cannot flood the log.
type Quiet struct {
	Period time.Duration
	seen   map[string]*quietKey
}

type quietKey struct {
	last       time.Time
	suppressed int
}

// NewQuiet logs each key at most once per period.
func NewQuiet(period time.Duration) *Quiet {
	return &Quiet{Period: period, seen: make(map[string]*quietKey)}
}

func (q *Quiet) log(level logrus.Level, key string, e *logrus.Entry, msg string) {
	now := time.Now()
	k := q.seen[key]
	if k == nil {
		if len(q.seen) > 10000 {
			q.prune(now)
		}
		k = &quietKey{}
		q.seen[key] = k
	} else if now.Sub(k.last) < q.Period {
		k.suppressed++
		return
	}
	if k.suppressed > 0 {
		e = e.WithField("suppressed", k.suppressed)
	}
	k.last, k.suppressed = now, 0
	e.Log(level, msg)
}

func (q *Quiet) prune(now time.Time) {
	for key, k := range q.seen {
		if now.Sub(k.last) > q.Period {
			delete(q.seen, key)
		}
	}
	if len(q.seen) > 10000 {
		clear(q.seen)
	}
}

// Warn logs msg at warn level unless key was logged within the period.
func (q *Quiet) Warn(key string, e *logrus.Entry, msg string) { q.log(logrus.WarnLevel, key, e, msg) }

// Info is Warn at info level.
func (q *Quiet) Info(key string, e *logrus.Entry, msg string) { q.log(logrus.InfoLevel, key, e, msg) }
