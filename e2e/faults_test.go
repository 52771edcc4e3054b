package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// slack covers process scheduling on a loaded 2-core machine and the
// 10 ms polling of these tests.
const slack = 400 * time.Millisecond

// TestManagerSIGSTOP stops a manager past the threshold: its tasks must be
// re-queued (attempt 2) and finish on the other manager; woken again, it
// must re-register and its stale results must change nothing.
func TestManagerSIGSTOP(t *testing.T) {
	c := newCluster(t, clusterOpts{endpoint: "sigstop"})
	a := c.addManager("stop-a", 2, 0)
	c.waitCapacity(1, 2)

	ids := c.submit(makeTasks(6, func() task { return sleepTask("2") }), 0)
	// With 2 workers and no prefetch, manager a takes exactly two.
	var onA []string
	waitFor(t, 15*time.Second, func() error {
		s, err := c.statuses(ids)
		if err != nil {
			return err
		}
		onA = onA[:0]
		for _, id := range ids {
			if s[id].State == "running" {
				onA = append(onA, id)
			}
		}
		if len(onA) != 2 {
			return fmt.Errorf("want 2 tasks running on %s, states %v", a.id, countStates(s))
		}
		return nil
	})
	b := c.addManager("stop-b", 4, 0)
	waitFor(t, 15*time.Second, func() error {
		s, err := c.statuses(ids)
		if err != nil {
			return err
		}
		if n := countStates(s)["running"]; n != 6 {
			return fmt.Errorf("want all 6 tasks running (2 on %s, 4 on %s), states %v", a.id, b.id, countStates(s))
		}
		return nil
	})

	a.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	var detected, requeued time.Duration
	waitFor(t, 10*time.Second, func() error {
		if detected == 0 {
			st, err := c.ixStatus()
			if err != nil {
				return err
			}
			if !st.lists(a.id) {
				detected = time.Since(stopped)
			}
		}
		if requeued == 0 {
			s, err := c.statuses(onA)
			if err != nil {
				return err
			}
			if s[onA[0]].Attempts >= 2 && s[onA[1]].Attempts >= 2 {
				requeued = time.Since(stopped)
			}
		}
		if detected == 0 || requeued == 0 {
			return fmt.Errorf("%s still listed by the interchange (%v) or its tasks not re-queued (%v)", a.id, detected == 0, requeued == 0)
		}
		return nil
	})
	t.Logf("SIGSTOP %s: interchange dropped it after %s, its tasks read attempt 2 after %s (threshold %s, interval %s)",
		a.id, ms(detected), ms(requeued), c.threshold, c.interval)
	if limit := c.threshold + c.interval + slack; detected > limit {
		t.Errorf("stopped manager detected after %s; want <= threshold + interval + slack = %s", detected, limit)
	}
	if limit := c.threshold + c.interval + slack; requeued > limit {
		t.Errorf("tasks of the stopped manager re-queued (attempts 2) after %s; want <= threshold + interval + slack = %s", requeued, limit)
	}
	if len(c.ix.GrepLog("manager lost", a.id)) == 0 {
		t.Errorf("interchange log has no \"manager lost\" line for %s", a.id)
	}

	final := c.waitTerminal(ids, 30*time.Second)
	for _, id := range ids {
		v := final[id]
		want := 1
		if contains(onA, id) {
			want = 2
		}
		if v.State != "success" || v.Attempts != want {
			t.Errorf("task %s (was on %s: %v) ended %s with attempts %d (error %q); want success with attempts %d",
				id, a.id, contains(onA, id), v.State, v.Attempts, v.Error, want)
		}
	}
	if t.Failed() {
		return
	}
	if runs := executions(t, c, b); runs < len(ids) {
		t.Errorf("%s finished %d tasks; want all %d (its own 4 and the 2 re-queued from %s)", b.id, runs, len(ids), a.id)
	}

	// Wake a: it must re-register, and what it still holds (two sleeps of
	// attempt 1) must change nothing.
	a.Signal(syscall.SIGCONT)
	woken := time.Now()
	c.waitManagerListed(a.id, 10*time.Second)
	t.Logf("SIGCONT %s: listed again by the interchange after %s", a.id, ms(time.Since(woken)))
	// It has flushed its stale results when it is registered, holds no task
	// and the interchange acknowledged every result; the interchange has
	// then passed them up and the forwarder acknowledged them.
	waitFor(t, 10*time.Second, func() error {
		ma, err := c.mgrStatus(a)
		if err != nil {
			return err
		}
		if !ma.Registered || ma.Held != 0 || ma.HeldResults != 0 {
			return fmt.Errorf("%s: registered %v, holds %d tasks and %d unacknowledged results", a.id, ma.Registered, ma.Held, ma.HeldResults)
		}
		st, err := c.ixStatus()
		if err != nil {
			return err
		}
		if st.ResultsUndelivered != 0 || st.Outstanding != 0 {
			return fmt.Errorf("interchange holds %d undelivered results and %d tasks", st.ResultsUndelivered, st.Outstanding)
		}
		return nil
	})
	// Let anything a stale result could still set off reach the forwarder:
	// wait until it has heard from the interchange two thresholds after
	// the wake-up.
	waitFor(t, 10*time.Second, func() error {
		if hb := lastHeartbeat(t, c); !hb.After(woken.Add(2 * c.threshold)) {
			return fmt.Errorf("forwarder last heard from the interchange at %s, not yet two thresholds after the wake-up at %s", hb, woken)
		}
		return nil
	})
	after := c.mustStatuses(ids)
	for _, id := range ids {
		x, y := final[id], after[id]
		if x.State != y.State || x.Attempts != y.Attempts || string(x.Result) != string(y.Result) || x.Error != y.Error ||
			!sameTime(x.CompletedAt, y.CompletedAt) {
			t.Errorf("task %s changed after %s woke: %s/%d/%s/%v -> %s/%d/%s/%v", id, a.id,
				x.State, x.Attempts, x.Error, x.CompletedAt, y.State, y.Attempts, y.Error, y.CompletedAt)
		}
	}
	if st, err := c.ixStatus(); err != nil || st.Managers != 2 {
		t.Errorf("interchange lists %d managers after the wake-up (%v); want 2", st.Managers, err)
	}
	// The woken manager takes work again.
	ranOnA := executions(t, c, a)
	more := c.submit(makeTasks(20, noop), 0)
	if s := c.waitTerminal(more, 30*time.Second); countStates(s)["success"] != 20 {
		t.Errorf("20 noops after the wake-up ended %v", countStates(s))
	}
	if n := executions(t, c, a); n <= ranOnA {
		t.Errorf("%s ran none of the 20 noops submitted after it re-registered (finished %d before, %d after)", a.id, ranOnA, n)
	}
	runs := executions(t, c, a, b)
	t.Logf("SIGSTOP: %d executions for %d tasks (%d duplicates: the stopped manager's two sleeps ran again on %s)",
		runs, len(ids)+len(more), runs-len(ids)-len(more), b.id)
}

