package blocks

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Local managers normally stop with their interchange (Close cancels
// them). One that outlived it (the interchange was killed) reconnects to
// its successor; adopting it by pid lets the successor count, drain and
// stop it instead of leaving an orphan.

// pidsOf lists the pids of a job's managers that still run.
func (l *Local) pidsOf(jobID string) []int {
	l.mu.Lock()
	job := l.jobs[jobID]
	l.mu.Unlock()
	if job == nil {
		return nil
	}
	var out []int
	for _, p := range job.procs {
		select {
		case <-p.done:
		default:
			out = append(out, p.pid)
		}
	}
	return out
}

// adoptLocal takes over the managers of a saved local block that still
// run; false when none does.
func (b *Blocks) adoptLocal(s savedBlock) bool {
	l, ok := b.opts.Provider.(*Local)
	if !ok {
		return false
	}
	l.reserve(s.JobID)
	return l.adopt(s.JobID, s.ID, s.Pids, b.cfg.Walltime, s.StartedAt) > 0
}

// adopt makes jobID a job of this provider with those of pids that are
// still managers of blockID, and returns how many.
func (l *Local) adopt(jobID, blockID string, pids []int, walltime time.Duration, started time.Time) int {
	job := &localJob{started: started, stop: make(chan struct{})}
	for _, pid := range pids {
		if !isManagerOf(pid, blockID) {
			continue
		}
		p := &localProc{pid: pid, done: make(chan struct{})}
		go watchPid(p)
		job.procs = append(job.procs, p)
	}
	if len(job.procs) == 0 {
		return 0
	}
	l.mu.Lock()
	if l.jobs == nil {
		l.jobs = map[string]*localJob{}
	}
	l.jobs[jobID] = job
	l.mu.Unlock()
	left := time.Duration(0)
	if walltime > 0 {
		left = max(time.Until(started.Add(walltime)), time.Millisecond)
	}
	l.wg.Add(1)
	go l.watch(job, left)
	return len(job.procs)
}

// reserve keeps new job ids from reusing one of a previous run.
func (l *Local) reserve(jobID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, err := strconv.Atoi(strings.TrimPrefix(jobID, ProviderLocal+"-")); err == nil && n > l.seq {
		l.seq = n
	}
}

// isManagerOf reports whether pid runs `switchyard manager ... --block-id
// blockID` (a pid may have been reused since).
func isManagerOf(pid int, blockID string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(cmdline, []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "--block-id" && string(args[i+1]) == blockID {
			return true
		}
	}
	return false
}

// watchPid closes p.done when the process is gone: it is not our child,
// so it cannot be waited for.
func watchPid(p *localProc) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		if !alive(p.pid) {
			close(p.done)
			return
		}
	}
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
