package slurmtest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

// blockEnv is a real cluster (KillWait 5s, 16 CPUs on offer so blocks
// share the node) with a forwarder and an interchange at a 200ms
// heartbeat interval and a 2s threshold (room for a loaded test machine;
// the managers' own default reports every 10s), whose block managers are
// started without heartbeat flags: they take the interchange's.
type blockEnv struct {
	t    *testing.T
	bin  string
	c    *slurmtest.Cluster
	fwd  *testutil.Forwarder
	ix   *testutil.Interchange
	cfg  *blocks.Config
	dir  string // the interchange's state dir, kept across its restarts
	addr string // its manager address, kept across restarts
	log  string // the tasks' shared log of starts and ends
}

const (
	envInterval  = 200 * time.Millisecond
	envThreshold = 2 * time.Second
	envPeriod    = 500 * time.Millisecond
)

func newBlockEnv(t *testing.T, cfg *blocks.Config) *blockEnv {
	t.Helper()
	e := &blockEnv{t: t, bin: testutil.BuildSwitchyard(t), cfg: cfg, dir: t.TempDir(),
		addr: testutil.ZMQ(testutil.Port(t)), log: filepath.Join(t.TempDir(), "tasks.log")}
	e.c = slurmtest.Start(t, slurmtest.Options{KillWait: 5 * time.Second, CPUs: 16})
	for _, kv := range e.c.Env() {
		if k, v, ok := strings.Cut(kv, "="); ok && k == "SLURM_CONF" {
			t.Setenv("SLURM_CONF", v)
		}
	}
	cfg.Provider, cfg.NoExclusive, cfg.NodesPerBlock, cfg.Period = blocks.ProviderSlurm, true, 1, envPeriod
	cfg.ManagerArgs = append(cfg.ManagerArgs, testutil.AllowRootArgs(e.bin)...)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.fwd = testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: envInterval, HeartbeatThreshold: 5 * time.Second})
	e.start()
	return e
}

// start (re)starts the interchange on the same state dir and address.
func (e *blockEnv) start() {
	e.t.Helper()
	e.ix = testutil.StartInterchange(e.t, interchange.Options{EndpointID: "ep1", Forwarder: e.fwd.ZMQAddr(), StateDir: e.dir,
		ListenManagers: e.addr, HeartbeatInterval: envInterval, HeartbeatThreshold: envThreshold, Blocks: e.cfg, ManagerBinary: e.bin})
	testutil.WaitFor(e.t, 20*time.Second, func() error {
		if v, _ := e.fwd.Endpoint("ep1"); !v.Connected {
			return fmt.Errorf("endpoint not connected")
		}
		return nil
	})
}

// logged submits n exec tasks that append "start T I" and "end T I" (T a
// unix time, I the task's index) to the shared log around a sleep.
func (e *blockEnv) logged(n int, secs int) []string {
	e.t.Helper()
	specs := make([]any, n)
	for i := range specs {
		sh := fmt.Sprintf("echo start $(date +%%s.%%N) %d >> %s; sleep %d; echo end $(date +%%s.%%N) %d >> %s", i, e.log, secs, i, e.log)
		specs[i] = map[string]any{"kind": "exec", "args": []string{"sh", "-c", sh}}
	}
	ids, err := e.fwd.Client().Submit("ep1", specs...)
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}

// entry is one line of the task log.
type entry struct {
	what string // start or end
	at   time.Time
	task int
}

func (e *blockEnv) entries() []entry {
	data, _ := os.ReadFile(e.log)
	var out []entry
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		sec, err1 := strconv.ParseFloat(f[1], 64)
		i, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, entry{what: f[0], at: time.Unix(0, int64(sec*1e9)), task: i})
	}
	return out
}

func (e *blockEnv) count(what string) int {
	n := 0
	for _, x := range e.entries() {
		if x.what == what {
			n++
		}
	}
	return n
}

// blocksIn lists the interchange's blocks in the given states.
func (e *blockEnv) blocksIn(states ...string) []blocks.View {
	var out []blocks.View
	for _, b := range e.ix.Status().Blocks {
		for _, s := range states {
			if b.State == s {
				out = append(out, b)
			}
		}
	}
	return out
}

