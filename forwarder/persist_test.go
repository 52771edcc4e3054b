package forwarder_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// A restarted forwarder finds every task it accepted, and re-sends the
// unfinished ones to the endpoint when it connects: with the log in its
// state dir, and with PostgreSQL.
func TestForwarderRestartKeepsTasks(t *testing.T) {
	t.Run("log", func(t *testing.T) { testRestartKeepsTasks(t, "") })
	t.Run("postgres", func(t *testing.T) { testRestartKeepsTasks(t, pgtest.Start(t).Database(t)) })
}

func testRestartKeepsTasks(t *testing.T, storeURL string) {
	dir := t.TempDir()
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir, Store: storeURL})
	f.Enroll(t, "ep1")
	c := f.Client()
	ids, err := c.Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", "kept"}}, 300)...)
	if err != nil {
		t.Fatal(err)
	}
	cancelled := ids[0]
	c.Must(t, http.StatusOK, http.MethodDelete, "/v1/tasks/"+cancelled, nil, nil)
	f.Stop()

	// With a database the state dir holds nothing of the tasks.
	if storeURL != "" {
		dir = t.TempDir()
	}
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir, Store: storeURL})
	f2.Enroll(t, "ep1")
	if !f2.Log.Contains("recovering: 299 tasks unfinished of 300 stored") {
		t.Fatalf("no recovery line in the log:\n%s", f2.Log.String())
	}
	c2 := f2.Client()
	ts, err := c2.Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, tv := range ts {
		if tv.TaskID != ids[i] {
			t.Fatalf("task %d: id %s, want %s", i, tv.TaskID, ids[i])
		}
		want := "waiting-for-endpoint"
		if ids[i] == cancelled {
			want = "cancelled"
		}
		if tv.State != want {
			t.Fatalf("task %s after restart: %s, want %s", tv.TaskID, tv.State, want)
		}
	}
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: f2.ZMQAddr()})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 4})
	final := c2.WaitTerminal(t, ids, 60*time.Second)
	for _, tv := range final {
		want := "success"
		if tv.TaskID == cancelled {
			want = "cancelled"
		}
		if tv.State != want {
			t.Fatalf("task %s ended %s, want %s", tv.TaskID, tv.State, want)
		}
	}
}

func manyOf(task map[string]any, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = task
	}
	return out
}

