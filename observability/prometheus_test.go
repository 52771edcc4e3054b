package observability

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

const (
	testEndpoint = "obs-ep"
	interval     = 200 * time.Millisecond
	// rateInterval is what Grafana makes of $__rate_interval for a data
	// source scraped every second: max(4 x scrape interval, step + scrape).
	rateInterval = "4s"
	rangeStep    = time.Second
)

type taskSpec struct {
	Kind string   `json:"kind"`
	Args []string `json:"args,omitempty"`
}

type endpointView = client.Endpoint

type taskView = client.Task

// endpointRun is one live endpoint: forwarder, interchange, two managers
// and a Prometheus scraping them, all real processes on loopback ports.
type endpointRun struct {
	t                  *testing.T
	dir                string
	fwd, ix, m1, m2    *proc
	prom               *proc
	fwdURL, ixURL      string
	m1URL, m2URL       string
	promURL            string
	pc                 promClient
	submitted          int
	cancelledByRequest int
}

func (r *endpointRun) endpoint() (endpointView, error) {
	var v endpointView
	code, body, err := doJSON(http.MethodGet, r.fwdURL+"/v1/endpoints/"+testEndpoint, nil, &v)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET endpoint: HTTP %d %s", code, body)
	}
	return v, err
}

func (r *endpointRun) waitEndpoint(what string, timeout time.Duration, ok func(endpointView) error) {
	r.t.Helper()
	waitFor(r.t, timeout, what, func() error {
		v, err := r.endpoint()
		if err != nil {
			return err
		}
		return ok(v)
	})
}

func (r *endpointRun) submit(tasks []taskSpec) []string {
	r.t.Helper()
	var out struct {
		IDs []string `json:"task_ids"`
	}
	code, body, err := doJSON(http.MethodPost, r.fwdURL+"/v1/endpoints/"+testEndpoint+"/tasks",
		map[string]any{"tasks": tasks}, &out)
	if err != nil || code != http.StatusAccepted || len(out.IDs) != len(tasks) {
		r.t.Fatalf("submit %d tasks: HTTP %d %v %s", len(tasks), code, err, body)
	}
	r.submitted += len(tasks)
	return out.IDs
}

// unfinished returns how many of ids are not terminal yet.
func (r *endpointRun) unfinished(ids []string) (int, error) {
	var out struct {
		Tasks []taskView `json:"tasks"`
	}
	code, body, err := doJSON(http.MethodPost, r.fwdURL+"/v1/tasks/status", map[string]any{"task_ids": ids}, &out)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK || len(out.Tasks) != len(ids) {
		return 0, fmt.Errorf("status: HTTP %d, %d of %d tasks: %.300s", code, len(out.Tasks), len(ids), body)
	}
	n := 0
	for _, tv := range out.Tasks {
		switch tv.State {
		case "success", "failed", "cancelled":
		default:
			n++
		}
	}
	return n, nil
}

func (r *endpointRun) waitDone(what string, ids []string, timeout time.Duration) {
	r.t.Helper()
	waitFor(r.t, timeout, what, func() error {
		n, err := r.unfinished(ids)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d of %d tasks not terminal", n, len(ids))
		}
		return nil
	})
}

func managerHeld(base string) (held, unacked int, err error) {
	var v struct {
		Held    int `json:"tasks_held"`
		Unacked int `json:"results_unacked"`
	}
	code, body, err := doJSON(http.MethodGet, base+"/status", nil, &v)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s/status: HTTP %d %s", base, code, body)
	}
	return v.Held, v.Unacked, err
}

