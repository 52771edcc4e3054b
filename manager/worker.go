package manager

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// errCancelled marks a task stopped by a cancel command.
var errCancelled = errors.New("cancelled by request")

// baseEnv is what every task's environment starts from: never the
// manager's whole environment (it may hold secrets), only PATH, HOME,
// USER, LANG, TMPDIR and the names passed with --task-env, as the manager
// has them.
func baseEnv(passOn []string) []string {
	env := []string{"PATH=" + cmp.Or(os.Getenv("PATH"), "/usr/local/bin:/usr/bin:/bin")}
	for _, n := range append([]string{"HOME", "USER", "LANG", "TMPDIR"}, passOn...) {
		if v, ok := os.LookupEnv(n); ok {
			env = append(env, n+"="+v)
		}
	}
	return env
}

// withOwnEnv is base plus a task's own variables, which win.
func withOwnEnv(base []string, own map[string]string) []string {
	if len(own) == 0 {
		return base
	}
	env := make([]string, 0, len(base)+len(own))
	for _, kv := range base {
		if _, ok := own[kv[:strings.IndexByte(kv, '=')]]; !ok {
			env = append(env, kv)
		}
	}
	names := make([]string, 0, len(own))
	for k := range own {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		env = append(env, k+"="+own[k])
	}
	return env
}

// run executes one task with environment env; it never touches a socket.
// started is called once the task really starts, except for a noop, which
// ends at once.
func run(ctx context.Context, t messages.Task, outputLimit int, env []string, py *pyPool, started func()) (r messages.Result) {
	r = messages.Result{ID: t.ID, Attempt: t.Attempt, Started: time.Now().UnixNano()}
	defer func() { r.Finished = time.Now().UnixNano() }()
	spec, err := taskspec.Decode(t.Payload)
	if err != nil {
		r.Code, r.Error = messages.Failed, "bad task: "+err.Error()
		return r
	}
	if ctx.Err() != nil {
		// Cancelled while it waited for a worker.
		r.Code, r.Error = stopped(ctx, 0)
		return r
	}
	if spec.Kind != taskspec.KindNoop {
		started()
	}
	timeout, _ := spec.TimeoutDuration()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	switch spec.Kind {
	case taskspec.KindNoop:
		r.Code = messages.Success
	case taskspec.KindSleep:
		d, _ := spec.SleepDuration()
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
			r.Code = messages.Success
		case <-ctx.Done():
			tm.Stop()
			r.Code, r.Error = stopped(ctx, timeout)
		}
	case taskspec.KindExec:
		runExec(ctx, spec, outputLimit, timeout, withOwnEnv(env, spec.Env), &r)
	case taskspec.KindPython:
		py.runPython(ctx, t.Owner, spec, timeout, &r)
	default:
		r.Code, r.Error = messages.Failed, fmt.Sprintf("unknown kind %q", spec.Kind)
	}
	return r
}

func stopped(ctx context.Context, timeout time.Duration) (messages.TaskStatusCode, string) {
	if errors.Is(context.Cause(ctx), errCancelled) {
		return messages.Cancelled, errCancelled.Error()
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return messages.Failed, fmt.Sprintf("timed out after %s", timeout)
	}
	return messages.Cancelled, "manager shutting down"
}

// capped keeps the first limit bytes and notes that more were dropped.
type capped struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := c.limit - c.buf.Len()
	if room <= 0 {
		c.truncated = c.truncated || len(p) > 0
		return len(p), nil
	}
	if len(p) > room {
		c.buf.Write(p[:room])
		c.truncated = true
		return len(p), nil
	}
	c.buf.Write(p)
	return len(p), nil
}

func runExec(ctx context.Context, spec taskspec.Spec, limit int, timeout time.Duration, env []string, r *messages.Result) {
	cmd := exec.CommandContext(ctx, spec.Args[0], spec.Args[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole process group: a shell's children die with it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	stdout := &capped{limit: limit}
	stderr := &capped{limit: limit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	res := taskspec.ExecResult{ExitCode: -1, Stdout: stdout.buf.String(), Stderr: stderr.buf.String(),
		Truncated: stdout.truncated || stderr.truncated}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	switch {
	case ctx.Err() != nil:
		r.Code, r.Error = stopped(ctx, timeout)
	case err == nil:
		r.Code = messages.Success
	default:
		r.Code, r.Error = messages.Failed, err.Error()
	}
	r.Payload, _ = json.Marshal(res)
}

func (mg *Manager) worker(ctx context.Context, work <-chan *mtask, wg *sync.WaitGroup) {
	defer wg.Done()
	var next *mtask // taken from work by runCalls, not run yet
	for {
		t := next
		next = nil
		if t == nil {
			var ok bool
			if t, ok = <-work; !ok {
				return
			}
		}
		mg.gate.wait(ctx)
		if !t.claim.CompareAndSwap(0, 1) {
			continue // cancelled before it started; the loop reported it
		}
		if j, ok := pyEligible(t, t.task.Owner); ok {
			// Python calls without a timeout may share a worker's pipe.
			mg.busy.Add(1)
			next = mg.runCalls(work, j)
			mg.busy.Add(-1)
			continue
		}
		at := time.Now().UnixNano()
		t.startedAt.Store(at)
		mg.busy.Add(1)
		// The loop reports it running within a few milliseconds (it takes
		// the event at its next wake-up, deltaDelay at the latest); a task
		// that ends before then shows only in its result.
		r := run(t.ctx, t.task, mg.opts.OutputLimit, mg.env, mg.py, func() { mg.mbox.PostLazy(event{kind: evStarted, t: t, at: at}) })
		mg.busy.Add(-1)
		t.cancel(nil)
		mg.mbox.Post(event{kind: evFinished, t: t, result: r})
	}
}

// gate holds workers while dispatch is paused.
type gate struct {
	mu   sync.Mutex
	open bool
	ch   chan struct{} // closed while open
	// shut mirrors !open for a look without the lock.
	shut atomic.Bool
}

// isOpen reports whether dispatch is allowed now; it does not wait.
func (g *gate) isOpen() bool { return !g.shut.Load() }

func newGate() *gate {
	g := &gate{open: true, ch: make(chan struct{})}
	close(g.ch)
	return g
}

func (g *gate) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if open == g.open {
		return
	}
	g.open = open
	g.shut.Store(!open)
	if open {
		close(g.ch)
	} else {
		g.ch = make(chan struct{})
	}
}

func (g *gate) wait(ctx context.Context) {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}
