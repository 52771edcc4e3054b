package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/client"
)

// expectation is what one submitted task must end as.
type expectation struct {
	kind      string
	state     string
	exitCode  *int
	stdout    string // exact, when set
	stderrHas string
	errorHas  string
}

func intp(i int) *int { return &i }

// mixedTasks builds n tasks: half noop, a quarter echo with unique text, a
// fifth failing exec, the rest short sleeps.
func mixedTasks(n int) ([]task, []expectation) {
	tasks := make([]task, 0, n)
	exp := make([]expectation, 0, n)
	for i := range n {
		switch r := i % 20; {
		case r < 10:
			tasks = append(tasks, noop())
			exp = append(exp, expectation{kind: "noop", state: "success"})
		case r < 15:
			text := fmt.Sprintf("hello-%d-%s", i, uuid.NewString()[:8])
			tasks = append(tasks, execTask("echo", text))
			exp = append(exp, expectation{kind: "exec", state: "success", exitCode: intp(0), stdout: text + "\n"})
		case r < 19:
			tasks = append(tasks, execTask("sh", "-c", "echo boom >&2; exit 3"))
			exp = append(exp, expectation{kind: "exec", state: "failed", exitCode: intp(3), stderrHas: "boom", errorHas: "3"})
		default:
			tasks = append(tasks, sleepTask("0.01"))
			exp = append(exp, expectation{kind: "sleep", state: "success"})
		}
	}
	return tasks, exp
}

// checkTask compares a terminal task with what it must be.
func checkTask(ep string, v taskView, e expectation) error {
	if v.State != e.state {
		return fmt.Errorf("state %q, want %q (error %q, result %s)", v.State, e.state, v.Error, v.Result)
	}
	if v.EndpointID != ep {
		return fmt.Errorf("endpoint_id %q, want %q", v.EndpointID, ep)
	}
	if v.Kind != e.kind {
		return fmt.Errorf("kind %q, want %q", v.Kind, e.kind)
	}
	if v.Attempts != 1 {
		return fmt.Errorf("attempts %d, want 1 (no manager was lost)", v.Attempts)
	}
	if v.CreatedAt == nil || v.CompletedAt == nil {
		return fmt.Errorf("created_at %v, completed_at %v: both must be set on a terminal task", v.CreatedAt, v.CompletedAt)
	}
	if v.CompletedAt.Before(*v.CreatedAt) {
		return fmt.Errorf("completed_at %s before created_at %s", v.CompletedAt, v.CreatedAt)
	}
	if e.errorHas != "" && !strings.Contains(v.Error, e.errorHas) {
		return fmt.Errorf("error %q does not mention %q", v.Error, e.errorHas)
	}
	if e.state == "success" && v.Error != "" {
		return fmt.Errorf("successful task has error %q", v.Error)
	}
	if e.exitCode == nil {
		return nil
	}
	r, err := execOf(v)
	if err != nil {
		return err
	}
	if r.ExitCode == nil || *r.ExitCode != *e.exitCode {
		return fmt.Errorf("exit_code %v, want %d (result %s)", r.ExitCode, *e.exitCode, v.Result)
	}
	if e.stdout != "" && r.Stdout != e.stdout {
		return fmt.Errorf("stdout %q, want %q", r.Stdout, e.stdout)
	}
	if e.stderrHas != "" && !strings.Contains(r.Stderr, e.stderrHas) {
		return fmt.Errorf("stderr %q does not contain %q", r.Stderr, e.stderrHas)
	}
	return nil
}

