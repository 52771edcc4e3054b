package testutil

import (
	"fmt"
	"testing"
	"time"
)

// WaitFor calls cond until it returns nil or timeout passes; then the test
// fails with the last error. It polls every few milliseconds, backing off to
// 20ms, and never sleeps longer than the time left.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll is WaitFor without a testing.TB, for goroutines that must not call
// t.Fatal: it returns the last error, or nil once cond held.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	step := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		timer := time.NewTimer(min(step, left))
		<-timer.C
		step = min(2*step, 20*time.Millisecond)
	}
}

// Errorf is fmt.Errorf, re-exported so conditions read short.
func Errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
