package manager_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

const mgrID = "m1"

// fakeInterchange is a raw ROUTER the manager under test connects to.
type fakeInterchange struct {
	*testutil.Peer
	mg *testutil.Manager
}

// start runs a manager against a fake interchange that heartbeats every
// 50ms and acks results, and registers it.
func start(t *testing.T, opts manager.Options, autoAck bool) *fakeInterchange {
	t.Helper()
	ix := testutil.NewRouter(t, "fake interchange", "", testutil.PeerOptions{Heartbeat: testutil.Interval, AutoAck: autoAck})
	opts.Interchange = ix.Addr()
	opts.ManagerID = mgrID
	if opts.HeartbeatThreshold == 0 {
		// The fake answers slowly under -race; only tests of loss use less.
		opts.HeartbeatThreshold = 5 * time.Second
	}
	mg := testutil.StartManager(t, opts)
	reg := ix.ExpectType(t, 10*time.Second, mgrID, messages.TypeRegistration).Msg.(*messages.Registration)
	if reg.Role != messages.RoleManager || reg.ID != mgrID || reg.ProtocolVersion != messages.Version {
		t.Fatalf("registration %+v", reg)
	}
	if int(reg.Workers) != opts.Workers || int(reg.Prefetch) != max(opts.Prefetch, 0) {
		t.Fatalf("registration says %d workers, %d prefetch; options %d, %d", reg.Workers, reg.Prefetch, opts.Workers, opts.Prefetch)
	}
	ix.Send(t, mgrID, &messages.Heartbeat{})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !mg.Status().Registered {
			return fmt.Errorf("manager not registered: %+v", mg.Status())
		}
		return nil
	})
	return &fakeInterchange{Peer: ix, mg: mg}
}

func spec(kind string, args ...string) taskspec.Spec { return taskspec.Spec{Kind: kind, Args: args} }

// submit sends specs as one TaskBatch and returns their ids.
func (f *fakeInterchange) submit(t *testing.T, specs ...taskspec.Spec) []messages.TaskID {
	t.Helper()
	b := &messages.TaskBatch{}
	ids := make([]messages.TaskID, len(specs))
	for i, s := range specs {
		ids[i] = testutil.NewTaskID()
		b.Tasks = append(b.Tasks, messages.Task{ID: ids[i], Attempt: 1, Payload: s.Encode()})
	}
	f.Send(t, mgrID, b)
	return ids
}

// result waits for the first result of id.
func (f *fakeInterchange) result(t *testing.T, id messages.TaskID, timeout time.Duration) messages.Result {
	t.Helper()
	r, _ := f.resultAt(t, id, timeout)
	return r
}

// resultAt waits for the first result of id and says when it arrived.
func (f *fakeInterchange) resultAt(t *testing.T, id messages.TaskID, timeout time.Duration) (messages.Result, time.Time) {
	t.Helper()
	var got messages.Result
	var at time.Time
	testutil.WaitFor(t, timeout, func() error {
		for _, rcv := range f.All() {
			b, ok := rcv.Msg.(*messages.ResultBatch)
			if !ok || rcv.Identity != mgrID {
				continue
			}
			for _, r := range b.Results {
				if r.ID == id {
					got, at = r, rcv.At
					return nil
				}
			}
		}
		return fmt.Errorf("no result for %s yet", id)
	})
	return got, at
}

func (f *fakeInterchange) resultsFor(id messages.TaskID) int {
	n := 0
	for _, r := range f.Results(mgrID) {
		if r.ID == id {
			n++
		}
	}
	return n
}

func execResult(t *testing.T, r messages.Result) taskspec.ExecResult {
	t.Helper()
	var er taskspec.ExecResult
	if err := json.Unmarshal(r.Payload, &er); err != nil {
		t.Fatalf("exec result payload %q: %v", r.Payload, err)
	}
	return er
}

