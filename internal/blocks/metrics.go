package blocks

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	blocks    *prometheus.GaugeVec
	submits   prometheus.Counter
	failures  prometheus.Counter
	decisions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		blocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_interchange_blocks",
			Help: "Blocks by state (pending, running, draining; done and failed: ended blocks still listed).",
		}, []string{"state"}),
		submits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_interchange_block_submits_total",
			Help: "Blocks submitted to the provider.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_interchange_block_failures_total",
			Help: "Blocks that failed: refused by the provider, never started, or ended with an error.",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_interchange_scale_decisions_total",
			Help: "Scaling decisions by kind: submit, drain, cancel, replace, backoff (a needed submission held back after failures).",
		}, []string{"decision"}),
	}
	for _, s := range stateNames {
		m.blocks.WithLabelValues(s)
	}
	for _, k := range kindNames {
		m.decisions.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.blocks, m.submits, m.failures, m.decisions)
	}
	return m
}

// RegisterIdle registers the blocks metrics at zero for an interchange
// without a provider, so dashboards read 0 blocks rather than no data.
func RegisterIdle(reg prometheus.Registerer) { newMetrics(reg) }
