package interchange_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

func tasks(n int, arg string) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"kind": "exec", "args": []string{"echo", arg}}
	}
	return out
}

// A full disk under the interchange's store: it says push-paused (a batch
// arriving before the forwarder knows is given back), tasks wait at the
// forwarder, the interchange keeps running and holds no
// more than before, and once space returns it takes them by itself. Every
// task it acknowledged survives a restart: all run and succeed.
func TestInterchangeDiskFullCycle(t *testing.T) {
	dir := testutil.SmallDisk(t, "8m")
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: t.TempDir()})
	f.Enroll(t, ep)
	c := f.Client()
	ixOpts := interchange.Options{EndpointID: ep, Forwarder: f.ZMQAddr(), StateDir: dir}
	ix := testutil.StartInterchange(t, ixOpts)

	const n = 200
	before, err := c.Submit(ep, tasks(n, strings.Repeat("a", 200))...)
	if err != nil {
		t.Fatal(err)
	}
	waitStates(t, c, before, "waiting-for-nodes")

	testutil.FillDisk(t, dir)
	during, err := c.Submit(ep, tasks(n, strings.Repeat("b", 200))...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		if !ix.Log.Contains("store refuses writes") {
			return errors.New("the interchange has not said its store refuses writes")
		}
		return nil
	})
	// The loop goes on: its published view follows the store's refusal.
	var view interchange.StatusView
	testutil.WaitFor(t, 10*time.Second, func() error {
		if view = ix.Status(); view.ServingState != messages.PushPaused.String() {
			return fmt.Errorf("serving state %q while the store refuses writes, want %s", view.ServingState, messages.PushPaused)
		}
		return nil
	})
	t.Logf("interchange while its disk is full: serving state %s, %d queued, %v batches given back", view.ServingState, view.Queued,
		testutil.Metric(t, ix.Reg, "switchyard_interchange_task_batches_refused_total"))
	// Bounded: at most the batch it took before its first failed commit.
	if view.Queued > 2*n {
		t.Errorf("%d tasks queued while the disk was full", view.Queued)
	}
	for _, l := range strings.Split(ix.Log.String(), "\n") {
		if strings.Contains(l, "store refuses writes") {
			t.Logf("operator sees: %s", l)
			break
		}
	}

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		if !ix.Log.Contains("store takes writes again") {
			return errors.New("the interchange has not resumed")
		}
		return nil
	})
	all := append(append([]string{}, before...), during...)
	waitStates(t, c, all, "waiting-for-nodes")

	// Everything acknowledged is in the store: a restarted interchange
	// recovers it, and a manager runs it all.
	ix.Stop()
	ix2 := testutil.StartInterchange(t, ixOpts)
	want := fmt.Sprintf("recovering: %d tasks unfinished", 2*n)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !ix2.Log.Contains(want) {
			return fmt.Errorf("restarted interchange did not recover every acknowledged task (%q)", want)
		}
		return nil
	})
	testutil.StartManager(t, manager.Options{Interchange: ix2.ManagersAddr(), ManagerID: "m1", Workers: 8})
	for _, v := range c.WaitTerminal(t, all, 60*time.Second) {
		if v.State != "success" {
			t.Fatalf("task %s ended %s: %s", v.TaskID, v.State, v.Error)
		}
	}
}

func waitStates(t *testing.T, c *testutil.Client, ids []string, state string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() error {
		ts, err := c.Status(ids)
		if err != nil {
			return err
		}
		for _, v := range ts {
			if v.State != state {
				return fmt.Errorf("task %s is %s, want %s", v.TaskID, v.State, state)
			}
		}
		return nil
	})
}
