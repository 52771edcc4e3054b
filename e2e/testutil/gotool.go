package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// GoTool finds the go command for tests that build the binary: PATH
// first, then $GOROOT, then where the Go tarball installs it.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if r := os.Getenv("GOROOT"); r != "" {
		return filepath.Join(r, "bin", "go")
	}
	return "/usr/local/go/bin/go"
}

// BuildSwitchyard builds cmd/switchyard into a temporary directory of t
// and returns its path (the build cache makes repeats cheap).
func BuildSwitchyard(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "switchyard")
	cmd := exec.Command(GoTool(), "build", "-o", out, "github.com/switchyard-hpc/switchyard/cmd/switchyard")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/switchyard: %v\n%s", err, b)
	}
	return out
}
