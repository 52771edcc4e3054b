package manager_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// A manager without heartbeat flags reports as often as its interchange
// asks in the answer to its registration, not at its own 10s default.
func TestManagerTakesTheInterchangesHeartbeat(t *testing.T) {
	f := start(t, manager.Options{Workers: 1, HeartbeatInterval: 10 * time.Second, HeartbeatThreshold: 30 * time.Second, InheritHeartbeat: true}, true)
	f.ExpectType(t, 5*time.Second, mgrID, messages.TypeManagerStatusReport)
	f.Send(t, mgrID, &messages.Heartbeat{Interval: int64(100 * time.Millisecond), Threshold: int64(time.Second)})
	t0 := time.Now()
	isReport := func(r testutil.Received) bool { return r.Type() == messages.TypeManagerStatusReport }
	base := f.Count(isReport)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := f.Count(isReport) - base; n < 5 {
			return fmt.Errorf("%d status reports since the timing was sent", n)
		}
		return nil
	})
	t.Logf("5 status reports %s after the interchange announced a 100ms interval (own default 10s)", time.Since(t0).Round(time.Millisecond))
}
