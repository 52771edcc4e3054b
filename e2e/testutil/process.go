package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The process kit: the switchyard binary built once per test binary, and
// daemons started from it as real processes (see Daemons). Set
// SWITCHYARD_E2E_RACE=1 to build the binary with -race (logs are then
// checked for "DATA RACE"), SWITCHYARD_E2E_LOGS=1 to print every process's
// log even when the test passes.

var (
	buildMu   sync.Mutex
	builtBin  string
	raceBuilt bool
)

// raceRequested reports whether SWITCHYARD_E2E_RACE asks for a -race binary.
func raceRequested() bool {
	v := os.Getenv("SWITCHYARD_E2E_RACE")
	return v != "" && v != "0"
}

// BuildOnce builds cmd/switchyard into a temporary directory the first time
// it is called in a process and returns the path; RemoveBuilt deletes it.
func BuildOnce() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtBin != "" {
		return builtBin, nil
	}
	dir, err := os.MkdirTemp("", "switchyard-test-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "switchyard")
	args := []string{"build", "-o", bin}
	if raceRequested() {
		args = append(args, "-race")
	}
	args = append(args, "github.com/switchyard-hpc/switchyard/cmd/switchyard")
	if out, err := exec.Command(GoTool(), args...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	builtBin, raceBuilt = bin, raceRequested()
	return bin, nil
}

// Switchyard is BuildOnce for a test: a build failure fails t.
func Switchyard(t testing.TB) string {
	t.Helper()
	bin, err := BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// RaceBuilt reports whether BuildOnce's binary has the race detector.
func RaceBuilt() bool {
	buildMu.Lock()
	defer buildMu.Unlock()
	return raceBuilt
}

// RemoveBuilt deletes the binary of BuildOnce; call it from TestMain after
// m.Run.
func RemoveBuilt() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
		builtBin = ""
	}
}

// Proc is one child process. It can be signalled, killed and started again
// with exactly the same command line; its output goes to a log file that
// is printed when the test fails.
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	LogPath string

	t    testing.TB
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, once done is closed
	runs int
}

// StartProc starts bin with args in dir, its output in dir/NAME.log. It
// is stopped when the test ends (Stop).
func StartProc(t testing.TB, dir, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Bin: bin, Args: args, LogPath: filepath.Join(dir, name+".log"), t: t}
	p.start()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() || os.Getenv("SWITCHYARD_E2E_LOGS") != "" {
			p.DumpLog()
		}
		if bin == builtBinary() && RaceBuilt() {
			if b, _ := os.ReadFile(p.LogPath); bytes.Contains(b, []byte("WARNING: DATA RACE")) {
				t.Errorf("%s: data race reported by the daemon", name)
				p.DumpLog()
			}
		}
	})
	return p
}

func builtBinary() string {
	buildMu.Lock()
	defer buildMu.Unlock()
	return builtBin
}

func (p *Proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s: open log: %v", p.Name, err)
	}
	p.runs++
	fmt.Fprintf(f, "=== start #%d: %s %s\n", p.runs, p.Bin, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = filepath.Dir(p.LogPath)
	// Own process group (a terminal's Ctrl-C does not reach it), and die
	// with the test binary if that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: start: %v", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// Restart starts the process again with its exact original command; it
// must have exited.
func (p *Proc) Restart() {
	p.t.Helper()
	if !p.Exited() {
		p.t.Fatalf("%s: restart while still running", p.Name)
	}
	p.start()
}

// PID is the process id of the current run.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Exited reports whether the current run has ended.
func (p *Proc) Exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Signal sends sig; the process must be running.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if p.Exited() {
		p.t.Fatalf("%s: cannot send %v: process already exited", p.Name, sig)
	}
	if err := syscall.Kill(p.PID(), sig); err != nil {
		p.t.Fatalf("%s: kill -%d: %v", p.Name, sig, err)
	}
}

// Kill9 sends SIGKILL and waits for the process to be gone; it returns
// when the signal was sent.
func (p *Proc) Kill9() time.Time {
	p.t.Helper()
	sent := time.Now()
	p.Signal(syscall.SIGKILL)
	if !p.WaitExit(10 * time.Second) {
		p.t.Fatalf("%s: still running 10s after SIGKILL", p.Name)
	}
	return sent
}

// WaitExit waits up to d for the current run to end.
func (p *Proc) WaitExit(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Stop wakes a stopped process, asks it to end with SIGTERM and kills it
// if it does not end in 10s; a daemon that needed SIGKILL fails the test,
// since every daemon promises a prompt exit on SIGTERM.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	pid := p.PID()
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if p.WaitExit(10 * time.Second) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	p.WaitExit(5 * time.Second)
	p.t.Errorf("%s (pid %d) did not exit within 10s of SIGTERM; killed", p.Name, pid)
}

// Log is the whole log so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// DumpLog prints the log with t.Log, the tail only when it is long.
func (p *Proc) DumpLog() {
	s := p.Log()
	const max = 60000
	if len(s) > max {
		s = "...(" + strconv.Itoa(len(s)-max) + " bytes cut)...\n" + s[len(s)-max:]
	}
	p.t.Logf("--- %s log (%s) ---\n%s--- end of %s log ---", p.Name, p.LogPath, s, p.Name)
}

// GrepLog returns the log lines containing every one of words.
func (p *Proc) GrepLog(words ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.Log()))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
lines:
	for sc.Scan() {
		for _, w := range words {
			if !strings.Contains(sc.Text(), w) {
				continue lines
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// WaitFile waits until the process has written path (a token, a
// credential) and returns its content; the test fails at once if the
// process exits first.
func (p *Proc) WaitFile(t testing.TB, path string, timeout time.Duration) string {
	t.Helper()
	var text string
	WaitFor(t, timeout, func() error {
		if p.Exited() {
			p.DumpLog()
			t.Fatalf("%s exited before writing %s", p.Name, path)
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return fmt.Errorf("%s not written yet", path)
		}
		text = strings.TrimSpace(string(b))
		return nil
	})
	return text
}
