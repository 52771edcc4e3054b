// Package logx builds the logrus logger each daemon is given.
package logx

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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
	l.SetFormatter(RateLimit(l.Formatter, DefaultBurst, DefaultMessageBurst, DefaultPeriod))
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

// Repeated warnings: at most DefaultBurst identical ones (same level,
// message and fields but the error) per DefaultPeriod, and at most
// DefaultMessageBurst of one message whatever its fields (a flood from many
// peer ids).
const (
	DefaultBurst        = 5
	DefaultMessageBurst = 100
	DefaultPeriod       = 10 * time.Second
	maxKeys             = 4096
)

// RateLimit wraps a formatter so that warnings and errors are written at
// most burst times per period when identical (level, message and fields
// other than the error) and at most messageBurst times per period for one
// message; the next line written says how many were left out. Bad input
// from the network must not fill the disk with identical lines.
func RateLimit(inner logrus.Formatter, burst, messageBurst int, period time.Duration) logrus.Formatter {
	return &rateLimited{inner: inner, burst: burst, messageBurst: messageBurst, period: period,
		seen: map[string]*window{}, now: time.Now}
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// allow counts one line in the window and says whether it may be written.
func (w *window) allow(now time.Time, period time.Duration, burst int) bool {
	if now.Sub(w.start) >= period {
		w.start, w.n = now, 0
	}
	w.n++
	if w.n > burst {
		w.suppressed++
		return false
	}
	return true
}

type rateLimited struct {
	inner        logrus.Formatter
	burst        int
	messageBurst int
	period       time.Duration
	now          func() time.Time

	mu   sync.Mutex
	seen map[string]*window
}

func (r *rateLimited) window(key string, now time.Time) *window {
	w, ok := r.seen[key]
	if !ok {
		if len(r.seen) >= maxKeys {
			clear(r.seen)
		}
		w = &window{start: now}
		r.seen[key] = w
	}
	return w
}

func (r *rateLimited) Format(e *logrus.Entry) ([]byte, error) {
	if e.Level > logrus.WarnLevel {
		return r.inner.Format(e)
	}
	msgKey := e.Level.String() + "\x00" + e.Message
	key := msgKey + "\x00" + fieldsKey(e.Data)
	now := r.now()
	r.mu.Lock()
	kw, mw := r.window(key, now), r.window(msgKey, now)
	if !kw.allow(now, r.period, r.burst) {
		r.mu.Unlock()
		return nil, nil
	}
	if !mw.allow(now, r.period, r.messageBurst) {
		kw.n--
		r.mu.Unlock()
		return nil, nil
	}
	same, similar := kw.suppressed, mw.suppressed
	kw.suppressed, mw.suppressed = 0, 0
	r.mu.Unlock()
	if same > 0 || similar > 0 {
		ne := e.WithFields(logrus.Fields{})
		if same > 0 {
			ne = ne.WithField("suppressed_repeats", same)
		}
		if similar > 0 {
			ne = ne.WithField("suppressed_similar", similar)
		}
		ne.Level, ne.Message, ne.Time, ne.Caller = e.Level, e.Message, e.Time, e.Caller
		e = ne
	}
	return r.inner.Format(e)
}

// fieldsKey is the fields but the error, in a stable order.
func fieldsKey(d logrus.Fields) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		if k != logrus.ErrorKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%v\x00", k, d[k])
	}
	return b.String()
}