// Two forwarders on one state dir: the second refuses to start and says why.
func TestForwarderDoubleStart(t *testing.T) {
	dir := t.TempDir()
	testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	_, err := forwarder.New(forwarder.Options{StateDir: dir, ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*"})
	if err == nil {
		t.Fatal("a second forwarder started on the same state dir")
	}
	if !strings.Contains(err.Error(), "in use by pid") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("error %q should name the dir and the pid holding it", err)
	}
}

// A state file that is not ours, or is damaged, stops the start with an
// error that names the file.
func TestForwarderRefusesForeignStateFile(t *testing.T) {
	dir := t.TempDir()
	// The state log, and the B-tree file of an earlier version that a
	// first start copies into a new log.
	for _, name := range []string{"forwarder.log", "forwarder.db"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := forwarder.New(forwarder.Options{StateDir: dir, ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*"})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("New on a foreign %s: %v", name, err)
		}
		// The lock is released on failure: a clean start on a fresh file works.
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
}

// On a full filesystem new submissions get a 503 naming the cause, what
// was accepted stays readable, and once space returns submissions work
// again without a restart; nothing accepted is lost.
func TestForwarderDiskFull(t *testing.T) {
	dir := testutil.SmallDisk(t, "8m")
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, "ep1")
	c := f.Client()
	big := map[string]any{"kind": "exec", "args": []string{"echo", strings.Repeat("x", 2000)}}
	accepted, err := c.Submit("ep1", manyOf(big, 50)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.FillDisk(t, dir)
	submit := func() (int, string) {
		var resp struct {
			TaskIDs []string `json:"task_ids"`
			Error   string   `json:"error"`
		}
		code, body, err := c.Do(http.MethodPost, "/v1/endpoints/ep1/tasks", map[string]any{"tasks": manyOf(big, 20)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatalf("HTTP %d body %q: %v", code, body, err)
		}
		accepted = append(accepted, resp.TaskIDs...)
		return code, resp.Error
	}
	code, refusal := submit()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("submit on a full disk: HTTP %d", code)
	}
	if !strings.Contains(refusal, "store") || !strings.Contains(refusal, "disk full") {
		t.Fatalf("refusal %q should name the store and the cause", refusal)
	}
	t.Logf("operator sees: HTTP 503 %s", refusal)
	ts, err := c.Status(accepted)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.State != "waiting-for-endpoint" {
			t.Fatalf("accepted task %s reads %q", tv.TaskID, tv.State)
		}
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, func() error {
		if code, msg := submit(); code != http.StatusAccepted {
			return fmt.Errorf("HTTP %d %s", code, msg)
		}
		return nil
	})
	f.Stop()
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f2.Enroll(t, "ep1")
	ts, err = f2.Client().Status(accepted)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.State != "waiting-for-endpoint" {
			t.Fatalf("after restart, accepted task %s reads %q", tv.TaskID, tv.State)
		}
	}
}

// filesHolding names the files under dir that contain s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted meanwhile by the store
		}
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Finished tasks are forgotten after the retention period, in memory and
// in the store; unfinished ones are kept however old.
func TestRetentionForgetsFinishedTasks(t *testing.T) {
	dir := t.TempDir()
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir, Retention: 300 * time.Millisecond, CompactInterval: time.Nanosecond})
	f.Enroll(t, "ep1")
	f.Enroll(t, "ep2")
	c := f.Client()
	const secret = "pruned-argument-7f3a9c"
	ids, err := c.Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", secret}}, 20)...)
	if err != nil {
		t.Fatal(err)
	}
	const kept = "kept-argument-51e2b8"
	waiting, err := c.Submit("ep2", map[string]any{"kind": "exec", "args": []string{"echo", kept}})
	if err != nil {
		t.Fatal(err)
	}
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: f.ZMQAddr()})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1"})
	c.WaitTerminal(t, ids, 20*time.Second)
	// The 20 end at different times, so each is pruned in its turn.
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, id := range ids {
			code, body, err := c.Do(http.MethodGet, "/v1/tasks/"+id, nil, nil)
			if err != nil {
				return err
			}
			if code != http.StatusNotFound || !strings.Contains(string(body), "kept for 300ms") {
				return fmt.Errorf("finished task still there: %d %s", code, body)
			}
		}
		return nil
	})
	if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_tasks_pruned_total"); v != 20 {
		t.Fatalf("tasks_pruned_total = %v, want 20", v)
	}
	if v, err := c.Get(waiting[0]); err != nil || v.State != "waiting-for-endpoint" {
		t.Fatalf("an unfinished task was forgotten: %+v %v", v, err)
	}
	// Pruned tasks' arguments do not stay readable in any file of the
	// state dir: the janitor compacts what it pruned. Pebble deletes the
	// files a compaction replaced in the background, hence the wait.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if in := filesHolding(t, dir, secret); len(in) > 0 {
			return fmt.Errorf("%v still hold the arguments of pruned tasks", in)
		}
		if len(filesHolding(t, dir, kept)) == 0 {
			return errors.New("the store lost the unfinished task's arguments")
		}
		return nil
	})
	f.Stop()
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir, Retention: -1})
	f2.Enroll(t, "ep1")
	if !f2.Log.Contains("recovering: 1 tasks unfinished of 1 stored") {
		t.Fatalf("pruned tasks came back from the store:\n%s", f2.Log.String())
	}
}