func TestRunTasks(t *testing.T) {
	// Enough workers that every task starts at once, so the time from
	// sending the batch to receiving a result is the task's run time.
	f := start(t, manager.Options{Workers: 16, OutputLimit: 1000}, true)
	pidfile := filepath.Join(t.TempDir(), "child")
	type res = messages.Result
	cases := []struct {
		name  string
		spec  taskspec.Spec
		check func(t *testing.T, r res, took time.Duration)
	}{
		{"noop", spec("noop"), func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Success || r.Error != "" || len(r.Payload) != 0 {
				t.Errorf("noop: %+v", r)
			}
		}},
		{"sleep", spec("sleep", "0.05"), func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Success {
				t.Errorf("sleep: %s %q", r.Code.State(), r.Error)
			}
			if took < 50*time.Millisecond {
				t.Errorf("sleep 0.05 ended after %s", took)
			}
		}},
		{"exec success", spec("exec", "sh", "-c", "echo out; echo err >&2"), func(t *testing.T, r res, took time.Duration) {
			er := execResult(t, r)
			if r.Code != messages.Success || r.Error != "" || er.ExitCode != 0 || er.Stdout != "out\n" || er.Stderr != "err\n" || er.Truncated {
				t.Errorf("exec success: %s %q %+v", r.Code.State(), r.Error, er)
			}
		}},
		{"exec failure", spec("exec", "sh", "-c", "echo boom >&2; exit 3"), func(t *testing.T, r res, took time.Duration) {
			er := execResult(t, r)
			if r.Code != messages.Failed || r.Error != "exit status 3" || er.ExitCode != 3 || er.Stderr != "boom\n" {
				t.Errorf("exec failure: %s %q %+v", r.Code.State(), r.Error, er)
			}
		}},
		{"exec not found", spec("exec", "/nonexistent/program"), func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Failed || !strings.Contains(r.Error, "/nonexistent/program") {
				t.Errorf("exec of a missing program: %s %q", r.Code.State(), r.Error)
			}
		}},
		{"exec killed by signal", spec("exec", "sh", "-c", "kill -TERM $$"), func(t *testing.T, r res, took time.Duration) {
			er := execResult(t, r)
			if r.Code != messages.Failed || !strings.Contains(r.Error, "terminated") || er.ExitCode != -1 {
				t.Errorf("exec killed by a signal: %s %q %+v", r.Code.State(), r.Error, er)
			}
		}},
		{"output capped", spec("exec", "sh", "-c", "yes 0123456789 | head -c 5000; yes e | head -c 3000 >&2"), func(t *testing.T, r res, took time.Duration) {
			er := execResult(t, r)
			if r.Code != messages.Success || len(er.Stdout) != 1000 || len(er.Stderr) != 1000 || !er.Truncated {
				t.Errorf("capped output: %s %q stdout %d bytes, stderr %d bytes, truncated %v",
					r.Code.State(), r.Error, len(er.Stdout), len(er.Stderr), er.Truncated)
			}
			if !strings.HasPrefix(er.Stdout, "0123456789\n0123456789\n") {
				t.Errorf("capped output keeps the start: %q", er.Stdout[:30])
			}
		}},
		{"huge output capped", spec("exec", "head", "-c", "20000000", "/dev/zero"), func(t *testing.T, r res, took time.Duration) {
			er := execResult(t, r)
			if r.Code != messages.Success || len(er.Stdout) != 1000 || !er.Truncated {
				t.Errorf("huge output: %s %q stdout %d bytes", r.Code.State(), r.Error, len(er.Stdout))
			}
		}},
		{"exec timeout", taskspec.Spec{Kind: "exec", Args: []string{"sleep", "30"}, Timeout: "200ms"}, func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Failed || !strings.Contains(r.Error, "timed out") {
				t.Errorf("exec timeout: %s %q", r.Code.State(), r.Error)
			}
			if took > 10*time.Second {
				t.Errorf("exec with a 200ms timeout ended after %s", took)
			}
		}},
		{"exec timeout kills the process group", taskspec.Spec{Kind: "exec", Args: []string{"sh", "-c", "sleep 30 & echo $! > " + pidfile + "; sleep 30"}, Timeout: "300ms"},
			func(t *testing.T, r res, took time.Duration) {
				if r.Code != messages.Failed || !strings.Contains(r.Error, "timed out") {
					t.Errorf("exec timeout: %s %q", r.Code.State(), r.Error)
				}
				child, err := readPid(pidfile)
				if err != nil {
					t.Fatalf("background child's pid: %v", err)
				}
				testutil.WaitFor(t, 5*time.Second, func() error {
					if pidAlive(child) {
						return fmt.Errorf("background child %d of the timed-out shell still runs", child)
					}
					return nil
				})
				t.Logf("shell with a background child ended %s after the batch (timeout 300ms, WaitDelay 2s)", took.Round(time.Millisecond))
			}},
		{"sleep timeout", taskspec.Spec{Kind: "sleep", Args: []string{"30"}, Timeout: "100ms"}, func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Failed || r.Error != "timed out after 100ms" {
				t.Errorf("sleep timeout: %s %q", r.Code.State(), r.Error)
			}
		}},
		{"timeout not reached", taskspec.Spec{Kind: "exec", Args: []string{"true"}, Timeout: "30s"}, func(t *testing.T, r res, took time.Duration) {
			if r.Code != messages.Success {
				t.Errorf("fast exec with a long timeout: %s %q", r.Code.State(), r.Error)
			}
		}},
	}
	specs := make([]taskspec.Spec, len(cases))
	for i, tc := range cases {
		specs[i] = tc.spec
	}
	sent := time.Now()
	ids := f.submit(t, specs...)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, at := f.resultAt(t, ids[i], 20*time.Second)
			if r.Attempt != 1 || r.ID != ids[i] {
				t.Errorf("result for %s attempt %d", r.ID, r.Attempt)
			}
			tc.check(t, r, at.Sub(sent))
		})
	}
}

