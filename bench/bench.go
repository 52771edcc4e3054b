// Package bench measures a Switchyard endpoint with no-op tasks over the
// real HTTP API: throughput of batched submissions, round-trip latency of
// single tasks, CPU and memory of each process, a raw ZeroMQ relay as the
// transport baseline, idle simulated managers (bench/simmanager) on one
// interchange, and memory per queued task. It starts the endpoint itself
// (the switchyard binary as child processes on free loopback ports) or
// targets a running one.
package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"time"
)

// Config says what to measure.
type Config struct {
	// Exe is the switchyard binary used to start an endpoint; ignored
	// when API is set.
	Exe string
	// API targets a running endpoint's forwarder (http://host:port) with
	// EndpointID; InterchangeHTTP and InterchangeManagers are that
	// endpoint's interchange admin URL and manager ROUTER, needed only by
	// the simulated-manager and queued scenarios.
	API                 string
	EndpointID          string
	InterchangeHTTP     string
	InterchangeManagers string
	// ManagerCredentials is the targeted interchange's manager.credentials
	// file, for simulated managers (none when it runs --insecure).
	ManagerCredentials string
	// NoPersist starts the forwarder and interchange with --no-persist.
	NoPersist bool
	// Insecure starts every daemon with --insecure (no CurveZMQ, no
	// tokens).
	Insecure bool
	// Store is the forwarder's --store with --cli ("" for the log).
	Store string
	// Throughput: Tasks submitted in Batch-sized POSTs by Submitters.
	Tasks, Batch, Submitters int
	// RTT sequential single-task round trips.
	RTT int
	// Managers real managers in a started endpoint, each with Workers and
	// Prefetch (below 0: none given, the interchange sizes it).
	Managers, Workers, Prefetch int
	// Interval is the heartbeat interval of a started endpoint.
	Interval time.Duration
	// Raw messages in the ZMQ relay baseline (0: Tasks; <0: skip).
	Raw int
	// SimManagers > 0 runs the idle simulated-managers scenario instead
	// of the throughput one, for Duration, with SimInterval heartbeats.
	SimManagers int
	SimInterval time.Duration
	Duration    time.Duration
	// Queued > 0 runs the queued-tasks memory scenario.
	Queued int
	// Dir for state and logs of a started endpoint (default: a temp dir,
	// removed afterwards unless Keep).
	Dir  string
	Keep bool
	// Token is sent to a targeted forwarder; InterchangeToken to its
	// interchange's admin HTTP.
	Token, InterchangeToken string
	// CompareInsecure also runs the throughput scenario on a second
	// started endpoint with --insecure, to measure what security (tokens,
	// CurveZMQ) costs.
	CompareInsecure bool
	// CLI measures the user's path instead: `switchyard endpoint up`, then
	// `switchyard submit -n Tasks | switchyard wait -`, all real processes
	// of Exe (Managers, Workers, Insecure, Keep and Dir apply).
	CLI bool
	// Progress receives one line per step (may be nil).
	Progress io.Writer
	Version  string
}

