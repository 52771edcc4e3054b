package blocks_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

// The test binary doubles as a fake manager: with BLOCKS_FAKE_MANAGER set
// it records its arguments in its working directory (the block dir) and
// behaves as BLOCKS_FAKE_MANAGER says.
func TestMain(m *testing.M) {
	if mode := os.Getenv("BLOCKS_FAKE_MANAGER"); mode != "" {
		os.Exit(fakeManager(mode))
	}
	testutil.VerifyNoLeaks(m)
}

func fakeManager(mode string) int {
	id := "unnamed"
	for i, a := range os.Args {
		if a == "--manager-id" && i+1 < len(os.Args) {
			id = os.Args[i+1]
		}
	}
	_ = os.WriteFile("args-"+id, []byte(strings.Join(os.Args[1:], "\n")), 0o600)
	fmt.Println("fake manager", id, "up")
	switch mode {
	case "exit0":
		return 0
	case "fail":
		fmt.Fprintln(os.Stderr, "cannot reach the interchange")
		return 3
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
		_ = os.WriteFile("up-"+id, nil, 0o600)
		select {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	_ = os.WriteFile("up-"+id, nil, 0o600)
	<-ch
	_ = os.WriteFile("term-"+id, []byte(time.Now().Format(time.RFC3339Nano)), 0o600)
	return 0
}

func fakeSpec(t *testing.T, id string, nodes int) blocks.Spec {
	return blocks.Spec{BlockID: id, Dir: filepath.Join(t.TempDir(), "blocks", id), Nodes: nodes, WorkersPerNode: 3,
		Manager: blocks.ManagerCommand{Binary: os.Args[0], Interchange: "tcp://127.0.0.1:1", Credentials: "/x/manager.credentials",
			AllowRoot: true, Args: []string{"--prefetch=0"}}}
}

func localWith(t *testing.T, mode string, grace time.Duration) *blocks.Local {
	l := blocks.NewLocal(grace)
	// A -race binary sleeps 1s at exit unless told not to.
	l.Env = append(os.Environ(), "BLOCKS_FAKE_MANAGER="+mode, "GORACE=atexit_sleep_ms=0")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return l
}

func waitJob(t *testing.T, p blocks.Provider, id string, want blocks.JobState, timeout time.Duration) blocks.JobStatus {
	t.Helper()
	var st blocks.JobStatus
	testutil.WaitFor(t, timeout, func() error {
		m, err := p.Status(context.Background(), []string{id})
		if err != nil {
			return err
		}
		st = m[id]
		if st.State != want {
			return fmt.Errorf("job %s is %s (%s), want %s", id, st.State, st.Reason, want)
		}
		return nil
	})
	return st
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := os.Stat(path)
		return err
	})
}

func TestLocalSubmitStatusCancel(t *testing.T) {
	l := localWith(t, "drain", 10*time.Second)
	spec := fakeSpec(t, "b1", 2)
	start := time.Now()
	id, err := l.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, l, id, blocks.JobRunning, 5*time.Second)
	for i := range 2 {
		waitFile(t, filepath.Join(spec.Dir, fmt.Sprintf("up-b1-%d", i)))
	}
	up := time.Since(start)
	args, err := os.ReadFile(filepath.Join(spec.Dir, "args-b1-1"))
	if err != nil {
		t.Fatal(err)
	}
	// Each manager serves its metrics on a free port of its own.
	want := "manager\n--manager-id\nb1-1\n--interchange\ntcp://127.0.0.1:1\n--block-id\nb1\n--workers\n3\n--credentials\n/x/manager.credentials\n--listen-http\n127.0.0.1:0\n--allow-root\n--prefetch=0"
	if string(args) != want {
		t.Fatalf("manager args:\n%s\nwant:\n%s", args, want)
	}
	if err := l.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	cancelled := time.Now()
	waitJob(t, l, id, blocks.JobDone, 5*time.Second)
	for i := range 2 {
		if _, err := os.Stat(filepath.Join(spec.Dir, fmt.Sprintf("term-b1-%d", i))); err != nil {
			t.Fatalf("manager %d ended without SIGTERM: %v", i, err)
		}
	}
	log, _ := os.ReadFile(filepath.Join(spec.Dir, "manager-0.log"))
	if !strings.Contains(string(log), "fake manager b1-0 up") {
		t.Fatalf("manager-0.log holds %q, want the manager's output", log)
	}
	t.Logf("timeline: submit → 2 managers up %s; cancel → done %s", up.Round(time.Millisecond), time.Since(cancelled).Round(time.Millisecond))
	if m, _ := l.Status(context.Background(), []string{"local-99"}); len(m) != 0 {
		t.Fatalf("unknown job reported: %v", m)
	}
}

func TestLocalGraceThenKill(t *testing.T) {
	l := localWith(t, "ignore", 300*time.Millisecond)
	spec := fakeSpec(t, "b2", 1)
	id, err := l.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(spec.Dir, "up-b2-0"))
	start := time.Now()
	if err := l.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	st := waitJob(t, l, id, blocks.JobFailed, 5*time.Second)
	if !strings.Contains(st.Reason, "killed") {
		t.Fatalf("reason %q, want the kill", st.Reason)
	}
	t.Logf("manager ignoring SIGTERM killed %s after cancel (grace 300ms)", time.Since(start).Round(time.Millisecond))
}

func TestLocalWalltime(t *testing.T) {
	l := localWith(t, "drain", 5*time.Second)
	spec := fakeSpec(t, "b3", 1)
	spec.Walltime = 500 * time.Millisecond
	id, err := l.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, l, id, blocks.JobDone, 10*time.Second)
	if _, err := os.Stat(filepath.Join(spec.Dir, "term-b3-0")); err != nil {
		t.Fatalf("walltime ended the manager without SIGTERM: %v", err)
	}
}

func TestLocalFailedManager(t *testing.T) {
	l := localWith(t, "fail", time.Second)
	spec := fakeSpec(t, "b4", 1)
	id, err := l.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	st := waitJob(t, l, id, blocks.JobFailed, 10*time.Second)
	if !strings.Contains(st.Reason, "exit status 3") || !strings.Contains(st.Reason, "cannot reach the interchange") {
		t.Fatalf("reason %q, want the exit status and the log's last line", st.Reason)
	}
}

func TestLocalWorkerInit(t *testing.T) {
	l := localWith(t, "drain", time.Second)
	spec := fakeSpec(t, "b5", 1)
	spec.WorkerInit = "echo init ran > init-marker"
	id, err := l.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(spec.Dir, "up-b5-0"))
	waitFile(t, filepath.Join(spec.Dir, "init-marker"))
	if err := l.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitJob(t, l, id, blocks.JobDone, 5*time.Second)
}

func TestLocalMissingBinary(t *testing.T) {
	l := localWith(t, "drain", time.Second)
	spec := fakeSpec(t, "b6", 1)
	spec.Manager.Binary = "/nonexistent/switchyard"
	if _, err := l.Submit(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "/nonexistent/switchyard") {
		t.Fatalf("Submit with a missing binary: %v, want an error naming it", err)
	}
}