// A result says when its task started and finished (unix nanoseconds), so
// the forwarder can report completed_at from the node's clock.
func TestResultTimestamps(t *testing.T) {
	f := start(t, manager.Options{Workers: 2}, true)
	before := time.Now().UnixNano()
	ids := f.submit(t, spec("noop"), spec("sleep", "0.05"), spec("exec", "true"))
	for i, id := range ids {
		r := f.result(t, id, 10*time.Second)
		after := time.Now().UnixNano()
		if r.Started < before || r.Started > after {
			t.Errorf("task %d: Started %d outside [%d, %d]", i, r.Started, before, after)
		}
		if r.Finished < r.Started || r.Finished > after {
			t.Errorf("task %d (%s): Finished = %d, Started = %d; want Started <= Finished <= now", i, r.Code.State(), r.Finished, r.Started)
		}
	}
}

func TestBadPayloadFailsTheTask(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, true)
	id := testutil.NewTaskID()
	f.Send(t, mgrID, &messages.TaskBatch{Tasks: []messages.Task{{ID: id, Attempt: 1, Payload: []byte(`{"kind":"rm -rf"}`)}}})
	r := f.result(t, id, 10*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "bad task") || !strings.Contains(r.Error, "unknown kind") {
		t.Fatalf("bad payload: %s %q", r.Code.State(), r.Error)
	}
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return syscall.Kill(pid, 0) == nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, fmt.Errorf("%s empty", path)
	}
	return strconv.Atoi(s)
}

func TestCancelRunningExecKillsProcessGroup(t *testing.T) {
	f := start(t, manager.Options{Workers: 2}, true)
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "child")
	// The shell starts a background child and waits on a second sleep;
	// killing only the shell would leave the child holding stdout.
	ids := f.submit(t, spec("exec", "sh", "-c", "sleep 30 & echo $! > "+pidfile+"; sleep 30"))
	id := ids[0]
	var child int
	testutil.WaitFor(t, 10*time.Second, func() error {
		var err error
		child, err = readPid(pidfile)
		return err
	})
	if !pidAlive(child) {
		t.Fatalf("background child %d not running", child)
	}
	// The manager reports the task running in a status report.
	f.Expect(t, 5*time.Second, "Running delta", func(r testutil.Received) bool {
		m, ok := r.Msg.(*messages.ManagerStatusReport)
		if !ok {
			return false
		}
		for _, d := range m.Deltas {
			if d.ID == id && d.Code == messages.Running && d.Attempt == 1 {
				return true
			}
		}
		return false
	})

	cancelAt := time.Now()
	f.Send(t, mgrID, &messages.Command{ID: 7, Op: messages.OpCancel, TaskIDs: []messages.TaskID{id}})
	rep := f.Expect(t, 5*time.Second, "CommandReply 7", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.CommandReply)
		return ok && x.ID == 7
	}).Msg.(*messages.CommandReply)
	if !rep.OK() || !strings.Contains(rep.Message, "cancelling 1 of 1") {
		t.Errorf("cancel reply %+v", rep)
	}
	r := f.result(t, id, 10*time.Second)
	took := time.Since(cancelAt)
	if r.Code != messages.Cancelled || r.Error != "cancelled by request" {
		t.Errorf("cancelled exec: %s %q", r.Code.State(), r.Error)
	}
	if took > 10*time.Second {
		t.Errorf("cancel took %s to end the task", took)
	}
	t.Logf("cancel to result: %s", took.Round(time.Millisecond))
	testutil.WaitFor(t, 5*time.Second, func() error {
		if pidAlive(child) {
			return fmt.Errorf("background child %d of the cancelled task still runs", child)
		}
		return nil
	})
	if n := f.resultsFor(id); n != 1 {
		t.Errorf("%d results for the cancelled task, want 1", n)
	}
}

