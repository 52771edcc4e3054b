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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

//go:embed python_worker.py
var pythonWorkerScript []byte

// pythonWorkerFile is the worker program's name in the state directory.
const pythonWorkerFile = "python_worker.py"

// pythonMaxResult keeps a python result and its error summary within the
// interchange's default --max-result-bytes (10 MiB): a larger result would
// be refused there and its task would never end. The worker refuses it
// with a clear exception instead.
const pythonMaxResult = 10<<20 - maxSummaryBytes - 1024

// helloTimeout bounds a worker's start-up (interpreter and cloudpickle import).
const helloTimeout = time.Minute

type pyMetrics struct {
	live      prometheus.Gauge
	busy      prometheus.Gauge
	starts    prometheus.Counter
	restarts  prometheus.Counter
	failures  *prometheus.CounterVec
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

func newPyMetrics(reg prometheus.Registerer) *pyMetrics {
	m := &pyMetrics{
		live: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_manager_python_workers",
			Help: "Python worker processes running (started at the first python task, then kept)."}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_manager_python_workers_busy",
			Help: "Python worker processes running a task."}),
		starts: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_starts_total",
			Help: "Python worker processes started and ready."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_restarts_total",
			Help: "Python worker processes started to replace one that died or was killed."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_manager_python_worker_failures_total",
			Help: "Python worker processes lost, by reason: start_failed, died, killed, protocol, idle_exit."}, []string{"reason"}),
		startTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_manager_python_worker_start_seconds",
			Help: "Time from starting a Python worker until it is ready.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 12)}),
	}
	for _, r := range []string{pyStartFailed, pyDied, pyKilled, pyProtocol, pyIdleExit} {
		m.failures.WithLabelValues(r)
	}
	reg.MustRegister(m.live, m.busy, m.starts, m.restarts, m.failures, m.startTime)
	return m
}

// pyPool keeps up to size long-lived Python worker processes. Its tokens
// channel holds one token per slot: an idle worker, or nil, the right to
// start one. Whoever holds a token owns that slot, so the processes
// never outnumber the slots and nothing else needs a lock.
type pyPool struct {
	python    string
	script    string
	tmpDir    string // made when the manager has no state dir; removed at close
	maxResult int
	env       []string
	log       *logrus.Entry
	m         *pyMetrics

	// startErrLog keeps a bad --python from logging once per task.
	startErrLog rateLimit

	tokens chan *pyWorker
	ctx    context.Context // ends at close; stops replacements being started
	cancel context.CancelFunc
	wg     sync.WaitGroup // replacements being started
}

