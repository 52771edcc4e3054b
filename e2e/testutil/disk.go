package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/switchyard-hpc/switchyard/internal/store"
)

// SmallDisk mounts a tmpfs of size (e.g. "8m") for a state dir (the tests
// run as root) and shrinks the stores' disk reserve and memtable to fit
// it, until the test ends.
func SmallDisk(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs (the test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	reserve, mem := store.DiskReserve, store.MemTableSize
	store.DiskReserve, store.MemTableSize = 1<<20, 512<<10
	t.Cleanup(func() { store.DiskReserve, store.MemTableSize = reserve, mem })
	return dir
}

// FillDisk writes zeros into dir/filler until its file system is full;
// removing the file gives the space back.
func FillDisk(t testing.TB, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}
