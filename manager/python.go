package manager

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

//go:embed python_worker.py
var pythonWorkerScript []byte

// pyBootstrap is the interpreter's -c program: it drops the working
// directory from the import path and runs the worker program it reads
// from fd 3, so no file a task could rewrite is ever loaded as the worker.
const pyBootstrap = `import os, sys
if sys.path[:1] == [""]: del sys.path[0]
with os.fdopen(3, "rb") as f: src = f.read()
exec(compile(src, "<switchyard-worker>", "exec"))
`

// pythonMaxResult keeps a python result, its error summary and text within the
// interchange's default --max-result-bytes (10 MiB): a larger result would
// be refused there and its task would never end. The worker refuses it
// with a clear exception instead.
const pythonMaxResult = 10<<20 - maxSummaryBytes - maxTextBytes - 1024

// helloTimeout bounds a worker's start-up (interpreter and cloudpickle import).
const helloTimeout = time.Minute

type pyMetrics struct {
	live      prometheus.Gauge
	busy      prometheus.Gauge
	starts    prometheus.Counter
	restarts  prometheus.Counter
	failures  *prometheus.CounterVec
	retired   *prometheus.CounterVec
	startTime prometheus.Histogram
}

// Reasons a worker process ended or never served, as metric labels.
const (
	pyStartFailed = "start_failed" // did not start or did not say hello
	pyDied        = "died"         // exited while running a task
	pyKilled      = "killed"       // stopped for a cancel, a timeout or the manager's shutdown
	pyProtocol    = "protocol"     // sent something the protocol does not allow
	pyIdleExit    = "idle_exit"    // found dead while idle
)

// Reasons a healthy idle worker was stopped.
const (
	pyRetiredIdle  = "idle"        // its owner sent no call for the idle time
	pyRetiredOwner = "other_owner" // its slot went to another owner
)

func newPyMetrics(reg prometheus.Registerer) *pyMetrics {
	m := &pyMetrics{
		live: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_manager_python_workers",
			Help: "Python worker processes running (started at an owner's python task, kept for the owner's next ones)."}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_manager_python_workers_busy",
			Help: "Python worker processes running a task."}),
		starts: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_starts_total",
			Help: "Python worker processes started and ready."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_restarts_total",
			Help: "Python worker processes started to replace one that died or was killed."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_failures_total",
			Help: "Python worker processes lost, by reason: start_failed, died, killed, protocol, idle_exit."}, []string{"reason"}),
		retired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_manager_python_workers_retired_total",
			Help: "Idle Python worker processes stopped, by reason: idle (no call from their owner for the idle time), other_owner (another owner needed the slot)."}, []string{"reason"}),
		startTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_manager_python_worker_start_seconds",
			Help: "Time from starting a Python worker until it is ready.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	for _, r := range []string{pyStartFailed, pyDied, pyKilled, pyProtocol, pyIdleExit} {
		m.failures.WithLabelValues(r)
	}
	for _, r := range []string{pyRetiredIdle, pyRetiredOwner} {
		m.retired.WithLabelValues(r)
	}
	reg.MustRegister(m.live, m.busy, m.starts, m.restarts, m.failures, m.retired, m.startTime)
	return m
}

// pyPool runs python calls on long-lived worker processes. A process
// serves one owner for its whole life, so nothing one user's function
// leaves in a worker (patched modules, globals) reaches another user's
// call. At most size processes run (slots); an owner may use all of them.
// An owner's idle workers are kept for its next calls until idleAfter
// passes, or until another owner needs a slot and none is free: then the
// worker idle longest is stopped and its slot changes hands.
type pyPool struct {
	python    string
	maxResult int
	env       []string
	log       *logrus.Entry
	m         *pyMetrics
	size      int
	idleAfter time.Duration

	// startErrLog keeps a bad --python from logging once per task.
	startErrLog rateLimit

	mu    sync.Mutex
	slots int                    // processes running or starting
	idle  map[string][]*pyWorker // by owner, the most recently used last
	// freed is closed (and replaced) whenever a worker is put back or a
	// slot is freed, waking callers that found every slot busy.
	freed  chan struct{}
	closed bool

	ctx    context.Context // ends at close; stops replacements being started
	cancel context.CancelFunc
	wg     sync.WaitGroup // replacements being started, the idle reaper
}

