package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs a package's tests and fails if any goroutine is left
// behind: every daemon must stop completely. Call it from TestMain.
func VerifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of test HTTP clients.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}
