package logx

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// 50,000 identical warnings (the malformed-message flood of issue 14, one
// peer, a different decode error each time) write a handful of lines, not
// megabytes; the next line after the period says how many were left out.
// Warnings about different peers pass, up to a cap per message; info
// lines are never limited.
func TestRepeatedWarningsAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l, err := New("text", "info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	l.Formatter.(*rateLimited).now = func() time.Time { return clock }
	for i := 0; i < 50000; i++ {
		l.WithField("endpoint", "noise").WithError(errors.New(fmt.Sprint("bad frame ", i))).Warn("dropped undecodable message")
	}
	if got := strings.Count(buf.String(), "dropped undecodable message"); got != DefaultBurst {
		t.Fatalf("%d lines of the repeated warning, want %d; %d bytes written", got, DefaultBurst, buf.Len())
	}
	for i := 0; i < 20; i++ {
		l.WithField("manager", fmt.Sprint("m", i)).Warn("manager lost")
	}
	if got := strings.Count(buf.String(), "manager lost"); got != 20 {
		t.Fatalf("%d lines for 20 different managers lost, want 20", got)
	}
	for i := 0; i < 2000; i++ {
		l.WithField("endpoint", fmt.Sprint("random-", i)).Warn("registration refused")
	}
	if got := strings.Count(buf.String(), "registration refused"); got != DefaultMessageBurst {
		t.Fatalf("%d lines for 2000 random endpoint ids, want the cap of %d", got, DefaultMessageBurst)
	}
	before := strings.Count(buf.String(), "\n")
	l.Info("info is not limited")
	l.Info("info is not limited")
	if got := strings.Count(buf.String(), "\n") - before; got != 2 {
		t.Fatalf("%d info lines written of 2", got)
	}
	clock = clock.Add(DefaultPeriod)
	l.WithField("endpoint", "noise").Warn("dropped undecodable message")
	out := strings.TrimSpace(buf.String())
	last := out[strings.LastIndex(out, "\n")+1:]
	if !strings.Contains(last, "suppressed_repeats=49995") || !strings.Contains(last, "level=warning") || !strings.Contains(last, "endpoint=noise") {
		t.Fatalf("after the period the next line must say how many were left out: %q", last)
	}
	if buf.Len() > 32<<10 {
		t.Fatalf("%d bytes written", buf.Len())
	}
}