// newPyPool makes the pool; no process starts until the first python
// task. Workers get env, the tasks' clean environment (baseEnv).
func newPyPool(python string, size int, idleAfter time.Duration, env []string, log *logrus.Entry, reg prometheus.Registerer) *pyPool {
	p := &pyPool{python: python, maxResult: pythonMaxResult, env: env, size: size, idleAfter: idleAfter,
		log: log.WithField("python", python), idle: map[string][]*pyWorker{}, freed: make(chan struct{})}
	p.m = newPyMetrics(reg)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.reapIdle()
	return p
}

// close stops every worker; no task may be running. The workers are
// asked to leave all at once, so a large pool stops as fast as one.
func (p *pyPool) close() {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	p.closed = true
	var ws []*pyWorker
	for _, list := range p.idle {
		ws = append(ws, list...)
	}
	clear(p.idle)
	p.mu.Unlock()
	for _, w := range ws {
		_ = w.in.Close()
	}
	deadline := time.Now().Add(time.Second)
	for _, w := range ws {
		if !w.exitedWithin(time.Until(deadline)) {
			w.kill()
			<-w.done
		}
		_ = w.outF.Close()
		p.m.live.Dec()
	}
}

// wake tells waiting callers that a worker or a slot may be free; mu held.
func (p *pyPool) wake() {
	close(p.freed)
	p.freed = make(chan struct{})
}

// release frees the slot of a worker that is gone or never started.
func (p *pyPool) release() {
	p.mu.Lock()
	p.slots--
	p.wake()
	p.mu.Unlock()
}

// takeIdle removes and returns owner's most recently used idle worker;
// mu held.
func (p *pyPool) takeIdle(owner string) *pyWorker {
	ws := p.idle[owner]
	if len(ws) == 0 {
		return nil
	}
	w := ws[len(ws)-1]
	ws[len(ws)-1] = nil
	if len(ws) == 1 {
		delete(p.idle, owner)
	} else {
		p.idle[owner] = ws[:len(ws)-1]
	}
	return w
}

// takeLongestIdle removes and returns the worker idle longest, of any
// owner; mu held.
func (p *pyPool) takeLongestIdle() *pyWorker {
	var oldest string
	var at time.Time
	for owner, ws := range p.idle {
		if len(ws) > 0 && (at.IsZero() || ws[0].idleSince.Before(at)) {
			oldest, at = owner, ws[0].idleSince
		}
	}
	if at.IsZero() {
		return nil
	}
	ws := p.idle[oldest]
	w := ws[0]
	if len(ws) == 1 {
		delete(p.idle, oldest)
	} else {
		p.idle[oldest] = append(ws[:0], ws[1:]...)
	}
	return w
}

// retire stops a healthy idle worker; its slot is the caller's to reuse
// or release.
func (p *pyPool) retire(w *pyWorker, reason string) {
	p.m.retired.WithLabelValues(reason).Inc()
	p.m.live.Dec()
	p.log.WithFields(logrus.Fields{"pid": w.pid, "reason": reason}).Debug("python worker stopped")
	w.stop()
}

