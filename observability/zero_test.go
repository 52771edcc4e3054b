package observability

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// Every metric a dashboard panel queries exists from the start, at zero
// where nothing happened yet: a panel over an absent series reads "No
// data", which looks like a broken exporter, not like zero. This holds on
// a plain endpoint with no blocks provider, before any task.
func TestDashboardMetricsExistAtZero(t *testing.T) {
	d := loadDashboard(t)
	name := regexp.MustCompile(`switchyard_[a-z0-9_]+`)
	want := map[string]bool{}
	for _, p := range d.queryPanels() {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				want[m] = true
			}
		}
	}
	c := testutil.StartChain(t, testutil.ChainOptions{Managers: 1})
	have := map[string]bool{}
	for _, g := range []prometheus.Gatherer{c.Forwarder.Reg, c.Interchange.Reg, c.Managers[0].Reg} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if len(mf.GetMetric()) == 0 {
				continue
			}
			n := mf.GetName()
			have[n] = true
			for _, sfx := range []string{"_bucket", "_sum", "_count"} {
				have[n+sfx] = true
			}
		}
	}
	var missing []string
	for m := range want {
		if !have[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	// Scraped by Prometheus itself, not exported by the daemons.
	missing = slices.DeleteFunc(missing, func(m string) bool { return strings.HasSuffix(m, "_up") })
	if len(missing) > 0 {
		t.Fatalf("dashboard metrics absent on a fresh endpoint without blocks: %s", strings.Join(missing, ", "))
	}
}
