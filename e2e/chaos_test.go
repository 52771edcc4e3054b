package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestChaosKill9 runs a few thousand tasks while the forwarder, the
// interchange and a manager are each killed with SIGKILL and restarted
// with their original commands. Every task must end success exactly once
// (executions may repeat: at-least-once), and no final state may change.
func TestChaosKill9(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.addManager("m1", 4, 4)
	c.addManager("m2", 4, 4)
	runs := filepath.Join(c.dir, "runs.log")

	const n = 2000
	tasks := make([]task, n)
	for i := range tasks {
		// Each run appends its token, so executions can be counted; every
		// tenth task is long enough to be caught mid-run by a kill.
		script := fmt.Sprintf("echo tok-%d >> %s", i, runs)
		if i%10 == 0 {
			script += "; sleep 0.2"
		}
		tasks[i] = execTask("sh", "-c", script)
	}
	ids := c.submit(tasks, 250)

	doneAtLeast := func(frac float64) {
		t.Helper()
		waitFor(t, 120*time.Second, func() error {
			s, err := c.statuses(ids)
			if err != nil {
				return err
			}
			done := 0
			for _, v := range s {
				if terminal(v.State) {
					done++
				}
			}
			if float64(done) < frac*n {
				return fmt.Errorf("%d of %d done, waiting for %.0f%%", done, n, 100*frac)
			}
			return nil
		})
	}
	connected := func(managers int) func(endpointView) error {
		return func(v endpointView) error {
			if !v.Connected || v.Managers < managers {
				return fmt.Errorf("connected=%v managers=%d", v.Connected, v.Managers)
			}
			return nil
		}
	}

	doneAtLeast(0.15)
	killed := c.fwd.Kill9()
	c.fwd.Restart()
	c.waitEndpoint(60*time.Second, connected(2))
	fwdRecovery := time.Since(killed)

	doneAtLeast(0.40)
	killed = c.ix.Kill9()
	c.ix.Restart()
	// The old process is gone, so any answer is the new one's.
	waitFor(t, 60*time.Second, func() error {
		st, err := c.ixStatus()
		if err != nil {
			return err
		}
		if !st.ForwarderConnected || len(st.ids()) < 2 {
			return fmt.Errorf("restarted interchange: forwarder connected %v, managers %v", st.ForwarderConnected, st.ids())
		}
		return nil
	})
	ixRecovery := time.Since(killed)

	doneAtLeast(0.65)
	m1 := c.mgrs["m1"]
	killed = m1.Kill9()
	m1.Restart()
	waitFor(t, 60*time.Second, func() error {
		st, err := c.mgrStatus(m1)
		if err != nil {
			return err
		}
		if !st.Registered {
			return errors.New("restarted manager not registered yet")
		}
		return nil
	})
	mgrRecovery := time.Since(killed)

	final := c.waitTerminal(ids, 180*time.Second)
	bad := 0
	for _, id := range ids {
		if v := final[id]; v.State != "success" {
			bad++
			if bad < 5 {
				t.Errorf("task %s ended %s (attempts %d): %s", id, v.State, v.Attempts, v.Error)
			}
		}
	}

	lost, dups := countExecutions(t, runs, n)
	if lost > 0 {
		t.Errorf("%d tasks never ran", lost)
	}

	// Final states are final: a later read changes nothing.
	waitFor(t, 10*time.Second, func() error {
		again, err := c.statuses(ids)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if again[id].State != final[id].State {
				return errors.New("a final state changed: " + id + " " + final[id].State + " -> " + again[id].State)
			}
		}
		return nil
	})
	t.Logf("CHAOS tasks=%d not_success=%d lost=%d duplicate_executions=%d recovery forwarder=%s interchange=%s manager=%s",
		n, bad, lost, dups, fwdRecovery.Round(time.Millisecond), ixRecovery.Round(time.Millisecond), mgrRecovery.Round(time.Millisecond))
}

// countExecutions reads the tokens tasks tok-0..tok-(n-1) appended to path
// and returns how many never ran and how many extra runs there were.
func countExecutions(t *testing.T, path string, n int) (lost, dups int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	execs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		execs[line]++
	}
	for i := 0; i < n; i++ {
		switch k := fmt.Sprintf("tok-%d", i); execs[k] {
		case 0:
			lost++
		default:
			dups += execs[k] - 1
		}
	}
	return lost, dups
}
