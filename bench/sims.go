package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/switchyard-hpc/switchyard/bench/simmanager"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/messages"
)

// LinkRates are messages per second on one direction of one link, by kind.
type LinkRates struct {
	Total float64            `json:"total"`
	By    map[string]float64 `json:"by_type"`
	// Source says where the numbers come from.
	Source string `json:"source"`
}

// SimResult is K idle simulated managers on one interchange.
type SimResult struct {
	Managers        int     `json:"managers"`
	IntervalSeconds float64 `json:"interval_seconds"`
	Seconds         float64 `json:"seconds"`
	// Interchange CPU as a percent of one core, and its memory.
	InterchangeCPUPercent float64 `json:"interchange_cpu_percent"`
	InterchangeRSS        uint64  `json:"interchange_rss_bytes"`
	InterchangeHWM        uint64  `json:"interchange_peak_rss_bytes,omitempty"`
	ForwarderCPUPercent   float64 `json:"forwarder_cpu_percent"`
	// CPU source: /proc of a child, or process_cpu_seconds_total of a
	// targeted endpoint.
	CPUSource string `json:"cpu_source"`
	// Links, by direction.
	ManagersToInterchange  LinkRates `json:"managers_to_interchange"`
	InterchangeToManagers  LinkRates `json:"interchange_to_managers"`
	InterchangeToForwarder LinkRates `json:"interchange_to_forwarder"`
	ForwarderToInterchange LinkRates `json:"forwarder_to_interchange"`
	// PerManagerPerSecond is both directions of the manager link divided
	// by the number of managers.
	PerManagerPerSecond float64 `json:"per_manager_messages_per_second"`
	// Counters from the interchange's /metrics over the window.
	InterchangeCounters map[string]float64 `json:"interchange_counters"`
	ManagersLost        float64            `json:"managers_lost"`
	SimReconnects       uint64             `json:"sim_reconnects"`
	SimSendFailures     uint64             `json:"sim_send_failures"`
	FleetCPUSeconds     float64            `json:"fleet_cpu_seconds"`
	RegisterSeconds     float64            `json:"register_seconds"`
}

// ixCounters are the interchange counters the sim scenario reads.
var ixCounters = []struct{ key, name, label, value string }{
	{"heartbeats_sent{link=manager}", "switchyard_interchange_heartbeats_sent_total", "link", "manager"},
	{"heartbeats_received{link=manager}", "switchyard_interchange_heartbeats_received_total", "link", "manager"},
	{"heartbeats_sent{link=forwarder}", "switchyard_interchange_heartbeats_sent_total", "link", "forwarder"},
	{"heartbeats_received{link=forwarder}", "switchyard_interchange_heartbeats_received_total", "link", "forwarder"},
	{"manager_registrations", "switchyard_interchange_manager_registrations_total", "", ""},
	{"reregister_requests", "switchyard_interchange_reregister_requests_total", "", ""},
	{"managers_lost", "switchyard_interchange_managers_lost_total", "", ""},
	{"malformed_messages", "switchyard_interchange_malformed_messages_total", "", ""},
	{"tasks_dispatched", "switchyard_interchange_tasks_dispatched_total", "", ""},
}

func counter(m Metrics, name, label, value string) float64 {
	if label == "" {
		return m.Sum(name)
	}
	return m.Sum(name, label, value)
}

// cpuReader reads a process's CPU time from /proc when it is our child,
// else from its /metrics.
type cpuReader struct {
	pid     int
	metrics string
	hc      *http.Client
}

func (c cpuReader) read(ctx context.Context) (time.Duration, uint64, uint64, error) {
	if c.pid > 0 {
		s, err := ReadProc(c.pid)
		return s.CPU, s.RSS, s.HWM, err
	}
	if c.metrics == "" {
		return 0, 0, 0, nil
	}
	m, err := Scrape(ctx, c.hc, c.metrics)
	if err != nil {
		return 0, 0, 0, err
	}
	return time.Duration(m.Sum("process_cpu_seconds_total") * float64(time.Second)),
		uint64(m.Sum("process_resident_memory_bytes")), 0, nil
}

func (c cpuReader) source() string {
	if c.pid > 0 {
		return "/proc/PID/stat (utime+stime)"
	}
	return "process_cpu_seconds_total from /metrics (10ms resolution)"
}

