package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// terminal runs one shell command line in a detached tmux session, so the
// CLI sees a real terminal (a pty) as a user's shell would give it.
type terminal struct {
	t      *testing.T
	socket string
}

func newTerminal(t *testing.T, cmdline string) *terminal {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is needed for the terminal tests (scripts/install-deps.sh test installs it): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	// The pane stays after the command ends, so its last words can be read.
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tm := &terminal{t: t, socket: filepath.Join(dir, "tmux.sock")}
	// trap : INT gives the wrapper shell a handler (the CLI still gets the
	// default), so it lives to print the CLI's exit status.
	wrapped := "trap : INT; " + cmdline + `; echo "[exit status $?]"`
	tm.tmux("-f", conf, "new-session", "-d", "-s", "t", "-x", "200", "-y", "50", "bash", "-c", wrapped)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *terminal) tmux(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// screen is what the terminal shows, scrollback included.
func (tm *terminal) screen() string { return tm.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t") }

// waitFor polls the screen until it holds every want.
func (tm *terminal) waitFor(want ...string) string {
	tm.t.Helper()
	var last string
	err := testutil.Poll(20*time.Second, func() error {
		last = tm.screen()
		for _, w := range want {
			if !strings.Contains(last, w) {
				return fmt.Errorf("screen lacks %q", w)
			}
		}
		return nil
	})
	if err != nil {
		tm.t.Fatalf("%v; the screen:\n%s", err, last)
	}
	return last
}

func (tm *terminal) ctrlC() { tm.tmux("send-keys", "-t", "t", "C-c") }

// Ctrl-C during 'wait' on a terminal: the progress (a spinner with the
// state for one task, a bar for many) shows, and the ids not finished are
// printed before exiting with 130.
func TestWaitOnATerminal(t *testing.T) {
	ch := testutil.StartChain(t, testutil.ChainOptions{Managers: 1, Workers: 2})
	env := []string{"SWITCHYARD_API=" + ch.Forwarder.URL, "SWITCHYARD_TOKEN=" + ch.Forwarder.AdminToken()}
	submit := func(args ...string) []string {
		r := run(t, env, "", append([]string{"submit", "-e", ch.Endpoint}, args...)...)
		if r.code != 0 {
			t.Fatalf("submit: %s", r)
		}
		return strings.Fields(r.stdout)
	}
	shell := "env " + strings.Join(env, " ") + " " + switchyardBin(t)

	t.Run("one task", func(t *testing.T) {
		id := submit("--kind", "sleep", "60")[0]
		tm := newTerminal(t, shell+" wait "+id)
		t.Cleanup(func() { run(t, env, "", "cancel", id) })
		tm.waitFor(id, "running")
		tm.ctrlC()
		s := tm.waitFor("[exit status 130]")
		// The spinner's line is cleared; the id printed after it stays.
		after, found := strings.CutPrefix(s[strings.Index(s, "interrupted"):], "interrupted: 1 of 1 tasks not finished")
		if !found || !strings.Contains(after, id) {
			t.Errorf("after Ctrl-C the terminal shows:\n%s\nwant the interruption and then the id", s)
		}
		t.Logf("terminal:\n%s", s)
	})

	t.Run("many tasks", func(t *testing.T) {
		quick := submit("--kind", "noop", "-n", "3")
		slow := submit("--kind", "sleep", "60")
		t.Cleanup(func() { run(t, env, "", "cancel", slow[0]) })
		tm := newTerminal(t, shell+" wait "+strings.Join(append(quick, slow...), " "))
		tm.waitFor("3/4", "success=3")
		tm.ctrlC()
		s := tm.waitFor("[exit status 130]", "interrupted: 1 of 4 tasks not finished")
		after := s[strings.Index(s, "interrupted:"):]
		if !strings.Contains(after, slow[0]) {
			t.Errorf("the unfinished id %s is not printed after Ctrl-C:\n%s", slow[0], s)
		}
		for _, id := range quick {
			if strings.Contains(after, id) {
				t.Errorf("finished task %s printed as unfinished:\n%s", id, s)
			}
		}
		t.Logf("terminal:\n%s", s)
	})

	t.Run("not a terminal", func(t *testing.T) {
		// Without a terminal there is no spinner: stderr stays clean.
		ok := submit("--kind", "noop")[0]
		r := run(t, env, "", "wait", ok)
		if r.code != 0 || r.stderr != "" || strings.TrimSpace(r.stdout) != ok+"  success" {
			t.Errorf("wait without a terminal: %s", r)
		}
	})
}
