package manager_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// testPython is Debian's interpreter, which has python3-cloudpickle
// (scripts/install-deps.sh installs it).
const testPython = "/usr/bin/python3"

// python runs code in testPython with stdin and returns its stdout.
func python(t *testing.T, code string, stdin []byte) []byte {
	t.Helper()
	cmd := exec.Command(testPython, "-c", code)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c ...: %v\n%s\n(the python tests need %s with cloudpickle: run scripts/install-deps.sh)", testPython, err, stderr.String(), testPython)
	}
	return out
}

// pyCall serializes a call as the SDK does: cloudpickle of (fn, args,
// kwargs), here written as one Python expression.
func pyCall(t *testing.T, call string) taskspec.Spec {
	t.Helper()
	p := python(t, "import sys, cloudpickle\nsys.stdout.buffer.write(cloudpickle.dumps("+call+"))", nil)
	return taskspec.Spec{Kind: taskspec.KindPython, Payload: p}
}

// pyResult reads a python result payload: "ok <repr>" or
// "err <type> <message>" and the traceback on the lines after.
func pyResult(t *testing.T, payload []byte) string {
	t.Helper()
	return string(python(t, `import sys, pickle
r = pickle.loads(sys.stdin.buffer.read())
if r[0] == "ok":
    v = r[1]
    print("ok", ("bytes of %d" % len(v)) if isinstance(v, bytes) and len(v) > 100 else repr(v))
else:
    print("err", type(r[1]).__name__, r[1])
    print(r[2])`, payload))
}

func pythonOpts(workers int) manager.Options {
	return manager.Options{Workers: workers, Python: testPython}
}

func TestPythonTasks(t *testing.T) {
	t.Setenv("SWITCHYARD_TEST_SECRET", "the manager's, not a task's")
	f := start(t, pythonOpts(2), true)
	cases := []struct {
		name  string
		spec  taskspec.Spec
		code  messages.TaskStatusCode
		error string // substring of the task's error
		want  []string
		text  string // substring of the result's readable text
	}{
		{"builtin", pyCall(t, "(pow, (2, 10), {})"), messages.Success, "", []string{"ok 1024"}, "1024"},
		{"lambda with kwargs", pyCall(t, "(lambda a, b=1: [a, b], (5,), {'b': 7})"), messages.Success, "", []string{"ok [5, 7]"}, "[5, 7]"},
		{"raises", pyCall(t, "(lambda: 1 / 0, (), {})"), messages.Failed, "ZeroDivisionError: division by zero",
			[]string{"err ZeroDivisionError division by zero", "Traceback (most recent call last)", "in <lambda>"}, "ZeroDivisionError: division by zero"},
		{"long text is capped", pyCall(t, "(lambda: 'é' * 5000, (), {})"), messages.Success, "", nil, "éé"},
		{"print does not break the pipe", pyCall(t, "(lambda: print('noise on stdout') or 7, (), {})"), messages.Success, "", []string{"ok 7"}, "7"},
		{"reads stdin", pyCall(t, "(lambda: __import__('sys').stdin.read(), (), {})"), messages.Success, "", []string{"ok ''"}, "''"},
		{"clean environment", pyCall(t, "(lambda: sorted(__import__('os').environ), (), {})"), messages.Success, "", nil, "PATH"},
		{"unpicklable result", pyCall(t, "(lambda: __import__('threading').Lock(), (), {})"), messages.Failed, "",
			[]string{"err TypeError", "could not be serialized"}, "could not be serialized"},
		{"system exit", pyCall(t, "(__import__('sys').exit, (4,), {})"), messages.Failed, "SystemExit: 4", []string{"err SystemExit 4"}, "SystemExit: 4"},
	}
	specs := make([]taskspec.Spec, len(cases))
	for i, tc := range cases {
		specs[i] = tc.spec
	}
	ids := f.submit(t, specs...)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.result(t, ids[i], 30*time.Second)
			if r.Code != tc.code || !strings.Contains(r.Error, tc.error) {
				t.Fatalf("%s %q; want %s with an error holding %q", r.Code.State(), r.Error, tc.code.State(), tc.error)
			}
			if !strings.Contains(r.Text, tc.text) || len(r.Text) > 2048 || !utf8.ValidString(r.Text) {
				t.Errorf("text %q (%d bytes); want valid UTF-8 of at most 2048 bytes holding %q", r.Text, len(r.Text), tc.text)
			}
			got := pyResult(t, r.Payload)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("result %q does not contain %q", got, w)
				}
			}
			if tc.name == "clean environment" {
				if strings.Contains(got, "SWITCHYARD_TEST_SECRET") || !strings.Contains(got, "'PATH'") {
					t.Errorf("task environment %s; want only PATH, HOME, USER, LANG, TMPDIR", got)
				}
			}
		})
	}
	// The other kinds run beside python ones.
	ids = f.submit(t, spec("noop"), spec("exec", "echo", "hi"), pyCall(t, "(abs, (-3,), {})"))
	for _, id := range ids {
		if r := f.result(t, id, 30*time.Second); r.Code != messages.Success {
			t.Errorf("task beside python ones: %s %q", r.Code.State(), r.Error)
		}
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers"); n < 1 || n > 2 {
		t.Errorf("%v python workers running, want 1 or 2", n)
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_restarts_total"); n != 0 {
		t.Errorf("%v restarts, want none: raising and printing must not cost a worker", n)
	}
}

