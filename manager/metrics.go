package manager

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

type metrics struct {
	received        prometheus.Counter
	completed       *prometheus.CounterVec
	duplicates      prometheus.Counter
	malformed       prometheus.Counter
	heartbeatsSent  prometheus.Counter
	heartbeatsRecv  prometheus.Counter
	reportsSent     prometheus.Counter
	interchangeLost prometheus.Counter
	returned        prometheus.Counter
	runTime         *prometheus.HistogramVec
	// completedBy and runTimeBy are completed and runTime per final code,
	// looked up once instead of per task.
	completedBy [8]prometheus.Counter
	runTimeBy   [8]prometheus.Observer
}

// ended counts a finished task of code c and how long it ran (ran < 0:
// unknown).
func (m *metrics) ended(c messages.TaskStatusCode, ran time.Duration) {
	i := int(c) & 7
	if m.completedBy[i] == nil {
		st := string(c.State())
		m.completedBy[i], m.runTimeBy[i] = m.completed.WithLabelValues(st), m.runTime.WithLabelValues(st)
	}
	m.completedBy[i].Inc()
	if ran >= 0 {
		m.runTimeBy[i].Observe(ran.Seconds())
	}
}

func newMetrics(reg prometheus.Registerer, mg *Manager) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_manager_" + name, Help: help})
	}
	m := &metrics{
		received:        c("tasks_received_total", "Tasks received from the interchange."),
		completed:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_manager_tasks_completed_total", Help: "Tasks finished, by state."}, []string{"state"}),
		duplicates:      c("duplicates_total", "Duplicate tasks dropped."),
		malformed:       c("malformed_messages_total", "Messages dropped because they did not decode."),
		heartbeatsSent:  c("heartbeats_sent_total", "Heartbeats sent to the interchange."),
		heartbeatsRecv:  c("heartbeats_received_total", "Heartbeats received from the interchange."),
		reportsSent:     c("status_reports_sent_total", "ManagerStatusReports sent."),
		interchangeLost: c("interchange_lost_total", "Times the interchange was declared lost."),
		returned:        c("tasks_returned_total", "Tasks given back to the interchange unfinished while draining (same attempt)."),
		runTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchyard_manager_task_run_seconds",
			Help: "Time a worker spent on a task, by final state.", Buckets: prometheus.ExponentialBuckets(0.00005, 4, 14)}, []string{"state"}),
	}
	g := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchyard_manager_" + name, Help: help}, fn)
	}
	reg.MustRegister(m.runTime)
	reg.MustRegister(m.received, m.completed, m.duplicates, m.malformed, m.heartbeatsSent, m.heartbeatsRecv,
		m.reportsSent, m.interchangeLost, m.returned,
		g("draining", "1 while the manager drains (takes no new tasks).", func() float64 {
			if mg.draining.Load() {
				return 1
			}
			return 0
		}),
		g("workers", "Workers in the pool.", func() float64 { return float64(mg.opts.Workers) }),
		g("idle_workers", "Idle workers.", func() float64 { return float64(mg.Status().IdleWorkers) }),
		g("tasks_held", "Tasks held (pending or running).", func() float64 { return float64(mg.Status().Held) }),
		g("results_unacked", "Results not yet acknowledged by the interchange.", func() float64 { return float64(mg.Status().HeldResults) }),
	)
	for _, st := range []string{"success", "failed", "cancelled"} {
		m.completed.WithLabelValues(st)
	}
	servingstate.Register(reg, "manager", mg.serving)
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
