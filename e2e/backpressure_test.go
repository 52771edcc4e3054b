package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestBackpressureStoppedManager queues 100k tasks toward a manager that
// is stopped (SIGSTOP, shorter than the threshold would matter: it is
// paused well past it and comes back). Nothing may be dropped: the
// interchange pauses pushes at its queue limit and the forwarder holds the
// rest; once the manager is back every task ends success.
func TestBackpressureStoppedManager(t *testing.T) {
	c := newCluster(t, clusterOpts{ixArgs: []string{"--pause-queued-tasks", "20000", "--resume-queued-tasks", "10000"}})
	m := c.addManager("m1", 4, 1000)
	m.Signal(syscall.SIGSTOP)

	const n = 100000
	ids := c.submit(manyOf(noop(), n), 10000)
	v := c.waitEndpoint(30*time.Second, func(v endpointView) error {
		if v.ServingState != "PUSH_PAUSED" {
			return fmt.Errorf("endpoint serving state %s (queued %d)", v.ServingState, v.Queued)
		}
		return nil
	})
	var held struct {
		Held int `json:"held_by_forwarder"`
	}
	if err := c.getJSON(c.api()+"/v1/endpoints/"+c.ep, &held); err != nil {
		t.Fatal(err)
	}
	if held.Held == 0 {
		t.Fatalf("endpoint paused with %d queued, but the forwarder holds nothing", v.Queued)
	}
	t.Logf("BACKPRESSURE interchange queued %d and paused; forwarder holds %d", v.Queued, held.Held)

	m.Signal(syscall.SIGCONT)
	final := c.waitTerminal(ids, 180*time.Second)
	counts := countStates(final)
	if counts["success"] != n {
		t.Fatalf("after the manager came back: %v", counts)
	}
}

// TestManagerKillLoop kills a manager with SIGKILL again and again during
// a run and restarts it each time; no task is lost and each ends success.
func TestManagerKillLoop(t *testing.T) {
	// Enough retries that five kills cannot use them up (the default, 2,
	// fails a task that was on the killed manager three times: by design).
	c := newCluster(t, clusterOpts{ixArgs: []string{"--max-retries", "10"}})
	c.addManager("m1", 4, 0)
	m2 := c.addManager("m2", 4, 0)
	runs := filepath.Join(c.dir, "runs.log")
	const n = 600
	tasks := make([]task, n)
	for i := range tasks {
		tasks[i] = execTask("sh", "-c", fmt.Sprintf("echo tok-%d >> %s; sleep 0.05", i, runs))
	}
	ids := c.submit(tasks, 200)
	kills := 0
	for kills < 5 {
		s, err := c.statuses(ids)
		if err != nil {
			t.Fatal(err)
		}
		if countStates(s)["success"] == n {
			break
		}
		waitFor(t, 30*time.Second, func() error {
			st, err := c.mgrStatus(m2)
			if err != nil {
				return err
			}
			if !st.Registered || st.Held == 0 {
				return errors.New("m2 is not running tasks")
			}
			return nil
		})
		m2.Kill9()
		kills++
		m2.Restart()
		c.waitManagerListed("m2", 30*time.Second)
	}
	final := c.waitTerminal(ids, 120*time.Second)
	if got := countStates(final)["success"]; got != n {
		t.Fatalf("%d of %d tasks succeeded: %v", got, n, countStates(final))
	}
	lost, dups := countExecutions(t, runs, n)
	if lost > 0 {
		t.Fatalf("%d tasks never ran", lost)
	}
	t.Logf("KILLLOOP tasks=%d kills=%d lost=0 duplicate_executions=%d", n, kills, dups)
}
