// Package chain_test runs the whole endpoint in one process: a forwarder,
// an interchange and two managers on ephemeral ports, driven through the
// forwarder's HTTP API as users drive it.
package chain_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// Chain tests run under heavy load (-race, 2 cores, thousands of tasks):
// heartbeats stay at 100ms, but a peer is declared lost only after 5s so a
// busy loop is not mistaken for a dead one.
var chainOpts = testutil.ChainOptions{Managers: 2, Workers: 4, Prefetch: 4,
	Interval: 100 * time.Millisecond, Threshold: 5 * time.Second, OutputLimit: 4096}

type expect struct {
	state  string
	stdout string // exec only
	exit   int
	errSub string
}

// mixed returns n task specs and what each must end as.
func mixed(rng *rand.Rand, n int) ([]any, []expect) {
	specs := make([]any, n)
	want := make([]expect, n)
	for i := range specs {
		switch p := rng.IntN(100); {
		case p < 40:
			specs[i] = taskspec.Spec{Kind: "noop"}
			want[i] = expect{state: "success"}
		case p < 60:
			specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{fmt.Sprintf("0.00%d", 1+rng.IntN(9))}}
			want[i] = expect{state: "success"}
		case p < 85:
			word := fmt.Sprintf("task-%d", i)
			specs[i] = taskspec.Spec{Kind: "exec", Args: []string{"echo", word}}
			want[i] = expect{state: "success", stdout: word + "\n"}
		case p < 95:
			specs[i] = taskspec.Spec{Kind: "exec", Args: []string{"sh", "-c", "echo oops >&2; exit 3"}}
			want[i] = expect{state: "failed", exit: 3, errSub: "exit status 3"}
		case p < 98:
			specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"5"}, Timeout: "50ms"}
			want[i] = expect{state: "failed", errSub: "timed out"}
		default:
			specs[i] = taskspec.Spec{Kind: "exec", Args: []string{"/nonexistent/switchyard-test"}}
			want[i] = expect{state: "failed", exit: -1, errSub: "/nonexistent/switchyard-test"}
		}
	}
	return specs, want
}

func submitAll(t *testing.T, c *testutil.Client, ep string, specs []any, chunk int) []string {
	t.Helper()
	var ids []string
	for len(specs) > 0 {
		n := min(chunk, len(specs))
		got, err := c.Submit(ep, specs[:n]...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
		specs = specs[n:]
	}
	return ids
}

// quiet waits until nothing is in flight anywhere below the forwarder:
// no queued or outstanding task at the interchange, no undelivered result,
// no task or unacknowledged result on any manager.
func quiet(t *testing.T, ch *testutil.Chain, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, func() error {
		st := ch.Interchange.Status()
		if st.Queued != 0 || st.Outstanding != 0 || st.ResultsUndelivered != 0 {
			return fmt.Errorf("interchange: queued %d outstanding %d undelivered %d", st.Queued, st.Outstanding, st.ResultsUndelivered)
		}
		for _, m := range ch.Managers {
			ms := m.Status()
			if ms.Held != 0 || ms.HeldResults != 0 || ms.Pending != 0 {
				return fmt.Errorf("manager %s: held %d pending %d unacked %d", ms.ManagerID, ms.Held, ms.Pending, ms.HeldResults)
			}
		}
		return nil
	})
}

func writesPerTask(t *testing.T, ch *testutil.Chain, n int) float64 {
	t.Helper()
	w := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_state_writes_total")
	if w < float64(n) {
		t.Errorf("switchyard_forwarder_state_writes_total = %g for %d tasks: each task is written at least once", w, n)
	}
	return w / float64(n)
}

func TestMixedTasksEndCorrectly(t *testing.T) {
	for _, persist := range []bool{false, true} {
		name := "in memory"
		if persist {
			name = "with stores"
		}
		t.Run(name, func(t *testing.T) {
			o := chainOpts
			o.Persist = persist
			mixedTasks(t, o)
		})
	}
}

