package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// switchyardBin is the binary, built once for the package's tests.
func switchyardBin(t *testing.T) string { return testutil.Switchyard(t) }

type cliRun struct {
	code           int
	stdout, stderr string
}

func (r cliRun) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// run starts the binary with env (SWITCHYARD_API, SWITCHYARD_TOKEN) and
// stdin, and returns what it printed and its exit status.
func run(t *testing.T, env []string, stdin string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, switchyardBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("switchyard %v: %v", args, err)
	}
	return r
}

// The exit-status table of the root --help, command by command, against
// real daemons.
func TestCLIExitCodesAndMessages(t *testing.T) {
	ch := testutil.StartChain(t, testutil.ChainOptions{Managers: 1, Workers: 2})
	env := []string{"SWITCHYARD_API=" + ch.Forwarder.URL, "SWITCHYARD_TOKEN=" + ch.Forwarder.AdminToken()}
	cli := func(args ...string) cliRun { t.Helper(); return run(t, env, "", args...) }
	expect := func(what string, r cliRun, code int, says ...string) {
		t.Helper()
		if r.code != code {
			t.Errorf("%s: %s\nwant exit %d", what, r, code)
			return
		}
		for _, s := range says {
			if !strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("%s: %s\nwant it to say %q", what, r, s)
			}
		}
	}
	unknown := uuid.NewString()

	uuidLine := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	r := cli("submit", "-e", ch.Endpoint, "--", "echo", "hi")
	ok := strings.TrimSpace(r.stdout)
	expect("submit", r, 0)
	if !uuidLine.MatchString(ok) {
		t.Fatalf("submit printed %q; want one task id", r.stdout)
	}
	r = cli("submit", "-e", ch.Endpoint, "--", "sh", "-c", "exit 7")
	bad := strings.TrimSpace(r.stdout)
	expect("submit failing", r, 0)
	r = cli("submit", "-e", ch.Endpoint, "--kind", "sleep", "30")
	slow := strings.TrimSpace(r.stdout)
	expect("submit sleep", r, 0)

	expect("wait ok", cli("wait", ok), 0, ok+"  success")
	expect("wait failed", cli("wait", bad), 3, "failed")
	expect("result failed", cli("result", bad), 3, "exit status 7")
	expect("result ok", cli("result", ok), 0, "hi")
	expect("result unfinished", cli("result", slow), 2, "no result yet", "switchyard wait "+slow)
	expect("wait timeout", cli("wait", "--timeout", "200ms", slow), 2, "timed out")
	expect("wait timeout of many", cli("wait", "-q", "--timeout", "200ms", ok, slow), 2, slow+"  not finished")
	expect("status unknown", cli("status", ok, unknown), 1, ok, "unknown task id(s): "+unknown)
	expect("cancel unknown", cli("cancel", unknown), 1, "unknown task id(s): "+unknown)
	expect("wait unknown", cli("wait", unknown), 1, "unknown task id")
	expect("wait unknown of many", cli("wait", ok, unknown), 1, "unknown task ids", unknown)
	expect("result unknown", cli("result", unknown), 1, "404")
	expect("cancel", cli("cancel", slow), 0, slow+"  cancelled")
	expect("wait cancelled", cli("wait", slow), 3, "cancelled")
	expect("-n 0", cli("submit", "-e", ch.Endpoint, "--kind", "noop", "-n", "0"), 1, "--count (-n) must be at least 1, got 0")
	expect("-n -5", cli("submit", "-e", ch.Endpoint, "--kind", "noop", "-n", "-5"), 1, "must be at least 1, got -5")
	expect("no endpoint", cli("submit", "--kind", "noop"), 1, "--endpoint is required")
	expect("unknown flag", cli("status", "--bogus"), 1, "unknown flag")
	expect("empty task list", run(t, env, `{"tasks":[]}`, "submit", "-e", ch.Endpoint, "-f", "-"), 1, `the "tasks" list is empty`)
	expect("truncated JSON", run(t, env, `{"tasks":[{"kind":"noop"}`, "submit", "-e", ch.Endpoint, "-f", "-"), 1,
		"not valid JSON", "unexpected end of JSON input", "truncated")

	// The server refuses or cannot be reached: 4.
	expect("bad token", run(t, []string{"SWITCHYARD_API=" + ch.Forwarder.URL, "SWITCHYARD_TOKEN=syt_nope"}, "", "status", ok), 4, "401")
	expect("unreachable", run(t, []string{"SWITCHYARD_API=http://127.0.0.1:1", "SWITCHYARD_TOKEN=x"}, "", "status", ok), 4, "cannot reach http://127.0.0.1:1")
	expect("interchange port", run(t, []string{"SWITCHYARD_API=" + ch.Interchange.URL, "SWITCHYARD_TOKEN=" + ch.Forwarder.AdminToken()}, "", "tasks"), 4,
		"this is an interchange's admin API", "point SWITCHYARD_API (or --api) at the forwarder")
	expect("manager port", run(t, []string{"SWITCHYARD_API=" + ch.Managers[0].URL, "SWITCHYARD_TOKEN=" + ch.Managers[0].AdminToken()}, "", "status", ok), 1,
		"this is a manager's admin API", "no such path /v1/tasks/status")

	// endpoints: lost_reason column, a readable probe, --probe needs an id.
	expect("endpoints", cli("endpoints"), 0, "LOST_REASON", ch.Endpoint)
	expect("probe", cli("endpoints", ch.Endpoint, "--probe"), 0, "probe of "+ch.Endpoint+": answered in")
	expect("probe without id", cli("endpoints", "--probe"), 1, "--probe needs an endpoint id")

	// tasks: text, ids, JSON, filters.
	r = cli("tasks")
	expect("tasks", r, 0, "TASK_ID", ok, bad, slow)
	r = cli("tasks", "--state", "failed", "--ids")
	expect("tasks --state failed --ids", r, 0)
	if strings.TrimSpace(r.stdout) != bad {
		t.Errorf("tasks --state failed --ids: %q, want %q", r.stdout, bad)
	}
	r = cli("tasks", "--json", "--limit", "2")
	var page struct {
		Tasks []struct {
			TaskID string `json:"task_id"`
			State  string `json:"state"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || len(page.Tasks) != 2 || page.Tasks[0].TaskID != ok {
		t.Errorf("tasks --json --limit 2: %s (%v)", r, err)
	}
	expect("tasks --since future", cli("tasks", "--since", time.Now().Add(time.Hour).Format(time.RFC3339)), 0, "no tasks match")
	expect("tasks --since bad", cli("tasks", "--since", "yesterday"), 1, `--since "yesterday"`)
	expect("tasks --state bad", cli("tasks", "--state", "done"), 1, `invalid state "done"`, "legal values")
}
