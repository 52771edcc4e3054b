package logx

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// 50,000 identical warnings (the malformed-message flood of issue 14) write
// a handful of lines, not megabytes; other messages and info lines pass.
func TestRepeatedWarningsAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l, err := New("text", "info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	l.Formatter.(*rateLimited).now = func() time.Time { return clock }
	for i := 0; i < 50000; i++ {
		l.WithField("endpoint", i).Warn("dropped undecodable message")
	}
	l.Warn("another warning")
	l.Info("info is not limited")
	l.Info("info is not limited")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if got := strings.Count(buf.String(), "dropped undecodable message"); got != DefaultBurst {
		t.Fatalf("%d lines of the repeated warning, want %d; %d bytes written", got, DefaultBurst, buf.Len())
	}
	if len(lines) != DefaultBurst+3 {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), DefaultBurst+3, buf.String())
	}
	clock = clock.Add(DefaultPeriod)
	l.Warn("dropped undecodable message")
	last := buf.String()[strings.LastIndex(strings.TrimSpace(buf.String()), "\n")+1:]
	if !strings.Contains(last, "suppressed_repeats=49995") || !strings.Contains(last, "level=warning") {
		t.Fatalf("after the period the next line must say how many were left out: %q", last)
	}
	if buf.Len() > 4096 {
		t.Fatalf("%d bytes written for 50,000 identical warnings", buf.Len())
	}
}