func TestCancelPendingTask(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, true)
	ids := f.submit(t, spec("sleep", "30"), spec("noop"))
	running, pending := ids[0], ids[1]
	// The one worker runs the sleep; the noop waits for it.
	f.Expect(t, 5*time.Second, "Running delta of the sleep", func(r testutil.Received) bool {
		m, ok := r.Msg.(*messages.ManagerStatusReport)
		if !ok {
			return false
		}
		for _, d := range m.Deltas {
			if d.ID == running && d.Code == messages.Running {
				return true
			}
		}
		return false
	})
	if n := f.resultsFor(pending); n != 0 {
		t.Fatalf("the second task ended with one worker busy")
	}
	// Cancelling the waiting task ends it at once, without waiting for a
	// worker to come free.
	f.Send(t, mgrID, &messages.Command{ID: 1, Op: messages.OpCancel, TaskIDs: []messages.TaskID{pending}})
	r := f.result(t, pending, 5*time.Second)
	if r.Code != messages.Cancelled {
		t.Errorf("pending task cancelled: %s %q", r.Code.State(), r.Error)
	}
	f.Send(t, mgrID, &messages.Command{ID: 2, Op: messages.OpCancel, TaskIDs: []messages.TaskID{running}})
	r = f.result(t, running, 5*time.Second)
	if r.Code != messages.Cancelled {
		t.Errorf("running sleep cancelled: %s %q", r.Code.State(), r.Error)
	}
	// Cancelling an unknown or finished task changes nothing.
	f.Send(t, mgrID, &messages.Command{ID: 3, Op: messages.OpCancel, TaskIDs: []messages.TaskID{running, testutil.NewTaskID()}})
	rep := f.Expect(t, 5*time.Second, "CommandReply 3", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.CommandReply)
		return ok && x.ID == 3
	}).Msg.(*messages.CommandReply)
	if !strings.Contains(rep.Message, "cancelling 0 of 2") {
		t.Errorf("reply to a cancel of ended tasks: %q", rep.Message)
	}
	f.Sync(t, mgrID)
	if f.resultsFor(running) != 1 || f.resultsFor(pending) != 1 {
		t.Errorf("results: running %d, pending %d; want one each", f.resultsFor(running), f.resultsFor(pending))
	}
}

func TestDuplicateTaskRunsOnce(t *testing.T) {
	f := start(t, manager.Options{Workers: 2}, true)
	id := testutil.NewTaskID()
	b := &messages.TaskBatch{Tasks: []messages.Task{{ID: id, Attempt: 1, Payload: spec("sleep", "0.3").Encode()}}}
	f.Send(t, mgrID, b)
	f.Send(t, mgrID, b)
	f.result(t, id, 10*time.Second)
	f.Sync(t, mgrID)
	f.Sync(t, mgrID)
	if n := f.resultsFor(id); n != 1 {
		t.Errorf("%d results for a task sent twice, want 1", n)
	}
	if v := testutil.Metric(t, f.mg.Reg, "switchyard_manager_duplicates_total"); v != 1 {
		t.Errorf("duplicates_total = %g, want 1", v)
	}
	if v := testutil.Metric(t, f.mg.Reg, "switchyard_manager_tasks_completed_total", "state", "success"); v != 1 {
		t.Errorf("tasks_completed_total{success} = %g, want 1", v)
	}
}

func TestStatusReportAndCapacity(t *testing.T) {
	f := start(t, manager.Options{Workers: 3, Prefetch: 2}, true)
	rep := f.ExpectType(t, 5*time.Second, mgrID, messages.TypeManagerStatusReport).Msg.(*messages.ManagerStatusReport)
	if rep.Workers != 3 || rep.Capacity != 5 || rep.ServingState != messages.NonePaused {
		t.Errorf("first report %+v, want 3 workers, capacity 5", rep)
	}
	f.submit(t, spec("sleep", "30"), spec("sleep", "30"))
	f.Expect(t, 5*time.Second, "report with 2 held", func(r testutil.Received) bool {
		m, ok := r.Msg.(*messages.ManagerStatusReport)
		return ok && m.Outstanding == 2 && m.Capacity == 3 && m.IdleWorkers == 1
	})
}

