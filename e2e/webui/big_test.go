package webui_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/manager"
)

// The tasks page with many tasks in the store: its weight and load time,
// and how soon a new task shows, with 100,000 tasks (SWITCHYARD_UI_BIG
// sets another number). A measurement, not a check of every run:
// go test -run '^$' -bench WebUIManyTasks -benchtime 1x ./e2e/webui/
func BenchmarkWebUIManyTasks(bm *testing.B) {
	t := bm
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("SWITCHYARD_UI_BIG")); err == nil && v > 0 {
		n = v
	}
	const iv, th = 200 * time.Millisecond, 10 * time.Second
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: iv, HeartbeatThreshold: th, StateDir: t.TempDir()})
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: fwd.ZMQAddr(),
		HeartbeatInterval: iv, HeartbeatThreshold: th, Credentials: fwd.Enroll(t, "ep1")})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), Credentials: ix.ManagerCredentials(),
		ManagerID: "m1", Workers: 8, HeartbeatInterval: iv, HeartbeatThreshold: th})
	c := fwd.Client()
	specs := make([]any, n)
	for i := range specs {
		specs[i] = map[string]any{"kind": "noop"}
	}
	start := time.Now()
	if _, err := c.Submit("ep1", specs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d noops submitted in %s", n, time.Since(start).Round(time.Millisecond))
	testutil.WaitFor(t, 10*time.Minute, func() error {
		var h struct {
			Tasks int `json:"tasks"`
		}
		c.Must(t, http.StatusOK, http.MethodGet, "/healthz", nil, &h)
		var l struct {
			Tasks []json.RawMessage `json:"tasks"`
		}
		c.Must(t, http.StatusOK, http.MethodGet, "/v1/tasks?state=received,waiting-for-endpoint,waiting-for-nodes,waiting-for-launch,running&limit=1", nil, &l)
		if len(l.Tasks) > 0 {
			return fmt.Errorf("tasks still running")
		}
		return nil
	})
	t.Logf("all %d ended after %s", n, time.Since(start).Round(time.Millisecond))

	b := startBrowser(t)
	tb := b.newTab(t)
	tb.navigate(fwd.URL + "/ui/signin")
	tb.submitForm("form[action='/ui/signin']", map[string]string{"token": fwd.AdminToken()})
	shots := t.TempDir()
	for _, p := range []string{"/ui/tasks", "/ui/tasks?order=oldest", "/ui/tasks?state=failed", "/ui/endpoints"} {
		var times []string
		for i := 0; i < 3; i++ {
			tb.navigate(fwd.URL + p)
			times = append(times, tb.str(`(() => { const n = performance.getEntriesByType("navigation")[0];
				return "server " + (n.responseStart - n.requestStart).toFixed(1) + " ms, loaded " + (n.loadEventEnd - n.startTime).toFixed(1) + " ms"; })()`))
		}
		weight := tb.str(`(() => { const n = performance.getEntriesByType("navigation")[0];
			let total = n.transferSize, body = n.decodedBodySize, parts = [];
			for (const r of performance.getEntriesByType("resource")) { total += r.transferSize; body += r.decodedBodySize; parts.push(r.name.split("/").pop() + " " + r.decodedBodySize); }
			return "document " + n.decodedBodySize + " B, with static files " + body + " B decoded (" + parts.join(", ") + "), " + total + " B transferred"; })()`)
		t.Logf("%s with %d tasks: %v; %s; %s rows", p, n, times, weight, tb.str(`String(document.querySelectorAll("#task-rows tr").length)`))
	}
	tb.navigate(fwd.URL + "/ui/tasks")
	begin := time.Now()
	ids, err := c.Submit("ep1", map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	shown := tb.waitTrue(10*time.Second, fmt.Sprintf(`document.querySelector('tr[data-id=%q]')`, ids[0]))
	t.Logf("with %d tasks, a new one showed on the open tasks page %s after its submit returned (%s after it began)", n, shown.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	tb.screenshot(shots, "tasks-big")
}