// liveJobs are the cluster's jobs that have not ended.
func (e *blockEnv) liveJobs() []string {
	out, err := e.c.Output("squeue", "--noheader", "--format=%i %T")
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] != "COMPLETING" {
			ids = append(ids, f[0])
		}
	}
	return ids
}

// watchJobs counts the most jobs alive at once until the test ends.
func (e *blockEnv) watchJobs() func() int {
	var mu sync.Mutex
	peak := 0
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
			}
			out, err := e.c.Output("squeue", "--noheader", "--states=PENDING,RUNNING", "--format=%i")
			if err != nil {
				continue
			}
			n := len(strings.Fields(out))
			mu.Lock()
			peak = max(peak, n)
			mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { close(done); <-stopped })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

func (e *blockEnv) noManagerLost() {
	e.t.Helper()
	if n := testutil.Metric(e.t, e.ix.Reg, "switchyard_interchange_managers_lost_total", "reason", "heartbeat timeout"); n != 0 {
		e.t.Errorf("%g managers lost to the 2s heartbeat threshold", n)
	}
}

// A block near its walltime is replaced: the new block is submitted, the
// old one drained, and its managers finish the 20 s tasks they run before
// the job ends; none is killed. (Before, the draining managers did not
// count for their block, which was cancelled 24 ms after the drain.)
func TestWalltimeReplacementKillsNoTask(t *testing.T) {
	cfg := &blocks.Config{MinBlocks: 1, MaxBlocks: 1, InitBlocks: 1, WorkersPerNode: 4, Walltime: time.Minute, MaxIdle: time.Minute}
	e := newBlockEnv(t, cfg)
	var first blocks.View
	testutil.WaitFor(t, 60*time.Second, func() error {
		rs := e.blocksIn("running")
		if len(rs) != 1 || rs[0].Managers != 1 || rs[0].StartedAt == nil {
			return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
		}
		first = rs[0]
		return nil
	})
	// Tasks that start 12-13 s into the block and run 20 s: they span the
	// drain at 30 s (walltime 1m, margin 30s) and end well before 60 s.
	limit := first.StartedAt.Add(time.Minute)
	if wait := time.Until(first.StartedAt.Add(12 * time.Second)); wait > 0 {
		<-time.After(wait) // a point on the block's clock, not a synchronisation
	}
	ids := e.logged(4, 20)
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := e.count("start"); n != 4 {
			return fmt.Errorf("%d of 4 tasks started", n)
		}
		return nil
	})
	var drainedAt, replacementAt time.Time
	testutil.WaitFor(t, 40*time.Second, func() error {
		for _, b := range e.ix.Status().Blocks {
			if b.BlockID == first.BlockID && b.State == "draining" && drainedAt.IsZero() {
				drainedAt = time.Now()
			}
			if b.BlockID != first.BlockID && replacementAt.IsZero() {
				replacementAt = b.SubmittedAt
			}
		}
		if drainedAt.IsZero() {
			return fmt.Errorf("block %s not drained yet: %+v", first.BlockID, e.ix.Status().Blocks)
		}
		return nil
	})
	if replacementAt.IsZero() || replacementAt.After(drainedAt) {
		t.Errorf("replacement submitted at %s, the old block drained at %s: want the replacement first", replacementAt, drainedAt)
	}
	vs := e.fwd.Client().WaitTerminal(t, ids, 60*time.Second)
	for _, v := range vs {
		if v.State != "success" || v.Runs != 1 || v.Attempts != 1 {
			t.Errorf("task %s: %s, runs %d, attempts %d (%s)", v.TaskID, v.State, v.Runs, v.Attempts, v.Error)
		}
	}
	starts, ends := e.count("start"), e.count("end")
	var lastEnd time.Time
	for _, x := range e.entries() {
		if x.what == "end" && x.at.After(lastEnd) {
			lastEnd = x.at
		}
	}
	if starts != 4 || ends != 4 || lastEnd.After(limit) {
		t.Errorf("log: %d starts, %d ends, last end %s before the limit; want 4, 4 and all ends before it", starts, ends, limit.Sub(lastEnd))
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, b := range e.ix.Status().Blocks {
			if b.BlockID == first.BlockID && b.State == "done" {
				return nil
			}
		}
		return fmt.Errorf("first block not done: %+v", e.ix.Status().Blocks)
	})
	st, _ := e.c.JobState(first.JobID)
	if st == "TIMEOUT" {
		t.Errorf("job %s of the replaced block reached its time limit", first.JobID)
	}
	e.noManagerLost()
	t.Logf("block %s started %s; tasks submitted at +12s; drained at +%s, replacement submitted %s before; log: %d starts, %d ends, last end %s before the time limit; old job ended %s",
		first.BlockID, first.StartedAt.Format(time.TimeOnly), drainedAt.Sub(*first.StartedAt).Round(100*time.Millisecond),
		drainedAt.Sub(replacementAt).Round(time.Millisecond), starts, ends, limit.Sub(lastEnd).Round(100*time.Millisecond), st)
}