// workerPid runs os.getpid on a worker.
func workerPid(t *testing.T, f *fakeInterchange) int {
	t.Helper()
	r := f.result(t, f.submit(t, pyCall(t, "(__import__('os').getpid, (), {})"))[0], 30*time.Second)
	if r.Code != messages.Success {
		t.Fatalf("getpid: %s %q", r.Code.State(), r.Error)
	}
	s := strings.TrimPrefix(strings.TrimSpace(pyResult(t, r.Payload)), "ok ")
	pid, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("getpid result %q", s)
	}
	return pid
}

func TestPythonWorkersAreReused(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	first := workerPid(t, f)
	for i := 0; i < 3; i++ {
		if pid := workerPid(t, f); pid != first {
			t.Fatalf("call %d ran in pid %d, the first in %d: workers must be long-lived", i+2, pid, first)
		}
	}
	if first == os.Getpid() {
		t.Fatalf("the call ran in the manager's process")
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_starts_total"); n != 1 {
		t.Errorf("%v worker starts, want 1", n)
	}
}

func TestPythonWorkerThatDiesIsReplaced(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	before := workerPid(t, f)
	r := f.result(t, f.submit(t, pyCall(t, "(__import__('os')._exit, (3,), {})"))[0], 30*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "died while running this task") || !strings.Contains(r.Error, "exit status 3") {
		t.Fatalf("task whose worker died: %s %q", r.Code.State(), r.Error)
	}
	after := workerPid(t, f)
	if after == before || pidAlive(before) {
		t.Errorf("worker %d died; the next call ran in %d (old alive: %v)", before, after, pidAlive(before))
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_restarts_total"); n != 1 {
			return fmt.Errorf("%v restarts, want 1", n)
		}
		if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_failures_total", "reason", "died"); n != 1 {
			return fmt.Errorf("%v died, want 1", n)
		}
		return nil
	})
	if !f.mg.Log.Contains("died while running this task") {
		t.Errorf("the death is not in the log")
	}
}

func TestPythonTimeoutKillsTheWorker(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	before := workerPid(t, f)
	s := pyCall(t, "(__import__('time').sleep, (60,), {})")
	s.Timeout = "300ms"
	r := f.result(t, f.submit(t, s)[0], 30*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "timed out after 300ms") {
		t.Fatalf("python task past its timeout: %s %q", r.Code.State(), r.Error)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if pidAlive(before) {
			return fmt.Errorf("worker %d still runs after its task timed out", before)
		}
		return nil
	})
	if after := workerPid(t, f); after == before {
		t.Errorf("the next call ran in the killed worker %d", before)
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_failures_total", "reason", "killed"); n != 1 {
		t.Errorf("%v killed workers, want 1", n)
	}
}