// executions sums the tasks the managers finished, by their metrics.
func executions(t *testing.T, c *cluster, ms ...*manager) int {
	t.Helper()
	n := 0.0
	for _, m := range ms {
		text, err := c.metrics(m.base())
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []string{"success", "failed", "cancelled"} {
			v, _ := metricValue(text, "switchyard_manager_tasks_completed_total", `{state="`+st+`"}`)
			n += v
		}
	}
	return int(n)
}

// TestInterchangeKill9 kills the interchange with work in flight, submits
// while it is gone, and restarts it with the same command: nothing is lost.
// It runs twice: with the interchange's state dir (it recovers its queue),
// and with --no-persist, where only the forwarder's re-send can bring back
// the tasks the interchange held.
func TestInterchangeKill9(t *testing.T) {
	t.Run("durable", func(t *testing.T) { interchangeKill9(t, nil) })
	t.Run("no-persist", func(t *testing.T) { interchangeKill9(t, []string{"--no-persist"}) })
}

func interchangeKill9(t *testing.T, ixArgs []string) {
	c := newCluster(t, clusterOpts{endpoint: "ixkill", ixArgs: ixArgs})
	m1 := c.addManager("ixkill-m1", 2, -1)
	m2 := c.addManager("ixkill-m2", 2, -1)
	c.waitCapacity(2, 4)

	// Work in flight when the interchange dies: on the managers 4 running
	// and 4 prefetched sleeps (the managers keep these), and 20 noops
	// queued in the interchange (these die with it; only the forwarder can
	// send them again).
	onManagers := c.submit(makeTasks(8, func() task { return sleepTask("1.5") }), 0)
	queued := c.submit(makeTasks(20, noop), 0)
	inflight := append(append([]string(nil), onManagers...), queued...)
	waitFor(t, 15*time.Second, func() error {
		s, err := c.statuses(inflight)
		if err != nil {
			return err
		}
		cs := countStates(s)
		if cs["running"] != 4 || cs["waiting-for-launch"] != 4 || cs["waiting-for-nodes"] != 20 {
			return fmt.Errorf("want 4 running, 4 waiting-for-launch, 20 waiting-for-nodes; states %v", cs)
		}
		return nil
	})

	killed := c.ix.Kill9()
	// Submit while the forwarder still thinks the endpoint is up...
	early := c.submit(mixedKill9Tasks(100), 50)
	var detected time.Duration
	waitFor(t, 10*time.Second, func() error {
		v, err := c.endpoint()
		if err != nil {
			return err
		}
		if v.Connected {
			return fmt.Errorf("forwarder still shows %s connected", c.ep)
		}
		detected = time.Since(killed)
		return nil
	})
	t.Logf("INTERCHANGE-LOSS detection=%s threshold=%s interval=%s", ms(detected), c.threshold, c.interval)
	if limit := c.threshold + c.interval + slack; detected > limit {
		t.Errorf("forwarder saw the interchange gone after %s; want <= threshold + interval + slack = %s", detected, limit)
	}
	// ... and after it knows it is gone.
	late := c.submit(mixedKill9Tasks(100), 50)
	submitted := append(append([]string(nil), early...), late...)

	s := c.mustStatuses(submitted)
	for _, id := range submitted {
		if st := s[id].State; st != "received" && st != "waiting-for-endpoint" {
			t.Errorf("task %s submitted with the interchange down reads %q; want received or waiting-for-endpoint", id, st)
		}
	}
	for _, id := range late {
		if st := s[id].State; st != "waiting-for-endpoint" {
			t.Errorf("task %s submitted after the endpoint was declared lost reads %q; want waiting-for-endpoint", id, st)
		}
	}
	s = c.mustStatuses(inflight)
	for _, id := range inflight {
		if st := s[id].State; st != "waiting-for-endpoint" && !terminal(st) {
			t.Errorf("in-flight task %s reads %q after the endpoint was lost; want waiting-for-endpoint", id, st)
		}
	}
	if v, err := c.endpoint(); err != nil || v.Managers != 0 {
		t.Errorf("a lost endpoint still reports %d managers (%v); want 0", v.Managers, err)
	}

	c.ix.Restart()
	restarted := time.Now()
	c.waitEndpoint(30*time.Second, func(v endpointView) error {
		if !v.Connected {
			return fmt.Errorf("endpoint not connected again")
		}
		return nil
	})
	reconnected := time.Since(restarted)
	all := append(append([]string(nil), inflight...), submitted...)
	final := c.waitTerminal(all, 60*time.Second)
	recovered := time.Since(restarted)
	for _, id := range all {
		if f := final[id]; f.State != "success" {
			t.Errorf("task %s ended %s (error %q, attempts %d); want success", id, f.State, f.Error, f.Attempts)
		}
	}
	c.waitCapacity(2, 4)
	runs := executions(t, c, m1, m2)
	t.Logf("interchange restart: endpoint connected again after %s, all %d tasks success after %s; %d executions (%d duplicates)",
		ms(reconnected), len(all), ms(recovered), runs, runs-len(all))
	if runs < len(all) {
		t.Errorf("managers report %d executions for %d successful tasks", runs, len(all))
	}
	if lines := c.ix.GrepLog("interchange starting"); len(lines) != 2 {
		t.Errorf("interchange log shows %d starts, want 2", len(lines))
	}
	for _, m := range []*manager{m1, m2} {
		if len(m.GrepLog("interchange lost")) == 0 {
			t.Errorf("%s never logged that it lost the interchange", m.id)
		}
	}
}