func (c *Config) setDefaults() error {
	if c.Tasks == 0 {
		c.Tasks = 50000
	}
	if c.Batch <= 0 {
		c.Batch = 5000
	}
	if c.Submitters <= 0 {
		c.Submitters = 4
	}
	if c.RTT < 0 {
		c.RTT = 0
	}
	if c.Managers <= 0 {
		c.Managers = 1
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.SimInterval <= 0 {
		c.SimInterval = time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.EndpointID == "" {
		c.EndpointID = "bench"
	}
	if c.API == "" && c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find the switchyard binary: %w", err)
		}
		c.Exe = exe
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// ProcessReport is one process during the throughput run.
type ProcessReport struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`
	// CPU over the throughput window and per task (microseconds).
	CPUSeconds     float64 `json:"cpu_seconds"`
	CPUMicrosPerTk float64 `json:"cpu_us_per_task"`
	CPUPercent     float64 `json:"cpu_percent_of_one_core"`
	// PeakRSS is VmHWM at the end of the run (throughput and latency
	// phases); RSS is VmRSS then.
	PeakRSS uint64 `json:"peak_rss_bytes,omitempty"`
	RSS     uint64 `json:"rss_bytes"`
	Source  string `json:"source"`
}

// RawReport is the ZeroMQ relay baseline.
type RawReport struct {
	// TaskBytes is the wire size of one no-op task inside a packed
	// 1000-task TaskBatch.
	TaskBytes float64 `json:"task_bytes"`
	// PerTask relays one message of TaskBytes per task; Batched relays
	// messages of 1000 tasks' bytes (as the forwarder batches), counted
	// in tasks per second.
	PerTask            RawResult `json:"per_task"`
	PerTaskRuns        []float64 `json:"per_task_runs"`
	Batched            RawResult `json:"batched"`
	BatchedTasksPerSec float64   `json:"batched_tasks_per_second"`
}

// Target is one goal from the issue and whether this run met it.
type Target struct {
	Name   string  `json:"name"`
	Goal   string  `json:"goal"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Remark string  `json:"remark,omitempty"`
}

// Report is everything one run measured.
type Report struct {
	Version    string            `json:"version"`
	Started    time.Time         `json:"started"`
	Mode       string            `json:"mode"` // started or targeted
	Persist    bool              `json:"persist"`
	Host       map[string]any    `json:"host"`
	Config     map[string]any    `json:"config"`
	Processes  []ProcessReport   `json:"processes,omitempty"`
	Raw        *RawReport        `json:"raw_zmq,omitempty"`
	Throughput *ThroughputResult `json:"throughput,omitempty"`
	// Secure and Insecure are the medians of throughput runs alternating
	// between this endpoint and one started with --insecure (no tokens, no CurveZMQ),
	// in the same bench run; SecurityCost is the fraction of the insecure
	// rate that the secure endpoint loses.
	Secure       *ThroughputResult `json:"throughput_secure_median,omitempty"`
	Insecure     *ThroughputResult `json:"throughput_insecure_median,omitempty"`
	SecurityCost *float64          `json:"security_cost,omitempty"`
	// FractionOfRaw is throughput over the per-task raw relay rate;
	// FractionOfBatched over the batched one.
	FractionOfRaw     float64        `json:"fraction_of_raw_per_task,omitempty"`
	FractionOfBatched float64        `json:"fraction_of_raw_batched,omitempty"`
	Latency           *LatencyResult `json:"latency,omitempty"`
	Sims              *SimResult     `json:"simulated_managers,omitempty"`
	Queued            *QueuedResult  `json:"queued,omitempty"`
	CLI               *CLIResult     `json:"cli,omitempty"`
	Targets           []Target       `json:"targets"`
	Dir               string         `json:"state_dir,omitempty"`
}

// Run measures what cfg asks for.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...)
	}
	rep := &Report{Version: cfg.Version, Started: time.Now().UTC(), Persist: !cfg.NoPersist,
		Host: map[string]any{"cpus": runtime.NumCPU(), "goos": runtime.GOOS, "goarch": runtime.GOARCH}}
	if h, err := os.Hostname(); err == nil {
		rep.Host["hostname"] = h
	}
	if cfg.API != "" {
		rep.Mode = "targeted"
	} else {
		rep.Mode = "started"
	}
	if cfg.CLI {
		if err := runCLI(ctx, cfg, rep, progress); err != nil {
			return rep, err
		}
		rep.Targets = targets(rep)
		return rep, nil
	}
	scenarios := 0
	if cfg.SimManagers > 0 {
		scenarios++
		rep.Config = map[string]any{"managers_sim": cfg.SimManagers, "sim_interval": cfg.SimInterval.String(), "duration": cfg.Duration.String()}
		e, err := endpointFor(ctx, cfg, SpawnOptions{Interval: cfg.SimInterval}, progress)
		if err != nil {
			return rep, err
		}
		r, err := runSims(ctx, e, cfg.SimManagers, cfg.SimInterval, cfg.Duration, progress)
		finish(e, cfg, rep)
		if err != nil {
			return rep, err
		}
		rep.Sims = &r
	}
	if cfg.Queued > 0 {
		scenarios++
		if rep.Config == nil {
			rep.Config = map[string]any{}
		}
		rep.Config["queued"] = cfg.Queued
		rep.Config["batch"] = cfg.Batch
		rep.Config["submitters"] = cfg.Submitters
		// The interchange would pause pushes at its threshold; lift it
		// above the queue this run builds.
		pause := max(cfg.Queued+cfg.Queued/10+1000, 100000)
		rep.Config["interchange_pause_queued_tasks"] = pause
		e, err := endpointFor(ctx, cfg, SpawnOptions{Interval: cfg.Interval, PauseQueued: pause, Managers: -1}, progress)
		if err != nil {
			return rep, err
		}
		r, err := runQueued(ctx, e, e.client(newHTTPClient()), cfg.Queued, cfg.Batch, cfg.Submitters, cfg.Interval, progress)
		finish(e, cfg, rep)
		if err != nil {
			return rep, err
		}
		rep.Queued = &r
	}
	if scenarios == 0 {
		if err := runMain(ctx, cfg, rep, progress); err != nil {
			return rep, err
		}
	}
	rep.Targets = targets(rep)
	return rep, nil
}