func TestMalformedFromInterchange(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, true)
	cases := []struct {
		name   string
		frames [][]byte
		code   messages.ErrorCode
	}{
		{"random bytes", [][]byte{{0xde, 0xad, 0xbe, 0xef, 0x00, 0x13}}, messages.CodeVersion},
		{"unknown type", [][]byte{{messages.Version, 200, 0x90}}, messages.CodeUnknownType},
		{"truncated", [][]byte{{messages.Version, byte(messages.TypeTaskBatch), 0x91, 0x93}}, messages.CodeMalformed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.SendRaw(mgrID, tc.frames); err != nil {
				t.Fatal(err)
			}
			rep := f.ExpectType(t, 5*time.Second, mgrID, messages.TypeErrorReply).Msg.(*messages.ErrorReply)
			if rep.Code != tc.code || rep.Reason == "" {
				t.Errorf("ErrorReply %+v, want code %s", rep, tc.code)
			}
			if v := testutil.Metric(t, f.mg.Reg, "switchyard_manager_malformed_messages_total"); v != float64(i+1) {
				t.Errorf("malformed_messages_total = %g, want %d", v, i+1)
			}
		})
	}
	ids := f.submit(t, spec("noop"))
	if r := f.result(t, ids[0], 10*time.Second); r.Code != messages.Success {
		t.Fatalf("manager stopped working after malformed input: %+v", r)
	}
}

func TestUnackedResultsResentAfterReregistration(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, false)
	ids := f.submit(t, spec("noop"))
	f.result(t, ids[0], 10*time.Second)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := f.mg.Status(); st.HeldResults != 1 {
			return fmt.Errorf("status %+v, want 1 unacked result", st)
		}
		return nil
	})

	regs := f.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration })
	f.Send(t, mgrID, &messages.Reregister{Reason: "test restarted"})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := f.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration }); n != regs+1 {
			return fmt.Errorf("%d registrations, want %d", n, regs+1)
		}
		return nil
	})
	f.Send(t, mgrID, &messages.Heartbeat{})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := f.resultsFor(ids[0]); n != 2 {
			return fmt.Errorf("result sent %d times, want 2 (re-sent after re-registration)", n)
		}
		return nil
	})
	f.Send(t, mgrID, &messages.Ack{IDs: ids})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := f.mg.Status(); st.HeldResults != 0 {
			return fmt.Errorf("status %+v, want no unacked result after the ack", st)
		}
		return nil
	})
	// A further re-registration re-sends nothing.
	f.Send(t, mgrID, &messages.Reregister{Reason: "again"})
	f.ExpectType(t, 5*time.Second, mgrID, messages.TypeRegistration)
	f.Send(t, mgrID, &messages.Heartbeat{})
	f.Sync(t, mgrID)
	f.Sync(t, mgrID)
	if n := f.resultsFor(ids[0]); n != 2 {
		t.Errorf("an acked result was sent again: %d sends", n)
	}
}

func TestInterchangeLostReconnects(t *testing.T) {
	f := start(t, manager.Options{Workers: 1, HeartbeatThreshold: 300 * time.Millisecond}, true)
	regs := f.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration })
	f.SetHeartbeat(0)
	silentFrom := time.Now()
	f.Expect(t, 10*time.Second, "a new Registration after the interchange went silent", func(r testutil.Received) bool {
		return r.Type() == messages.TypeRegistration && r.At.After(silentFrom)
	})
	t.Logf("manager re-registered %s after the interchange went silent (threshold 300ms)", time.Since(silentFrom).Round(time.Millisecond))
	if v := testutil.Metric(t, f.mg.Reg, "switchyard_manager_interchange_lost_total"); v < 1 {
		t.Errorf("interchange_lost_total = %g", v)
	}
	if n := f.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeRegistration }); n <= regs {
		t.Errorf("no new registration")
	}
	f.SetHeartbeat(testutil.Interval)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !f.mg.Status().Registered {
			return fmt.Errorf("not registered again")
		}
		return nil
	})
	ids := f.submit(t, spec("noop"))
	if r := f.result(t, ids[0], 10*time.Second); r.Code != messages.Success {
		t.Fatalf("after reconnecting: %+v", r)
	}
}