// get takes a worker of owner for one call: an idle one of owner's, else
// a new one in a free slot, else a new one in the slot of the worker idle
// longest; it waits while every slot is busy.
func (p *pyPool) get(ctx context.Context, owner string) (*pyWorker, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("python workers: the manager is stopping")
		}
		if w := p.takeIdle(owner); w != nil {
			p.mu.Unlock()
			if w.exited() {
				p.m.failures.WithLabelValues(pyIdleExit).Inc()
				p.m.live.Dec()
				p.log.WithFields(logrus.Fields{"pid": w.pid, "status": w.status()}).Warn("python worker exited while idle; starting another")
				w.stop()
				p.release()
				continue
			}
			if w.pending() {
				// An answer nobody asked for: written by the last call's
				// function, or the worker's own answer after one the
				// function forged. The next call must not read it.
				p.m.failures.WithLabelValues(pyProtocol).Inc()
				p.m.live.Dec()
				p.log.WithFields(logrus.Fields{"pid": w.pid, "owner": owner}).Warn("python worker wrote more than its answer (or closed its pipe); it was stopped and is replaced")
				w.stop()
				p.release()
				continue
			}
			p.m.busy.Inc()
			return w, nil
		}
		var victim *pyWorker
		if p.slots < p.size {
			p.slots++
		} else if victim = p.takeLongestIdle(); victim == nil {
			freed := p.freed
			p.mu.Unlock()
			select {
			case <-freed:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		p.mu.Unlock()
		if victim != nil {
			p.retire(victim, pyRetiredOwner) // its slot is ours now
		}
		w, err := p.start(ctx, owner)
		if err != nil {
			p.release()
			return nil, err
		}
		p.m.busy.Inc()
		return w, nil
	}
}

// put returns a healthy worker after its call.
func (p *pyPool) put(w *pyWorker) {
	p.m.busy.Dec()
	p.idleWorker(w)
}

// idleWorker keeps w for its owner's next call.
func (p *pyPool) idleWorker(w *pyWorker) {
	w.idleSince = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.retire(w, pyRetiredIdle)
		return
	}
	p.idle[w.owner] = append(p.idle[w.owner], w)
	p.wake()
	p.mu.Unlock()
}

// reapIdle stops workers whose owner sent them nothing for idleAfter.
func (p *pyPool) reapIdle() {
	defer p.wg.Done()
	t := time.NewTicker(min(max(p.idleAfter/4, 10*time.Millisecond), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			var old []*pyWorker
			p.mu.Lock()
			for owner, ws := range p.idle {
				n := 0 // ws is oldest first
				for n < len(ws) && now.Sub(ws[n].idleSince) >= p.idleAfter {
					n++
				}
				if n == 0 {
					continue
				}
				old = append(old, ws[:n]...)
				if n == len(ws) {
					delete(p.idle, owner)
				} else {
					p.idle[owner] = append(ws[:0], ws[n:]...)
				}
			}
			p.mu.Unlock()
			for _, w := range old {
				p.retire(w, pyRetiredIdle)
				p.release()
			}
		}
	}
}

// discard stops a worker that died or was killed, and starts its
// replacement for the same owner in the background so the owner's next
// task does not wait for it (unless replace is false: the manager is
// shutting down).
func (p *pyPool) discard(w *pyWorker, reason string, replace bool) {
	p.m.busy.Dec()
	p.m.live.Dec()
	p.m.failures.WithLabelValues(reason).Inc()
	w.stop()
	if !replace || p.ctx.Err() != nil {
		p.release()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		nw, err := p.start(p.ctx, w.owner)
		if err != nil {
			p.release() // the next task tries again
			return
		}
		p.m.restarts.Inc()
		p.idleWorker(nw)
	}()
}

// start runs one worker process for owner and waits for its hello.
func (p *pyPool) start(ctx context.Context, owner string) (*pyWorker, error) {
	begin := time.Now()
	w, err := startPyWorker(p.python, p.maxResult, p.env)
	var hello pyHello
	if err == nil {
		w.owner = owner
		if hello, err = w.hello(ctx); err != nil {
			w.stop()
		}
	}
	if err != nil && ctx.Err() != nil {
		return nil, err // stopped while starting: not the worker's fault
	}
	if err != nil {
		p.m.failures.WithLabelValues(pyStartFailed).Inc()
		if n, ok := p.startErrLog.allow(time.Now()); ok {
			p.log.WithError(err).WithField("suppressed", n).Error("python worker did not start")
		}
		return nil, err
	}
	p.m.starts.Inc()
	p.m.live.Inc()
	p.m.startTime.Observe(time.Since(begin).Seconds())
	p.log.WithFields(logrus.Fields{"pid": w.pid, "owner": owner, "version": hello.Version, "cloudpickle": hello.Cloudpickle,
		"took": time.Since(begin).Round(time.Millisecond).String()}).Info("python worker ready")
	return w, nil
}

