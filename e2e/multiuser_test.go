package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// muSite is a multi-user endpoint of real processes: a forwarder, and an
// interchange run as root with --user-map and local blocks, from a copy of
// the binary every user may run, with state under a directory the users
// may traverse (as /var/lib would be).
type muSite struct {
	dir, bin, state, mapPath, api, token string
	ix                                   *testutil.Proc
}

// startMultiUser starts the site; an empty mapText makes it single-user.
func startMultiUser(t testing.TB, mapText string, ixFlags ...string) *muSite {
	t.Helper()
	dir, err := os.MkdirTemp("", "sy-mu-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	s := &muSite{dir: dir, bin: filepath.Join(dir, "bin", "switchyard"), state: filepath.Join(dir, "ix")}
	copyExecutable(t, testutil.Switchyard(t), s.bin)
	s.mapPath = filepath.Join(dir, "users.map")
	if err := os.WriteFile(s.mapPath, []byte(mapText), 0o600); err != nil {
		t.Fatal(err)
	}
	fwdHTTP, fwdZMQ := testutil.Port(t), testutil.Port(t)
	fwd := launch.Forwarder{ListenZMQ: testutil.ZMQ(fwdZMQ)}
	fwd.ListenHTTP, fwd.StateDir, fwd.HeartbeatInterval = testutil.Addr(fwdHTTP), filepath.Join(dir, "fwd"), 500*time.Millisecond
	fp := testutil.StartProc(t, dir, "forwarder", s.bin, fwd.Args()...)
	s.api = "http://" + testutil.Addr(fwdHTTP)
	s.token = fp.WaitFile(t, filepath.Join(dir, "fwd", "admin.token"), 30*time.Second)
	admin := testutil.NewClient(s.api, s.token)
	var out struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	admin.Must(t, http.StatusCreated, http.MethodPost, "/v1/endpoints", map[string]any{"endpoint_id": "mu", "multi_user": mapText != ""}, &out)
	creds := filepath.Join(dir, "mu.credentials")
	if err := os.WriteFile(creds, out.Credentials, 0o600); err != nil {
		t.Fatal(err)
	}
	ix := launch.Interchange{Credentials: creds, ListenManagers: testutil.ZMQ(testutil.Port(t)), Extra: ixFlags}
	if mapText != "" {
		ix.Extra = append([]string{"--user-map", s.mapPath}, ixFlags...)
	}
	ix.ListenHTTP, ix.StateDir, ix.HeartbeatInterval = testutil.Addr(testutil.Port(t)), s.state, 500*time.Millisecond
	s.ix = testutil.StartProc(t, dir, "interchange", s.bin, ix.Args()...)
	testutil.WaitFor(t, 30*time.Second, func() error {
		var ep struct {
			Connected bool `json:"connected"`
		}
		if code, _, err := admin.Do(http.MethodGet, "/v1/endpoints/mu", nil, &ep); err != nil || code != http.StatusOK || !ep.Connected {
			return fmt.Errorf("endpoint mu not connected: %d %v", code, err)
		}
		return nil
	})
	return s
}

func copyExecutable(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// user makes a token for a Switchyard user and a client that sends it.
func (s *muSite) user(t testing.TB, name string) *testutil.Client {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	testutil.NewClient(s.api, s.token).Must(t, http.StatusCreated, http.MethodPost, "/v1/tokens", map[string]any{"user": name}, &out)
	return testutil.NewClient(s.api, out.Token)
}

type execOut struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// run runs one shell command as c's user and returns its task and output.
func run(t testing.TB, c *testutil.Client, script string, env map[string]string) (testutil.TaskView, execOut) {
	t.Helper()
	task := map[string]any{"kind": "exec", "args": []string{"/bin/sh", "-c", script}, "timeout": "60s"}
	if env != nil {
		task["env"] = env
	}
	ids, err := c.Submit("mu", task)
	if err != nil {
		t.Fatal(err)
	}
	v := c.WaitTerminal(t, ids, 90*time.Second)[0]
	var o execOut
	if len(v.Result) > 0 && string(v.Result) != "null" {
		_ = json.Unmarshal(v.Result, &o)
	}
	return v, o
}

// A multi-user endpoint with local blocks: each user's tasks run as her
// POSIX account in blocks started as her, and cannot read what the other
// user's tasks wrote, the other's process environment, the interchange's
// state or the other's manager key; an unmapped user's task fails naming
// the map.
func TestMultiUserLocalBlocks(t *testing.T) {
	// The deployment operations.md asks for: /proc with hidepid, so a
	// user sees no other user's processes (their arguments included).
	if !hidepid() {
		if out, err := exec.Command("mount", "-o", "remount,hidepid=invisible", "/proc").CombinedOutput(); err != nil {
			t.Fatalf("mount /proc with hidepid=invisible: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("mount", "-o", "remount,hidepid=0", "/proc").Run() })
	}
	alice, bob := testutil.AddUser(t, "sy-alice"), testutil.AddUser(t, "sy-bob")
	s := startMultiUser(t, fmt.Sprintf("alice-sy %s\nbob-sy %s\n", alice.Name, bob.Name),
		"--provider", "local", "--max-blocks", "4", "--max-blocks-per-user", "1", "--workers-per-node", "4",
		"--walltime", "0", "--block-period", "200ms", "--max-idle", "10m")
	asAlice, asBob, asCarol := s.user(t, "alice-sy"), s.user(t, "bob-sy"), s.user(t, "carol-sy")

	for _, c := range []struct {
		cl   *testutil.Client
		want string
	}{{asAlice, alice.Name}, {asBob, bob.Name}} {
		v, o := run(t, c.cl, "id -un; id -u; echo $HOME", nil)
		got := strings.Fields(o.Stdout)
		t.Logf("id -un as %s: %q", c.want, o.Stdout)
		if v.State != "success" || len(got) != 3 || got[0] != c.want {
			t.Fatalf("task of %s ran as %q (%s %s)", c.want, o.Stdout, v.State, v.Error)
		}
	}

	// Bob's task leaves a 0600 file in his HOME and in TMPDIR, and a
	// long task with a secret in its environment.
	secret := "bob-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tmpFile := "/tmp/" + secret
	if v, o := run(t, asBob, `umask 077; echo "$S" > "$HOME/secret" && echo "$S" > "`+tmpFile+`" && cat "$HOME/secret"`, map[string]string{"S": secret}); v.State != "success" || !strings.Contains(o.Stdout, secret) {
		t.Fatalf("bob's writer: %s %q %+v", v.State, v.Error, o)
	}
	long, err := asBob.Submit("mu", map[string]any{"kind": "exec", "args": []string{"sleep", "300"}, "env": map[string]string{"SECRET": secret}})
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	testutil.WaitFor(t, 30*time.Second, func() error {
		pid = procOf(bob.UID, "sleep")
		if pid == 0 {
			return fmt.Errorf("bob's sleep is not running yet")
		}
		return nil
	})
	proc := fmt.Sprintf("/proc/%d", pid)
	for _, p := range []string{filepath.Join(bob.Home, "secret"), tmpFile, proc + "/environ",
		s.state + "/admin.token", s.state + "/curve.key", s.state + "/keys/" + bob.Name + ".credentials",
		s.state + "/users/" + bob.Name + "/manager.credentials", s.dir + "/fwd/admin.token", s.mapPath} {
		v, o := run(t, asAlice, fmt.Sprintf("cat %q", p), nil)
		if v.State == "success" || strings.Contains(o.Stdout, secret) || o.Stdout != "" {
			t.Errorf("alice's task read %s: %s %q", p, v.State, o.Stdout)
		} else {
			t.Logf("alice cannot read %s: %s", p, strings.TrimSpace(o.Stderr))
		}
	}
	if v, o := run(t, asAlice, fmt.Sprintf("ls %q", s.state), nil); v.State == "success" {
		t.Errorf("alice listed the interchange's state dir: %q", o.Stdout)
	}
	// Her own manager (her task's parent) was started with a clean
	// environment: nothing of the interchange's, no secrets.
	if v, o := run(t, asAlice, "tr '\\0' '\\n' < /proc/$PPID/environ", nil); v.State != "success" {
		t.Errorf("alice's task reads its manager's environment: %s %q", v.State, o.Stderr)
	} else {
		for _, kv := range strings.Fields(o.Stdout) {
			name, _, _ := strings.Cut(kv, "=")
			if !slices.Contains([]string{"HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG"}, name) {
				t.Errorf("alice's manager has %s in its environment; want only HOME, USER, LOGNAME, SHELL, PATH, LANG", kv)
			}
		}
		t.Logf("alice's manager's environment: %q", o.Stdout)
	}
	// cmdline: hidden by hidepid, as the deployment asks.
	if v, o := run(t, asAlice, fmt.Sprintf("tr '\\0' ' ' < %s/cmdline", proc), nil); v.State == "success" {
		t.Errorf("alice read bob's cmdline under hidepid: %q", o.Stdout)
	}
	if _, err := asBob.Client.CancelMany(t.Context(), long); err != nil {
		t.Fatal(err)
	}

	// Carol is not in the map.
	if v, _ := run(t, asCarol, "id -un", nil); v.State != "failed" || !strings.Contains(v.Error, s.mapPath) {
		t.Fatalf("unmapped user's task: %s %q; want failed naming %s", v.State, v.Error, s.mapPath)
	}

	// One block each (--max-blocks-per-user 1), each as its user.
	var ep struct {
		Blocks []struct {
			BlockID string `json:"block_id"`
			State   string `json:"state"`
			User    string `json:"user"`
		} `json:"blocks"`
	}
	testutil.NewClient(s.api, s.token).Must(t, http.StatusOK, http.MethodGet, "/v1/endpoints/mu", nil, &ep)
	per := map[string]int{}
	for _, b := range ep.Blocks {
		per[b.User]++
	}
	t.Logf("blocks: %+v", ep.Blocks)
	if len(per) != 2 || per[alice.Name] != 1 || per[bob.Name] != 1 {
		t.Fatalf("blocks per user %v; want one each for %s and %s", per, alice.Name, bob.Name)
	}
}

// procOf is the pid of a process of uid named comm, or 0.
func procOf(uid int, comm string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fi, err := os.Stat("/proc/" + e.Name())
		if err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
			continue
		}
		if b, _ := os.ReadFile("/proc/" + e.Name() + "/comm"); strings.TrimSpace(string(b)) == comm {
			return pid
		}
	}
	return 0
}

func hidepid() bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == "/proc" && strings.Contains(f[3], "hidepid=") && !strings.Contains(f[3], "hidepid=0") && !strings.Contains(f[3], "hidepid=off") {
			return true
		}
	}
	return false
}
