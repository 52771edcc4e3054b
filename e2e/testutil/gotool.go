package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// AllowRootArgs is what a manager started by a test needs as root:
// --allow-root, when the binary has the flag and we are root.
func AllowRootArgs(bin string) []string {
	if os.Geteuid() != 0 {
		return nil
	}
	help, _ := exec.Command(bin, "manager", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--allow-root") {
		return nil
	}
	return []string{"--allow-root"}
}