// runPython runs one python task of owner on one of owner's workers.
func (p *pyPool) runPython(ctx context.Context, owner string, spec taskspec.Spec, timeout time.Duration, r *messages.Result) {
	w, err := p.get(ctx, owner)
	if err != nil {
		if ctx.Err() != nil {
			r.Code, r.Error = stopped(ctx, timeout)
			return
		}
		r.Code, r.Error = messages.Failed, err.Error()
		return
	}
	kind, body, err := w.call(ctx, spec.Payload, p.maxResult)
	if p.settle(ctx, w, kind, body, err, timeout, r) {
		p.put(w)
	}
}

// settle makes r from the answer to a call of ctx's task (or the error
// that came instead). It reports whether w is still fit for calls; if not,
// w was discarded (and is being replaced).
func (p *pyPool) settle(ctx context.Context, w *pyWorker, kind byte, body []byte, err error, timeout time.Duration, r *messages.Result) bool {
	var wrong errWrongAnswer
	switch {
	case ctx.Err() != nil:
		// The run was stopped: its worker was killed mid-call (or may be).
		// Replace it unless the manager is on its way out.
		cause := context.Cause(ctx)
		p.discard(w, pyKilled, errors.Is(cause, errCancelled) || errors.Is(cause, context.DeadlineExceeded))
		r.Code, r.Error = stopped(ctx, timeout)
	case errors.As(err, &wrong):
		p.log.WithFields(logrus.Fields{"pid": w.pid, "owner": w.owner, "error": err.Error()}).Warn("python worker answered with the wrong call id")
		p.discard(w, pyProtocol, true)
		r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) sent %v: something other than the worker, "+
			"perhaps the function, wrote to its answer pipe; the worker was killed and replaced, and this call's result is lost", w.pid, err)
	case err != nil:
		reason := pyDied
		var big errFrameTooLarge
		if errors.As(err, &big) {
			reason = pyProtocol
			r.Error = fmt.Sprintf("the result is %d bytes; the limit is %d; the worker was replaced", big.size, big.limit)
		} else if w.exitedWithin(2 * time.Second) {
			// "signal: killed: ..." reads as a signal death to the manager,
			// which gives the task back if the node is going away.
			r.Error = fmt.Sprintf("%s: python worker (pid %d) died while running this task; it has been replaced%s",
				w.status(), w.pid, w.stderrNote())
		} else {
			reason = pyProtocol
			r.Error = fmt.Sprintf("python worker (pid %d) broke the worker protocol (%v); it was killed and replaced", w.pid, err)
		}
		p.log.WithFields(logrus.Fields{"pid": w.pid, "reason": reason, "error": r.Error}).Warn("python worker lost while running a task")
		p.discard(w, reason, true)
		r.Code = messages.Failed
	case kind == frameReturn:
		if w.protocol >= 3 {
			if r.Text, body, err = splitText(body); err != nil {
				p.discard(w, pyProtocol, true)
				r.Code, r.Text, r.Error = messages.Failed, "", fmt.Sprintf("python worker (pid %d) broke the worker protocol: %v", w.pid, err)
				return false
			}
		}
		r.Code, r.Payload = messages.Success, body
		return true
	case kind == frameException:
		summary, payload, err := splitException(body)
		if err == nil && w.protocol >= 3 {
			r.Text, payload, err = splitText(payload)
		}
		if err != nil {
			r.Text = ""
			p.discard(w, pyProtocol, true)
			r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) broke the worker protocol: %v", w.pid, err)
			return false
		}
		r.Code, r.Error, r.Payload = messages.Failed, strings.ToValidUTF8(summary, "?"), payload
		return true
	case kind == frameFatal:
		p.discard(w, pyDied, true)
		r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) gave up: %s", w.pid, capText(body, maxSummaryBytes))
	default:
		p.discard(w, pyProtocol, true)
		r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) answered with frame type %q; legal answers are 'R' and 'X'", w.pid, kind)
	}
	return false
}

