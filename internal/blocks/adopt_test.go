package blocks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSlurm keeps jobs in memory; it outlives a controller as a cluster
// outlives an interchange.
type fakeSlurm struct {
	mu        sync.Mutex
	seq       int
	jobs      map[string]JobState
	cancelled []string
	statusN   int
}

func (f *fakeSlurm) Name() string { return ProviderSlurm }
func (f *fakeSlurm) Submit(ctx context.Context, spec Spec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprint(100 + f.seq)
	f.jobs[id] = JobRunning
	return id, nil
}
func (f *fakeSlurm) Status(ctx context.Context, ids []string) (map[string]JobStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusN++
	out := map[string]JobStatus{}
	for _, id := range ids {
		if s, ok := f.jobs[id]; ok {
			out[id] = JobStatus{State: s}
		}
	}
	return out, nil
}
func (f *fakeSlurm) Cancel(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = append(f.cancelled, id)
	f.jobs[id] = JobDone
	return nil
}
func (f *fakeSlurm) Close(ctx context.Context) error { return nil }

func (f *fakeSlurm) submitted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

func waitTick(t *testing.T, b *Blocks, load func() Load, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.Tick(time.Now(), load())
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the fake's answer comes on the worker
	}
}

// A restarted controller adopts the blocks its previous run left running,
// starts none until the provider answered about them, drains them when
// idle, and with CancelOnExit cancels them when it closes.
func TestRestartAdoptsBlocks(t *testing.T) {
	cfg := &Config{Provider: ProviderSlurm, MaxBlocks: 2, NodesPerBlock: 1, WorkersPerNode: 4, Walltime: time.Hour,
		MaxIdle: 100 * time.Millisecond, Period: 10 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &fakeSlurm{jobs: map[string]JobState{}}
	opts := Options{Config: cfg, Provider: p, StateDir: dir, Manager: ManagerCommand{Binary: "/bin/true"}}
	b1, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	busy := func() Load {
		l := Load{Queued: 100}
		for _, v := range b1.View() {
			l.Managers = append(l.Managers, Manager{BlockID: v.BlockID, Capacity: 4, Held: 4})
		}
		return l
	}
	waitTick(t, b1, busy, func() error {
		ids = ids[:0]
		for _, v := range b1.View() {
			if v.State == "running" && v.JobID != "" {
				ids = append(ids, v.BlockID)
			}
		}
		if len(ids) != 2 {
			return fmt.Errorf("blocks %+v", b1.View())
		}
		return nil
	})
	b1.Tick(time.Now(), busy()) // saves the running state
	if err := b1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "blocks", "blocks.json"))
	if err != nil || !strings.Contains(string(data), ids[0]) || !strings.Contains(string(data), ids[1]) {
		t.Fatalf("saved blocks %s (%v)", data, err)
	}

	cfg.CancelOnExit = true
	b2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if vs := b2.View(); len(vs) != 2 || !b2.Recovering() {
		t.Fatalf("after restart, before any tick: recovering %v, blocks %+v", b2.Recovering(), vs)
	}
	// Tasks queue and the managers have not re-registered yet: still no
	// submission, since both slots are taken by the adopted jobs.
	queued := func() Load { return Load{Queued: 100} }
	waitTick(t, b2, queued, func() error {
		if b2.Recovering() {
			return fmt.Errorf("still recovering")
		}
		return nil
	})
	b2.Tick(time.Now(), queued())
	if n := p.submitted(); n != 2 {
		t.Fatalf("%d jobs submitted in all, want the 2 of the first run", n)
	}
	for _, v := range b2.View() {
		if v.State != "running" {
			t.Fatalf("adopted block %s is %s (%s)", v.BlockID, v.State, v.Reason)
		}
	}
	// Its managers come back idle: drained after max-idle.
	var drained []string
	b2.opts.Drain = func(id string) { drained = append(drained, id) }
	idle := func() Load {
		var l Load
		for _, id := range ids {
			l.Managers = append(l.Managers, Manager{BlockID: id, Capacity: 4})
		}
		return l
	}
	waitTick(t, b2, idle, func() error {
		if len(drained) != 2 {
			return fmt.Errorf("drained %v", drained)
		}
		return nil
	})
	if err := b2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(p.cancelled) != 2 {
		t.Fatalf("cancelled on exit: %v", p.cancelled)
	}
	data, _ = os.ReadFile(filepath.Join(dir, "blocks", "blocks.json"))
	if strings.Contains(string(data), ids[0]) {
		t.Fatalf("cancelled blocks still saved: %s", data)
	}
}