// startEndpoint starts the daemons and waits until the forwarder sees the
// endpoint connected with both managers.
func startEndpoint(t *testing.T) *endpointRun {
	// Secure by default: the endpoint is enrolled before the forwarder
	// starts, as `endpoint up` does, and each daemon's admin token is sent
	// to it. --max-retries 0: tasks of a lost manager fail at the
	// interchange instead of running again (see the manager-loss step).
	d := testutil.StartDaemons(t, testutil.Switchyard(t), testutil.DaemonsOptions{Endpoint: testEndpoint, Interval: interval,
		Interchange: launch.Interchange{MaxRetries: new(0)}})
	r := &endpointRun{t: t, dir: d.Dir, fwd: d.Forwarder, ix: d.Interchange, fwdURL: d.API(), ixURL: d.IxAPI()}
	tokens.Store(testutil.Addr(d.FwdHTTP), d.Token)
	tokens.Store(testutil.Addr(d.IxHTTP), r.ix.WaitFile(t, filepath.Join(d.StateDir("interchange"), "admin.token"), 30*time.Second))
	m1 := d.StartManager(t, launch.Manager{ManagerID: "m1", Workers: 4})
	m2 := d.StartManager(t, launch.Manager{ManagerID: "m2", Workers: 2})
	r.m1, r.m2, r.m1URL, r.m2URL = m1.Proc, m2.Proc, m1.URL(), m2.URL()
	tokens.Store(testutil.Addr(m1.Port), m1.WaitFile(t, filepath.Join(d.StateDir("m1"), "admin.token"), 30*time.Second))
	tokens.Store(testutil.Addr(m2.Port), m2.WaitFile(t, filepath.Join(d.StateDir("m2"), "admin.token"), 30*time.Second))
	r.waitEndpoint("endpoint connected with 2 managers", 30*time.Second, func(v endpointView) error {
		if !v.Connected || v.Managers != 2 {
			return fmt.Errorf("connected %v, %d managers", v.Connected, v.Managers)
		}
		return nil
	})
	return r
}

