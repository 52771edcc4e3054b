package manager_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// submitAs sends specs owned by owner as one TaskBatch.
func (f *fakeInterchange) submitAs(t *testing.T, owner string, specs ...taskspec.Spec) []messages.TaskID {
	t.Helper()
	b := &messages.TaskBatch{}
	ids := make([]messages.TaskID, len(specs))
	for i, s := range specs {
		ids[i] = testutil.NewTaskID()
		b.Tasks = append(b.Tasks, messages.Task{ID: ids[i], Attempt: 1, Payload: s.Encode(), Owner: owner})
	}
	f.Send(t, mgrID, b)
	return ids
}

// runAs runs one python call of owner and returns its result read by
// pyResult ("ok ..." or "err ..."), failing the test unless it succeeded.
func runAs(t *testing.T, f *fakeInterchange, owner, call string) string {
	t.Helper()
	r := f.result(t, f.submitAs(t, owner, pyCall(t, call))[0], 30*time.Second)
	if r.Code != messages.Success {
		t.Fatalf("%s's call %s: %s %q", owner, call, r.Code.State(), r.Error)
	}
	return strings.TrimSpace(pyResult(t, r.Payload))
}

// wantOwnResults checks that each owner's calls return their own values,
// one call at a time, so a shifted answer shows.
func wantOwnResults(t *testing.T, f *fakeInterchange, owners ...string) {
	t.Helper()
	for i, owner := range owners {
		if got, want := runAs(t, f, owner, fmt.Sprintf("(abs, (-%d,), {})", 100+i)), fmt.Sprintf("ok %d", 100+i); got != want {
			t.Errorf("%s's call %d returned %q, want %q", owner, i, got, want)
		}
	}
}

// Attack: alice's function patches the worker's loader and builtins; bob's
// calls used to run in the same process and return her value. One slot,
// so the old pool had to share it.
func TestPythonOwnerCannotPatchAnotherOwnersWorker(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	patch := `(lambda: (
		setattr(__import__('builtins'), 'abs', lambda *a, **k: 'FORGED-BY-ALICE'),
		setattr(__import__('sys').modules['__main__'], 'load_call', lambda body: (lambda: 'FORGED-BY-ALICE', (), {})),
		setattr(__import__('pickle'), 'loads', lambda *a, **k: 'FORGED-BY-ALICE'),
		'patched')[-1], (), {})`
	if got := runAs(t, f, "alice", patch); got != "ok 'patched'" {
		t.Fatalf("alice's patch returned %q", got)
	}
	if got := runAs(t, f, "bob", "(lambda: 6 * 7, (), {})"); got != "ok 42" {
		t.Errorf("bob's call after alice patched her worker returned %q, want ok 42", got)
	}
	wantOwnResults(t, f, "bob", "bob", "carol")
	// The one slot changed hands: alice's idle worker was stopped for bob.
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers_retired_total", "reason", "other_owner"); n < 1 {
		t.Errorf("%v workers stopped for another owner, want at least 1", n)
	}
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers"); n != 1 {
		t.Errorf("%v python workers running; --python-workers 1 allows 1", n)
	}
}

// Attack: an exec task rewrites every Python file it finds in the state
// directory (and plants modules a worker might import from there); workers
// started afterwards used to load the rewritten program.
func TestPythonWorkerProgramIsNotLoadedFromDisk(t *testing.T) {
	opts := pythonOpts(1)
	opts.StateDir = t.TempDir()
	f := start(t, opts, true)
	wantOwnResults(t, f, "bob")
	const forge = `import os, sys
evil = "import builtins\nbuiltins.abs = lambda *a, **k: 'FORGED-BY-EXEC'\n"
hit = []
for d, _, files in os.walk(sys.argv[1]):
    for n in files:
        if n.endswith(".py"):
            p = os.path.join(d, n)
            old = open(p).read()
            open(p, "w").write(evil + old)
            hit.append(n)
for n in ("cloudpickle.py", "sitecustomize.py", "usercustomize.py", "pickle.py"):
    open(os.path.join(sys.argv[1], n), "w").write(evil + "raise SystemExit('FORGED-BY-EXEC')\n")
print(hit)
`
	r := f.result(t, f.submitAs(t, "mallory", spec("exec", testPython, "-c", forge, opts.StateDir))[0], 30*time.Second)
	if r.Code != messages.Success {
		t.Fatalf("the exec task: %s %q %s", r.Code.State(), r.Error, r.Payload)
	}
	t.Logf("the exec task rewrote: %s", r.Payload)
	// A worker that dies is replaced at once: the replacement starts after
	// the rewrite.
	r = f.result(t, f.submitAs(t, "bob", pyCall(t, "(__import__('os')._exit, (3,), {})"))[0], 30*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "died while running this task") {
		t.Fatalf("the call that ends its worker: %s %q", r.Code.State(), r.Error)
	}
	wantOwnResults(t, f, "bob", "alice", "bob")
}