func TestPythonCancelKillsTheWorkerAndItsChildren(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	before := workerPid(t, f)
	pidfile := filepath.Join(t.TempDir(), "child")
	// The task starts a child process and waits on it.
	ids := f.submit(t, pyCall(t, fmt.Sprintf(`(lambda: __import__('subprocess').run(['sh', '-c', 'echo $$ > %s; exec sleep 60']), (), {})`, pidfile)))
	var child int
	testutil.WaitFor(t, 10*time.Second, func() error {
		var err error
		child, err = readPid(pidfile)
		return err
	})
	f.Send(t, mgrID, &messages.Command{ID: 9, Op: messages.OpCancel, TaskIDs: ids})
	r := f.result(t, ids[0], 10*time.Second)
	if r.Code != messages.Cancelled {
		t.Fatalf("cancelled python task: %s %q", r.Code.State(), r.Error)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if pidAlive(before) || pidAlive(child) {
			return fmt.Errorf("worker %d (alive %v) or its child %d (alive %v) still runs", before, pidAlive(before), child, pidAlive(child))
		}
		return nil
	})
	if after := workerPid(t, f); after == before {
		t.Errorf("the next call ran in the killed worker")
	}
}

func TestPythonLargeArgumentAndResult(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	const n = 10_000_000 // 10 MB
	r := f.result(t, f.submit(t, pyCall(t, fmt.Sprintf("(lambda b: b + b'!', (b'x' * %d,), {})", n)))[0], 60*time.Second)
	if r.Code != messages.Success || len(r.Payload) <= n {
		t.Fatalf("10 MB in and out: %s %q, %d result bytes", r.Code.State(), r.Error, len(r.Payload))
	}
	if got := pyResult(t, r.Payload); !strings.Contains(got, fmt.Sprintf("ok bytes of %d", n+1)) {
		t.Errorf("result %q", got)
	}
	// A result over the limit fails its task with a reason (the
	// interchange would refuse it, and the task would never end).
	r = f.result(t, f.submit(t, pyCall(t, "(lambda: b'x' * (11 << 20), (), {})"))[0], 60*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "serialized return value is") || !strings.Contains(r.Error, "the limit is") {
		t.Errorf("result over the limit: %s %q", r.Code.State(), r.Error)
	}
}

func TestFewerPythonWorkersThanWorkers(t *testing.T) {
	opts := pythonOpts(2)
	opts.PythonWorkers = 1
	f := start(t, opts, true)
	call := pyCall(t, "(lambda: (__import__('time').sleep(0.2), __import__('os').getpid())[1], (), {})")
	ids := f.submit(t, call, call, spec("exec", "echo", "free"))
	var pids []string
	for _, id := range ids[:2] {
		r := f.result(t, id, 30*time.Second)
		if r.Code != messages.Success {
			t.Fatalf("python task: %s %q", r.Code.State(), r.Error)
		}
		pids = append(pids, pyResult(t, r.Payload))
	}
	if pids[0] != pids[1] {
		t.Errorf("one python worker, yet the calls ran in %q and %q", pids[0], pids[1])
	}
	if r := f.result(t, ids[2], 30*time.Second); r.Code != messages.Success {
		t.Errorf("exec beside python tasks: %s %q", r.Code.State(), r.Error)
	}
}