// startPrometheus runs /usr/bin/prometheus with scripts/prometheus.yml,
// its addresses and endpoint id swapped for this run's and its intervals
// set to 1s, on its own port and storage dir.
func (r *endpointRun) startPrometheus() {
	t := r.t
	requireExecutable(t, promBin)
	example := filepath.Join(repoRoot(t), "scripts", "prometheus.yml")
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for _, rep := range [][2]string{
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
		{`"127.0.0.1:8080"`, `"` + strings.TrimPrefix(r.fwdURL, "http://") + `"`},
		{`"127.0.0.1:8081"`, `"` + strings.TrimPrefix(r.ixURL, "http://") + `"`},
		{`"127.0.0.1:8090"`, `"` + strings.TrimPrefix(r.m1URL, "http://") + `"`},
		{`"127.0.0.1:8091"`, `"` + strings.TrimPrefix(r.m2URL, "http://") + `"`},
		{"endpoint: local", "endpoint: " + testEndpoint},
	} {
		if !strings.Contains(cfg, rep[0]) {
			t.Fatalf("%s no longer contains %q, which this test replaces", example, rep[0])
		}
		cfg = strings.ReplaceAll(cfg, rep[0], rep[1])
	}
	cfgPath := filepath.Join(r.dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := testutil.Port(t)
	r.promURL = "http://" + testutil.Addr(port)
	r.pc = promClient{base: r.promURL}
	r.prom = testutil.StartProc(t, r.dir, "prometheus", promBin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(r.dir, "tsdb"),
		"--web.listen-address="+testutil.Addr(port),
		"--log.level=warn")
	waitFor(t, 30*time.Second, "prometheus ready", func() error {
		if r.prom.Exited() {
			t.Fatalf("prometheus exited at startup (log follows)")
		}
		resp, err := httpc.Get(r.promURL + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: HTTP %d", resp.StatusCode)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "all four targets scraped and up",
		r.pc.atLeast(`count(up{endpoint="`+testEndpoint+`"} == 1)`, 4))
}

func (r *endpointRun) promAtLeast(what, expr string, want float64) {
	r.t.Helper()
	waitFor(r.t, 20*time.Second, what+" (seen by Prometheus)", r.pc.atLeast(expr, want))
}

func sel(extra string) string {
	s := `endpoint="` + testEndpoint + `"`
	if extra != "" {
		s += ", " + extra
	}
	return "{" + s + "}"
}

// TestDashboardAgainstLivePrometheus drives a live endpoint scraped by a
// real Prometheus through load, an override, a manager loss and an
// endpoint loss, then evaluates every expression of the dashboard the way
// Grafana would and requires data from each.
func TestDashboardAgainstLivePrometheus(t *testing.T) {
	requireExecutable(t, promBin)
	d := loadDashboard(t)
	began := time.Now()
	r := startEndpoint(t)
	r.startPrometheus()
	start := time.Now()
	t.Logf("endpoint and Prometheus up after %s", start.Sub(began).Round(time.Millisecond))

	// A refused request, so the HTTP refusals series exists.
	code, body, err := doJSON(http.MethodPost, r.fwdURL+"/v1/endpoints/"+testEndpoint+"/tasks",
		map[string]any{"tasks": []taskSpec{{Kind: "no-such-kind"}}}, nil)
	if err != nil || code != http.StatusBadRequest {
		t.Fatalf("bad submission: want HTTP 400, got %d %v %s", code, err, body)
	}

	// Load: 12 batches of 250 (noop, exec that succeeds, exec that fails,
	// short sleeps), each submitted while the one before it drains.
	const batches, batchSize = 12, 250
	var prev []string
	for b := range batches {
		tasks := make([]taskSpec, batchSize)
		for i := range tasks {
			switch i % 10 {
			case 0:
				tasks[i] = taskSpec{Kind: "exec", Args: []string{"true"}}
			case 1:
				tasks[i] = taskSpec{Kind: "exec", Args: []string{"false"}}
			case 2:
				tasks[i] = taskSpec{Kind: "sleep", Args: []string{"0.01"}}
			default:
				tasks[i] = taskSpec{Kind: "noop"}
			}
		}
		ids := r.submit(tasks)
		if prev != nil {
			r.waitDone(fmt.Sprintf("batch %d done", b), prev, 60*time.Second)
		}
		prev = ids
	}
	r.waitDone("last batch done", prev, 60*time.Second)
	r.promAtLeast("load completed", `sum(switchyard_forwarder_tasks_completed_total`+sel("")+`)`, batches*batchSize)
	t.Logf("load: %d tasks done after %s", batches*batchSize, time.Since(start).Round(time.Millisecond))

	// Operator override on the interchange with a timeout; tasks submitted
	// meanwhile wait at the forwarder. Then clear it.
	// m1 gets one too, so the manager side of the override panels has data.
	for _, base := range []string{r.ixURL, r.m1URL} {
		code, body, err = postForm(base+"/servingState", url.Values{"state": {"PUSH_PAUSED"}, "timeout": {"1m"}})
		if err != nil || code != http.StatusOK {
			t.Fatalf("set override on %s: HTTP %d %v %s", base, code, err, body)
		}
	}
	r.waitEndpoint("forwarder sees PUSH_PAUSED", 10*time.Second, func(v endpointView) error {
		if v.ServingState != "PUSH_PAUSED" {
			return fmt.Errorf("serving state %q", v.ServingState)
		}
		return nil
	})
	held := r.submit(make100("noop"))
	// Three scrapes with the override in force, so every step of a 1s
	// range query over the run sees it at least once.
	for _, c := range []string{"interchange", "manager"} {
		r.promAtLeast(c+" override active in 3 scrapes",
			`sum(count_over_time(switchyard_`+c+`_serving_override_active`+sel(`state="PUSH_PAUSED"`)+`[1m]))`, 3)
		r.promAtLeast(c+" override expiry set",
			`min(switchyard_`+c+`_serving_override_expiry_timestamp_seconds`+sel(`instance!~"`+strings.TrimPrefix(r.m2URL, "http://")+`"`)+`)`, 1)
	}
	r.promAtLeast("tasks held upstream", `sum(switchyard_forwarder_tasks_by_state`+sel(`state="waiting-for-endpoint"`)+`)`, 1)
	r.promAtLeast("time paused by override", `max(switchyard_interchange_serving_paused_seconds_total`+sel(`cause="override"`)+`)`, 0.2)
	for _, base := range []string{r.ixURL, r.m1URL} {
		code, body, err = postForm(base+"/servingState", url.Values{"state": {""}})
		if err != nil || code != http.StatusOK {
			t.Fatalf("clear override on %s: HTTP %d %v %s", base, code, err, body)
		}
	}
	r.waitDone("tasks held during the override done", held, 30*time.Second)
	r.promAtLeast("override cleared", `max(switchyard_interchange_serving_override_active`+sel(`state=""`)+` == 0) + 1`, 1)

	// Manager loss: fill both managers with long sleeps, SIGKILL m2. With
	// --max-retries 0 the interchange fails m2's tasks itself; cancel the
	// rest.
	long := make([]taskSpec, 12)
	for i := range long {
		long[i] = taskSpec{Kind: "sleep", Args: []string{"30"}}
	}
	longIDs := r.submit(long)
	waitFor(t, 20*time.Second, "m2 runs some of the long sleeps", func() error {
		n, _, err := managerHeld(r.m2URL)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("m2 holds no task yet")
		}
		return nil
	})
	r.m2.Kill9()
	r.promAtLeast("manager lost", `sum(switchyard_interchange_managers_lost_total`+sel("")+`)`, 1)
	var cancelled struct {
		Tasks []struct {
			Cancelled bool `json:"cancelled"`
		} `json:"tasks"`
	}
	code, body, err = doJSON(http.MethodPost, r.fwdURL+"/v1/tasks/cancel", map[string]any{"task_ids": longIDs}, &cancelled)
	if err != nil || code != http.StatusOK {
		t.Fatalf("cancel: HTTP %d %v %s", code, err, body)
	}
	for _, c := range cancelled.Tasks {
		if c.Cancelled {
			r.cancelledByRequest++
		}
	}
	r.waitDone("long sleeps failed or cancelled", longIDs, 20*time.Second)
	waitFor(t, 20*time.Second, "m1 idle with every result acknowledged", func() error {
		h, u, err := managerHeld(r.m1URL)
		if err != nil {
			return err
		}
		if h+u > 0 {
			return fmt.Errorf("m1 holds %d tasks, %d unacknowledged results", h, u)
		}
		return nil
	})

	// Endpoint loss: freeze the interchange past the forwarder's threshold,
	// then let it go on.
	r.ix.Signal(syscall.SIGSTOP)
	r.waitEndpoint("forwarder declares the endpoint lost", 20*time.Second, func(v endpointView) error {
		if v.Connected {
			return errors.New("still connected")
		}
		return nil
	})
	r.ix.Signal(syscall.SIGCONT)
	r.waitEndpoint("endpoint back with m1", 30*time.Second, func(v endpointView) error {
		if !v.Connected || v.Managers != 1 {
			return fmt.Errorf("connected %v, %d managers", v.Connected, v.Managers)
		}
		return nil
	})
	r.promAtLeast("endpoint lost", `sum(switchyard_forwarder_endpoints_lost_total`+sel("")+`)`, 1)

	// Settle: Prometheus has scraped the final state of every live daemon.
	r.promAtLeast("all tasks submitted", `sum(switchyard_forwarder_tasks_submitted_total`+sel("")+`)`, float64(r.submitted))
	r.promAtLeast("nothing left in flight", `(sum(switchyard_forwarder_tasks_by_state`+sel(`state!~"success|failed|cancelled"`)+`) == 0) + 1`, 1)
	r.promAtLeast("live targets up", `count(up`+sel("")+` == 1)`, 3)
	r.promAtLeast("interchange sees its forwarder", `min(switchyard_interchange_forwarder_connected`+sel("")+`)`, 1)
	// Grafana-like range: whole steps ending now, so the last step sees
	// the last scrape.
	end := time.Now()
	start = end.Add(-time.Duration(math.Ceil(float64(end.Sub(start))/float64(rangeStep))) * rangeStep)
	t.Logf("scenario done after %s (%d tasks submitted, %d cancelled by request)",
		end.Sub(start).Round(time.Millisecond), r.submitted, r.cancelledByRequest)

	r.checkLatencyCoverage()
	r.checkVariables(d, start, end)
	r.checkPanels(d, start, end)
}

func make100(kind string) []taskSpec {
	out := make([]taskSpec, 100)
	for i := range out {
		out[i] = taskSpec{Kind: kind}
	}
	return out
}

// checkLatencyCoverage requires the end-to-end latency histogram, which the
// dashboard's latency panel reads, to have seen (nearly) every completed
// task, not just some: a panel fed by a few tasks would mislead.
func (r *endpointRun) checkLatencyCoverage() {
	obs, err1 := r.pc.scalar(`sum(switchyard_forwarder_task_latency_seconds_count` + sel("") + `)`)
	done, err2 := r.pc.scalar(`sum(switchyard_forwarder_tasks_completed_total` + sel("") + `)`)
	if err1 != nil || err2 != nil {
		r.t.Errorf("latency coverage: %v %v", err1, err2)
		return
	}
	r.t.Logf("switchyard_forwarder_task_latency_seconds observed %g of %g completed tasks", obs, done)
	if obs < 0.99*done {
		r.t.Errorf("switchyard_forwarder_task_latency_seconds observed only %g of %g completed tasks: the forwarder "+
			"observes a result only when it carries a finish time (Result.Finished); do results from managers carry one?", obs, done)
	}
}

// values are what the dashboard's variables stand for in this run: the
// endpoint chosen, All instances, Grafana's rate interval for a 1s scrape
// and the run as the time range.
func values(start, end time.Time) map[string]string {
	rng := int(math.Ceil(end.Sub(start).Seconds())) + 1
	return map[string]string{
		"endpoint":        testEndpoint,
		"instance":        ".+",
		"__rate_interval": rateInterval,
		"__interval":      rangeStep.String(),
		"__range":         fmt.Sprintf("%ds", rng),
	}
}

// checkVariables runs the endpoint and instance variables' label_values
// queries the way Grafana does and requires this run's values.
func (r *endpointRun) checkVariables(d dashboard, start, end time.Time) {
	t := r.t
	vals := values(start, end)
	want := map[string][]string{
		"endpoint": {testEndpoint},
		"instance": {strings.TrimPrefix(r.fwdURL, "http://"), strings.TrimPrefix(r.ixURL, "http://"),
			strings.TrimPrefix(r.m1URL, "http://"), strings.TrimPrefix(r.m2URL, "http://")},
	}
	for name, wants := range want {
		v, ok := d.variable(name)
		if !ok {
			t.Errorf("dashboard has no %s variable", name)
			continue
		}
		m := labelValues.FindStringSubmatch(v.queryText())
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", name, v.queryText())
			continue
		}
		selector, err := substitute(m[1], vals)
		if err != nil {
			t.Errorf("variable %s: %v", name, err)
			continue
		}
		got, err := r.pc.labelValues(m[2], selector, start, end)
		if err != nil {
			t.Errorf("variable %s: %v", name, err)
			continue
		}
		for _, w := range wants {
			if !contains(got, w) {
				t.Errorf("variable %s (%s) lists %v, missing %q", name, v.queryText(), got, w)
			}
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// checkPanels evaluates every target of every panel over the run with
// query_range and requires at least one series with a finite sample, and
// each label its legend names on some series.
func (r *endpointRun) checkPanels(d dashboard, start, end time.Time) {
	vals := values(start, end)
	n, failed := 0, 0
	for _, p := range d.queryPanels() {
		r.t.Run(p.Title, func(t *testing.T) {
			for _, tg := range p.Targets {
				n++
				expr, err := substitute(tg.Expr, vals)
				if err != nil {
					failed++
					t.Errorf("panel %q target %s: %v\n  expr: %s", p.Title, tg.RefID, err, tg.Expr)
					continue
				}
				res, err := r.pc.queryRange(expr, start, end, rangeStep)
				if err != nil {
					failed++
					t.Errorf("panel %q target %s (%s): query failed: %v\n  expr: %s", p.Title, tg.RefID, tg.LegendFormat, err, expr)
					continue
				}
				series, samples := 0, 0
				var last float64
				for _, s := range res {
					ok := false
					for _, pair := range s.Values {
						if v := sampleValue(pair); finite(v) {
							samples++
							last = v
							ok = true
						}
					}
					if ok {
						series++
					}
				}
				if series == 0 {
					failed++
					t.Errorf("panel %q target %s (%s) returned no data (%d series, none with a finite sample)\n  expr: %s",
						p.Title, tg.RefID, tg.LegendFormat, len(res), expr)
					continue
				}
				for _, l := range legendLabels(tg.LegendFormat) {
					found := false
					for _, s := range res {
						if _, ok := s.Metric[l]; ok {
							found = true
							break
						}
					}
					if !found {
						t.Errorf("panel %q target %s: legend %q names label %q, which no series has\n  expr: %s",
							p.Title, tg.RefID, tg.LegendFormat, l, expr)
					}
				}
				t.Logf("%s: %d series, %d samples, last %g", tg.RefID, series, samples, last)
			}
		})
	}
	r.t.Logf("evaluated %d expressions from %d panels over %s; %d without data",
		n, len(d.queryPanels()), end.Sub(start).Round(time.Second), failed)
}