// endpointFor starts an endpoint or describes the targeted one.
func endpointFor(ctx context.Context, cfg Config, so SpawnOptions, progress func(string, ...any)) (*Endpoint, error) {
	if cfg.API != "" {
		return &Endpoint{API: cfg.API, ID: cfg.EndpointID, InterchangeHTTP: httpBase(cfg.InterchangeHTTP),
			ManagersAddr: cfg.InterchangeManagers, ManagerCredentials: cfg.ManagerCredentials, Token: cfg.Token,
			InterchangeToken: cfg.InterchangeToken}, nil
	}
	so.Exe, so.NoPersist, so.Dir, so.Insecure = cfg.Exe, cfg.NoPersist, cfg.Dir, so.Insecure || cfg.Insecure
	switch {
	case so.Managers < 0:
		so.Managers = 0
	case so.Managers == 0 && cfg.SimManagers == 0:
		so.Managers, so.Workers, so.Prefetch = cfg.Managers, cfg.Workers, cfg.Prefetch
	}
	persist := "on"
	if cfg.NoPersist {
		persist = "off (--no-persist)"
	}
	progress("starting forwarder, interchange and %d manager(s) from %s; persistence %s", so.Managers, so.Exe, persist)
	e, err := Spawn(ctx, so)
	if err != nil {
		return nil, err
	}
	for _, p := range e.Procs {
		progress("  %-12s pid %d, log %s", p.Name, p.PID, p.Log)
	}
	return e, nil
}

func httpBase(s string) string {
	if s == "" {
		return ""
	}
	if len(s) < 7 || (s[:7] != "http://" && (len(s) < 8 || s[:8] != "https://")) {
		return "http://" + s
	}
	return s
}

// finish stops a started endpoint and removes its state unless kept.
func finish(e *Endpoint, cfg Config, rep *Report) {
	if !e.spawned {
		return
	}
	e.Stop()
	if cfg.Keep || cfg.Dir != "" {
		rep.Dir = e.Dir
		return
	}
	e.Remove()
}

