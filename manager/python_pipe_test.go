package manager_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// pyCalls makes n calls fn(i) of one function serialized once, as the
// SDK sends them, and the result payload each must return (the worker
// pickles plain values with pickle protocol 5).
func pyCalls(t *testing.T, fn string, n int) (calls []taskspec.Spec, want [][]byte) {
	t.Helper()
	out := python(t, fmt.Sprintf(`import sys, struct, pickle, zlib, cloudpickle
class Z:
    def __init__(s, d): s.d = d
    def __reduce__(s): return zlib.decompress, (s.d,)
class Once:
    def __init__(s, fn): s.d = Z(zlib.compress(cloudpickle.dumps(fn)))
    def __reduce__(s): return pickle.loads, (s.d,)
fn = %s
ref = Once(fn)
for i in range(%d):
    for b in (pickle.dumps((ref, (i,), {}), 5), pickle.dumps(("ok", fn(i)), 5)):
        sys.stdout.buffer.write(struct.pack(">I", len(b)) + b)
`, fn, n), nil)
	for len(out) > 0 {
		c := out[4 : 4+binary.BigEndian.Uint32(out)]
		out = out[4+len(c):]
		w := out[4 : 4+binary.BigEndian.Uint32(out)]
		out = out[4+len(w):]
		calls = append(calls, taskspec.Spec{Kind: taskspec.KindPython, Payload: c})
		want = append(want, w)
	}
	return calls, want
}

// Many short calls in one batch go to one worker several at a time; each
// gets its own answer, and a call that ends its worker fails alone: the
// calls behind it in the pipe never started, and run on its replacement.
func TestPythonCallsSentAheadKeepTheirAnswers(t *testing.T) {
	f := start(t, pythonOpts(1), true)
	calls, want := pyCalls(t, "lambda x: 2 * x", 120)
	workerPid(t, f)
	const exit, raises = 60, 90
	calls[exit] = pyCall(t, "(__import__('os')._exit, (3,), {})")
	calls[raises] = pyCall(t, "(int, ('x',), {})")
	ids := f.submit(t, calls...)
	for i, id := range ids {
		r := f.result(t, id, 30*time.Second)
		switch i {
		case exit:
			if r.Code != messages.Failed || !strings.Contains(r.Error, "died while running this task") {
				t.Errorf("call %d, which ends its worker: %s %q", i, r.Code.State(), r.Error)
			}
		case raises:
			if r.Code != messages.Failed || !strings.Contains(r.Error, "ValueError: invalid literal") {
				t.Errorf("call %d, which raises: %s %q", i, r.Code.State(), r.Error)
			}
		default:
			if r.Code != messages.Success || !bytes.Equal(r.Payload, want[i]) {
				t.Errorf("call %d: %s %q, payload %q; want %q", i, r.Code.State(), r.Error, r.Payload, want[i])
			}
		}
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := testutil.Metric(t, f.mg.Reg, "switchyard_manager_python_worker_failures_total", "reason", "died"); n != 1 {
			return fmt.Errorf("%v died, want 1", n)
		}
		return nil
	})
}

// A worker that speaks protocol 3 (the one before calls were sent ahead)
// still serves: one call at a time, with the readable text.
func TestPythonProtocol3Worker(t *testing.T) {
	old, err := filepath.Abs("testdata/python_worker_v3.py")
	if err != nil {
		t.Fatal(err)
	}
	launcher := filepath.Join(t.TempDir(), "python-v3")
	// The manager runs PYTHON -B -s -c BOOTSTRAP MAX_RESULT_BYTES.
	script := fmt.Sprintf("#!/bin/sh\nshift 4\nexec %s -B -s %s \"$1\"\n", testPython, old)
	if err := os.WriteFile(launcher, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := pythonOpts(1)
	opts.Python = launcher
	f := start(t, opts, true)
	calls, want := pyCalls(t, "lambda x: [x]", 30)
	ids := f.submit(t, calls...)
	for i, id := range ids {
		r := f.result(t, id, 30*time.Second)
		if r.Code != messages.Success || !bytes.Equal(r.Payload, want[i]) || r.Text != fmt.Sprintf("[%d]", i) {
			t.Errorf("call %d: %s %q, payload %q text %q; want %q, [%d]", i, r.Code.State(), r.Error, r.Payload, r.Text, want[i], i)
		}
	}
	if !f.mg.Log.Contains("python worker ready") {
		t.Errorf("no worker start in the log")
	}
}
