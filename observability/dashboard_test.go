package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The parts of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *dsRef   `json:"datasource"`
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"` // a collapsed row's panels
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type target struct {
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	RefID        string `json:"refId"`
	Datasource   *dsRef `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *dsRef          `json:"datasource"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
	AllValue   string          `json:"allValue"`
}

// queryText is the variable's query: a string, or {"query": "..."}.
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	path := filepath.Join(repoRoot(t), "dashboards", "switchyard.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// queryPanels lists the panels with queries, rows' nested panels included.
func (d dashboard) queryPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

func (d dashboard) variable(name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

var (
	varRef      = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)
	legendRef   = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
	labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\s*\)\s*$`)
)

// substitute replaces dashboard variables in expr with vals; a variable
// without a value is an error, so no expression reaches Prometheus with a
// "$" left in it.
func substitute(expr string, vals map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(expr, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for variable(s) %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// TestDashboardStructure checks the dashboard's shape without running
// anything: variables, data sources, ids, layout and targets.
func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title (uid %q, title %q)", d.UID, d.Title)
	}
	ds, ok := d.variable("datasource")
	if !ok || ds.Type != "datasource" || ds.queryText() != "prometheus" {
		t.Errorf("want a variable datasource of type datasource with query prometheus, got %+v", ds)
	}
	for _, name := range []string{"endpoint", "instance"} {
		v, ok := d.variable(name)
		if !ok {
			t.Errorf("no %s variable", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: want a query variable on ${datasource}, got type %q datasource %+v", name, v.Type, v.Datasource)
		}
		if !labelValues.MatchString(v.queryText()) {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", name, v.queryText())
		}
		if v.IncludeAll && v.AllValue != ".+" {
			t.Errorf("variable %s: All must be .+ so it never matches series without the label (other jobs), got %q", name, v.AllValue)
		}
	}

	ids := map[int]string{}
	var walkIDs func([]panel)
	walkIDs = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d missing or also used by %q", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
			}
			walkIDs(p.Panels)
		}
	}
	walkIDs(d.Panels)

	// No two top-level panels overlap on the 24-column grid.
	for i, a := range d.Panels {
		for _, b := range d.Panels[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q %+v and %q %+v overlap", a.Title, ga, b.Title, gb)
			}
		}
	}

	panels := d.queryPanels()
	if len(panels) < 20 {
		t.Errorf("only %d panels with queries", len(panels))
	}
	titles := map[string]bool{}
	for _, p := range panels {
		if titles[p.Title] {
			t.Errorf("two panels titled %q: the live test reports failures by title", p.Title)
		}
		titles[p.Title] = true
		if p.Type != "timeseries" && p.Type != "stat" {
			t.Errorf("panel %q: type %q, want timeseries or stat", p.Title, p.Type)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q needs an expression and a unique refId", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			// Every selector must be narrowed by endpoint and instance.
			if !strings.Contains(tg.Expr, `endpoint=~"$endpoint"`) || !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q target %s does not filter on $endpoint and $instance: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}

	// The dashboard covers what operators asked for.
	var all []string
	for _, p := range panels {
		for _, tg := range p.Targets {
			all = append(all, tg.Expr)
		}
	}
	joined := strings.Join(all, "\n")
	for _, m := range []string{
		"switchyard_forwarder_tasks_submitted_total", "switchyard_forwarder_tasks_completed_total",
		"switchyard_forwarder_task_latency_seconds_bucket", "switchyard_interchange_dispatch_wait_seconds_bucket",
		"switchyard_interchange_queued_tasks", "switchyard_interchange_outstanding_tasks",
		"switchyard_interchange_managers", "switchyard_interchange_workers", "switchyard_interchange_idle_workers",
		"switchyard_forwarder_heartbeats_sent_total", "switchyard_interchange_heartbeats_received_total",
		"switchyard_forwarder_endpoints_lost_total", "switchyard_interchange_managers_lost_total",
		"malformed_messages_total", "switchyard_interchange_serving_measured_state",
		"switchyard_interchange_serving_effective_state", "switchyard_interchange_serving_override_active",
		"switchyard_interchange_serving_override_expiry_timestamp_seconds",
		"switchyard_forwarder_store_commit_seconds_bucket", "switchyard_forwarder_store_writes_total",
		"switchyard_forwarder_stale_updates_total", "switchyard_forwarder_duplicate_results_total",
		"process_cpu_seconds_total", "go_memstats_", "go_goroutines",
	} {
		if !strings.Contains(joined, m) {
			t.Errorf("no panel queries %s", m)
		}
	}
	t.Logf("%d panels, %d expressions", len(panels), len(all))
}

// TestScrapeConfigExample checks scripts/prometheus.yml with promtool.
func TestScrapeConfigExample(t *testing.T) {
	requireExecutable(t, promtoolBin)
	path := filepath.Join(repoRoot(t), "scripts", "prometheus.yml")
	out, err := runCmd(promtoolBin, "check", "config", path)
	if err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", path, err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"forwarder", "interchange", "manager"} {
		if !strings.Contains(string(raw), "component: "+job) {
			t.Errorf("%s: no target labelled component: %s", path, job)
		}
	}
	if n := strings.Count(string(raw), "\n          endpoint: "); n < 3 {
		t.Errorf("%s: %d targets labelled with endpoint, want forwarder, interchange and managers", path, n)
	}
}

// legendLabels lists the labels a legend format refers to, sorted.
func legendLabels(legend string) []string {
	var out []string
	for _, m := range legendRef.FindAllStringSubmatch(legend, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}