// pyWorker is one worker process and our ends of its pipes.
type pyWorker struct {
	cmd   *exec.Cmd
	pid   int
	owner string // the only owner whose calls it runs
	// protocol is the version its hello announced (3 adds answer text).
	protocol int
	in       *os.File
	outF     *os.File
	out      *bufio.Reader
	scratch  []byte
	stderr   *tailBuffer
	// idleSince is when it was last put back (pool's mu).
	idleSince time.Time
	// head is the id of the call it runs when calls are sent ahead: a
	// cancel kills it only for that call. avg is its calls' running
	// average time, which sets how many are sent ahead.
	head atomic.Uint64
	avg  time.Duration
	// done is closed once the process has exited and waitErr is set.
	done    chan struct{}
	waitErr error
	// errDone is closed when its output pipe reached EOF.
	errDone chan struct{}
}

type pyHello struct {
	Protocol    int    `json:"protocol"`
	Language    string `json:"language"`
	PID         int    `json:"pid"`
	Version     string `json:"version"`
	Cloudpickle string `json:"cloudpickle"`
}

// startPyWorker starts the interpreter on the embedded program, which it
// reads from fd 3; calls go in on fd 4, answers come back on fd 5. The
// program's stdout and stderr (anything a function prints) go to a
// capture of which the last 2 KiB are kept, never to the protocol.
func startPyWorker(python string, maxResult int, env []string) (*pyWorker, error) {
	var fds [8]*os.File // program r/w, calls r/w, answers r/w, output r/w
	for i := 0; i < len(fds); i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(fds[:i]...)
			return nil, fmt.Errorf("python worker: pipe: %w", err)
		}
		fds[i], fds[i+1] = r, w
	}
	progR, progW, callR, callW, ansR, ansW, outR, outW := fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], fds[6], fds[7]
	cmd := exec.Command(python, "-B", "-s", "-c", pyBootstrap, strconv.Itoa(maxResult))
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outW, outW // stdin: /dev/null
	cmd.ExtraFiles = []*os.File{progR, callR, ansW}
	// Its own process group, so a kill reaches what the task started too;
	// and it dies with the manager.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err := cmd.Start()
	closeAll(progR, callR, ansW, outW) // the child holds its own copies
	if err != nil {
		closeAll(progW, callW, ansR, outR)
		return nil, fmt.Errorf("cannot start python worker %q: %w; set --python to a Python 3 interpreter that has cloudpickle", python, err)
	}
	go func() {
		// A pipe holds the whole program; a worker that died early just
		// makes this write fail.
		_, _ = progW.Write(pythonWorkerScript)
		progW.Close()
	}()
	w := &pyWorker{cmd: cmd, pid: cmd.Process.Pid, in: callW, outF: ansR, out: bufio.NewReaderSize(ansR, 64<<10),
		stderr: &tailBuffer{limit: 2048}, done: make(chan struct{}), errDone: make(chan struct{})}
	go func() {
		w.waitErr = cmd.Wait()
		close(w.done)
	}()
	go func() {
		_, _ = io.Copy(w.stderr, outR)
		outR.Close()
		close(w.errDone)
	}()
	return w, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// hello reads the worker's first frame.
