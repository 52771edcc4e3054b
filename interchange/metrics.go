package interchange

import (
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
)

type metrics struct {
	received       prometheus.Counter
	dispatched     prometheus.Counter
	results        *prometheus.CounterVec
	resultsUp      prometheus.Counter
	duplicates     prometheus.Counter
	staleUpdates   prometheus.Counter
	malformed      *prometheus.CounterVec
	heartbeatsSent *prometheus.CounterVec
	heartbeatsRecv *prometheus.CounterVec
	reportsRecv    prometheus.Counter
	resultsResent  prometheus.Counter
	tasksResent    prometheus.Counter
	managersLost   *prometheus.CounterVec
	forwarderLost  prometheus.Counter
	registrations  prometheus.Counter
	reregisters    prometheus.Counter
	refused        *prometheus.CounterVec
	// handshakeFailures counts CURVE handshakes on the managers' socket
	// that failed, by reason.
	handshakeFailures *prometheus.CounterVec
	refusedBatches    prometheus.Counter
	returned          prometheus.Counter
	stealsAsked       prometheus.Counter
	stolen            prometheus.Counter
	dispatchWait      prometheus.Histogram
	storeCommit       prometheus.Histogram
	// A manager's wait from having room while tasks were queued until it
	// got some: dispatch starved by other work shows here.
	idleWhileQueued    prometheus.Histogram
	idleWhileQueuedMax prometheus.Gauge
	storeOps           prometheus.Counter
	storeErrors        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, ix *Interchange) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_interchange_" + name, Help: help})
	}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_interchange_" + name, Help: help}, labels)
	}
	m := &metrics{
		received:          c("tasks_received_total", "Tasks received from the forwarder (duplicates included)."),
		dispatched:        c("tasks_dispatched_total", "Tasks handed to managers."),
		results:           cv("results_total", "Results received from managers, by state.", "state"),
		resultsUp:         c("results_forwarded_total", "Results sent to the forwarder (re-sends included)."),
		duplicates:        c("duplicates_total", "Duplicate tasks or results dropped."),
		staleUpdates:      c("stale_updates_total", "Deltas or results for an older attempt, ignored."),
		malformed:         cv("malformed_messages_total", "Messages dropped because they did not decode, by link.", "link"),
		heartbeatsSent:    cv("heartbeats_sent_total", "Heartbeats sent, by link.", "link"),
		heartbeatsRecv:    cv("heartbeats_received_total", "Heartbeats received, by link.", "link"),
		reportsRecv:       c("manager_status_reports_total", "ManagerStatusReports received."),
		resultsResent:     c("results_resent_total", "Results sent again because the forwarder did not acknowledge them in time."),
		tasksResent:       c("tasks_resent_total", "Tasks sent to a manager again because it did not acknowledge them in time."),
		managersLost:      cv("managers_lost_total", "Managers declared lost, by reason.", "reason"),
		forwarderLost:     c("forwarder_lost_total", "Times the forwarder was declared lost."),
		registrations:     c("manager_registrations_total", "Manager registrations accepted."),
		reregisters:       c("reregister_requests_total", "Messages from unknown managers answered with Reregister."),
		refused:           cv("refused_total", "Messages from managers refused, by reason.", "reason"),
		handshakeFailures: cv("handshake_failures_total", "CURVE handshakes on the managers' socket that failed (a key not admitted, a wrong server key, not CURVE), by reason.", "reason"),
		refusedBatches:    c("task_batches_refused_total", "Task batches from the forwarder given back (Nack) because pushes were paused or the store refused writes."),
		returned:          c("tasks_returned_total", "Tasks given back by draining managers and queued again with the same attempt."),
		stealsAsked:       c("tasks_steal_asked_total", "Tasks a manager was asked to give back unstarted because another had idle workers."),
		stolen:            c("tasks_stolen_total", "Tasks managers gave back unstarted for idle workers elsewhere, queued again with the same attempt."),
		dispatchWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_interchange_dispatch_wait_seconds",
			Help: "Time a task waited in the queue before it was handed to a manager.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20)}),
		storeCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_interchange_store_commit_seconds",
			Help: "Time to commit one group of store writes.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		idleWhileQueued: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_interchange_idle_while_queued_seconds",
			Help: "Time a manager had free slots while tasks were queued, until it was sent some.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20)}),
		idleWhileQueuedMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchyard_interchange_idle_while_queued_max_seconds",
			Help: "The longest a manager had free slots while tasks were queued, since start."}),
		storeOps:    c("store_writes_total", "Records written to the store (after coalescing)."),
		storeErrors: c("store_errors_total", "Store commits that failed."),
	}
	g := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchyard_interchange_" + name, Help: help}, fn)
	}
	reg.MustRegister(m.reportsRecv, m.resultsResent, m.tasksResent, m.dispatchWait, m.storeCommit, m.storeOps, m.storeErrors,
		m.idleWhileQueued, m.idleWhileQueuedMax)
	reg.MustRegister(m.received, m.dispatched, m.results, m.resultsUp, m.duplicates, m.staleUpdates, m.malformed,
		m.heartbeatsSent, m.heartbeatsRecv, m.managersLost, m.forwarderLost, m.registrations, m.reregisters, m.refused, m.handshakeFailures, m.refusedBatches, m.returned,
		m.stealsAsked, m.stolen,
		g("managers", "Registered managers.", func() float64 { return float64(ix.Status().Managers) }),
		g("workers", "Workers across managers.", func() float64 { return float64(ix.Status().Workers) }),
		g("idle_workers", "Idle workers across managers.", func() float64 { return float64(ix.Status().IdleWorkers) }),
		queuedCollector{ix: ix, desc: prometheus.NewDesc("switchyard_interchange_queued_tasks",
			"Tasks waiting for a manager, by owner (owners with queued tasks only; owner \"\" at 0 when none).", []string{"owner"}, nil)},
		g("results_unstored", "Results the forwarder has not acknowledged yet that their managers keep instead of the store.",
			func() float64 { return float64(ix.Status().ResultsUnstored) }),
		g("outstanding_tasks", "Tasks held (queued or on managers).", func() float64 { return float64(ix.Status().Outstanding) }),
		g("forwarder_connected", "1 when the forwarder link is up.", func() float64 {
			if ix.Status().ForwarderConnected {
				return 1
			}
			return 0
		}),
	)
	// Labelled counters start at zero so the first event shows in rate().
	m.managersLost.WithLabelValues("heartbeat timeout")
	m.managersLost.WithLabelValues("said goodbye")
	for _, r := range []string{"oversized-result", "not-your-task"} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []zsock.HandshakeFailure{zsock.FailedAuth, zsock.FailedProtocol, zsock.FailedOther} {
		m.handshakeFailures.WithLabelValues(string(r))
	}
	for _, link := range []string{"forwarder", "manager"} {
		m.malformed.WithLabelValues(link)
		m.heartbeatsSent.WithLabelValues(link)
		m.heartbeatsRecv.WithLabelValues(link)
	}
	for _, st := range []string{"success", "failed", "cancelled"} {
		m.results.WithLabelValues(st)
	}
	servingstate.Register(reg, "interchange", ix.serving)
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeStore(ops int, d time.Duration, err error) {
	m.storeCommit.Observe(d.Seconds())
	if err != nil {
		m.storeErrors.Inc()
		return
	}
	m.storeOps.Add(float64(ops))
}

// queuedCollector reports the queued tasks of each owner that has some.
type queuedCollector struct {
	ix   *Interchange
	desc *prometheus.Desc
}

func (c queuedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c queuedCollector) Collect(ch chan<- prometheus.Metric) {
	by := c.ix.Status().QueuedByOwner
	if len(by) == 0 {
		// A zero, so the sum reads 0 rather than "No data".
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 0, "")
	}
	for o, n := range by {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), o)
	}
}
