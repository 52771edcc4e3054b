package manager

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/switchyard-hpc/switchyard/messages"
)

// The batched run-time histogram reads as the HistogramVec it replaces.
func TestRunTimesReadAsHistogramVec(t *testing.T) {
	m := &metrics{runTime: newRunTimes(), completed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"state"})}
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_manager_task_run_seconds",
		Help: "Time a worker spent on a task, by final state.", Buckets: prometheus.ExponentialBuckets(0.00005, 4, 14)}, []string{"state"})
	obs := []struct {
		c   messages.TaskStatusCode
		ran time.Duration
	}{{messages.Success, 0}, {messages.Success, 50 * time.Microsecond}, {messages.Success, 51 * time.Microsecond},
		{messages.Failed, 3 * time.Second}, {messages.Success, time.Hour}, {messages.Cancelled, -1}, {messages.Failed, time.Millisecond}}
	for i, o := range obs {
		m.ended(o.c, o.ran)
		h := vec.WithLabelValues(string(o.c.State()))
		if o.ran >= 0 {
			h.Observe(o.ran.Seconds())
		}
		if i == 3 {
			m.flush()
		}
	}
	m.flush()
	want, got := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	want.MustRegister(vec)
	got.MustRegister(m.runTime)
	wm, err := want.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gm, err := got.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range append(wm, gm...) {
		for _, m := range mf.Metric {
			if m.Histogram.CreatedTimestamp == nil {
				t.Errorf("no created timestamp: %v", m)
			}
			m.Histogram.CreatedTimestamp = nil
		}
	}
	if len(wm) != 1 || len(gm) != 1 || wm[0].String() != gm[0].String() {
		t.Errorf("got\n%v\nwant\n%v", gm, wm)
	}
	for st, n := range map[string]float64{"success": 4, "failed": 2, "cancelled": 1} {
		var d dto.Metric
		if err := m.completed.WithLabelValues(st).Write(&d); err != nil || d.GetCounter().GetValue() != n {
			t.Errorf("completed{%s} = %v (%v), want %g", st, d.GetCounter().GetValue(), err, n)
		}
	}
}