func TestEndToEndMixedTasks(t *testing.T) {
	c := newCluster(t, clusterOpts{endpoint: "mixed"})
	m1 := c.addManager("mixed-m1", 2, -1)
	m2 := c.addManager("mixed-m2", 2, -1)
	c.waitCapacity(2, 4)

	const n = 3000
	tasks, exp := mixedTasks(n)
	var ids []string
	var elapsed time.Duration

	t.Run("tasks", func(t *testing.T) {
		c := c.with(t)
		start := time.Now()
		ids = c.submit(tasks, 500)
		submitted := time.Since(start)
		seen := make(map[string]bool, len(ids))
		for i, id := range ids {
			u, err := uuid.Parse(id)
			if err != nil || u.String() != id {
				t.Fatalf("task id %d %q is not a canonical UUID: %v", i, id, err)
			}
			if seen[id] {
				t.Fatalf("task id %s handed out twice", id)
			}
			seen[id] = true
		}
		s := c.waitTerminal(ids, 3*time.Minute)
		elapsed = time.Since(start)
		bad := 0
		for i, id := range ids {
			if err := checkTask(c.ep, s[id], exp[i]); err != nil {
				bad++
				if bad <= 10 {
					t.Errorf("task %d (%s, %v): %v", i, id, tasks[i], err)
				}
			}
		}
		if bad > 0 {
			t.Fatalf("%d of %d tasks ended wrong", bad, n)
		}
		t.Logf("THROUGHPUT %d mixed tasks on 2 managers x 2 workers: submitted in %s, all terminal in %s (%.0f tasks/s incl. polling)",
			n, submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	})
	if len(ids) != n {
		t.Fatal("tasks were not submitted; the rest depends on them")
	}
	failedID := ""
	for i, e := range exp {
		if e.state == "failed" {
			failedID = ids[i]
			break
		}
	}

	t.Run("long-poll", func(t *testing.T) {
		c := c.with(t)
		id := c.submit([]task{execTask("sh", "-c", "sleep 0.3; echo waited")}, 0)[0]
		start := time.Now()
		var v taskView
		if err := c.getJSON(c.api()+"/v1/tasks/"+id+"?wait=10s", &v); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if v.State != "success" {
			t.Fatalf("GET ?wait=10s answered state %q, want success: %+v", v.State, v)
		}
		if r, err := execOf(v); err != nil || r.Stdout != "waited\n" {
			t.Fatalf("result %s (%v), want stdout \"waited\\n\"", v.Result, err)
		}
		if took > 5*time.Second {
			t.Errorf("long poll answered after %s; the task took ~0.3s", took)
		}
		// A terminal task answers a long poll at once.
		start = time.Now()
		if err := c.getJSON(c.api()+"/v1/tasks/"+failedID+"?wait=10s", &v); err != nil {
			t.Fatal(err)
		}
		if v.State != "failed" || time.Since(start) > 2*time.Second {
			t.Errorf("long poll of a finished task: state %q after %s", v.State, time.Since(start))
		}
		// An unfinished task answers when the wait ends, not terminal.
		slow := c.submit([]task{sleepTask("5")}, 0)[0]
		start = time.Now()
		if err := c.getJSON(c.api()+"/v1/tasks/"+slow+"?wait=300ms", &v); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); terminal(v.State) || took < 250*time.Millisecond || took > 5*time.Second {
			t.Errorf("?wait=300ms on a 5s sleep: state %q after %s", v.State, took)
		}
		c.mustDo("DELETE", c.api()+"/v1/tasks/"+slow, nil)
		r := c.mustDo("GET", c.api()+"/v1/tasks/"+id+"?wait=banana", nil)
		expectRefusal(t, "invalid wait", r, http.StatusBadRequest, "wait")
	})

	t.Run("bad-input", func(t *testing.T) {
		c := c.with(t)
		tasksBefore := forwarderTaskCount(t, c)
		submitURL := c.api() + "/v1/endpoints/" + c.ep + "/tasks"
		cases := []struct {
			name   string
			method string
			url    string
			body   any
			status int
			says   string
		}{
			{"unknown kind", "POST", submitURL, map[string]any{"tasks": []task{{"kind": "nope"}}}, 400, "unknown kind"},
			{"unknown kind among good ones", "POST", submitURL, map[string]any{"tasks": []task{noop(), {"kind": "nope"}}}, 400, "tasks[1]"},
			{"missing tasks", "POST", submitURL, map[string]any{"x": 1}, 400, "tasks"},
			{"empty tasks", "POST", submitURL, map[string]any{"tasks": []task{}}, 400, "tasks"},
			{"args not a list", "POST", submitURL, map[string]any{"tasks": []task{{"kind": "exec", "args": "echo"}}}, 400, "args"},
			{"exec without args", "POST", submitURL, map[string]any{"tasks": []task{{"kind": "exec"}}}, 400, "args"},
			{"sleep with a word", "POST", submitURL, map[string]any{"tasks": []task{sleepTask("soon")}}, 400, "sleep"},
			{"malformed JSON", "POST", submitURL, []byte(`{not json`), 400, "JSON"},
			{"empty body", "POST", submitURL, []byte(``), 400, "body"},
			{"invalid endpoint id", "POST", c.api() + "/v1/endpoints/-bad-/tasks", map[string]any{"tasks": []task{noop()}}, 400, "endpoint"},
			{"unknown task id", "GET", c.api() + "/v1/tasks/" + uuid.NewString(), nil, 404, "unknown task"},
			{"invalid task id", "GET", c.api() + "/v1/tasks/not-a-task-id", nil, 400, "invalid task id"},
			{"cancel unknown task id", "DELETE", c.api() + "/v1/tasks/" + uuid.NewString(), nil, 404, "unknown task"},
			{"cancel invalid task id", "DELETE", c.api() + "/v1/tasks/nope", nil, 400, "invalid task id"},
			{"status without task_ids", "POST", c.api() + "/v1/tasks/status", map[string]any{"ids": []string{}}, 400, "task_ids"},
			{"status with a bad id", "POST", c.api() + "/v1/tasks/status", map[string]any{"task_ids": []string{ids[0], "zzz"}}, 400, "task_ids[1]"},
			{"wrong method on submit", "GET", submitURL, nil, 405, "POST"},
			{"wrong method on submit (PUT)", "PUT", submitURL, []byte(`{"tasks":[{"kind":"noop"}]}`), 405, "POST"},
			{"wrong method on a task", "POST", c.api() + "/v1/tasks/" + ids[0], []byte(`{}`), 405, "GET"},
			{"wrong method on status", "GET", c.api() + "/v1/tasks/status", nil, 405, "POST"},
			{"unknown endpoint", "GET", c.api() + "/v1/endpoints/never-seen", nil, 404, "never-seen"},
			{"unknown path", "GET", c.api() + "/v2/whatever", nil, 404, "no such path"},
		}
		for _, tc := range cases {
			r, err := c.do(tc.method, tc.url, tc.body)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			expectRefusal(t, tc.name, r, tc.status, tc.says)
			if tc.status == 405 && r.header.Get("Allow") == "" {
				t.Errorf("%s: 405 without an Allow header", tc.name)
			}
		}

		// A body over the limit (64 MiB): 413, and the forwarder survives.
		r, err := overLimitSubmit(c, submitURL, 65<<20)
		switch {
		case err != nil:
			t.Errorf("body over the limit: no answer (%v); want 413 with a JSON error", err)
		default:
			expectRefusal(t, "body over the limit", r, http.StatusRequestEntityTooLarge, "limit")
		}

		if after := forwarderTaskCount(t, c); after != tasksBefore {
			t.Errorf("the forwarder held %d tasks before the bad requests and %d after; refusals must not store anything", tasksBefore, after)
		}
		// The endpoint keeps working.
		more := c.submit(makeTasks(100, noop), 0)
		s := c.waitTerminal(more, time.Minute)
		if n := countStates(s)["success"]; n != 100 {
			t.Errorf("after bad input, 100 noops ended %v", countStates(s))
		}
	})

	t.Run("endpoint-view", func(t *testing.T) {
		c := c.with(t)
		// Everything submitted so far has ended: the endpoint must say so,
		// and every worker must be idle again.
		c.waitEndpoint(10*time.Second, func(v endpointView) error {
			if !v.Connected || v.Managers != 2 || v.Workers != 4 || v.IdleWorkers != 4 || v.Queued != 0 || v.Outstanding != 0 {
				return fmt.Errorf("endpoint %+v; want connected, 2 managers, 4 workers, 4 idle, nothing queued or outstanding", v)
			}
			return nil
		})
		r := c.mustDo("GET", c.api()+"/v1/endpoints/"+c.ep, nil)
		if r.status != 200 {
			t.Fatalf("GET /v1/endpoints/%s: %s", c.ep, r)
		}
		var raw map[string]any
		if err := json.Unmarshal(r.body, &raw); err != nil {
			t.Fatal(err)
		}
		if raw["connected"] != true {
			t.Errorf("connected = %#v, want JSON true", raw["connected"])
		}
		if raw["endpoint_id"] != c.ep {
			t.Errorf("endpoint_id = %#v, want %q", raw["endpoint_id"], c.ep)
		}
		for key, want := range map[string]float64{"managers": 2, "workers": 4} {
			if v, ok := raw[key].(float64); !ok || v != want {
				t.Errorf("%s = %#v (%T), want the JSON number %v", key, raw[key], raw[key], want)
			}
		}
		for _, key := range []string{"idle_workers", "queued", "outstanding"} {
			if _, ok := raw[key].(float64); !ok {
				t.Errorf("%s = %#v (%T), want a JSON number", key, raw[key], raw[key])
			}
		}
		if raw["serving_state"] != "NONE_PAUSED" {
			t.Errorf("serving_state = %#v, want NONE_PAUSED", raw["serving_state"])
		}
		hb, _ := raw["last_heartbeat"].(string)
		if ts, err := time.Parse(time.RFC3339Nano, hb); err != nil || time.Since(ts) > 10*time.Second {
			t.Errorf("last_heartbeat = %#v: want a recent RFC 3339 time (%v)", raw["last_heartbeat"], err)
		}
		var list struct {
			Endpoints []endpointView `json:"endpoints"`
		}
		if err := c.getJSON(c.api()+"/v1/endpoints", &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Endpoints) != 1 || list.Endpoints[0].EndpointID != c.ep || !list.Endpoints[0].Connected {
			t.Errorf("GET /v1/endpoints = %+v, want just %s, connected", list.Endpoints, c.ep)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		c := c.with(t)
		daemons := []struct{ name, base, must string }{
			{"forwarder", c.api(), "switchyard_forwarder_tasks_submitted_total"},
			{"interchange", c.ixAPI(), "switchyard_interchange_managers"},
			{m1.id, m1.base(), "switchyard_manager_tasks_completed_total"},
			{m2.id, m2.base(), "switchyard_manager_tasks_completed_total"},
		}
		for _, d := range daemons {
			text, err := c.metrics(d.base)
			if err != nil {
				t.Errorf("%s: %v", d.name, err)
				continue
			}
			if !strings.Contains(text, "\n"+d.must) && !strings.HasPrefix(text, d.must) {
				t.Errorf("%s /metrics has no %s", d.name, d.must)
			}
			for _, line := range strings.Split(text, "\n") {
				if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "go_") ||
					strings.HasPrefix(line, "process_") || strings.HasPrefix(line, "promhttp_") {
					continue
				}
				if !strings.HasPrefix(line, "switchyard_") {
					t.Errorf("%s metric %q does not start with switchyard_", d.name, line)
					break
				}
			}
		}
		fm, _ := c.metrics(c.api())
		if v, ok := metricValue(fm, "switchyard_forwarder_tasks_submitted_total", ""); !ok || v < n {
			t.Errorf("switchyard_forwarder_tasks_submitted_total = %v (present %v), want >= %d", v, ok, n)
		}
		if v, ok := metricValue(fm, "switchyard_forwarder_tasks_completed_total", `{state="failed"}`); !ok || v < float64(n/20*4) {
			t.Errorf(`switchyard_forwarder_tasks_completed_total{state="failed"} = %v (present %v), want >= %d`, v, ok, n/20*4)
		}
		im, _ := c.metrics(c.ixAPI())
		if v, ok := metricValue(im, "switchyard_interchange_managers", ""); !ok || v != 2 {
			t.Errorf("switchyard_interchange_managers = %v (present %v), want 2", v, ok)
		}
		total := 0.0
		for _, m := range []*manager{m1, m2} {
			mm, _ := c.metrics(m.base())
			for _, st := range []string{"success", "failed"} {
				v, _ := metricValue(mm, "switchyard_manager_tasks_completed_total", `{state="`+st+`"}`)
				total += v
			}
			if v, ok := metricValue(mm, "switchyard_manager_workers", ""); !ok || v != 2 {
				t.Errorf("%s switchyard_manager_workers = %v (present %v), want 2", m.id, v, ok)
			}
		}
		if total < n {
			t.Errorf("managers completed %v tasks between them, want >= %d", total, n)
		}
	})

	t.Run("cli", func(t *testing.T) {
		c := c.with(t)
		uuidLine := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

		r := c.cli("submit", "--endpoint", c.ep, "--", "echo", "cli-hello")
		okID := strings.TrimSpace(r.stdout)
		if r.code != 0 || !uuidLine.MatchString(okID) {
			t.Fatalf("submit: %s; want exit 0 and one task id", r)
		}
		r = c.cli("submit", "--endpoint", c.ep, "--", "sh", "-c", "echo cli-out; echo boom >&2; exit 3")
		failID := strings.TrimSpace(r.stdout)
		if r.code != 0 || !uuidLine.MatchString(failID) {
			t.Fatalf("submit failing task: %s", r)
		}

		r = c.cli("wait", okID)
		if r.code != 0 || strings.TrimSpace(r.stdout) != okID+"  success" {
			t.Errorf("wait %s: %s; want exit 0 and %q", okID, r, okID+"  success")
		}
		r = c.cli("wait", failID)
		if r.code != 3 || !strings.Contains(r.stdout, "failed") {
			t.Errorf("wait on a failed task: %s; want exit 3 and 'failed'", r)
		}
		r = c.cli("result", okID)
		if r.code != 0 || r.stdout != "cli-hello\n" {
			t.Errorf("result %s: %s; want exit 0 and stdout \"cli-hello\\n\"", okID, r)
		}
		r = c.cli("result", failID)
		if r.code != 3 || r.stdout != "cli-out\n" || !strings.Contains(r.stderr, "boom") {
			t.Errorf("result of the failing exec: %s; want exit 3, stdout \"cli-out\\n\", stderr with boom", r)
		}
		r = c.cli("result", "--json", failID)
		var tv taskView
		if err := json.Unmarshal([]byte(r.stdout), &tv); r.code != 0 || err != nil || tv.TaskID != failID || tv.State != "failed" {
			t.Errorf("result --json: %s (%v)", r, err)
		}
		r = c.cli("status", okID, failID)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 2 ||
			!strings.HasPrefix(lines[0], okID) || !strings.Contains(lines[0], "success") || !strings.Contains(lines[0], "attempts=1") ||
			!strings.HasPrefix(lines[1], failID) || !strings.Contains(lines[1], "failed") {
			t.Errorf("status: %s", r)
		}
		r = c.cli("status", "--json", okID)
		var st struct {
			Tasks []taskView `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || len(st.Tasks) != 1 || st.Tasks[0].State != "success" {
			t.Errorf("status --json: %s (%v)", r, err)
		}

		// cancel: a finished task is left as it is; a running one ends.
		r = c.cli("cancel", okID)
		if r.code != 0 || !strings.Contains(r.stdout, okID) || !strings.Contains(r.stdout, "already ended as success") {
			t.Errorf("cancel of a finished task: %s; want exit 0 and 'already ended as success'", r)
		}
		if v, err := c.getTask(okID); err != nil || v.State != "success" {
			t.Errorf("after cancelling a finished task it reads %q (%v), want success", v.State, err)
		}
		r = c.cli("submit", "--endpoint", c.ep, "--kind", "sleep", "30")
		slowID := strings.TrimSpace(r.stdout)
		if r.code != 0 || !uuidLine.MatchString(slowID) {
			t.Fatalf("submit sleep: %s", r)
		}
		r = c.cli("wait", "--timeout", "300ms", slowID)
		if r.code != 2 {
			t.Errorf("wait --timeout 300ms on a 30s sleep: %s; want exit 2", r)
		}
		r = c.cli("cancel", slowID)
		if r.code != 0 || !strings.Contains(r.stdout, slowID+"  cancelled") {
			t.Errorf("cancel of a sleeping task: %s; want exit 0 and %q", r, slowID+"  cancelled")
		}
		r = c.cli("wait", slowID)
		if r.code != 3 || !strings.Contains(r.stdout, "cancelled") {
			t.Errorf("wait on a cancelled task: %s; want exit 3 and 'cancelled'", r)
		}

		// Many ids at once, through stdin-free arguments, with --json.
		r = c.cli("submit", "--endpoint", c.ep, "--kind", "noop", "-n", "5", "--json")
		var sub struct {
			TaskIDs []string `json:"task_ids"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sub); r.code != 0 || err != nil || len(sub.TaskIDs) != 5 {
			t.Fatalf("submit -n 5 --json: %s (%v)", r, err)
		}
		r = c.cli(append([]string{"wait", "-q"}, sub.TaskIDs...)...)
		if r.code != 0 || strings.Count(r.stdout, "success") != 5 {
			t.Errorf("wait on 5 noops: %s", r)
		}

		r = c.cli("endpoints", "--json")
		var eps struct {
			Endpoints []endpointView `json:"endpoints"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &eps); r.code != 0 || err != nil {
			t.Fatalf("endpoints --json: %s (%v)", r, err)
		}
		if len(eps.Endpoints) != 1 || eps.Endpoints[0].EndpointID != c.ep || !eps.Endpoints[0].Connected ||
			eps.Endpoints[0].Managers != 2 || eps.Endpoints[0].Workers != 4 {
			t.Errorf("endpoints --json = %+v; want %s connected with 2 managers and 4 workers", eps.Endpoints, c.ep)
		}
		r = c.cli("endpoints", c.ep)
		if r.code != 0 || !strings.Contains(r.stdout, c.ep) || !strings.Contains(r.stdout, "true") {
			t.Errorf("endpoints %s: %s", c.ep, r)
		}

		// Refusals come back as a non-zero exit with the API's reason.
		r = c.cli("submit", "--endpoint", c.ep, "--kind", "bogus")
		if r.code == 0 || !strings.Contains(r.stderr, "unknown kind") {
			t.Errorf("submit --kind bogus: %s; want a non-zero exit naming the unknown kind", r)
		}
		r = c.cli("result", uuid.NewString())
		if r.code == 0 || !strings.Contains(r.stderr, "404") {
			t.Errorf("result of an unknown id: %s; want a non-zero exit with HTTP 404", r)
		}
	})
}

// expectRefusal checks a 4xx JSON answer that says what was wrong.
func expectRefusal(t *testing.T, what string, r httpResult, status int, says string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: got %s, want HTTP %d", what, r, status)
		return
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil || strings.TrimSpace(*e.Error) == "" {
		t.Errorf("%s: body %q is not a JSON object with an \"error\" message", what, r.body)
		return
	}
	if !strings.Contains(strings.ToLower(*e.Error), strings.ToLower(says)) {
		t.Errorf("%s: error %q does not mention %q", what, *e.Error, says)
	}
}

func makeTasks(n int, f func() task) []task {
	out := make([]task, n)
	for i := range out {
		out[i] = f()
	}
	return out
}

func forwarderTaskCount(t *testing.T, c *cluster) int {
	t.Helper()
	var h struct {
		OK    bool `json:"ok"`
		Tasks *int `json:"tasks"`
	}
	if err := c.getJSON(c.api()+"/healthz", &h); err != nil {
		t.Fatal(err)
	}
	if !h.OK || h.Tasks == nil {
		t.Fatalf("GET /healthz = %+v; want ok and a task count", h)
	}
	return *h.Tasks
}

// overLimitSubmit posts a syntactically valid JSON body of size bytes (a
// task list padded with whitespace) without holding it in memory.
func overLimitSubmit(c *cluster, url string, size int64) (httpResult, error) {
	head := `{"tasks":[{"kind":"noop"}`
	tail := `]}`
	pad := size - int64(len(head)+len(tail))
	body := io.MultiReader(strings.NewReader(head), io.LimitReader(spaces{}, pad), strings.NewReader(tail))
	return c.send(url, client.Request{Method: "POST", Body: body, ContentLength: size})
}

type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}
