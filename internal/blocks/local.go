package blocks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Local runs each block's managers as child processes of the interchange,
// for laptops and CI. Each manager has its own process group, so a signal
// reaches the workers it started too; its output goes to
// BLOCK_DIR/manager-N.log. A walltime, when set, is enforced as a batch
// scheduler would: SIGTERM at the end, SIGKILL after the grace.
type Local struct {
	// Grace between SIGTERM and SIGKILL (default 30s).
	Grace time.Duration
	// Env is the managers' environment (default: the interchange's).
	Env []string
	// Cred, when set, runs the managers as that account (a user's blocks
	// on a multi-user endpoint); Dir is then their working directory, since
	// the block's own directory is root's.
	Cred *syscall.Credential
	Dir  string

	mu   sync.Mutex
	seq  int
	jobs map[string]*localJob
	wg   sync.WaitGroup
}

type localJob struct {
	procs   []*localProc
	started time.Time
	stop    chan struct{} // closed by Cancel
	once    sync.Once
	// ending: SIGTERM was sent (cancel or walltime), so a manager that
	// dies of it ended as asked.
	ending atomic.Bool
}

type localProc struct {
	cmd  *exec.Cmd // nil for a manager adopted from a previous run
	pid  int       // also its process group
	log  string
	done chan struct{}
	err  error
}

// NewLocal makes a local provider.
func NewLocal(grace time.Duration) *Local {
	if grace <= 0 {
		grace = 30 * time.Second
	}
	return &Local{Grace: grace, jobs: map[string]*localJob{}}
}

// Name is ProviderLocal.
func (l *Local) Name() string { return ProviderLocal }

// Submit starts one manager per node of the spec. The job id is
// "local-N".
func (l *Local) Submit(ctx context.Context, spec Spec) (string, error) {
	bin := spec.Manager.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return "", fmt.Errorf("block dir: %w", err)
	}
	l.mu.Lock()
	if l.jobs == nil {
		l.jobs = map[string]*localJob{}
	}
	l.seq++
	id := fmt.Sprintf("%s-%d", ProviderLocal, l.seq)
	l.mu.Unlock()

	job := &localJob{started: time.Now(), stop: make(chan struct{})}
	for i := range max(spec.Nodes, 1) {
		// A free port each, so every manager can be scraped (--manager-arg
		// may name another address; it comes later and wins).
		args := spec.Manager.args(spec.BlockID, fmt.Sprintf("%s-%d", spec.BlockID, i), spec.WorkersPerNode, "127.0.0.1:0")
		p, err := l.start(bin, args, spec, filepath.Join(spec.Dir, fmt.Sprintf("manager-%d.log", i)))
		if err != nil {
			l.kill(job)
			return "", err
		}
		job.procs = append(job.procs, p)
	}
	l.mu.Lock()
	l.jobs[id] = job
	l.mu.Unlock()
	l.wg.Add(1)
	go l.watch(job, spec.Walltime)
	return id, nil
}

func (l *Local) start(bin string, args []string, spec Spec, logPath string) (*localProc, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("manager log: %w", err)
	}
	defer out.Close()
	var cmd *exec.Cmd
	if spec.WorkerInit == "" {
		cmd = exec.Command(bin, args...)
	} else {
		// The init runs in the shell that then becomes the manager.
		cmd = exec.Command("/bin/sh", append([]string{"-c", spec.WorkerInit + "\nexec \"$0\" \"$@\"", bin}, args...)...)
	}
	cmd.Env = l.Env
	cmd.Dir = spec.Dir
	if l.Dir != "" {
		cmd.Dir = l.Dir
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: l.Cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start manager %s: %w", bin, err)
	}
	p := &localProc{cmd: cmd, pid: cmd.Process.Pid, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// watch ends the job at its walltime or when cancelled: SIGTERM to every
// manager's process group, SIGKILL after the grace.
func (l *Local) watch(job *localJob, walltime time.Duration) {
	defer l.wg.Done()
	all := make(chan struct{})
	go func() {
		for _, p := range job.procs {
			<-p.done
		}
		close(all)
	}()
	var limit <-chan time.Time
	if walltime > 0 {
		t := time.NewTimer(walltime)
		defer t.Stop()
		limit = t.C
	}
	select {
	case <-all:
		return
	case <-job.stop:
	case <-limit:
	}
	job.ending.Store(true)
	job.signal(syscall.SIGTERM)
	t := time.NewTimer(l.Grace)
	defer t.Stop()
	select {
	case <-all:
	case <-t.C:
		job.signal(syscall.SIGKILL)
		<-all
	}
}

func (j *localJob) signal(sig syscall.Signal) {
	for _, p := range j.procs {
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-p.pid, sig)
		}
	}
}

func (l *Local) kill(job *localJob) {
	job.signal(syscall.SIGKILL)
	for _, p := range job.procs {
		<-p.done
	}
}

// Status: running while a manager runs; done when all exited with status
// 0 (a drained manager exits 0) or died of the SIGTERM that ended the job;
// failed otherwise (a SIGKILL after the grace included).
func (l *Local) Status(ctx context.Context, ids []string) (map[string]JobStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]JobStatus, len(ids))
	for _, id := range ids {
		job, ok := l.jobs[id]
		if !ok {
			continue
		}
		st := JobStatus{State: JobDone, Since: job.started}
		for i, p := range job.procs {
			select {
			case <-p.done:
				if p.err != nil && st.State != JobRunning && !(job.ending.Load() && diedOf(p.err, syscall.SIGTERM)) {
					st = JobStatus{State: JobFailed, Since: job.started,
						Reason: fmt.Sprintf("manager %d: %v%s", i, p.err, logTail(p.log))}
				}
			default:
				st = JobStatus{State: JobRunning, Since: job.started}
			}
		}
		out[id] = st
	}
	return out, nil
}

// Cancel sends SIGTERM to the job's managers; they are killed if they run
// past the grace. It does not wait.
func (l *Local) Cancel(ctx context.Context, id string) error {
	l.mu.Lock()
	job, ok := l.jobs[id]
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("local job %s is not known", id)
	}
	job.once.Do(func() { close(job.stop) })
	return nil
}

// Close cancels every job and waits until their managers are gone (or
// ctx ends, after which they are killed).
func (l *Local) Close(ctx context.Context) error {
	l.mu.Lock()
	jobs := make([]*localJob, 0, len(l.jobs))
	for _, j := range l.jobs {
		jobs = append(jobs, j)
		j.once.Do(func() { close(j.stop) })
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, j := range jobs {
			j.signal(syscall.SIGKILL)
		}
		<-done
		return errors.New("local managers outlived the shutdown; killed")
	}
}

// diedOf reports whether err is the exit of a process killed by sig.
func diedOf(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// logTail is the last line of a manager's log, for failure reasons.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return ""
	}
	if len(last) > 300 {
		last = last[:300] + "…"
	}
	return "; log " + path + ": " + last
}