// runMain is the default scenario: raw baseline, then throughput and
// latency against the endpoint.
func runMain(ctx context.Context, cfg Config, rep *Report, progress func(string, ...any)) error {
	rep.Config = map[string]any{"tasks": cfg.Tasks, "batch": cfg.Batch, "submitters": cfg.Submitters, "rtt_tasks": cfg.RTT}
	if cfg.API == "" {
		rep.Config["managers"] = cfg.Managers
		rep.Config["workers"] = cfg.Workers
		rep.Config["prefetch"] = cfg.Prefetch
		rep.Config["heartbeat_interval"] = cfg.Interval.String()
	}
	if cfg.Raw >= 0 && cfg.Tasks > 0 {
		n := cfg.Raw
		if n == 0 {
			n = cfg.Tasks
		}
		tb, err := NoopTaskBytes(1000)
		if err != nil {
			return err
		}
		size := int(tb + 0.5)
		progress("raw ZMQ relay baseline: %d messages of %d bytes, DEALER -> ROUTER -> DEALER, 3 runs", n, size)
		raw := &RawReport{TaskBytes: tb}
		if raw.PerTask, raw.PerTaskRuns, err = RawBaseline(n, size, 3); err != nil {
			return fmt.Errorf("raw baseline: %w", err)
		}
		nbatch := max(n/1000, 500)
		if raw.Batched, _, err = RawBaseline(nbatch, size*1000, 3); err != nil {
			return fmt.Errorf("raw baseline (batched): %w", err)
		}
		raw.BatchedTasksPerSec = raw.Batched.PerSecond * 1000
		rep.Raw = raw
	}
	e, err := endpointFor(ctx, cfg, SpawnOptions{Interval: cfg.Interval}, progress)
	if err != nil {
		return err
	}
	defer finish(e, cfg, rep)
	hc := newHTTPClient()
	a := e.client(hc)
	if v, err := a.Endpoint(ctx, e.ID, false); err != nil {
		return err
	} else if !v.Connected || v.Managers == 0 {
		return fmt.Errorf("endpoint %s: connected=%v with %d managers; it needs at least one manager", e.ID, v.Connected, v.Managers)
	}
	// Warm up connections, the store files and the managers.
	warm := min(cfg.Batch, 1000, max(cfg.Tasks, 1))
	progress("warm-up: %d tasks", warm)
	if _, err := runThroughput(ctx, a, e.ID, warm, warm, 1); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	readers := processReaders(e, hc)
	before := make([]procReading, len(readers))
	for i, r := range readers {
		before[i] = r.read(ctx)
	}
	progress("throughput: %d no-op tasks in batches of %d from %d submitters", cfg.Tasks, cfg.Batch, cfg.Submitters)
	tp, err := runThroughput(ctx, a, e.ID, cfg.Tasks, cfg.Batch, cfg.Submitters)
	if err != nil {
		if aerr := e.Alive(); aerr != nil {
			err = fmt.Errorf("%w (%v)", err, aerr)
		}
		return fmt.Errorf("throughput: %w", err)
	}
	rep.Throughput = &tp
	after := make([]procReading, len(readers))
	for i, r := range readers {
		after[i] = r.read(ctx)
	}
	if rep.Raw != nil {
		rep.FractionOfRaw = tp.TasksPerSec / rep.Raw.PerTask.PerSecond
		rep.FractionOfBatched = tp.TasksPerSec / rep.Raw.BatchedTasksPerSec
	}
	progress("throughput: %.0f tasks/s; latency: %d sequential round trips", tp.TasksPerSec, cfg.RTT)
	if cfg.RTT > 0 {
		lat, err := runLatency(ctx, a, e.ID, cfg.RTT)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		rep.Latency = &lat
	}
	for i, r := range readers {
		end := r.read(ctx)
		cpu := after[i].cpu - before[i].cpu
		pr := ProcessReport{Name: r.name, PID: r.pid, CPUSeconds: cpu.Seconds(), Source: r.source(),
			PeakRSS: end.hwm, RSS: end.rss}
		if cfg.Tasks > 0 {
			pr.CPUMicrosPerTk = float64(cpu.Microseconds()) / float64(cfg.Tasks)
		}
		if tp.Seconds > 0 {
			pr.CPUPercent = 100 * cpu.Seconds() / tp.Seconds
		}
		rep.Processes = append(rep.Processes, pr)
	}
	if cfg.Tasks > 0 {
		all := tp.BenchCPUSeconds
		for _, p := range rep.Processes {
			all += p.CPUSeconds
		}
		rep.Throughput.AllCPUMicrosPerTk = 1e6 * all / float64(cfg.Tasks)
	}
	if cfg.CompareInsecure && cfg.API == "" {
		if err := compareInsecure(ctx, cfg, rep, tp, warm, hc, e, a, progress); err != nil {
			return err
		}
	}
	return nil
}

// compareRounds is how many more runs each of the secure and the insecure
// endpoint get, alternating, so load from outside hits both alike.
const compareRounds = 3

// compareInsecure starts a second endpoint with --insecure (no tokens, no CurveZMQ)
// beside the first and alternates throughput runs between the two; the
// report holds the medians and the fraction tokens cost.
func compareInsecure(ctx context.Context, cfg Config, rep *Report, first ThroughputResult, warm int, hc *http.Client,
	e *Endpoint, a *api, progress func(string, ...any)) error {
	progress("same throughput run, alternating with an endpoint started with --insecure (no tokens, no CurveZMQ), %d rounds", compareRounds)
	ie, err := endpointFor(ctx, cfg, SpawnOptions{Interval: cfg.Interval, Insecure: true}, progress)
	if err != nil {
		return err
	}
	defer finish(ie, cfg, rep)
	ia := ie.client(hc)
	if _, err := runThroughput(ctx, ia, ie.ID, warm, warm, 1); err != nil {
		return fmt.Errorf("insecure warm-up: %w", err)
	}
	secure := []ThroughputResult{first}
	var insecure []ThroughputResult
	for i := 0; i < compareRounds; i++ {
		itp, err := runThroughput(ctx, ia, ie.ID, cfg.Tasks, cfg.Batch, cfg.Submitters)
		if err != nil {
			return fmt.Errorf("insecure throughput: %w", err)
		}
		insecure = append(insecure, itp)
		if i == compareRounds-1 {
			break
		}
		stp, err := runThroughput(ctx, a, e.ID, cfg.Tasks, cfg.Batch, cfg.Submitters)
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
		secure = append(secure, stp)
		progress("round %d: secure %.0f tasks/s, insecure %.0f tasks/s", i+1, stp.TasksPerSec, itp.TasksPerSec)
	}
	med := func(rs []ThroughputResult) ThroughputResult {
		sort.Slice(rs, func(i, j int) bool { return rs[i].TasksPerSec < rs[j].TasksPerSec })
		return rs[len(rs)/2]
	}
	ms, mi := med(secure), med(insecure)
	rep.Secure, rep.Insecure = &ms, &mi
	if mi.TasksPerSec > 0 {
		c := 1 - ms.TasksPerSec/mi.TasksPerSec
		rep.SecurityCost = &c
	}
	return nil
}