// scancel of a running block: its managers drain within the cluster's
// KillWait (the provider keeps their grace below it), give their running
// tasks back, and the tasks run again on a new block, with the same
// attempt and runs 2.
func TestScancelGivesTasksBackAndCountsRuns(t *testing.T) {
	cfg := &blocks.Config{MinBlocks: 1, MaxBlocks: 1, InitBlocks: 1, WorkersPerNode: 2, Walltime: 10 * time.Minute, MaxIdle: time.Minute}
	e := newBlockEnv(t, cfg)
	ids := e.logged(2, 8)
	var victim blocks.View
	testutil.WaitFor(t, 60*time.Second, func() error {
		if n := e.count("start"); n != 2 {
			return fmt.Errorf("%d of 2 tasks started", n)
		}
		rs := e.blocksIn("running")
		if len(rs) != 1 {
			return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
		}
		victim = rs[0]
		return nil
	})
	script, err := os.ReadFile(filepath.Join(e.dir, "blocks", victim.BlockID, "job.sh"))
	if err != nil || !strings.Contains(string(script), "--drain-grace=3.75s") {
		t.Errorf("job script does not keep the drain grace below KillWait 5s: %v\n%s", err, script)
	}
	t0 := time.Now()
	if _, err := e.c.Output("scancel", victim.JobID); err != nil {
		t.Fatal(err)
	}
	vs := e.fwd.Client().WaitTerminal(t, ids, 90*time.Second)
	for _, v := range vs {
		if v.State != "success" || v.Runs != 2 || v.Attempts != 1 {
			t.Errorf("task %s: %s, runs %d, attempts %d (%s)", v.TaskID, v.State, v.Runs, v.Attempts, v.Error)
		}
	}
	starts, ends := e.count("start"), e.count("end")
	if starts != 4 || ends != 2 {
		t.Errorf("log: %d starts, %d ends; want 4 starts (each task twice) and 2 ends", starts, ends)
	}
	if n := testutil.Metric(t, e.ix.Reg, "switchyard_interchange_tasks_returned_total"); n != 2 {
		t.Errorf("%g tasks given back, want 2", n)
	}
	e.noManagerLost()
	t.Logf("scancel %s: both tasks given back and run on a new block, done %s later; log: %d starts, %d ends; runs 2, attempts 1",
		victim.JobID, time.Since(t0).Round(100*time.Millisecond), starts, ends)
}