func mixedTasks(t *testing.T, o testutil.ChainOptions) {
	const n = 2000
	ch := testutil.StartChain(t, o)
	rng := rand.New(rand.NewPCG(7, 11))
	specs, want := mixed(rng, n)
	start := time.Now()
	ids := submitAll(t, ch.Client, ch.Endpoint, specs, 500)
	views := ch.Client.WaitTerminal(t, ids, 120*time.Second)
	took := time.Since(start)

	retried := 0
	counts := map[string]int{}
	for i, v := range views {
		w := want[i]
		counts[v.State]++
		if v.Attempts != 1 {
			retried++
		}
		if v.State != w.state {
			t.Errorf("task %d (%v): %s (%q), want %s", i, specs[i], v.State, v.Error, w.state)
			continue
		}
		if w.errSub != "" && !strings.Contains(v.Error, w.errSub) {
			t.Errorf("task %d (%v): error %q does not contain %q", i, specs[i], v.Error, w.errSub)
		}
		if w.state == "success" && v.Error != "" {
			t.Errorf("task %d: success with error %q", i, v.Error)
		}
		if v.CompletedAt == nil || v.CreatedAt == nil || v.CompletedAt.Before(*v.CreatedAt) {
			t.Errorf("task %d: created %v completed %v", i, v.CreatedAt, v.CompletedAt)
		}
		if s := specs[i].(taskspec.Spec); s.Kind == "exec" {
			var r taskspec.ExecResult
			if err := json.Unmarshal(v.Result, &r); err != nil {
				t.Errorf("task %d: exec result %s: %v", i, v.Result, err)
				continue
			}
			if r.ExitCode != w.exit || (w.stdout != "" && r.Stdout != w.stdout) {
				t.Errorf("task %d: exit %d stdout %q, want %d %q", i, r.ExitCode, r.Stdout, w.exit, w.stdout)
			}
			if w.exit == 3 && r.Stderr != "oops\n" {
				t.Errorf("task %d: stderr %q", i, r.Stderr)
			}
		}
	}
	quiet(t, ch, 30*time.Second)
	if got := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_tasks_completed_total"); got != n {
		t.Errorf("forwarder counted %g completions for %d tasks", got, n)
	}
	ran := 0.0
	for _, m := range ch.Managers {
		ran += testutil.Metric(t, m.Reg, "switchyard_manager_tasks_completed_total")
	}
	if ran < n {
		t.Errorf("managers ran %g tasks, fewer than %d", ran, n)
	}
	if retried > 0 {
		t.Logf("%d tasks needed more than one attempt", retried)
	}
	t.Logf("%d mixed tasks (%v) ended in %s (%.0f tasks/s) under -race; managers ran %g; %d retried",
		n, counts, took.Round(time.Millisecond), float64(n)/took.Seconds(), ran, retried)
	t.Logf("forwarder state writes per task: %.2f", writesPerTask(t, ch, n))
	if o.Persist {
		fw := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_store_writes_total")
		iw := testutil.Metric(t, ch.Interchange.Reg, "switchyard_interchange_store_writes_total")
		t.Logf("store records written per task: forwarder %.2f, interchange %.2f", fw/n, iw/n)
	}
}

type cancelAnswer struct {
	TaskID    string `json:"task_id"`
	State     string `json:"state"`
	Cancelled bool   `json:"cancelled"`
	Message   string `json:"message"`
}

// Cancels race completions: each task ends in exactly one terminal state, a
// task whose cancel was answered cancelled:true never reads success, and
// final states do not change later.
func TestCancelsRaceCompletions(t *testing.T) {
	for _, persist := range []bool{false, true} {
		name := "in memory"
		if persist {
			name = "with stores"
		}
		t.Run(name, func(t *testing.T) {
			o := chainOpts
			o.Persist = persist
			cancelRace(t, o)
		})
	}
}

