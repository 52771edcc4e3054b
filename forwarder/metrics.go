package forwarder

import (
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-hpc/switchyard/messages"
)

type metrics struct {
	submitted    prometheus.Counter
	results      *prometheus.CounterVec
	duplicates   prometheus.Counter
	staleUpdates prometheus.Counter
	malformed    prometheus.Counter
	// refusedRegistrations counts registrations refused (wrong key, role,
	// version); one counter, so refused ids add no series.
	refusedRegistrations prometheus.Counter
	// handshakeFailures counts failed CURVE handshakes of interchanges.
	handshakeFailures *prometheus.CounterVec
	sentBatches       prometheus.Counter
	sentTasks         prometheus.Counter
	heartbeatsSent    prometheus.Counter
	heartbeatsRecv    prometheus.Counter
	endpointsLost     *prometheus.CounterVec
	httpErrors        *prometheus.CounterVec
	cancels           prometheus.Counter
	resent            prometheus.Counter
	nacked            prometheus.Counter
	pruned            prometheus.Counter
	latency           prometheus.Histogram
	runningDelay      prometheus.Histogram
	storeCommit       prometheus.Histogram
	storeOps          prometheus.Counter
	storeErrors       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, f *Forwarder) *metrics {
	m := &metrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_submitted_total",
			Help: "Tasks accepted over the HTTP API."}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_completed_total",
			Help: "Tasks that reached a terminal state, by state."}, []string{"state"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_duplicate_results_total",
			Help: "Results ignored because the task had already ended."}),
		staleUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_stale_updates_total",
			Help: "Deltas or results ignored as stale or regressing."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_malformed_messages_total",
			Help: "ZMQ messages dropped because they did not decode."}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_forwarder_handshake_failures_total",
			Help: "CURVE handshakes of interchanges that failed (a key not enrolled, a wrong server key, not CURVE), by reason."}, []string{"reason"}),
		refusedRegistrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_registrations_refused_total",
			Help: "Interchange registrations refused (key not enrolled for that endpoint, wrong role or protocol version)."}),
		sentBatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_task_batches_sent_total",
			Help: "TaskBatch messages sent to interchanges."}),
		sentTasks: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_sent_total",
			Help: "Tasks sent to interchanges (re-sends included)."}),
		heartbeatsSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_heartbeats_sent_total",
			Help: "Heartbeats sent to interchanges."}),
		heartbeatsRecv: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_heartbeats_received_total",
			Help: "Heartbeats received from interchanges."}),
		endpointsLost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_forwarder_endpoints_lost_total",
			Help: "Endpoints declared lost, by reason."}, []string{"reason"}),
		httpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchyard_forwarder_http_refusals_total",
			Help: "HTTP requests refused, by status code."}, []string{"code"}),
		cancels: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_cancels_total",
			Help: "Tasks cancelled by request."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_pruned_total",
			Help: "Finished tasks forgotten after the retention period."}),
		nacked: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_nacked_total",
			Help: "Tasks an endpoint gave back because it was paused; they wait here until it accepts pushes."}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_tasks_resent_total",
			Help: "Tasks sent again because the interchange did not acknowledge them in time."}),
		runningDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_forwarder_running_delay_seconds",
			Help:    "Time from a task's start on its node to the forwarder learning it runs (same-host clocks assumed).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 1.25, 40)}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_forwarder_task_latency_seconds",
			Help:    "Time from submission to result, per task.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20)}),
		storeCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "switchyard_forwarder_store_commit_seconds",
			Help: "Time to commit one group of store writes.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		storeOps: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_store_writes_total",
			Help: "Records written to the store (after coalescing)."}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forwarder_store_errors_total",
			Help: "Store commits that failed."}),
	}
	reg.MustRegister(m.pruned, m.resent, m.nacked, m.runningDelay, m.storeCommit, m.storeOps, m.storeErrors, &stateCollector{f: f,
		desc: prometheus.NewDesc("switchyard_forwarder_tasks_by_state", "Tasks held by the forwarder, by state.", []string{"state"}, nil)})
	// The refusals an API client can cause, present at zero.
	for _, code := range []string{"400", "401", "403", "404", "405", "409", "413", "422", "429", "503"} {
		m.httpErrors.WithLabelValues(code)
	}
	for _, r := range []zsock.HandshakeFailure{zsock.FailedAuth, zsock.FailedProtocol, zsock.FailedOther} {
		m.handshakeFailures.WithLabelValues(string(r))
	}
	reg.MustRegister(m.handshakeFailures)
	reg.MustRegister(m.submitted, m.results, m.duplicates, m.staleUpdates, m.malformed, m.refusedRegistrations, m.sentBatches,
		m.sentTasks, m.heartbeatsSent, m.heartbeatsRecv, m.endpointsLost, m.httpErrors, m.cancels, m.latency,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "switchyard_forwarder_state_writes_total",
			Help: "Task state changes written to the store (acceptance, end, cancel, loss)."}, func() float64 { return float64(f.tasks.writes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "switchyard_forwarder_state_transitions_total",
			Help: "Task state changes, stored or kept in memory (intermediate states)."}, func() float64 { return float64(f.tasks.transitions.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchyard_forwarder_tasks",
			Help: "Tasks held by the forwarder."}, func() float64 { return float64(f.tasks.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchyard_forwarder_endpoints_connected",
			Help: "Endpoints currently connected."}, func() float64 { return float64(f.connectedCount()) }),
	)
	reg.MustRegister(&endpointCollector{f: f,
		connected: prometheus.NewDesc("switchyard_forwarder_endpoint_connected", "1 when the endpoint's interchange is connected.", []string{"endpoint_id"}, nil),
		silence:   prometheus.NewDesc("switchyard_forwarder_endpoint_last_message_age_seconds", "Seconds since the endpoint's last message.", []string{"endpoint_id"}, nil),
		serving:   prometheus.NewDesc("switchyard_forwarder_endpoint_serving_state", "Serving state the endpoint reports (0 NONE_PAUSED, 1 PUSH_PAUSED, 2 PUSH_AND_DISPATCH_PAUSED).", []string{"endpoint_id"}, nil),
		held:      prometheus.NewDesc("switchyard_forwarder_endpoint_held_tasks", "Tasks the forwarder holds for the endpoint (not yet sent).", []string{"endpoint_id"}, nil),
	})
	// Labelled counters start at zero so the first event shows in rate().
	m.endpointsLost.WithLabelValues("heartbeat timeout")
	for _, st := range []string{"success", "failed", "cancelled"} {
		m.results.WithLabelValues(st)
	}
	registerRuntime(reg)
	return m
}