// A restarted interchange adopts the two running blocks it left: they are
// listed again within one strategy period, no job is submitted beyond
// --max-blocks, and, idle, they are drained after --max-idle.
func TestRestartAdoptsRunningBlocks(t *testing.T) {
	cfg := &blocks.Config{MinBlocks: 0, MaxBlocks: 2, WorkersPerNode: 2, Walltime: 10 * time.Minute, MaxIdle: 3 * time.Second}
	e := newBlockEnv(t, cfg)
	peak := e.watchJobs()
	ids := e.logged(8, 3)
	testutil.WaitFor(t, 60*time.Second, func() error {
		if rs := e.blocksIn("running"); len(rs) != 2 || rs[0].Managers != 1 || rs[1].Managers != 1 {
			return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
		}
		return nil
	})
	before := e.blocksIn("running")
	e.ix.Stop()
	jobs := e.liveJobs()
	if len(jobs) != 2 {
		t.Fatalf("after a plain stop squeue shows jobs %v, want the 2 blocks still running", jobs)
	}
	t0 := time.Now()
	e.start()
	var listed time.Duration
	testutil.WaitFor(t, 10*time.Second, func() error {
		if rs := e.blocksIn("pending", "running"); len(rs) != 2 {
			return fmt.Errorf("blocks after restart %+v", e.ix.Status().Blocks)
		}
		listed = time.Since(t0)
		return nil
	})
	for _, v := range e.fwd.Client().WaitTerminal(t, ids, 90*time.Second) {
		if v.State != "success" {
			t.Errorf("task %s: %s (%s)", v.TaskID, v.State, v.Error)
		}
	}
	var drained time.Duration
	testutil.WaitFor(t, 60*time.Second, func() error {
		if n := len(e.liveJobs()); n != 0 {
			return fmt.Errorf("%d jobs still live: %+v", n, e.ix.Status().Blocks)
		}
		drained = time.Since(t0)
		return nil
	})
	adopted := 0
	for _, b := range e.ix.Status().Blocks {
		for _, o := range before {
			if b.BlockID == o.BlockID && b.JobID == o.JobID {
				adopted++
			}
		}
	}
	if adopted != 2 {
		t.Errorf("%d of the 2 blocks adopted: %+v", adopted, e.ix.Status().Blocks)
	}
	if p := peak(); p > cfg.MaxBlocks {
		t.Errorf("%d jobs at once, --max-blocks %d", p, cfg.MaxBlocks)
	}
	for _, want := range []string{"adopting a block of the previous run", "blocks of the previous run recovered"} {
		if !e.ix.Log.Contains(want) {
			t.Errorf("the restarted interchange's log lacks %q", want)
		}
	}
	sort.Strings(jobs)
	t.Logf("restart with jobs %v running: listed again %s after the start (period %s), peak %d jobs (max-blocks 2), all 8 tasks done, idle blocks drained and gone %s after the restart (max-idle 3s); log: %d starts, %d ends",
		jobs, listed.Round(time.Millisecond), envPeriod, peak(), drained.Round(100*time.Millisecond), e.count("start"), e.count("end"))
}

// A block whose job fails says why: Slurm's state and reason, then the
// last lines of its output, in the blocks view (interchange and forwarder)
// and the interchange's log.
func TestFailingBlockSaysWhy(t *testing.T) {
	cfg := &blocks.Config{MinBlocks: 1, MaxBlocks: 1, InitBlocks: 1, WorkersPerNode: 1, Walltime: 10 * time.Minute, MaxIdle: time.Minute,
		WorkerInit: "echo 'module: command not found: cuda/12' >&2; exit 3"}
	e := newBlockEnv(t, cfg)
	var failed blocks.View
	testutil.WaitFor(t, 60*time.Second, func() error {
		if fs := e.blocksIn("failed"); len(fs) > 0 {
			failed = fs[0]
			return nil
		}
		return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
	})
	if !strings.Contains(failed.Reason, "cuda/12") || !strings.Contains(failed.Reason, "job.out") {
		t.Errorf("reason %q lacks the job's output", failed.Reason)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		v, _ := e.fwd.Endpoint("ep1")
		if !strings.Contains(string(v.Blocks), "cuda/12") {
			return fmt.Errorf("forwarder's blocks %s", v.Blocks)
		}
		return nil
	})
	if !strings.Contains(e.ix.Log.String(), "cuda/12") {
		t.Error("the interchange's log does not say why the block failed")
	}
	for _, b := range e.ix.Status().Blocks {
		if b.State == "running" && b.Reason != "" {
			t.Errorf("running block %s has reason %q", b.BlockID, b.Reason)
		}
	}
	t.Logf("failed block %s: reason %q", failed.BlockID, failed.Reason)
}