// A manager whose dispatch is paused holds even a no-op, which it would
// otherwise end without a worker.
func TestPausedDispatchHoldsNoop(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, true)
	f.Send(t, mgrID, &messages.Command{ID: 1, Op: messages.OpSetServingState, State: messages.PushAndDispatchPaused})
	rep := f.Expect(t, 5*time.Second, "CommandReply 1", func(r testutil.Received) bool {
		x, ok := r.Msg.(*messages.CommandReply)
		return ok && x.ID == 1
	}).Msg.(*messages.CommandReply)
	if !rep.OK() {
		t.Fatalf("pause: %+v", rep)
	}
	id := f.submit(t, spec("noop"))[0]
	// Results of a loop turn leave before the next turn answers a Sync.
	f.Sync(t, mgrID)
	f.Sync(t, mgrID)
	if n := f.resultsFor(id); n != 0 {
		t.Fatalf("a no-op ended while dispatch was paused")
	}
	f.Send(t, mgrID, &messages.Command{ID: 2, Op: messages.OpSetServingState, Clear: true})
	if r := f.result(t, id, 5*time.Second); r.Code != messages.Success {
		t.Errorf("noop after resuming: %s %q", r.Code.State(), r.Error)
	}
}

// A newer attempt of a task replaces the one a worker runs: that run is
// stopped and its result dropped.
func TestNewerAttemptReplacesRunningTask(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, true)
	id := testutil.NewTaskID()
	f.Send(t, mgrID, &messages.TaskBatch{Tasks: []messages.Task{{ID: id, Attempt: 1, Payload: spec("sleep", "30").Encode()}}})
	f.Expect(t, 5*time.Second, "Running delta of attempt 1", func(r testutil.Received) bool {
		m, ok := r.Msg.(*messages.ManagerStatusReport)
		if !ok {
			return false
		}
		for _, d := range m.Deltas {
			if d.ID == id && d.Attempt == 1 && d.Code == messages.Running {
				return true
			}
		}
		return false
	})
	f.Send(t, mgrID, &messages.TaskBatch{Tasks: []messages.Task{{ID: id, Attempt: 2, Payload: spec("noop").Encode()}}})
	if r := f.result(t, id, 10*time.Second); r.Attempt != 2 || r.Code != messages.Success {
		t.Fatalf("first result: attempt %d %s %q, want attempt 2 success", r.Attempt, r.Code.State(), r.Error)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v := testutil.Metric(t, f.mg.Reg, "switchyard_manager_duplicates_total"); v != 1 {
			return fmt.Errorf("duplicates_total = %g, want 1 (the stopped run's result)", v)
		}
		return nil
	})
	f.Sync(t, mgrID)
	if n := f.resultsFor(id); n != 1 {
		t.Errorf("%d results, want only attempt 2's", n)
	}
}

// A newer attempt that comes before the older one's result is
// acknowledged: only the newest result is held and sent again.
func TestNewerAttemptBeforeTheAck(t *testing.T) {
	f := start(t, manager.Options{Workers: 1}, false)
	id := testutil.NewTaskID()
	send := func(attempt uint32) {
		f.Send(t, mgrID, &messages.TaskBatch{Tasks: []messages.Task{{ID: id, Attempt: attempt, Payload: spec("noop").Encode()}}})
	}
	attempts := func() []uint32 {
		var a []uint32
		for _, r := range f.Results(mgrID) {
			if r.ID == id {
				a = append(a, r.Attempt)
			}
		}
		return a
	}
	send(1)
	f.result(t, id, 10*time.Second)
	send(2)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if a := attempts(); len(a) != 2 || a[1] != 2 {
			return fmt.Errorf("results of attempts %v, want [1 2]", a)
		}
		return nil
	})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := f.mg.Status(); st.HeldResults != 1 || st.Held != 0 {
			return fmt.Errorf("status %+v, want 1 result held and no task", st)
		}
		return nil
	})
	// Attempt 1 again is a duplicate: the newest result goes again.
	send(1)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if a := attempts(); len(a) != 3 || a[2] != 2 {
			return fmt.Errorf("results of attempts %v, want [1 2 2]", a)
		}
		return nil
	})
	f.Send(t, mgrID, &messages.Ack{IDs: []messages.TaskID{id}})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := f.mg.Status(); st.HeldResults != 0 {
			return fmt.Errorf("status %+v, want no result held after the ack", st)
		}
		return nil
	})
}