func cancelRace(t *testing.T, o testutil.ChainOptions) {
	const (
		n          = 3000
		batch      = 250
		cancellers = 4
	)
	ch := testutil.StartChain(t, o)
	c := ch.Client

	var mu sync.Mutex
	var ids []string
	winners := map[string]int{} // id -> cancel answers that said cancelled:true
	answers := 0
	submitted := make(chan struct{})
	first := make(chan struct{}) // closed once the first batch is in

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // submitter
		defer wg.Done()
		defer close(submitted)
		rng := rand.New(rand.NewPCG(1, 2))
		for len(ids) < n {
			specs := make([]any, batch)
			for i := range specs {
				if rng.IntN(2) == 0 {
					specs[i] = taskspec.Spec{Kind: "noop"}
				} else {
					specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{fmt.Sprintf("0.00%d", 1+rng.IntN(5))}}
				}
			}
			got, err := c.Submit(ch.Endpoint, specs...)
			if err != nil {
				t.Errorf("submit: %v", err)
				return
			}
			mu.Lock()
			if len(ids) == 0 {
				close(first)
			}
			ids = append(ids, got...)
			mu.Unlock()
		}
	}()
	record := func(as []cancelAnswer) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range as {
			answers++
			if a.Cancelled {
				winners[a.TaskID]++
				if a.State != "cancelled" {
					t.Errorf("cancel of %s said cancelled:true with state %s", a.TaskID, a.State)
				}
			} else if a.State != "success" && a.State != "failed" && a.State != "cancelled" {
				t.Errorf("cancel of %s refused with non-terminal state %s: %s", a.TaskID, a.State, a.Message)
			}
		}
	}
	for g := 0; g < cancellers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			select {
			case <-first:
			case <-submitted: // the submitter failed
				return
			}
			after := 0 // rounds since the last batch went in
			for round := 0; ; round++ {
				select {
				case <-submitted:
					if after++; after > 150 {
						return
					}
				default:
				}
				mu.Lock()
				// Favour the newest tasks: those are in flight.
				k := len(ids) - 1 - rng.IntN(min(len(ids), 3*batch))
				pick := ids[k]
				var several []string
				for j := 0; j < 1+rng.IntN(20); j++ {
					several = append(several, ids[len(ids)-1-rng.IntN(min(len(ids), 3*batch))])
				}
				mu.Unlock()
				if round%2 == 0 {
					var a cancelAnswer
					code, raw, err := c.Do(http.MethodDelete, "/v1/tasks/"+pick, nil, &a)
					if err != nil || code != http.StatusOK {
						t.Errorf("DELETE %s: %v HTTP %d %s", pick, err, code, raw)
						return
					}
					record([]cancelAnswer{a})
				} else {
					var res struct {
						Tasks []cancelAnswer `json:"tasks"`
					}
					code, raw, err := c.Do(http.MethodPost, "/v1/tasks/cancel", map[string]any{"task_ids": several}, &res)
					if err != nil || code != http.StatusOK || len(res.Tasks) != len(several) {
						t.Errorf("POST /v1/tasks/cancel: %v HTTP %d %s", err, code, raw)
						return
					}
					record(res.Tasks)
				}
			}
		}(g)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(ids) != n {
		t.Fatalf("%d tasks submitted, want %d", len(ids), n)
	}

	views := c.WaitTerminal(t, ids, 120*time.Second)
	counts := map[string]int{}
	for i, v := range views {
		counts[v.State]++
		w := winners[ids[i]]
		switch {
		case w > 1:
			t.Errorf("task %s: %d cancels were told cancelled:true; exactly one may win", ids[i], w)
		case w == 1 && v.State != "cancelled":
			t.Errorf("task %s: cancel said cancelled:true, task reads %s (%q)", ids[i], v.State, v.Error)
		case w == 0 && v.State == "cancelled":
			t.Errorf("task %s: cancelled, yet no cancel was told it won (error %q)", ids[i], v.Error)
		case v.State == "failed":
			t.Errorf("task %s failed: %q", ids[i], v.Error)
		}
	}

	// Everything below the forwarder settles (late results delivered and
	// acked); then nothing may have changed.
	quiet(t, ch, 30*time.Second)
	again := c.WaitTerminal(t, ids, 10*time.Second)
	for i := range views {
		a, b := views[i], again[i]
		if a.State != b.State || a.Attempts != b.Attempts || a.Error != b.Error || string(a.Result) != string(b.Result) {
			t.Errorf("task %s changed after it ended: %s/%d/%q -> %s/%d/%q", ids[i], a.State, a.Attempts, a.Error, b.State, b.Attempts, b.Error)
		}
	}

	// Each task ended exactly once: completions by result plus cancels by
	// request add up to the number of tasks.
	completed := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_tasks_completed_total")
	cancels := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_cancels_total")
	if completed+cancels != n {
		t.Errorf("tasks_completed_total %g + cancels_total %g = %g, want %d (each task ends once)", completed, cancels, completed+cancels, n)
	}
	if int(cancels) != counts["cancelled"] {
		t.Errorf("cancels_total %g, %d tasks read cancelled", cancels, counts["cancelled"])
	}
	dups := testutil.Metric(t, ch.Forwarder.Reg, "switchyard_forwarder_duplicate_results_total")
	t.Logf("%d tasks: %v; %d cancel answers, %d winners; %g late results dropped as duplicates",
		n, counts, answers, len(winners), dups)
	t.Logf("forwarder state writes per task: %.2f", writesPerTask(t, ch, n))
}