type endpointCollector struct {
	f                                 *Forwarder
	connected, silence, serving, held *prometheus.Desc
}

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connected
	ch <- c.silence
	ch <- c.serving
	ch <- c.held
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, v := range c.f.Endpoints() {
		conn := 0.0
		if v.Connected {
			conn = 1
		}
		ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, conn, v.EndpointID)
		if v.LastHeartbeat != nil {
			ch <- prometheus.MustNewConstMetric(c.silence, prometheus.GaugeValue, now.Sub(*v.LastHeartbeat).Seconds(), v.EndpointID)
		}
		st, _ := messages.ParseServingState(v.ServingState)
		ch <- prometheus.MustNewConstMetric(c.serving, prometheus.GaugeValue, float64(st), v.EndpointID)
		ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(v.Held), v.EndpointID)
	}
}

func registerRuntime(reg prometheus.Registerer) {
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

type stateCollector struct {
	f    *Forwarder
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for s, n := range c.f.tasks.countByState() {
		if s == "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(s))
	}
}

// observeStore feeds commit timings into the metrics.
func (m *metrics) observeStore(ops int, d time.Duration, err error) {
	m.storeCommit.Observe(d.Seconds())
	if err != nil {
		m.storeErrors.Inc()
		return
	}
	m.storeOps.Add(float64(ops))
}
