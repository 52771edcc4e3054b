package forwarder_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

func startForwarder(t *testing.T, opts forwarder.Options) (*testutil.Forwarder, *testutil.Client) {
	t.Helper()
	f := testutil.StartForwarder(t, opts)
	f.Enroll(t, "ep1")
	return f, f.Client()
}

func TestHTTPRefusals(t *testing.T) {
	const limit = 2048
	f, c := startForwarder(t, forwarder.Options{MaxBodyBytes: limit})
	unknown := uuid.NewString()
	big := `{"tasks":[` + strings.Repeat(`{"kind":"noop"},`, limit/16) + `{"kind":"noop"}]}`
	cases := []struct {
		name    string
		method  string
		path    string
		body    any
		accept  string
		code    int
		wantErr []string
		allow   string
	}{
		{name: "submit empty body", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(""), code: 400, wantErr: []string{"empty body"}},
		{name: "submit malformed JSON", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[`), code: 400, wantErr: []string{"malformed JSON"}},
		{name: "submit not an object", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`[{"kind":"noop"}]`), code: 400, wantErr: []string{"JSON object"}},
		{name: "submit without tasks", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{}`), code: 400, wantErr: []string{`"tasks"`, "list"}},
		{name: "submit tasks null", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":null}`), code: 400, wantErr: []string{`"tasks"`, "list"}},
		{name: "submit empty tasks", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[]}`), code: 400, wantErr: []string{`"tasks" is empty`}},
		{name: "submit tasks not a list", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":{"kind":"noop"}}`), code: 400, wantErr: []string{`"tasks"`, "list"}},
		{name: "submit unknown kind", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"bogus"}]}`), code: 400,
			wantErr: []string{`tasks[0]: unknown kind "bogus"`, "noop, sleep, exec"}},
		{name: "submit one bad of two", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop"},{"kind":"exec"}]}`), code: 400,
			wantErr: []string{`tasks[1]: kind "exec" needs "args"`}},
		{name: "submit args not a list", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"exec","args":"ls"}]}`), code: 400,
			wantErr: []string{`tasks[0]: "args" must be a list of strings`}},
		{name: "submit bad sleep", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"sleep","args":["x"]}]}`), code: 400,
			wantErr: []string{`tasks[0]: sleep arg "x"`}},
		{name: "submit bad timeout", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop","timeout":"1k"}]}`), code: 400,
			wantErr: []string{`invalid timeout "1k"`}},
		{name: "submit unknown field", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop","shell":true}]}`), code: 400,
			wantErr: []string{`unknown field "shell"`}},
		{name: "submit NUL in args", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"exec","args":["a\u0000"]}]}`), code: 400,
			wantErr: []string{"tasks[0]: args[0] contains a NUL byte"}},
		{name: "submit task not an object", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":["noop"]}`), code: 400,
			wantErr: []string{"tasks[0]", "object"}},
		{name: "submit two JSON values", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop"}]} {"tasks":[]}`), code: 400,
			wantErr: []string{"more than one value"}},
		{name: "submit over the body limit", method: "POST", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(big), code: 413,
			wantErr: []string{fmt.Sprintf("over the limit of %d bytes", limit)}},
		{name: "submit bad endpoint id", method: "POST", path: "/v1/endpoints/bad%20id/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop"}]}`), code: 400,
			wantErr: []string{`invalid endpoint id "bad id"`}},
		{name: "submit endpoint id starting with a dash", method: "POST", path: "/v1/endpoints/-x/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop"}]}`), code: 400,
			wantErr: []string{"invalid endpoint id"}},
		{name: "submit with GET", method: "GET", path: "/v1/endpoints/ep1/tasks", code: 405, wantErr: []string{"method GET not allowed"}, allow: "POST"},
		{name: "submit with PUT", method: "PUT", path: "/v1/endpoints/ep1/tasks", body: testutil.Raw(`{"tasks":[{"kind":"noop"}]}`), code: 405,
			wantErr: []string{"method PUT not allowed"}, allow: "POST"},

		{name: "get invalid id", method: "GET", path: "/v1/tasks/not-a-uuid", code: 400, wantErr: []string{`invalid task id "not-a-uuid"`, "UUID"}},
		{name: "get unknown id", method: "GET", path: "/v1/tasks/" + unknown, code: 404, wantErr: []string{"unknown task id " + unknown}},
		{name: "get unknown id with wait", method: "GET", path: "/v1/tasks/" + unknown + "?wait=50ms", code: 404, wantErr: []string{"unknown task id"}},
		{name: "get bad wait", method: "GET", path: "/v1/tasks/" + unknown + "?wait=abc", code: 400, wantErr: []string{`invalid wait "abc"`, "Go duration"}},
		{name: "get negative wait", method: "GET", path: "/v1/tasks/" + unknown + "?wait=-1s", code: 400, wantErr: []string{`invalid wait "-1s"`}},
		{name: "get unitless wait", method: "GET", path: "/v1/tasks/" + unknown + "?wait=10", code: 400, wantErr: []string{`invalid wait "10"`}},
		{name: "task with PUT", method: "PUT", path: "/v1/tasks/" + unknown, code: 405, wantErr: []string{"method PUT not allowed"}},
		{name: "task with POST", method: "POST", path: "/v1/tasks/" + unknown, body: testutil.Raw(`{}`), code: 405, wantErr: []string{"not allowed"}},

		{name: "status without task_ids", method: "POST", path: "/v1/tasks/status", body: testutil.Raw(`{}`), code: 400, wantErr: []string{`"task_ids"`, "list"}},
		{name: "status bad id", method: "POST", path: "/v1/tasks/status", body: testutil.Raw(`{"task_ids":["` + unknown + `","x"]}`), code: 400,
			wantErr: []string{`task_ids[1] "x"`}},
		{name: "status ids not a list", method: "POST", path: "/v1/tasks/status", body: testutil.Raw(`{"task_ids":"x"}`), code: 400, wantErr: []string{`"task_ids"`, "list"}},
		{name: "status empty body", method: "POST", path: "/v1/tasks/status", body: testutil.Raw(``), code: 400, wantErr: []string{"empty body"}},
		{name: "status with GET", method: "GET", path: "/v1/tasks/status", code: 405, wantErr: []string{"not allowed"}, allow: "POST"},
		{name: "status over the body limit", method: "POST", path: "/v1/tasks/status",
			body: testutil.Raw(`{"task_ids":[` + strings.Repeat(`"`+unknown+`",`, limit/38) + `"` + unknown + `"]}`), code: 413, wantErr: []string{"over the limit"}},

		{name: "cancel batch without ids", method: "POST", path: "/v1/tasks/cancel", body: testutil.Raw(`{"ids":[]}`), code: 400, wantErr: []string{`"task_ids"`, "list"}},
		{name: "cancel batch bad id", method: "POST", path: "/v1/tasks/cancel", body: testutil.Raw(`{"task_ids":["nope"]}`), code: 400, wantErr: []string{`task_ids[0] "nope"`}},
		{name: "cancel batch with GET", method: "GET", path: "/v1/tasks/cancel", code: 405, wantErr: []string{"not allowed"}},
		{name: "cancel invalid id", method: "DELETE", path: "/v1/tasks/xyz", code: 400, wantErr: []string{`invalid task id "xyz"`}},
		{name: "cancel unknown id", method: "DELETE", path: "/v1/tasks/" + unknown, code: 404, wantErr: []string{"unknown task id"}},

		{name: "unknown endpoint", method: "GET", path: "/v1/endpoints/nope", code: 404, wantErr: []string{`unknown endpoint "nope"`}},
		{name: "endpoints with PUT", method: "PUT", path: "/v1/endpoints", body: testutil.Raw(`{}`), code: 405, wantErr: []string{"not allowed"}, allow: "GET, POST"},
		{name: "endpoint with PUT", method: "PUT", path: "/v1/endpoints/ep1", code: 405, wantErr: []string{"not allowed"}, allow: "DELETE, GET"},
		{name: "serving state bad state", method: "POST", path: "/v1/endpoints/ep1/servingState", body: testutil.Raw(`{"state":"INVALID"}`),
			accept: "application/json", code: 400, wantErr: []string{"Invalid state 'INVALID'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED"}},
		{name: "serving state bad timeout", method: "POST", path: "/v1/endpoints/ep1/servingState", body: testutil.Raw(`{"state":"PUSH_PAUSED","timeout":"1k"}`),
			accept: "application/json", code: 400, wantErr: []string{"Invalid timeout '1k'"}},
		{name: "serving state of a disconnected endpoint", method: "GET", path: "/v1/endpoints/ep1/servingState",
			accept: "application/json", code: 503, wantErr: []string{"endpoint ep1", "not connected"}},
		{name: "serving state with DELETE", method: "DELETE", path: "/v1/endpoints/ep1/servingState", code: 405, wantErr: []string{"not allowed"}},
		{name: "unknown path", method: "GET", path: "/v2/tasks", code: 404, wantErr: []string{"no such path /v2/tasks"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := testutil.Request{Method: tc.method, Path: tc.path, Body: tc.body}
			if tc.accept != "" {
				req.Header = map[string]string{"Accept": tc.accept}
			}
			resp, err := c.Send(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", resp.Code, tc.code, resp.Body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(resp.Body, &e); err != nil || e.Error == "" {
				t.Fatalf("body %q is not {\"error\": ...}", resp.Body)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(e.Error, w) {
					t.Errorf("error %q does not contain %q", e.Error, w)
				}
			}
			if strings.Contains(e.Error, "taskspec.") || strings.Contains(e.Error, "json: ") {
				t.Errorf("error %q shows Go internals", e.Error)
			}
			if tc.allow != "" && resp.Header.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), tc.allow)
			}
		})
	}
	// Nothing was accepted by any of those.
	var h struct {
		Tasks int `json:"tasks"`
	}
	c.Must(t, http.StatusOK, "GET", "/healthz", nil, &h)
	if h.Tasks != 0 {
		t.Errorf("%d tasks exist after refused requests", h.Tasks)
	}
	if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_tasks_submitted_total"); v != 0 {
		t.Errorf("tasks_submitted_total = %g", v)
	}
	if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_http_refusals_total"); v < float64(len(cases)) {
		t.Errorf("http_refusals_total = %g, want at least %d", v, len(cases))
	}
}