// mixedKill9Tasks is noops, echos and short sleeps that all succeed.
func mixedKill9Tasks(n int) []task {
	out := make([]task, n)
	for i := range out {
		switch i % 4 {
		case 0, 1:
			out[i] = noop()
		case 2:
			out[i] = execTask("echo", fmt.Sprintf("k9-%d", i))
		default:
			out[i] = sleepTask("0.05")
		}
	}
	return out
}

// TestCancelRunningSleep cancels a running and a prefetched sleep on a
// one-worker manager; the worker must be free for the next task at once.
func TestCancelRunningSleep(t *testing.T) {
	c := newCluster(t, clusterOpts{endpoint: "cancel"})
	m := c.addManager("cancel-m", 1, -1) // prefetch defaults to workers: it holds 2
	c.waitCapacity(1, 1)

	ids := c.submit([]task{sleepTask("30"), sleepTask("30")}, 0)
	running, queued := ids[0], ids[1]
	waitFor(t, 15*time.Second, func() error {
		s, err := c.statuses(ids)
		if err != nil {
			return err
		}
		if s[running].State != "running" || s[queued].State != "waiting-for-launch" {
			return fmt.Errorf("states %s and %s; want running and waiting-for-launch", s[running].State, s[queued].State)
		}
		return nil
	})

	cancel := func(id string) time.Duration {
		t.Helper()
		start := time.Now()
		r := c.mustDo("DELETE", c.api()+"/v1/tasks/"+id, nil)
		var cv struct {
			TaskID    string `json:"task_id"`
			State     string `json:"state"`
			Cancelled *bool  `json:"cancelled"`
			Message   string `json:"message"`
		}
		if r.status != 200 || jsonInto(r.body, &cv) != nil || cv.State != "cancelled" || cv.Cancelled == nil || !*cv.Cancelled || cv.TaskID != id {
			t.Fatalf("DELETE a live task: %s; want 200 with state cancelled, cancelled true", r)
		}
		waitFor(t, 5*time.Second, func() error {
			v, err := c.getTask(id)
			if err != nil {
				return err
			}
			if v.State != "cancelled" {
				return fmt.Errorf("task %s reads %s", id, v.State)
			}
			return nil
		})
		return time.Since(start)
	}
	dq := cancel(queued)
	dr := cancel(running)
	t.Logf("CANCEL read cancelled after %s (prefetched) and %s (running)", ms(dq), ms(dr))
	if limit := 2*c.interval + slack; dr > limit || dq > limit {
		t.Errorf("cancel took %s / %s to read cancelled; want <= two intervals + slack = %s", dq, dr, limit)
	}

	// The worker must be free: a noop succeeds long before the 30s sleeps
	// would have ended.
	start := time.Now()
	next := c.submit([]task{noop()}, 0)[0]
	var v taskView
	if err := c.getJSON(c.api()+"/v1/tasks/"+next+"?wait=10s", &v); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("CANCEL next task on the freed worker: success after %s", ms(took))
	if v.State != "success" {
		t.Fatalf("noop after the cancel reads %s after %s; the cancelled sleep still holds the only worker", v.State, took)
	}
	if limit := 4*c.interval + slack; took > limit {
		t.Errorf("noop on the freed worker took %s; want <= %s", took, limit)
	}
	// The manager ran the cancel: it holds nothing and reported cancelled.
	waitFor(t, 5*time.Second, func() error {
		st, err := c.mgrStatus(m)
		if err != nil {
			return err
		}
		if st.Held != 0 || st.IdleWorkers != 1 || st.HeldResults != 0 {
			return fmt.Errorf("manager holds %d tasks, %d unacked results, %d idle workers; want 0, 0, 1", st.Held, st.HeldResults, st.IdleWorkers)
		}
		return nil
	})
	mm, err := c.metrics(m.base())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := metricValue(mm, "switchyard_manager_tasks_completed_total", `{state="cancelled"}`); n < 1 {
		t.Errorf(`manager switchyard_manager_tasks_completed_total{state="cancelled"} = %v; the running sleep was not stopped by the manager`, n)
	}
	// The cancelled tasks stay cancelled once the manager's results arrive.
	for _, id := range ids {
		if v, err := c.getTask(id); err != nil || v.State != "cancelled" {
			t.Errorf("task %s reads %q (%v) after the manager reported; want cancelled", id, v.State, err)
		}
	}

	// Cancelling a finished task: 200, state left as it is, and says so.
	before, err := c.getTask(next)
	if err != nil {
		t.Fatal(err)
	}
	r := c.mustDo("DELETE", c.api()+"/v1/tasks/"+next, nil)
	var cv struct {
		State     string `json:"state"`
		Cancelled *bool  `json:"cancelled"`
		Message   string `json:"message"`
	}
	if r.status != 200 || jsonInto(r.body, &cv) != nil {
		t.Fatalf("DELETE a finished task: %s; want 200", r)
	}
	if cv.State != "success" || cv.Cancelled == nil || *cv.Cancelled ||
		!strings.Contains(cv.Message, "already ended") || !strings.Contains(cv.Message, "success") {
		t.Errorf("DELETE a finished task answered %s; want state success, cancelled false and a message saying it already ended", r)
	}
	after, err := c.getTask(next)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != "success" || after.Error != before.Error || !sameTime(after.CompletedAt, before.CompletedAt) {
		t.Errorf("finished task changed by DELETE: %+v -> %+v", before, after)
	}
	// And cancelling a cancelled task is the same: left as it is.
	r = c.mustDo("DELETE", c.api()+"/v1/tasks/"+running, nil)
	if r.status != 200 || jsonInto(r.body, &cv) != nil || cv.State != "cancelled" || *cv.Cancelled || !strings.Contains(cv.Message, "already ended") {
		t.Errorf("DELETE a cancelled task: %s; want 200, cancelled false, already ended", r)
	}
}

