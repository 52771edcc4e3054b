package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// storeCmd runs `switchyard store ARGS` in this process.
func storeCmd(args ...string) (string, int) {
	var out bytes.Buffer
	cmd := newStoreCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	var ee *exitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String() + ee.Error() + "\n", ee.code
	default:
		return out.String() + err.Error() + "\n", 1
	}
}

// A bit flipped in the forwarder's largest table: check reports it
// naming the file and block; repair leaves out that table's range; the
// forwarder then starts, and every task outside the range reads as before.
func TestStoreCheckAndRepair(t *testing.T) {
	dir := t.TempDir()
	// Small memtables, so the store has several tables.
	mem, table := store.MemTableSize, store.TableSize
	store.MemTableSize, store.TableSize = 1<<20, 512<<10
	t.Cleanup(func() { store.MemTableSize, store.TableSize = mem, table })
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, "ep1")
	const n = 3000
	tasks := make([]any, n)
	for i := range tasks {
		tasks[i] = map[string]any{"kind": "exec", "args": []string{"echo", fmt.Sprintf("task-%d-%s", i, strings.Repeat("z", 2000))}}
	}
	ids, err := f.Client().Submit("ep1", tasks...)
	if err != nil {
		t.Fatal(err)
	}
	before, err := f.Client().Status(ids)
	if err != nil {
		t.Fatal(err)
	}
	f.Stop()

	if out, code := storeCmd("check", "--state-dir", dir); code != 0 || !strings.Contains(out, "clean") {
		t.Fatalf("check of a clean store: exit %d\n%s", code, out)
	}
	var big string
	var size int64
	_ = filepath.WalkDir(filepath.Join(dir, taskstore.PebbleDir), func(p string, d fs.DirEntry, err error) error {
		if fi, ferr := d.Info(); err == nil && ferr == nil && strings.HasSuffix(p, ".sst") && fi.Size() > size {
			big, size = p, fi.Size()
		}
		return err
	})
	b, err := os.ReadFile(big)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(big, b, 0o600); err != nil {
		t.Fatal(err)
	}

	out, code := storeCmd("check", "--state-dir", dir)
	t.Logf("check (exit %d):\n%s", code, out)
	if code != exitDamaged || !strings.Contains(out, "DAMAGED") || !strings.Contains(out, strings.TrimSuffix(filepath.Base(big), ".sst")) {
		t.Fatalf("check of a damaged store: exit %d, want %d naming %s", code, exitDamaged, filepath.Base(big))
	}
	out, code = storeCmd("repair", "--state-dir", dir)
	t.Logf("repair (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "lost: tasks") {
		t.Fatalf("repair: exit %d", code)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, taskstore.PebbleDir+".damaged-*"))
	if len(kept) != 1 {
		t.Fatalf("damaged store not kept aside: %v", kept)
	}
	if out, code := storeCmd("check", "--state-dir", dir); code != 0 {
		t.Fatalf("check after repair: exit %d\n%s", code, out)
	}

	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f2.Enroll(t, "ep1")
	c := f2.Client()
	same, missing, firstMissing, lastMissing := 0, 0, -1, -1
	for i, id := range ids {
		after, err := c.Status([]string{id})
		if err != nil || len(after) != 1 || after[0].State == "unknown" {
			missing++
			if firstMissing < 0 {
				firstMissing = i
			}
			lastMissing = i
			continue
		}
		if a, w := after[0], before[i]; a.TaskID != w.TaskID || a.State != w.State || a.Kind != w.Kind || a.EndpointID != w.EndpointID {
			t.Fatalf("task %s reads %+v after the repair, %+v before", id, a, w)
		}
		same++
	}
	t.Logf("after the repair: %d tasks read as before, %d lost (submission order %d to %d)", same, missing, firstMissing, lastMissing)
	if missing == 0 || missing == n || lastMissing-firstMissing+1 != missing {
		t.Fatalf("lost tasks are not one range of the damaged table: %d lost, from %d to %d", missing, firstMissing, lastMissing)
	}
}