// Prometheus (Debian's /usr/bin/prometheus) finds the managers of blocks
// through the interchange's GET /sd (http_sd_configs) and scrapes each on
// the free port it reported, with manager_id and block_id labels.
func TestPrometheusScrapesBlockManagersThroughSD(t *testing.T) {
	const prom = "/usr/bin/prometheus"
	if _, err := os.Stat(prom); err != nil {
		t.Fatalf("%s is missing (%v): install Debian's prometheus package (scripts/install-deps.sh)", prom, err)
	}
	cfg := &blocks.Config{MinBlocks: 2, MaxBlocks: 2, InitBlocks: 2, WorkersPerNode: 1, Walltime: 10 * time.Minute, MaxIdle: time.Minute}
	e := newBlockEnv(t, cfg)
	testutil.WaitFor(t, 60*time.Second, func() error {
		if rs := e.blocksIn("running"); len(rs) != 2 || rs[0].Managers != 1 || rs[1].Managers != 1 {
			return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
		}
		return nil
	})
	dir := t.TempDir()
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: switchyard-block-managers
    http_sd_configs:
      - url: %s/sd
        refresh_interval: 1s
`, e.ix.URL)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	port := testutil.Port(t)
	p := testutil.StartProc(t, dir, "prometheus", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+testutil.Addr(port), "--log.level=warn")
	query := func(q string) ([]map[string]string, error) {
		resp, err := http.Get("http://" + testutil.Addr(port) + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		var ms []map[string]string
		for _, r := range out.Data.Result {
			ms = append(ms, r.Metric)
		}
		return ms, nil
	}
	t0 := time.Now()
	var up []map[string]string
	testutil.WaitFor(t, 60*time.Second, func() error {
		if p.Exited() {
			t.Fatal("prometheus exited")
		}
		var err error
		up, err = query(`up{job="switchyard-block-managers"} == 1`)
		if err != nil {
			return err
		}
		if len(up) != 2 {
			return fmt.Errorf("%d managers up in Prometheus: %v", len(up), up)
		}
		return nil
	})
	blocksSeen := map[string]bool{}
	for _, m := range up {
		if m["manager_id"] == "" || m["block_id"] == "" || !strings.HasPrefix(m["manager_id"], m["block_id"]) {
			t.Errorf("target labels %v", m)
		}
		blocksSeen[m["block_id"]] = true
	}
	if len(blocksSeen) != 2 {
		t.Errorf("targets of %d blocks, want 2: %v", len(blocksSeen), up)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		ms, err := query(`switchyard_manager_heartbeats_received_total{job="switchyard-block-managers"}`)
		if err != nil || len(ms) != 2 {
			return fmt.Errorf("manager metrics in Prometheus: %v %v", ms, err)
		}
		return nil
	})
	t.Logf("Prometheus scraped both block managers through %s/sd %s after it started: %v", e.ix.URL, time.Since(t0).Round(100*time.Millisecond), up)
}

// An interchange stopped for good (--cancel-blocks-on-exit) cancels its
// blocks at SIGTERM and returns once their jobs ended: no job is left.
func TestCancelBlocksOnExit(t *testing.T) {
	cfg := &blocks.Config{MinBlocks: 2, MaxBlocks: 2, InitBlocks: 2, WorkersPerNode: 1, Walltime: 10 * time.Minute, MaxIdle: time.Minute,
		CancelOnExit: true}
	e := newBlockEnv(t, cfg)
	testutil.WaitFor(t, 60*time.Second, func() error {
		if rs := e.blocksIn("running"); len(rs) != 2 || rs[0].Managers != 1 || rs[1].Managers != 1 {
			return fmt.Errorf("blocks %+v", e.ix.Status().Blocks)
		}
		return nil
	})
	t0 := time.Now()
	e.ix.Stop()
	stopped := time.Since(t0)
	if jobs := e.liveJobs(); len(jobs) != 0 {
		t.Fatalf("jobs %v still live after the interchange stopped with --cancel-blocks-on-exit", jobs)
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "blocks", "blocks.json"))
	if err != nil || strings.Contains(string(data), `"state": "running"`) {
		t.Errorf("blocks file after the stop: %s (%v)", data, err)
	}
	t.Logf("interchange with 2 running blocks stopped in %s with --cancel-blocks-on-exit; squeue shows no live job", stopped.Round(100*time.Millisecond))
}