// Attack: a function writes answer frames to fd 1 and to every pipe it
// may write; later answers used to be shifted by one call. Now output
// goes to the worker's captured output, and a frame on the answer pipe
// lacks the call's id: it costs the worker and fails only that call.
func TestPythonFunctionCannotShiftAnswers(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	wantOwnResults(t, f, "alice")
	const frames = `[(lambda b: __import__('struct').pack('>IB', len(b), 82) + b)(__import__('pickle').dumps(('ok', 'FORGED-FRAME')))]`
	print := `(lambda fs: (
		__import__('os').write(1, fs[0]),
		__import__('sys').stdout.buffer.write(fs[0]),
		__import__('sys').stdout.flush(),
		'printed')[-1], (` + frames + `,), {})`
	if got := runAs(t, f, "alice", print); got != "ok 'printed'" {
		t.Errorf("a function printing a frame returned %q, want its own value", got)
	}
	wantOwnResults(t, f, "alice", "bob", "alice")
	pipes := `(lambda fs: ([
		__import__('os').write(fd, fs[0])
		for fd in [int(x) for x in __import__('os').listdir('/proc/self/fd')]
		if fd != 2 and __import__('os').path.exists('/proc/self/fd/%d' % fd)
		and __import__('stat').S_ISFIFO(__import__('os').fstat(fd).st_mode)
		and __import__('fcntl').fcntl(fd, __import__('fcntl').F_GETFL) & __import__('os').O_ACCMODE != __import__('os').O_RDONLY
	], 'attacked')[-1], (` + frames + `,), {})`
	r := f.result(t, f.submitAs(t, "alice", pyCall(t, pipes))[0], 30*time.Second)
	if r.Code != messages.Failed || !strings.Contains(r.Error, "wrote to its answer pipe") {
		got := ""
		if r.Code == messages.Success {
			got = pyResult(t, r.Payload)
		}
		t.Errorf("the call that wrote frames to every pipe: %s %q %s; want failed, naming the answer pipe", r.Code.State(), r.Error, got)
	}
	wantOwnResults(t, f, "alice", "bob", "alice", "alice")
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_failures_total", "reason", "protocol"); n != 1 {
			return fmt.Errorf("%v protocol failures, want 1", n)
		}
		return nil
	})
}

// Defence in depth: a function that digs the call's id out of the worker
// and answers for itself only sets its own result; the worker's real
// answer, left in the pipe, is never read as the next call's.
func TestPythonExtraAnswerIsNotReadByTheNextCall(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	wantOwnResults(t, f, "alice")
	forge := `(lambda: (lambda loc: (
		loc['send'](82, *([loc['call_id']] if 'call_id' in loc else []), bytes(4), __import__('pickle').dumps(('ok', 'FORGED-OWN'))),
		'real')[-1])(__import__('sys')._getframe(1).f_locals), (), {})`
	runAs(t, f, "alice", forge) // its own result: whatever it forged
	wantOwnResults(t, f, "alice", "alice", "bob", "alice")
}

// An owner's idle workers stop after the idle time; a worker is reused
// for its own owner's calls until then.
func TestPythonIdleWorkersStop(t *testing.T) {
	opts := pythonOpts(2)
	opts.PythonIdle = 2 * time.Second // long enough to reuse under load, short enough to wait for
	f := start(t, opts, true)
	getpid := "(__import__('os').getpid, (), {})"
	a1, b1 := runAs(t, f, "alice", getpid), runAs(t, f, "bob", getpid)
	if a1 == b1 {
		t.Fatalf("alice and bob ran in the same worker %s", a1)
	}
	if a2 := runAs(t, f, "alice", getpid); a2 != a1 {
		t.Errorf("alice's second call ran in %s, her first in %s: an owner's worker is reused", a2, a1)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers"); n != 0 {
			return fmt.Errorf("%v python workers still running after the idle time", n)
		}
		return nil
	})
	if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_workers_retired_total", "reason", "idle"); n != 2 {
		t.Errorf("%v workers retired for idleness, want 2", n)
	}
	wantOwnResults(t, f, "alice", "bob")
}

// A call's traceback starts at the caller's code, not the worker's.
func TestPythonTracebackLeavesTheWorkerOut(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	r := f.result(t, f.submitAs(t, "alice", pyCall(t, "(lambda: 1 / 0, (), {})"))[0], 30*time.Second)
	got := pyResult(t, r.Payload)
	if r.Code != messages.Failed || !strings.Contains(got, "in <lambda>") || strings.Contains(got, "switchyard-worker") {
		t.Fatalf("traceback of a raising call: %s %q\n%s", r.Code.State(), r.Error, got)
	}
}