// newPyPool writes the worker program to dir (a temp dir when dir is "").
// No process starts until the first python task; workers get env, the
// tasks' clean environment (baseEnv).
func newPyPool(python string, size int, dir string, env []string, log *logrus.Entry, reg prometheus.Registerer) (*pyPool, error) {
	p := &pyPool{python: python, maxResult: pythonMaxResult, env: env,
		log: log.WithField("python", python), tokens: make(chan *pyWorker, size)}
	if dir == "" {
		d, err := os.MkdirTemp("", "switchyard-manager-")
		if err != nil {
			return nil, fmt.Errorf("python workers: temp dir for the worker program: %w", err)
		}
		p.tmpDir, dir = d, d
	}
	p.script = filepath.Join(dir, pythonWorkerFile)
	// Write a new file and rename it, so a worker starting from an older
	// copy never reads a half-written one.
	tmp := p.script + ".tmp"
	if err := os.WriteFile(tmp, pythonWorkerScript, 0o600); err != nil {
		p.removeTmp()
		return nil, fmt.Errorf("python workers: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p.script); err != nil {
		p.removeTmp()
		return nil, fmt.Errorf("python workers: %w", err)
	}
	for i := 0; i < size; i++ {
		p.tokens <- nil
	}
	p.m = newPyMetrics(reg)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

func (p *pyPool) removeTmp() {
	if p.tmpDir != "" {
		_ = os.RemoveAll(p.tmpDir)
	}
}

// close stops every worker; no task may be running. The workers are
// asked to leave all at once, so a large pool stops as fast as one.
func (p *pyPool) close() {
	p.cancel()
	p.wg.Wait()
	var ws []*pyWorker
	for n := cap(p.tokens); n > 0; n-- {
		if w := <-p.tokens; w != nil {
			_ = w.in.Close()
			ws = append(ws, w)
		}
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
	p.removeTmp()
}

// get takes a worker for one task, starting one if its slot has none.
func (p *pyPool) get(ctx context.Context) (*pyWorker, error) {
	var w *pyWorker
	select {
	case w = <-p.tokens:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if w != nil && w.exited() {
		p.m.failures.WithLabelValues(pyIdleExit).Inc()
		p.m.live.Dec()
		p.log.WithFields(logrus.Fields{"pid": w.pid, "status": w.status()}).Warn("python worker exited while idle; starting another")
		w.stop()
		w = nil
	}
	if w == nil {
		var err error
		if w, err = p.start(ctx); err != nil {
			p.tokens <- nil
			return nil, err
		}
	}
	p.m.busy.Inc()
	return w, nil
}

// put returns a healthy worker after its task.
func (p *pyPool) put(w *pyWorker) {
	p.m.busy.Dec()
	p.tokens <- w
}

// discard stops a worker that died or was killed, and starts its
// replacement in the background so the next task does not wait for it
// (unless replace is false: the manager is shutting down).
func (p *pyPool) discard(w *pyWorker, reason string, replace bool) {
	p.m.busy.Dec()
	p.m.live.Dec()
	p.m.failures.WithLabelValues(reason).Inc()
	w.stop()
	if !replace || p.ctx.Err() != nil {
		p.tokens <- nil
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		nw, err := p.start(p.ctx)
		if err == nil {
			p.m.restarts.Inc()
		}
		p.tokens <- nw // nil when it failed: the next task tries again
	}()
}

// start runs one worker process and waits for its hello.
func (p *pyPool) start(ctx context.Context) (*pyWorker, error) {
	begin := time.Now()
	w, err := startPyWorker(p.python, p.script, p.maxResult, p.env)
	var hello pyHello
	if err == nil {
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
	p.log.WithFields(logrus.Fields{"pid": w.pid, "version": hello.Version, "cloudpickle": hello.Cloudpickle,
		"took": time.Since(begin).Round(time.Millisecond).String()}).Info("python worker ready")
	return w, nil
}

// runPython runs one python task on a pooled worker.
func (p *pyPool) runPython(ctx context.Context, spec taskspec.Spec, timeout time.Duration, r *messages.Result) {
	w, err := p.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			r.Code, r.Error = stopped(ctx, timeout)
			return
		}
		r.Code, r.Error = messages.Failed, err.Error()
		return
	}
	kind, body, err := w.call(ctx, spec.Payload, p.maxResult)
	switch {
	case ctx.Err() != nil:
		// The run was stopped: its worker was killed mid-call (or may be).
		// Replace it unless the manager is on its way out.
		cause := context.Cause(ctx)
		p.discard(w, pyKilled, errors.Is(cause, errCancelled) || errors.Is(cause, context.DeadlineExceeded))
		r.Code, r.Error = stopped(ctx, timeout)
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
		p.put(w)
		r.Code, r.Payload = messages.Success, body
	case kind == frameException:
		summary, payload, err := splitException(body)
		if err != nil {
			p.discard(w, pyProtocol, true)
			r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) broke the worker protocol: %v", w.pid, err)
			return
		}
		p.put(w)
		r.Code, r.Error, r.Payload = messages.Failed, strings.ToValidUTF8(summary, "?"), payload
	case kind == frameFatal:
		p.discard(w, pyDied, true)
		r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) gave up: %s", w.pid, capText(body, maxSummaryBytes))
	default:
		p.discard(w, pyProtocol, true)
		r.Code, r.Error = messages.Failed, fmt.Sprintf("python worker (pid %d) answered with frame type %q; legal answers are 'R' and 'X'", w.pid, kind)
	}
}

// pyWorker is one worker process and our ends of its pipes.
type pyWorker struct {
	cmd     *exec.Cmd
	pid     int
	in      *os.File
	outF    *os.File
	out     *bufio.Reader
	scratch []byte
	stderr  *tailBuffer
	// done is closed once the process has exited and waitErr is set.
	done    chan struct{}
	waitErr error
	// errDone is closed when its stderr reached EOF.
	errDone chan struct{}
}

type pyHello struct {
	Protocol    int    `json:"protocol"`
	Language    string `json:"language"`
	PID         int    `json:"pid"`
	Version     string `json:"version"`
	Cloudpickle string `json:"cloudpickle"`
}

func startPyWorker(python, script string, maxResult int, env []string) (*pyWorker, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("python worker: pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("python worker: pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("python worker: pipe: %w", err)
	}
	cmd := exec.Command(python, "-B", script, strconv.Itoa(maxResult))
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	// Its own process group, so a kill reaches what the task started too;
	// and it dies with the manager.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	closeAll(inR, outW, errW) // the child holds its own copies
	if err != nil {
		closeAll(inW, outR, errR)
		return nil, fmt.Errorf("cannot start python worker %q: %w; set --python to a Python 3 interpreter that has cloudpickle", python, err)
	}
	w := &pyWorker{cmd: cmd, pid: cmd.Process.Pid, in: inW, outF: outR, out: bufio.NewReaderSize(outR, 64<<10),
		stderr: &tailBuffer{limit: 2048}, done: make(chan struct{}), errDone: make(chan struct{})}
	go func() {
		w.waitErr = cmd.Wait()
		close(w.done)
	}()
	go func() {
		_, _ = io.Copy(w.stderr, errR)
		errR.Close()
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
	if h.Protocol != workerProtocol {
		return h, fmt.Errorf("python worker %s speaks protocol %d; this manager speaks %d", w.cmd.Path, h.Protocol, workerProtocol)
	}
	return h, nil
}

// call sends one call and reads its answer. A cancelled ctx kills the
// process, which ends the read.
func (w *pyWorker) call(ctx context.Context, payload []byte, maxResult int) (byte, []byte, error) {
	stop := context.AfterFunc(ctx, w.kill)
	defer stop()
	var err error
	if w.scratch, err = writeFrame(w.in, frameCall, payload, w.scratch); err != nil {
		return 0, nil, fmt.Errorf("send the call: %w", err)
	}
	if cap(w.scratch) > 256<<10 {
		w.scratch = nil
	}
	return readFrame(w.out, maxResult+maxSummaryBytes+64)
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

// stop ends the process: closing its stdin asks it to leave; a kill
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
