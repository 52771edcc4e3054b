package manager

import (
	"sort"
	"sync"
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
	givenBack       prometheus.Counter
	runTime         *runTimes
	// completedBy is completed per final code, looked up once instead of
	// per task; endedN counts ends not yet added to it (loop only).
	completedBy [8]prometheus.Counter
	endedN      [8]uint64
	runs        [8]runCounts
	dirty       bool
}

// ended counts a finished task of code c and how long it ran (ran < 0:
// unknown); flush publishes the counts.
func (m *metrics) ended(c messages.TaskStatusCode, ran time.Duration) {
	i := int(c) & 7
	m.dirty = true
	m.endedN[i]++
	r := &m.runs[i]
	if r.buckets == nil {
		// Shown from the first end of this code on, as a HistogramVec's
		// child is.
		r.buckets, r.created = make([]uint64, len(m.runTime.upper)+1), time.Now()
	}
	if ran >= 0 {
		r.buckets[sort.SearchFloat64s(m.runTime.upper, ran.Seconds())]++
		r.count++
		r.sum += ran.Seconds()
	}
}

// flush adds what ended counted to the metrics: once per loop turn, since
// each update of a shared metric costs as much as the rest of a no-op.
func (m *metrics) flush() {
	if !m.dirty {
		return
	}
	m.dirty = false
	for i, n := range m.endedN {
		if n == 0 {
			continue
		}
		if m.completedBy[i] == nil {
			m.completedBy[i] = m.completed.WithLabelValues(string(messages.TaskStatusCode(i).State()))
		}
		m.completedBy[i].Add(float64(n))
		m.endedN[i] = 0
	}
	m.runTime.add(&m.runs)
}

// runCounts is a histogram of run times of one final code.
type runCounts struct {
	buckets []uint64 // not cumulative; the last one is above every bound
	count   uint64
	sum     float64
	created time.Time
}

// runTimes is switchyard_manager_task_run_seconds, by final state; the
// loop adds to it in batches.
type runTimes struct {
	desc  *prometheus.Desc
	upper []float64
	mu    sync.Mutex
	by    [8]runCounts
}

func newRunTimes() *runTimes {
	return &runTimes{upper: prometheus.ExponentialBuckets(0.00005, 4, 14),
		desc: prometheus.NewDesc("switchyard_manager_task_run_seconds", "Time a worker spent on a task, by final state.", []string{"state"}, nil)}
}

// add moves the counts of add into r.
func (r *runTimes) add(add *[8]runCounts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range add {
		a := &add[i]
		h := &r.by[i]
		if h.buckets == nil {
			if a.buckets == nil {
				continue
			}
			h.buckets, h.created = make([]uint64, len(r.upper)+1), a.created
		}
		for j, n := range a.buckets {
			h.buckets[j] += n
		}
		h.count += a.count
		h.sum += a.sum
		clear(a.buckets)
		a.count, a.sum = 0, 0
	}
}

func (r *runTimes) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *runTimes) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.by {
		h := &r.by[i]
		if h.buckets == nil {
			// The final states read zero before any task ends.
			if !messages.TaskStatusCode(i).Terminal() {
				continue
			}
			h.buckets, h.created = make([]uint64, len(r.upper)+1), time.Now()
		}
		cum := make(map[float64]uint64, len(r.upper))
		n := uint64(0)
		for j, b := range r.upper {
			n += h.buckets[j]
			cum[b] = n
		}
		ch <- prometheus.MustNewConstHistogramWithCreatedTimestamp(r.desc, h.count, h.sum, cum, h.created, string(messages.TaskStatusCode(i).State()))
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
		givenBack:       c("tasks_given_back_total", "Tasks not started given back at the interchange's request, to run on an idle manager (same attempt)."),
		runTime:         newRunTimes(),
	}
	g := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchyard_manager_" + name, Help: help}, fn)
	}
	reg.MustRegister(m.runTime)
	reg.MustRegister(m.received, m.completed, m.duplicates, m.malformed, m.heartbeatsSent, m.heartbeatsRecv,
		m.reportsSent, m.interchangeLost, m.returned, m.givenBack,
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
