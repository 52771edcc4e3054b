package manager_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Issue 14: a task ran with the manager's whole environment (a secret in
// it was printed). Tasks now get PATH, HOME, USER, LANG, TMPDIR, the
// --task-env names and their own "env", nothing else.
func TestTasksGetACleanEnvironment(t *testing.T) {
	t.Setenv("SWITCHYARD_TEST_SECRET", "hunter2")
	t.Setenv("SWITCHYARD_TEST_PASSED", "visible")
	t.Setenv("HOME", "/home/test")
	f := start(t, manager.Options{Workers: 1, TaskEnv: []string{"SWITCHYARD_TEST_PASSED"}}, true)
	s := spec("exec", "env")
	s.Env = map[string]string{"MY_VAR": "mine", "HOME": "/override"}
	ids := f.submit(t, spec("exec", "env"), s)
	plain, own := execOut(t, f, ids[0]), execOut(t, f, ids[1])
	if strings.Contains(plain, "hunter2") || strings.Contains(own, "hunter2") {
		t.Fatalf("a task saw the manager's secret:\n%s", plain)
	}
	for _, want := range []string{"PATH=", "HOME=/home/test", "SWITCHYARD_TEST_PASSED=visible"} {
		if !strings.Contains(plain, want) {
			t.Errorf("task environment lacks %s:\n%s", want, plain)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(plain), "\n") {
		name := line[:strings.IndexByte(line, '=')]
		switch name {
		case "PATH", "HOME", "USER", "LANG", "TMPDIR", "SWITCHYARD_TEST_PASSED", "PWD", "SHLVL", "_":
		default:
			t.Errorf("task environment has %s, which nobody passed on", name)
		}
	}
	if !strings.Contains(own, "MY_VAR=mine") || !strings.Contains(own, "HOME=/override") || strings.Contains(own, "HOME=/home/test") {
		t.Errorf("the task's own env is not applied over the base:\n%s", own)
	}
}

// Python tasks run in long-lived workers; those get the same clean
// environment, --task-env names included, and a python task cannot ask
// for an "env" of its own.
func TestPythonTasksGetTheCleanEnvironment(t *testing.T) {
	t.Setenv("SWITCHYARD_TEST_SECRET", "hunter2")
	t.Setenv("SWITCHYARD_TEST_PASSED", "visible")
	o := pythonOpts(1)
	o.TaskEnv = []string{"SWITCHYARD_TEST_PASSED"}
	f := start(t, o, true)
	id := f.submit(t, pyCall(t, "(lambda: sorted(__import__('os').environ.items()), (), {})"))[0]
	r := f.result(t, id, 30*time.Second)
	if r.Code != messages.Success {
		t.Fatalf("python task: %s %q", r.Code.State(), r.Error)
	}
	got := pyResult(t, r.Payload)
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "('SWITCHYARD_TEST_PASSED', 'visible')") {
		t.Fatalf("python task environment: %s; want the --task-env name and not the manager's secret", got)
	}
	own := pyCall(t, "(pow, (2, 3), {})")
	own.Env = map[string]string{"A": "b"}
	if err := own.Validate(); err == nil || !strings.Contains(err.Error(), "--task-env") {
		t.Fatalf("a python task with its own env: %v; want a refusal naming --task-env", err)
	}
}

func execOut(t *testing.T, f *fakeInterchange, id [16]byte) string {
	t.Helper()
	r := f.result(t, id, 10*time.Second)
	var res taskspec.ExecResult
	if err := json.Unmarshal(r.Payload, &res); err != nil {
		t.Fatalf("result %q: %v", r.Payload, err)
	}
	return res.Stdout
}

// Issue 14: tasks of any user ran as the manager's user, root in the test.
// The manager refuses to run as root unless told it may.
func TestManagerRefusesRoot(t *testing.T) {
	// Insecure only spares it a credential; the root check comes first.
	_, err := manager.New(manager.Options{Interchange: "tcp://127.0.0.1:1", ManagerID: "root-check", Workers: 1, Insecure: true})
	if os.Geteuid() == 0 {
		if err == nil || !strings.Contains(err.Error(), "--allow-root") {
			t.Fatalf("manager.New as root without AllowRoot: %v; want a refusal naming --allow-root", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("manager.New as uid %d: %v", os.Geteuid(), err)
	}
}

// The admin HTTP needs the manager's own admin token, except /healthz and
// /metrics; the token is in STATE_DIR/admin.token (0600).
func TestManagerAdminHTTPNeedsToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	ix := testutil.NewRouter(t, "interchange", "", testutil.PeerOptions{})
	mg := testutil.StartManager(t, manager.Options{Interchange: ix.Addr(), ManagerID: "adm", StateDir: dir, Pprof: true})
	tok, err := os.ReadFile(filepath.Join(dir, auth.AdminTokenFile))
	if err != nil || strings.TrimSpace(string(tok)) != mg.AdminToken() {
		t.Fatalf("admin token file: %q %v", tok, err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	anon := testutil.NewClient(mg.URL, "")
	for _, tc := range []struct{ method, path string }{{"GET", "/status"}, {"GET", "/servingState"},
		{"POST", "/servingState"}, {"GET", "/debug/pprof/cmdline"}} {
		resp, err := anon.Send(testutil.Request{Method: tc.method, Path: tc.path, Body: testutil.Raw(`{"state":"PUSH_PAUSED"}`)})
		if err != nil || resp.Code != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %v %d %s; want 401", tc.method, tc.path, err, resp.Code, resp.Body)
		}
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if resp, err := anon.Send(testutil.Request{Method: "GET", Path: path}); err != nil || resp.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %v %d", path, err, resp.Code)
		}
	}
	if got := mg.Client().Text(t, "/servingState"); !strings.Contains(got, "Override: none") {
		t.Fatalf("serving state with the token: %q", got)
	}
}