// runSims connects k simulated managers to the interchange, lets them
// register, then measures an idle window of d.
func runSims(ctx context.Context, e *Endpoint, k int, interval, d time.Duration, progress func(string, ...any)) (SimResult, error) {
	res := SimResult{Managers: k, IntervalSeconds: interval.Seconds()}
	if e.ManagersAddr == "" || e.InterchangeHTTP == "" {
		return res, fmt.Errorf("--managers-sim needs the interchange's manager address and admin HTTP (--interchange-managers, --interchange-http)")
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	ixCPU := cpuReader{metrics: e.InterchangeHTTP + "/metrics", hc: hc}
	fwCPU := cpuReader{metrics: e.API + "/metrics", hc: hc}
	if p := e.Proc("interchange"); p != nil {
		ixCPU.pid = p.PID
	}
	if p := e.Proc("forwarder"); p != nil {
		fwCPU.pid = p.PID
	}
	res.CPUSource = ixCPU.source()
	before0, err := e.ixStatus(ctx, hc)
	if err != nil {
		return res, err
	}
	var creds *curve.Credentials
	if e.ManagerCredentials != "" {
		if creds, err = curve.ReadCredentials(e.ManagerCredentials, curve.KindManager); err != nil {
			return res, err
		}
	}
	fleet, err := simmanager.New(simmanager.Options{Interchange: e.ManagersAddr, Count: k, HeartbeatInterval: interval, Credentials: creds,
		PerLoop: 250, IDPrefix: fmt.Sprintf("sim-%d-", time.Now().UnixNano()%100000)})
	if err != nil {
		return res, err
	}
	fctx, stop := context.WithCancel(ctx)
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fctx) }()
	defer func() {
		stop()
		<-fleetDone
	}()
	t0 := time.Now()
	err = pollUntil(ctx, 60*time.Second+5*interval, 50*time.Millisecond, func() error {
		if err := e.Alive(); err != nil {
			return &fatalError{err}
		}
		st, err := e.ixStatus(ctx, hc)
		if err != nil {
			return err
		}
		if fs := fleet.Stats(); st.Managers < before0.Managers+k || fs.Registered < k {
			return fmt.Errorf("interchange has %d managers (%d before), %d of %d simulated managers registered", st.Managers, before0.Managers, fs.Registered, k)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("simulated managers did not register: %w", err)
	}
	res.RegisterSeconds = time.Since(t0).Seconds()
	progress("%d simulated managers registered in %.1fs; settling for %s", k, res.RegisterSeconds, 2*interval)
	select {
	case <-time.After(2 * interval):
	case <-ctx.Done():
		return res, ctx.Err()
	}

	type snap struct {
		at       time.Time
		ix, fw   Metrics
		fleet    simmanager.Stats
		ixc, fwc time.Duration
		self     time.Duration
	}
	take := func() (snap, error) {
		var s snap
		var err error
		s.self = selfCPU()
		s.fleet = fleet.Stats()
		s.at = time.Now()
		if s.ixc, _, _, err = ixCPU.read(ctx); err != nil {
			return s, err
		}
		if s.fwc, _, _, err = fwCPU.read(ctx); err != nil {
			return s, err
		}
		if s.ix, err = Scrape(ctx, hc, e.InterchangeHTTP+"/metrics"); err != nil {
			return s, err
		}
		if s.fw, err = Scrape(ctx, hc, e.API+"/metrics"); err != nil {
			return s, err
		}
		return s, nil
	}
	a, err := take()
	if err != nil {
		return res, err
	}
	progress("measuring %d idle simulated managers for %s", k, d)
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	b, err := take()
	if err != nil {
		return res, err
	}
	if err := e.Alive(); err != nil {
		return res, err
	}
	secs := b.at.Sub(a.at).Seconds()
	res.Seconds = secs
	res.InterchangeCPUPercent = 100 * (b.ixc - a.ixc).Seconds() / secs
	res.ForwarderCPUPercent = 100 * (b.fwc - a.fwc).Seconds() / secs
	_, res.InterchangeRSS, res.InterchangeHWM, _ = ixCPU.read(ctx)
	res.FleetCPUSeconds = (b.self - a.self).Seconds()

	df := b.fleet.Sub(a.fleet)
	rates := func(counts []uint64) LinkRates {
		lr := LinkRates{By: map[string]float64{}, Source: "simulated managers' own counts"}
		for t, c := range counts {
			if c > 0 {
				lr.By[messages.Type(t).String()] = float64(c) / secs
				lr.Total += float64(c) / secs
			}
		}
		return lr
	}
	res.ManagersToInterchange = rates(df.Sent[:])
	res.InterchangeToManagers = rates(df.Received[:])
	res.PerManagerPerSecond = (res.ManagersToInterchange.Total + res.InterchangeToManagers.Total) / float64(k)
	res.SimReconnects, res.SimSendFailures = df.Reconnects, df.SendFailures

	res.InterchangeCounters = map[string]float64{}
	for _, c := range ixCounters {
		res.InterchangeCounters[c.key] = counter(b.ix, c.name, c.label, c.value) - counter(a.ix, c.name, c.label, c.value)
	}
	res.ManagersLost = res.InterchangeCounters["managers_lost"]
	// The forwarder link has no per-type counters for status reports;
	// the interchange sends one EPStatusReport per interval by design.
	up := res.InterchangeCounters["heartbeats_sent{link=forwarder}"] / secs
	down := res.InterchangeCounters["heartbeats_received{link=forwarder}"] / secs
	res.InterchangeToForwarder = LinkRates{Total: up + 1/interval.Seconds(), By: map[string]float64{
		"Heartbeat": up, "EPStatusReport": 1 / interval.Seconds()},
		Source: "interchange heartbeats_sent_total{link=forwarder}; EPStatusReport = 1 per interval (no counter)"}
	res.ForwarderToInterchange = LinkRates{Total: down, By: map[string]float64{"Heartbeat": down},
		Source: "interchange heartbeats_received_total{link=forwarder}"}
	if fr := b.fw.Sum("switchyard_forwarder_heartbeats_received_total") - a.fw.Sum("switchyard_forwarder_heartbeats_received_total"); fr > 0 {
		res.InterchangeToForwarder.By["Heartbeat (forwarder's count)"] = fr / secs
	}
	return res, nil
}