func TestSubmitGetStatusCancel(t *testing.T) {
	f, c := startForwarder(t, forwarder.Options{})
	specs := []any{
		map[string]any{"kind": "noop"},
		map[string]any{"kind": "sleep", "args": []string{"1"}},
		map[string]any{"kind": "exec", "args": []string{"echo", "hi"}, "timeout": "5s"},
	}
	start := time.Now()
	ids, err := c.Submit("ep1", specs...)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if _, err := uuid.Parse(id); err != nil || seen[id] {
			t.Fatalf("task id %q is not a fresh UUID", id)
		}
		seen[id] = true
	}
	kinds := []string{"noop", "sleep", "exec"}
	for i, id := range ids {
		v, err := c.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		// No endpoint has connected: the forwarder holds the task, not yet
		// handed to a manager (attempts 0).
		if v.TaskID != id || v.EndpointID != "ep1" || v.Kind != kinds[i] || v.State != "waiting-for-endpoint" || v.Attempts != 0 {
			t.Errorf("task %d: %+v", i, v)
		}
		if v.CreatedAt == nil || v.CreatedAt.Before(start.Add(-time.Second)) || v.CompletedAt != nil || string(v.Result) != "null" {
			t.Errorf("task %d timestamps/result: created %v completed %v result %s", i, v.CreatedAt, v.CompletedAt, v.Result)
		}
	}

	// Status keeps the order of the request and marks unknown ids.
	unknown := uuid.NewString()
	vs, err := c.Status([]string{ids[2], unknown, ids[0]})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].TaskID != ids[2] || vs[1].TaskID != unknown || vs[1].State != "unknown" || vs[2].TaskID != ids[0] {
		t.Errorf("status answers %+v", vs)
	}

	// ?wait on a task that does not end returns after the wait, unchanged.
	t0 := time.Now()
	var v testutil.TaskView
	c.Must(t, http.StatusOK, "GET", "/v1/tasks/"+ids[0]+"?wait=150ms", nil, &v)
	if d := time.Since(t0); d < 150*time.Millisecond || v.State != "waiting-for-endpoint" {
		t.Errorf("wait=150ms returned after %s with %s", d, v.State)
	}

	// A long poll returns as soon as the task ends.
	type polled struct {
		v   testutil.TaskView
		err error
		at  time.Time
	}
	done := make(chan polled, 1)
	go func() {
		var v testutil.TaskView
		code, raw, err := c.Do("GET", "/v1/tasks/"+ids[1]+"?wait=60s", nil, &v)
		if err == nil && code != 200 {
			err = fmt.Errorf("HTTP %d: %s", code, raw)
		}
		done <- polled{v, err, time.Now()}
	}()
	var cv struct {
		TaskID    string `json:"task_id"`
		State     string `json:"state"`
		Cancelled bool   `json:"cancelled"`
		Message   string `json:"message"`
	}
	// The waiter may not be waiting yet; either way it must see the end.
	c.Must(t, http.StatusOK, "DELETE", "/v1/tasks/"+ids[1], nil, &cv)
	cancelled := time.Now()
	if !cv.Cancelled || cv.State != "cancelled" || cv.TaskID != ids[1] {
		t.Errorf("cancel answer %+v", cv)
	}
	select {
	case p := <-done:
		if p.err != nil || p.v.State != "cancelled" || p.v.Error == "" || p.v.CompletedAt == nil {
			t.Errorf("long poll: %v %+v", p.err, p.v)
		}
		if d := p.at.Sub(cancelled); d > 5*time.Second {
			t.Errorf("long poll returned %s after the task ended", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long poll did not return after the task was cancelled")
	}

	// A second cancel leaves the task as it is and says so.
	c.Must(t, http.StatusOK, "DELETE", "/v1/tasks/"+ids[1], nil, &cv)
	if cv.Cancelled || cv.State != "cancelled" || !strings.Contains(cv.Message, "already ended as cancelled") {
		t.Errorf("second cancel %+v", cv)
	}
	// ?wait on an ended task answers at once.
	t0 = time.Now()
	c.Must(t, http.StatusOK, "GET", "/v1/tasks/"+ids[1]+"?wait=30s", nil, &v)
	if time.Since(t0) > 5*time.Second || v.State != "cancelled" {
		t.Errorf("wait on an ended task: %s after %s", v.State, time.Since(t0))
	}

	// Batch cancel.
	var bc struct {
		Tasks []struct {
			TaskID    string `json:"task_id"`
			State     string `json:"state"`
			Cancelled bool   `json:"cancelled"`
		} `json:"tasks"`
	}
	c.Must(t, http.StatusOK, "POST", "/v1/tasks/cancel", map[string]any{"task_ids": []string{ids[0], unknown, ids[1]}}, &bc)
	if len(bc.Tasks) != 3 || !bc.Tasks[0].Cancelled || bc.Tasks[1].State != "unknown" || bc.Tasks[2].Cancelled {
		t.Errorf("batch cancel %+v", bc)
	}
	if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_cancels_total"); v != 2 {
		t.Errorf("cancels_total = %g, want 2", v)
	}
	if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_tasks_submitted_total"); v != 3 {
		t.Errorf("tasks_submitted_total = %g, want 3", v)
	}

	// The endpoint is known (it has tasks) but not connected.
	var ev forwarder.EndpointView
	c.Must(t, http.StatusOK, "GET", "/v1/endpoints/ep1", nil, &ev)
	if ev.Connected || ev.EndpointID != "ep1" {
		t.Errorf("endpoint view %+v", ev)
	}
}
