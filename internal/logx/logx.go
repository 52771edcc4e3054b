// Package logx builds the logrus logger each daemon is given.
package logx

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing text or JSON to w (stderr when nil).
func New(format, level string, w io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	if w == nil {
		w = os.Stderr
	}
	l.SetOutput(w)
	switch format {
	case "", "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	default:
		return nil, fmt.Errorf("invalid --log-format %q: use text or json", format)
	}
	l.SetFormatter(RateLimit(l.Formatter, DefaultBurst, DefaultPeriod))
	if level == "" {
		level = "info"
	}
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	l.SetLevel(lv)
	return l, nil
}

// Discard is a logger for tests that do not read logs.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// Repeated warnings: at most DefaultBurst identical ones per DefaultPeriod.
const (
	DefaultBurst  = 5
	DefaultPeriod = 10 * time.Second
	maxKeys       = 4096
)

// RateLimit wraps a formatter so that warnings and errors with the same
// level and message are written at most burst times per period; the first
// one written after a quiet spell says how many were left out. Bad input
// from the network must not fill the disk with identical lines.
func RateLimit(inner logrus.Formatter, burst int, period time.Duration) logrus.Formatter {
	return &rateLimited{inner: inner, burst: burst, period: period, seen: map[string]*window{}, now: time.Now}
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

type rateLimited struct {
	inner  logrus.Formatter
	burst  int
	period time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*window
}

func (r *rateLimited) Format(e *logrus.Entry) ([]byte, error) {
	if e.Level > logrus.WarnLevel {
		return r.inner.Format(e)
	}
	key := e.Level.String() + "\x00" + e.Message
	now := r.now()
	r.mu.Lock()
	w, ok := r.seen[key]
	if !ok {
		if len(r.seen) >= maxKeys {
			clear(r.seen)
		}
		w = &window{start: now}
		r.seen[key] = w
	}
	if now.Sub(w.start) >= r.period {
		w.start, w.n = now, 0
	}
	w.n++
	if w.n > r.burst {
		w.suppressed++
		r.mu.Unlock()
		return nil, nil
	}
	left := w.suppressed
	w.suppressed = 0
	r.mu.Unlock()
	if left > 0 {
		ne := e.WithField("suppressed_repeats", left)
		ne.Level, ne.Message, ne.Time, ne.Caller = e.Level, e.Message, e.Time, e.Caller
		e = ne
	}
	return r.inner.Format(e)
}