// A manager stopped mid-run (SIGTERM, Stop) drains: it gives back what it
// has not started, finishes or (after the grace) stops and gives back what
// runs, and says goodbye; its tasks run on the other manager with the same
// attempt and every task succeeds. (A manager that vanishes without a word
// is covered by the kill -9 tests in e2e/.)
func TestManagerStoppedMidRunReturnsItsTasks(t *testing.T) {
	o := chainOpts
	o.Threshold = 500 * time.Millisecond
	o.Workers = 2
	o.Prefetch = 2
	o.DrainGrace = 300 * time.Millisecond
	ch := testutil.StartChain(t, o)
	specs := make([]any, 16)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"1"}}
	}
	ids := submitAll(t, ch.Client, ch.Endpoint, specs, len(specs))
	victim := ch.Managers[0]
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := victim.Status(); st.Held == 0 {
			return fmt.Errorf("manager %s holds no task yet", st.ManagerID)
		}
		return nil
	})
	stopped := time.Now()
	victim.Stop()
	views := ch.Client.WaitTerminal(t, ids, 60*time.Second)
	retried, ranTwice := 0, 0
	for i, v := range views {
		if v.State != "success" {
			t.Errorf("task %d: %s (%q) after its manager stopped", i, v.State, v.Error)
		}
		if v.Attempts > 1 {
			retried++
		}
		if v.Runs < 1 || v.Runs > 2 {
			t.Errorf("task %d ran %d times", i, v.Runs)
		}
		if v.Runs == 2 {
			ranTwice++
		}
	}
	// The victim's running tasks (sleep 1 against a 300ms grace) were
	// stopped and given back: they ran again, and runs says so.
	if ranTwice == 0 {
		t.Errorf("no task reads runs 2, yet the stopped manager was running some")
	}
	if retried != 0 {
		t.Errorf("%d tasks took a second attempt; a drained manager gives tasks back with the same attempt", retried)
	}
	if v := testutil.Metric(t, ch.Interchange.Reg, "switchyard_interchange_managers_lost_total", "reason", "said goodbye"); v != 1 {
		t.Errorf("managers_lost_total{said goodbye} = %g, want 1", v)
	}
	if v := testutil.Metric(t, ch.Interchange.Reg, "switchyard_interchange_tasks_returned_total"); v == 0 {
		t.Errorf("the stopped manager returned no task, yet it held some")
	}
	t.Logf("manager stopped with tasks in hand: all %d done %s after the stop, none retried, %d ran twice (runs 2, attempts 1)",
		len(ids), time.Since(stopped).Round(time.Millisecond), ranTwice)
}
