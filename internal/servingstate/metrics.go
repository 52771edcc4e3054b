package servingstate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector reads the controller at scrape time; reading changes nothing
// but expiring an override that is already past its deadline.
type collector struct {
	c                                           *Controller
	measured, effective, active, expiry, paused *prometheus.Desc
	pressure, threshold                         *prometheus.Desc
}

// Register adds the serving-state metrics of component to reg.
func Register(reg prometheus.Registerer, component string, c *Controller) {
	p := "switchyard_" + component + "_serving_"
	reg.MustRegister(&collector{c: c,
		measured:  prometheus.NewDesc(p+"measured_state", "Measured serving state (0 NONE_PAUSED, 1 PUSH_PAUSED, 2 PUSH_AND_DISPATCH_PAUSED).", nil, nil),
		effective: prometheus.NewDesc(p+"effective_state", "Effective serving state (same numbering).", nil, nil),
		active:    prometheus.NewDesc(p+"override_active", "1 when an operator override is in force.", []string{"state", "forced"}, nil),
		expiry:    prometheus.NewDesc(p+"override_expiry_timestamp_seconds", "When the override clears itself (0: never or none).", nil, nil),
		paused:    prometheus.NewDesc(p+"paused_seconds_total", "Time spent paused, by cause.", []string{"cause"}, nil),
		pressure:  prometheus.NewDesc(p+"pressure", "Last measured pressure: queued tasks, memory percent.", []string{"kind"}, nil),
		threshold: prometheus.NewDesc(p+"threshold", "Pause and resume thresholds of each pressure.", []string{"kind", "edge"}, nil),
	})
}

func (k *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- k.measured
	ch <- k.effective
	ch <- k.active
	ch <- k.expiry
	ch <- k.paused
	ch <- k.pressure
	ch <- k.threshold
}

func (k *collector) Collect(ch chan<- prometheus.Metric) {
	v := k.c.Snapshot(time.Now())
	num := func(s string) float64 {
		st, _ := parseQuiet(s)
		return float64(st)
	}
	ch <- prometheus.MustNewConstMetric(k.measured, prometheus.GaugeValue, num(v.Measured))
	ch <- prometheus.MustNewConstMetric(k.effective, prometheus.GaugeValue, num(v.Current))
	active, state, forced := 0.0, "", "false"
	if v.OverrideActive {
		active, state = 1, v.Override
		if v.OverrideForced {
			forced = "true"
		}
	}
	ch <- prometheus.MustNewConstMetric(k.active, prometheus.GaugeValue, active, state, forced)
	exp := 0.0
	if !v.OverrideClearsAt.IsZero() {
		exp = float64(v.OverrideClearsAt.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(k.expiry, prometheus.GaugeValue, exp)
	ch <- prometheus.MustNewConstMetric(k.pressure, prometheus.GaugeValue, float64(v.Queued), "queued")
	ch <- prometheus.MustNewConstMetric(k.pressure, prometheus.GaugeValue, v.MemoryPercent, "memory_percent")
	ch <- prometheus.MustNewConstMetric(k.threshold, prometheus.GaugeValue, float64(v.PauseQueued), "queued", "pause")
	ch <- prometheus.MustNewConstMetric(k.threshold, prometheus.GaugeValue, float64(v.ResumeQueued), "queued", "resume")
	ch <- prometheus.MustNewConstMetric(k.threshold, prometheus.GaugeValue, v.PauseMemory, "memory_percent", "pause")
	ch <- prometheus.MustNewConstMetric(k.threshold, prometheus.GaugeValue, v.ResumeMemory, "memory_percent", "resume")
	for _, cause := range []string{"queue", "memory", "override"} {
		ch <- prometheus.MustNewConstMetric(k.paused, prometheus.CounterValue, v.PausedSeconds[cause], cause)
	}
}