// TestDetectionTimes kills a fresh manager 20 times and measures how long
// the interchange takes to drop it.
func TestDetectionTimes(t *testing.T) {
	c := newCluster(t, clusterOpts{endpoint: "detect"})
	const trials = 20
	var ds []time.Duration
	limit := c.threshold + 2*c.interval + 300*time.Millisecond
	for i := range trials {
		m := c.addManager(fmt.Sprintf("detect-%02d", i), 1, -1)
		// Kill it once the interchange has heard from it after registering,
		// at a different phase of its report interval in each trial.
		phase := time.Duration(i) * c.interval / trials
		var lastSeen time.Time
		waitFor(t, 5*time.Second, func() error {
			st, err := c.ixStatus()
			if err != nil {
				return err
			}
			mv, ok := st.manager(m.id)
			if !ok || !mv.LastSeen.After(mv.Registered) {
				return fmt.Errorf("interchange has not heard from %s since it registered", m.id)
			}
			if lastSeen.IsZero() {
				lastSeen = time.Now()
			}
			if time.Since(lastSeen) < phase {
				return fmt.Errorf("waiting for phase %s", phase)
			}
			return nil
		})
		killed := m.Kill9()
		reaped := time.Since(killed)
		var d time.Duration
		err := poll(10*time.Second, 2*time.Millisecond, func() error {
			st, err := c.ixStatus()
			if err != nil {
				return err
			}
			if st.lists(m.id) {
				return fmt.Errorf("interchange still lists %s %s after SIGKILL", m.id, time.Since(killed))
			}
			d = time.Since(killed)
			return nil
		})
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		ds = append(ds, d)
		if d > limit {
			t.Errorf("trial %d: manager %s dropped %s after SIGKILL; want <= threshold + 2 intervals + 300ms = %s", i, m.id, d, limit)
		}
		if d < c.threshold-c.interval-50*time.Millisecond {
			t.Logf("trial %d: %s dropped only %s after SIGKILL (process reaped after %s); interchange: %q",
				i, m.id, d, reaped, c.ix.GrepLog("manager lost", "manager="+m.id))
		}
	}
	med, p99, mx := durationStats(ds)
	mn := slices.Min(ds)
	t.Logf("DETECTION manager median=%s p99=%s threshold=%s interval=%s min=%s max=%s trials=%d",
		ms(med), ms(p99), c.threshold, c.interval, ms(mn), ms(mx), trials)
	// A manager reports every interval, so at the kill it had been silent
	// for at most about one interval: detection lies in
	// [threshold - interval, threshold + housekeeping tick].
	if early := c.threshold - c.interval - 50*time.Millisecond; mn < early {
		t.Errorf("a manager was dropped %s after SIGKILL, earlier than threshold - interval - 50ms = %s: declared lost too early", mn, early)
	}
	if want := c.threshold + c.interval; med > want {
		t.Errorf("median detection %s; want <= threshold + interval = %s", med, want)
	}
	if lost := c.ix.GrepLog("manager lost"); len(lost) != trials {
		t.Errorf("interchange logged %d \"manager lost\" lines, want %d", len(lost), trials)
	}
	if st, err := c.ixStatus(); err != nil || st.Managers != 0 {
		t.Errorf("interchange still has %d managers (%v)", st.Managers, err)
	}
}

func jsonInto(b []byte, v any) error { return json.Unmarshal(b, v) }

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// lastHeartbeat is when the forwarder last heard from the endpoint.
func lastHeartbeat(t *testing.T, c *cluster) time.Time {
	t.Helper()
	v, err := c.endpoint()
	if err != nil {
		t.Fatal(err)
	}
	if v.LastHeartbeat == nil {
		t.Fatalf("endpoint %s has no last_heartbeat", c.ep)
	}
	return *v.LastHeartbeat
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