func (w *pyWorker) hello(ctx context.Context) (pyHello, error) {
	var h pyHello
	t := time.AfterFunc(helloTimeout, w.kill)
	defer t.Stop()
	stop := context.AfterFunc(ctx, w.kill)
	defer stop()
	kind, body, err := readFrame(w.out, 64<<10)
	switch {
	case err != nil && ctx.Err() != nil:
		return h, ctx.Err()
	case err != nil:
		if w.exitedWithin(2 * time.Second) {
			return h, fmt.Errorf("python worker %s (pid %d) exited before it was ready (%s)%s",
				w.cmd.Path, w.pid, w.status(), w.stderrNote())
		}
		return h, fmt.Errorf("python worker %s (pid %d) was not ready within %s: %v", w.cmd.Path, w.pid, helloTimeout, err)
	case kind == frameFatal:
		return h, fmt.Errorf("python worker %s could not start: %s", w.cmd.Path, capText(body, maxSummaryBytes))
	case kind != frameHello:
		return h, fmt.Errorf("python worker %s sent frame type %q before its hello", w.cmd.Path, kind)
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return h, fmt.Errorf("python worker %s sent a hello that is not JSON: %v", w.cmd.Path, err)
	}
	if h.Protocol < minWorkerProtocol || h.Protocol > workerProtocol {
		return h, fmt.Errorf("python worker %s speaks protocol %d; this manager speaks %d to %d", w.cmd.Path, h.Protocol, minWorkerProtocol, workerProtocol)
	}
	w.protocol = h.Protocol
	return h, nil
}

// call sends one call and reads its answer, which must carry the call's
// id. A cancelled ctx kills the process, which ends the read.
func (w *pyWorker) call(ctx context.Context, payload []byte, maxResult int) (byte, []byte, error) {
	stop := context.AfterFunc(ctx, w.kill)
	defer stop()
	id := rand.Uint64()
	var err error
	if w.scratch, err = writeCall(w.in, id, payload, w.scratch); err != nil {
		return 0, nil, fmt.Errorf("send the call: %w", err)
	}
	if cap(w.scratch) > 256<<10 {
		w.scratch = nil
	}
	kind, body, err := readFrame(w.out, callIDLen+maxResult+maxSummaryBytes+maxTextBytes+64)
	if err == nil && (kind == frameReturn || kind == frameException) {
		body, err = answerOf(body, id)
	}
	return kind, body, err
}

// pending reports whether the worker wrote something after its last
// answer (or closed its pipe); it does not wait. A byte it reads is lost,
// but such a worker is not used again.
func (w *pyWorker) pending() bool {
	if w.out.Buffered() > 0 {
		return true
	}
	rc, err := w.outF.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, err := syscall.Read(int(fd), b[:]) // the pipe is non-blocking
		pending = n > 0 || (n == 0 && err == nil)
	})
	return pending
}

func (w *pyWorker) kill() { _ = syscall.Kill(-w.pid, syscall.SIGKILL) }

func (w *pyWorker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *pyWorker) exitedWithin(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}

// status says how the process ended, like "exit status 3".
func (w *pyWorker) status() string {
	if !w.exited() {
		return "still running"
	}
	if w.waitErr == nil {
		return "exit status 0"
	}
	return w.waitErr.Error()
}

// stderrNote is the end of what the worker wrote to stderr, for errors.
func (w *pyWorker) stderrNote() string {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-w.errDone:
	case <-t.C:
	}
	s := strings.TrimSpace(w.stderr.String())
	if s == "" {
		return ""
	}
	return "; its stderr ended: " + s
}

// stop ends the process: closing its calls pipe asks it to leave; a kill
// of its process group follows if it does not.
func (w *pyWorker) stop() {
	_ = w.in.Close()
	if !w.exitedWithin(time.Second) {
		w.kill()
		<-w.done
	}
	_ = w.outF.Close()
}

// rateLimit lets one log line through per period and counts the rest.
type rateLimit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

const rateLimitPeriod = 10 * time.Second

func (l *rateLimit) allow(now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < rateLimitPeriod {
		l.suppressed++
		return 0, false
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return suppressed, true
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.limit {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.limit:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.ToValidUTF8(string(b.buf), "?")
}

func capText(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = append(b[:n:n], "..."...)
	}
	return strings.ToValidUTF8(string(b), "?")
}