// The disk-full bug of issue 14: while its store was failing, the
// forwarder acknowledged re-sent results as duplicates, the interchange
// forgot them, and after a restart the tasks ran again and their first
// results were lost. A result, re-sent or not, is acknowledged only once
// it is durable: every acknowledged result survives a restart.
func TestResultsAckedOnlyWhenDurable(t *testing.T) {
	dir := testutil.SmallDisk(t, "8m")
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, ep)
	e := &fakeEndpoint{Peer: testutil.NewDealer(t, "interchange", ep, f.ZMQAddr(), testutil.PeerOptions{AckTasks: true}), f: f, c: f.Client()}
	e.register(t)
	const n = 40
	ids, err := e.c.Submit(ep, manyOf(map[string]any{"kind": "noop"}, n)...)
	if err != nil {
		t.Fatal(err)
	}
	sent := e.received(t, ids)
	testutil.FillDisk(t, dir)
	// Results big enough to need new pages, which the full disk refuses.
	results := make([]messages.Result, 0, n)
	for _, id := range ids {
		x := sent[id]
		results = append(results, messages.Result{ID: x.ID, Attempt: x.Attempt, Code: messages.Success,
			Payload: []byte(`{"out":"` + strings.Repeat("r", 8000) + `"}`), Finished: time.Now().UnixNano()})
	}
	acked := map[messages.TaskID]bool{}
	countAcks := func() {
		for _, r := range e.All() {
			if a, ok := r.Msg.(*messages.Ack); ok {
				for _, id := range a.IDs {
					acked[id] = true
				}
			}
		}
	}
	// First sending, then the interchange's re-sends after its threshold.
	for round := 0; round < 3; round++ {
		e.Send(t, "", &messages.ResultBatch{Results: results})
		e.Sync(t, "")
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if testutil.Metric(t, f.Reg, "switchyard_forwarder_store_errors_total") < 1 {
			return errors.New("no store commit has failed yet")
		}
		return nil
	})
	e.Send(t, "", &messages.ResultBatch{Results: results})
	e.Sync(t, "")
	countAcks()
	t.Logf("%d of %d results acknowledged while the disk was full", len(acked), n)
	f.Stop()
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	ts, err := f2.Client().Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for i, tv := range ts {
		id := sent[ids[i]].ID
		if acked[id] && tv.State != "success" {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d results were acknowledged but are not in the store after a restart; the interchange has forgotten them", lost)
	}
}

// Tasks of an endpoint deleted before its tasks' failure was stored (a
// crash in between) fail when the forwarder starts again, instead of
// waiting forever for an interchange that can never connect.
func TestDeletedEndpointsTasksFailAtStart(t *testing.T) {
	dir := t.TempDir()
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, "gone")
	ids, err := f.Client().Submit("gone", manyOf(map[string]any{"kind": "noop"}, 3)...)
	if err != nil {
		t.Fatal(err)
	}
	f.Stop()
	st, _, err := taskstore.Open(taskstore.Config{URL: "pebble", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteEndpoint("gone"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	ts, err := f2.Client().Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.State != "failed" || !strings.Contains(tv.Error, "endpoint gone was deleted") {
			t.Fatalf("task of a deleted endpoint after restart: %s %q", tv.State, tv.Error)
		}
	}
}

// A damaged store (a bit flipped in the middle of its largest table, or
// that table cut short; a clean stop leaves everything in tables) stops the start with an error naming it; nothing
// is truncated or dropped.
func TestForwarderRefusesDamagedStore(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"bit flip", func(b []byte) []byte { b[len(b)/2] ^= 0x10; return b }},
		{"truncation", func(b []byte) []byte { return b[:len(b)-37] }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
			f.Enroll(t, "ep1")
			if _, err := f.Client().Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", strings.Repeat("y", 300)}}, 2000)...); err != nil {
				t.Fatal(err)
			}
			f.Stop()
			var big string
			var size int64
			_ = filepath.WalkDir(filepath.Join(dir, taskstore.PebbleDir), func(p string, d fs.DirEntry, err error) error {
				if fi, ferr := d.Info(); err == nil && ferr == nil && !d.IsDir() && strings.HasSuffix(p, ".sst") && fi.Size() > size {
					big, size = p, fi.Size()
				}
				return err
			})
			b, err := os.ReadFile(big)
			if err != nil {
				t.Fatal(err)
			}
			b = c.damage(b)
			if err := os.WriteFile(big, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = forwarder.New(forwarder.Options{StateDir: dir, ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*"})
			if err == nil || !strings.Contains(err.Error(), taskstore.PebbleDir) || !strings.Contains(err.Error(), "store check") {
				t.Fatalf("start on a store with a %s in %s: %v", c.name, filepath.Base(big), err)
			}
			t.Logf("operator sees (%s in %s): %v", c.name, filepath.Base(big), err)
			if after, _ := os.ReadFile(big); !bytes.Equal(after, b) {
				t.Fatalf("the failed start changed %s", big)
			}
		})
	}
}