func TestPythonInterpreterProblems(t *testing.T) {
	dir := t.TempDir()
	// An interpreter without site-packages has no cloudpickle.
	bare := filepath.Join(dir, "bare-python")
	if err := os.WriteFile(bare, []byte("#!/bin/sh\nexec "+testPython+" -S \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, python, want string }{
		{"missing", filepath.Join(dir, "no-such-python"), "cannot start python worker"},
		{"no cloudpickle", bare, "cannot import cloudpickle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, manager.Options{Workers: 1, Python: tc.python}, true)
			r := f.result(t, f.submit(t, pyCall(t, "(abs, (-1,), {})"))[0], 30*time.Second)
			if r.Code != messages.Failed || !strings.Contains(r.Error, tc.want) || !strings.Contains(r.Error, "python") {
				t.Fatalf("python task on %s: %s %q; want failed with %q", tc.python, r.Code.State(), r.Error, tc.want)
			}
			// Other kinds are not affected.
			if r := f.result(t, f.submit(t, spec("noop"))[0], 10*time.Second); r.Code != messages.Success {
				t.Errorf("noop: %s %q", r.Code.State(), r.Error)
			}
			if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_failures_total", "reason", "start_failed"); n != 1 {
				t.Errorf("%v start failures, want 1", n)
			}
		})
	}
}

func TestPythonWorkersOption(t *testing.T) {
	_, err := manager.New(manager.Options{Workers: 2, PythonWorkers: 3, AllowRoot: true})
	if err == nil || !strings.Contains(err.Error(), "--python-workers 3") {
		t.Fatalf("more python workers than workers: %v", err)
	}
}

func TestPythonWorkersStopWithTheManager(t *testing.T) {
	f := start(t, pythonOpts(2), true)
	idle := workerPid(t, f)
	// One worker idle, one busy with a long call when the manager stops.
	busy := f.submit(t, pyCall(t, "(__import__('time').sleep, (60,), {})"))
	f.Expect(t, 10*time.Second, "Running delta of the long call", func(r testutil.Received) bool {
		m, ok := r.Msg.(*messages.ManagerStatusReport)
		if !ok {
			return false
		}
		for _, d := range m.Deltas {
			if d.ID == busy[0] && d.Code == messages.Running {
				return true
			}
		}
		return false
	})
	stopAt := time.Now()
	f.mg.Stop()
	if took := time.Since(stopAt); took > 5*time.Second {
		t.Errorf("the manager took %s to stop with a python call running", took)
	}
	if pidAlive(idle) {
		t.Errorf("idle python worker %d outlived its manager", idle)
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers"); n != 0 {
		t.Errorf("%v python workers left running", n)
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_restarts_total"); n != 0 {
		t.Errorf("%v workers started while stopping", n)
	}
}

// A batch scheduler ending a job sends SIGTERM to every process: a python
// worker lives on, and the manager's drain decides when its call stops.
func TestPythonWorkerOutlivesSIGTERM(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	pid := workerPid(t, f)
	ids := f.submit(t, pyCall(t, "(lambda: (__import__('time').sleep(0.5), 7)[1], (), {})"))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := f.result(t, ids[0], 30*time.Second)
	if r.Code != messages.Success || !strings.Contains(pyResult(t, r.Payload), "ok 7") {
		t.Fatalf("call in a worker sent SIGTERM: %s %q", r.Code.State(), r.Error)
	}
	if after := workerPid(t, f); after != pid {
		t.Errorf("the worker was replaced (%d, then %d) after a SIGTERM", pid, after)
	}
}

// A worker killed by a signal reads as a signal death ("signal: killed"),
// which the manager holds back briefly in case the node is going away.
func TestPythonWorkerKilledBySignal(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	pid := workerPid(t, f)
	pidfile := filepath.Join(t.TempDir(), "started")
	ids := f.submit(t, pyCall(t, fmt.Sprintf("(lambda: (open(%q, 'w').write('x'), __import__('time').sleep(60)), (), {})", pidfile)))
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := os.Stat(pidfile)
		return err
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := f.result(t, ids[0], 30*time.Second)
	if r.Code != messages.Failed || !strings.HasPrefix(r.Error, "signal: killed: python worker") {
		t.Fatalf("call whose worker was killed: %s %q", r.Code.State(), r.Error)
	}
}
