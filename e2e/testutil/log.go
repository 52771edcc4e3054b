package testutil

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// keptLogBytes is how much of a daemon's log a failed test prints.
const keptLogBytes = 64 << 10

// LogBuffer keeps the tail of a daemon's log so a failing test can show it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 2*keptLogBytes {
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-keptLogBytes:]...)
		b.buf.Reset()
		b.buf.Write(tail)
	}
	return len(p), nil
}

// String is the kept tail.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > keptLogBytes {
		s = s[len(s)-keptLogBytes:]
	}
	return s
}

// Contains reports whether the kept log holds substr.
func (b *LogBuffer) Contains(substr string) bool { return strings.Contains(b.String(), substr) }

// Logger returns a logger named name whose output is kept in memory and
// printed with t.Log only if the test fails. SWITCHYARD_TEST_LOG=1 streams
// it to stderr as well.
func Logger(t testing.TB, name string) (*logrus.Entry, *LogBuffer) {
	t.Helper()
	buf := &LogBuffer{}
	l := logrus.New()
	var w io.Writer = buf
	if os.Getenv("SWITCHYARD_TEST_LOG") != "" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	l.SetOutput(w)
	l.SetLevel(logrus.InfoLevel)
	if os.Getenv("SWITCHYARD_TEST_LOG") == "debug" {
		l.SetLevel(logrus.DebugLevel)
	}
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- log of %s (tail) ---\n%s", name, buf.String())
		}
	})
	return logrus.NewEntry(l).WithField("test_daemon", name), buf
}
