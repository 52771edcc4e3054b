package blocks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A local manager that outlived its interchange (killed without a word) is
// adopted by pid by the next one, which then stops it like its own; a
// block whose managers are gone is marked so.
func TestLocalManagersAdoptedByPid(t *testing.T) {
	cfg := &Config{Provider: ProviderLocal, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 1, Walltime: time.Hour,
		MaxIdle: time.Hour, Period: 10 * time.Millisecond, CancelGrace: 5 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// A stand-in for a manager of block b1: its command line names it.
	cmd := exec.Command("/bin/sh", "-c", "sleep 60", "manager", "--block-id", "b1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	dir := t.TempDir()
	now := time.Now().UTC()
	sv := savedBlocks{Provider: ProviderLocal, Blocks: []savedBlock{
		{ID: "b1", JobID: "local-7", State: "running", SubmittedAt: now, StartedAt: now, Pids: []int{cmd.Process.Pid}},
		{ID: "b2", JobID: "local-8", State: "running", SubmittedAt: now, StartedAt: now, Pids: []int{1 << 22}},
	}}
	data, _ := json.Marshal(sv)
	if err := os.MkdirAll(filepath.Join(dir, "blocks"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "blocks", savedName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := NewLocal(cfg.CancelGrace)
	b, err := New(Options{Config: cfg, Provider: p, StateDir: dir, Manager: ManagerCommand{Binary: "/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	load := func() Load { return Load{Managers: []Manager{{BlockID: "b1", Capacity: 1}}} }
	waitTick(t, b, load, func() error {
		if b.Recovering() {
			return fmt.Errorf("recovering")
		}
		return nil
	})
	states := map[string]string{}
	for _, v := range b.View() {
		states[v.BlockID] = v.State + " " + v.Reason
	}
	if states["b1"] != "running " || states["b2"][:4] != "done" {
		t.Fatalf("after adoption: %v", states)
	}
	if id, _ := p.Submit(context.Background(), Spec{BlockID: "b3", Dir: t.TempDir(), Manager: ManagerCommand{Binary: "/bin/true"}}); id != "local-9" {
		t.Errorf("a new job after local-7 and local-8 of the previous run is %s, want local-9", id)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the adopted manager still runs after Close")
	}
}
