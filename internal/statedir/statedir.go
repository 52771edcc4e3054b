// Package statedir owns a daemon's state directory and its exclusive lock,
// so two daemons never share one.
package statedir

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Dir is a locked state directory.
type Dir struct {
	Path string
	lock *os.File
}

// Open creates dir if needed and takes its lock, or says who holds it.
func Open(dir, what string) (*Dir, error) {
	if dir == "" {
		return nil, fmt.Errorf("%s: --state-dir is empty", what)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: create state dir: %w", what, err)
	}
	// Tighten a directory that already existed with a looser mode: it
	// holds tokens, keys and task arguments.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: make state dir %s private (mode 0700): %w", what, dir, err)
	}
	p := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", what, p, err)
	}
	_ = f.Chmod(0o600)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(p)
		f.Close()
		pid := strings.TrimSpace(string(holder))
		if pid == "" {
			pid = "another process"
		} else {
			pid = "pid " + pid
		}
		return nil, fmt.Errorf("%s: state dir %s is in use by %s; stop it or choose another --state-dir", what, dir, pid)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Dir{Path: dir, lock: f}, nil
}

// File is a path inside the directory.
func (d *Dir) File(name string) string { return filepath.Join(d.Path, name) }

// Close releases the lock.
func (d *Dir) Close() error {
	if d == nil || d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}
