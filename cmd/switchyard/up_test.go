package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPickPorts(t *testing.T) {
	h, z, fixed := "127.0.0.1:0", "tcp://127.0.0.1:0", "127.0.0.1:8080"
	changed, err := pickPorts(false, &h, &z, &fixed)
	if err != nil || !changed {
		t.Fatalf("pickPorts: %v %v", changed, err)
	}
	if _, p, _ := net.SplitHostPort(h); p == "0" || fixed != "127.0.0.1:8080" || !strings.HasPrefix(z, "tcp://127.0.0.1:") || strings.HasSuffix(z, ":0") {
		t.Errorf("after pickPorts(false): %s %s %s; want port 0 replaced, 8080 kept", h, z, fixed)
	}
	if changed, err := pickPorts(true, &fixed); err != nil || !changed || fixed == "127.0.0.1:8080" {
		t.Errorf("pickPorts(true) kept %s (%v %v)", fixed, changed, err)
	}
	bad := "nohost"
	if _, err := pickPorts(true, &bad); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("pickPorts of %q: %v; want an error naming HOST:PORT", bad, err)
	}
}

// A new user's first minutes: endpoint up on free ports, the banner's
// export lines, a task through it, Ctrl-C.
func TestEndpointUpOnFreePorts(t *testing.T) {
	bin := switchyardBin(t)
	args := []string{"endpoint", "up", "--free-ports", "--state-dir", filepath.Join(t.TempDir(), "var"), "--heartbeat-interval", "200ms"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	up := exec.CommandContext(ctx, bin, args...)
	stderr, err := up.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	childLine := regexp.MustCompile(`^[a-z0-9-]+ *\| `)
	var banner []string
	for l := range lines {
		if !childLine.MatchString(l) {
			banner = append(banner, l)
		}
		if strings.Contains(l, "Ctrl-C stops all") {
			break
		}
	}
	go func() {
		for range lines {
		}
	}()
	text := strings.Join(banner, "\n")
	t.Logf("banner:\n%s", text)
	api := regexp.MustCompile(`export SWITCHYARD_API=(\S+)\)`).FindStringSubmatch(text)
	tok := regexp.MustCompile(`export SWITCHYARD_TOKEN=(\S+)`).FindStringSubmatch(text)
	if api == nil || tok == nil || !strings.Contains(text, "free ports chosen: --listen-http") ||
		!strings.Contains(text, bin+" submit -e local -- echo hello | "+bin+" wait -") || strings.Contains(api[1], ":8080") {
		t.Fatalf("banner:\n%s\nwant the chosen ports, both export lines and the binary named as invoked", text)
	}
	env := []string{"SWITCHYARD_API=" + api[1], "SWITCHYARD_TOKEN=" + tok[1]}
	r := run(t, env, "", "submit", "-e", "local", "--", "echo", "hello")
	if r.code != 0 {
		t.Fatalf("submit: %s", r)
	}
	if w := run(t, env, r.stdout, "wait", "--timeout", "60s", "-"); w.code != 0 || !strings.Contains(w.stdout, "success") {
		t.Fatalf("wait: %s", w)
	}
	// Its tasks run as the account holding the daemons' secrets, so the
	// endpoint takes tasks only from its owner (the admin token's user)
	// and whom she shares it with: another user's task never runs there.
	mk := run(t, env, "", "token", "create", "alice")
	aliceEnv := []string{"SWITCHYARD_API=" + api[1], "SWITCHYARD_TOKEN=" + strings.TrimSpace(mk.stdout)}
	if mk.code != 0 {
		t.Fatalf("token create alice: %s", mk)
	}
	if r := run(t, aliceEnv, "", "submit", "-e", "local", "--", "cat", "/proc/self/cmdline"); r.code == 0 || !strings.Contains(r.stderr, "HTTP 404") {
		t.Fatalf("alice submits to endpoint up's endpoint: %s; want a 404", r)
	}
	if r := run(t, env, "", "endpoint", "share", "local", "--user", "alice"); r.code != 0 {
		t.Fatalf("endpoint share local --user alice: %s", r)
	}
	if r := run(t, aliceEnv, "", "submit", "-e", "local", "--", "true"); r.code != 0 {
		t.Fatalf("alice submits once shared: %s", r)
	}
	if err := up.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := up.Wait(); err != nil {
		t.Fatalf("endpoint up after Ctrl-C: %v; want exit 0", err)
	}
}
