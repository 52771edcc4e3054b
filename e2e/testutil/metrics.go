package testutil

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metric sums the series of the metric family name in g whose labels
// include every pair of labels (name1, value1, name2, value2, ...). A
// missing family reads as 0. Counters, gauges and untyped metrics only.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, err := MetricValue(g, name, labels...)
	if err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

// MetricValue is Metric returning an error instead of failing the test.
func MetricValue(g prometheus.Gatherer, name string, labels ...string) (float64, error) {
	if len(labels)%2 != 0 {
		return 0, fmt.Errorf("labels must be name, value pairs")
	}
	fams, err := g.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather: %w", err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Untyped != nil:
				sum += m.Untyped.GetValue()
			default:
				return 0, fmt.Errorf("%s is not a counter or gauge", name)
			}
		}
	}
	return sum, nil
}

// MetricLabels returns the label sets of name's series, for tests that
// check which labels a collector emits.
func MetricLabels(t testing.TB, g prometheus.Gatherer, name string) []map[string]string {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []map[string]string
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			out = append(out, ls)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i < len(want); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