type procReader struct {
	name    string
	pid     int
	metrics string
	hc      *http.Client
}

type procReading struct {
	cpu      time.Duration
	rss, hwm uint64
}

func (p procReader) source() string {
	if p.pid > 0 {
		return "/proc"
	}
	return "/metrics"
}

func (p procReader) read(ctx context.Context) procReading {
	if p.pid > 0 {
		s, err := ReadProc(p.pid)
		if err != nil {
			return procReading{}
		}
		return procReading{cpu: s.CPU, rss: s.RSS, hwm: s.HWM}
	}
	m, err := Scrape(ctx, p.hc, p.metrics)
	if err != nil {
		return procReading{}
	}
	return procReading{cpu: time.Duration(m.Sum("process_cpu_seconds_total") * float64(time.Second)),
		rss: uint64(m.Sum("process_resident_memory_bytes"))}
}

// processReaders lists the processes to watch: the children of a started
// endpoint, or the forwarder and interchange of a targeted one through
// their /metrics.
func processReaders(e *Endpoint, hc *http.Client) []procReader {
	var out []procReader
	if e.spawned {
		for _, p := range e.Procs {
			out = append(out, procReader{name: p.Name, pid: p.PID})
		}
		return out
	}
	out = append(out, procReader{name: "forwarder", metrics: e.API + "/metrics", hc: hc})
	if e.InterchangeHTTP != "" {
		out = append(out, procReader{name: "interchange", metrics: e.InterchangeHTTP + "/metrics", hc: hc})
	}
	return out
}

func targets(rep *Report) []Target {
	var ts []Target
	if tp := rep.Throughput; tp != nil {
		ts = append(ts, Target{Name: "throughput", Goal: ">= 100000 no-op tasks/s end to end", Value: tp.TasksPerSec, Unit: "tasks/s",
			Met: tp.TasksPerSec >= 100000})
		if v := tp.AllCPUMicrosPerTk; v > 0 && len(rep.Processes) > 0 {
			ts = append(ts, Target{Name: "CPU per task, all daemons + client", Goal: "<= 15 µs", Value: v, Unit: "µs", Met: v <= 15})
		}
	}
	if l := rep.Latency; l != nil {
		ts = append(ts, Target{Name: "median round trip", Goal: "<= 0.5 ms", Value: l.MedianMS, Unit: "ms", Met: l.MedianMS <= 0.5},
			Target{Name: "p99 round trip", Goal: "<= 2 ms", Value: l.P99MS, Unit: "ms", Met: l.P99MS <= 2})
	}
	if c := rep.CLI; c != nil {
		ts = append(ts, cliTargets(c)...)
	}
	if q := rep.Queued; q != nil {
		v := q.Interchange.RSSPerTask
		ts = append(ts, Target{Name: "interchange memory per queued task", Goal: "<= 300 bytes", Value: v, Unit: "bytes/task",
			Met: v <= 300, Remark: fmt.Sprintf("Go heap in use: %.0f bytes/task", q.Interchange.HeapPerTask)})
	}
	if s := rep.Sims; s != nil && s.Managers >= 1000 {
		ts = append(ts, Target{Name: fmt.Sprintf("%d idle managers", s.Managers), Goal: "< 5% of one core (1000 managers, 1s)",
			Value: s.InterchangeCPUPercent, Unit: "% of one core", Met: s.InterchangeCPUPercent < 5})
	}
	return ts
}
