package interchange_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/manager"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Tests of docs/contract.md, "Scheduling".

// realManager starts a manager of e's interchange; prefetch < 0 leaves it
// to the interchange, as a manager started without --prefetch.
func (e *env) realManager(t *testing.T, id string, workers, prefetch int) *testutil.Manager {
	t.Helper()
	return testutil.StartManager(t, manager.Options{Interchange: e.ix.ManagersAddr(), Credentials: e.ix.ManagerCredentials(),
		ManagerID: id, Workers: workers, Prefetch: prefetch})
}

// pushSpecs sends tasks of owner from the fake forwarder.
func (e *env) pushSpecs(t *testing.T, owner string, specs ...taskspec.Spec) []messages.TaskID {
	t.Helper()
	b := &messages.TaskBatch{}
	ids := make([]messages.TaskID, len(specs))
	for i, s := range specs {
		ids[i] = testutil.NewTaskID()
		b.Tasks = append(b.Tasks, messages.Task{ID: ids[i], Attempt: 1, Payload: s.Encode(), Owner: owner})
	}
	e.fwd.Send(t, ep, b)
	return ids
}

func repeat(n int, s taskspec.Spec) []taskspec.Spec {
	out := make([]taskspec.Spec, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func sleepSpec(sec float64) taskspec.Spec {
	return taskspec.Spec{Kind: taskspec.KindSleep, Args: []string{strconv.FormatFloat(sec, 'f', -1, 64)}}
}

// waitResults waits until the fake forwarder has a result for each of ids
// and returns the first of each.
func (e *env) waitResults(t *testing.T, ids []messages.TaskID, timeout time.Duration) map[messages.TaskID]messages.Result {
	t.Helper()
	want := map[messages.TaskID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[messages.TaskID]messages.Result{}
	testutil.WaitFor(t, timeout, func() error {
		for _, r := range e.fwd.Results(ep) {
			if _, ok := got[r.ID]; !ok && want[r.ID] {
				got[r.ID] = r
			}
		}
		if len(got) < len(ids) {
			return fmt.Errorf("%d of %d results", len(got), len(ids))
		}
		return nil
	})
	return got
}

func managerView(ix *testutil.Interchange, id string) (interchange.ManagerView, bool) {
	for _, m := range ix.Status().ManagerList {
		if m.ID == id {
			return m, true
		}
	}
	return interchange.ManagerView{}, false
}

// sleepSeconds is the run time of the tasks of
// TestJoiningManagerTakesUnstartedTasks; SWITCHYARD_SCHED_SLEEP=6 runs the
// full-size case.
func sleepSeconds(t *testing.T) float64 {
	if v := os.Getenv("SWITCHYARD_SCHED_SLEEP"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			t.Fatalf("SWITCHYARD_SCHED_SLEEP=%q: want seconds", v)
		}
		return f
	}
	return 2
}

// noneWaited reports the first task of got that started after another
// had ended: it waited for that one's worker.
func noneWaited(got map[messages.TaskID]messages.Result) error {
	firstEnd := int64(-1)
	for _, r := range got {
		if firstEnd < 0 || r.Finished < firstEnd {
			firstEnd = r.Finished
		}
	}
	for _, r := range got {
		if r.Started >= firstEnd {
			return fmt.Errorf("task %s started %s after the first of them ended: it waited for a worker another ran one on",
				r.ID, time.Duration(r.Started-firstEnd).Round(time.Millisecond))
		}
	}
	return nil
}

// 8 sleeps on one 4-worker manager, a second joining 1 s later (once the
// first 4 started): the second takes the 4 the first holds unstarted, so
// every task starts before the first ends and the last ends about one run
// (plus the join) after the start, not two.
func TestJoiningManagerTakesUnstartedTasks(t *testing.T) {
	d := sleepSeconds(t)
	e := start(t, interchange.Options{}, true)
	e.realManager(t, "m1", 4, -1)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := e.ix.Status(); st.Managers != 1 {
			return fmt.Errorf("%d managers", st.Managers)
		}
		return nil
	})
	begin := time.Now()
	ids := e.pushSpecs(t, "alice", repeat(8, sleepSpec(d))...)
	// Before any task ended the interchange lets it hold as many as its
	// workers beyond them: all 8.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if m, _ := managerView(e.ix, "m1"); m.Outstanding != 8 {
			return fmt.Errorf("m1 holds %d", m.Outstanding)
		}
		running := 0
		for _, d := range e.fwd.Deltas(ep) {
			if d.Code == messages.Running {
				running++
			}
		}
		if running < 4 {
			return fmt.Errorf("%d running", running)
		}
		return nil
	})
	// The second manager joins 1 s after the tasks were submitted (the
	// scenario's timing, not a wait for a condition).
	<-time.After(time.Until(begin.Add(time.Second)))
	joinAt := time.Now()
	e.realManager(t, "m2", 4, -1)
	got := e.waitResults(t, ids, time.Duration(4*d*float64(time.Second))+30*time.Second)
	var last int64
	for _, r := range got {
		if r.Code != messages.Success || r.Attempt != 1 {
			t.Errorf("task %s: %s attempt %d (%s)", r.ID, r.Code.State(), r.Attempt, r.Error)
		}
		last = max(last, r.Finished)
	}
	t.Logf("8 x sleep %gs, 4+4 workers, second manager after %s: makespan %s (one run %gs, two %gs)",
		d, joinAt.Sub(begin).Round(time.Millisecond), time.Duration(last-begin.UnixNano()).Round(time.Millisecond), d, 2*d)
	if err := noneWaited(got); err != nil {
		t.Errorf("%v: the tasks held by m1 did not move to m2", err)
	}
	if n := e.metric(t, "tasks_stolen_total"); n != 4 {
		t.Errorf("tasks_stolen_total %v, want 4", n)
	}
}

// Tasks log their own start; while a manager with idle workers keeps
// taking tasks another holds and has not started, each task starts once,
// keeps its attempt, and its one result comes from where it ran.
func TestStealingNeverRunsATaskTwice(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "starts")
	// The override holds: m1 keeps 36 beyond its 4 workers, so most wait
	// there unstarted for others to take.
	m1 := e.realManager(t, "m1", 4, 36)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := e.ix.Status(); st.Managers != 1 {
			return fmt.Errorf("%d managers", st.Managers)
		}
		return nil
	})
	const n = 60
	var specs []taskspec.Spec
	for i := range n {
		specs = append(specs, taskspec.Spec{Kind: taskspec.KindExec,
			Args: []string{"/bin/sh", "-c", fmt.Sprintf("echo t%d >> %s; sleep 0.1", i, logFile)}})
	}
	ids := e.pushSpecs(t, "alice", specs...)
	testutil.WaitFor(t, 10*time.Second, func() error {
		m, _ := managerView(e.ix, "m1")
		if m.Outstanding != 40 || m.Prefetch != 36 || m.PrefetchAdaptive {
			return fmt.Errorf("m1 holds %d, prefetch %d (adaptive %v); want 40, 36, explicit", m.Outstanding, m.Prefetch, m.PrefetchAdaptive)
		}
		return nil
	})
	e.realManager(t, "m2", 2, -1)
	e.realManager(t, "m3", 1, 0)
	got := e.waitResults(t, ids, 60*time.Second)
	for _, r := range got {
		if r.Code != messages.Success || r.Attempt != 1 {
			t.Errorf("task %s: %s attempt %d (%s)", r.ID, r.Code.State(), r.Attempt, r.Error)
		}
	}
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, line := range strings.Fields(string(raw)) {
		seen[line]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("t%d", i)]; c != 1 {
			t.Errorf("task t%d started %d times", i, c)
		}
	}
	for _, id := range ids {
		if rs := e.upResults(id); len(rs) != 1 {
			t.Errorf("task %s: %d results up", id, len(rs))
		}
	}
	stolen := e.metric(t, "tasks_stolen_total")
	given := testutil.Metric(t, m1.Reg, "switchyard_manager_tasks_given_back_total")
	t.Logf("%d tasks: %v taken back from m1 (it gave back %v)", n, stolen, given)
	if stolen == 0 || stolen != given {
		t.Errorf("tasks_stolen_total %v, m1 gave back %v; want equal and more than 0", stolen, given)
	}
	if m, _ := managerView(e.ix, "m1"); m.Prefetch != 36 || m.PrefetchAdaptive {
		t.Errorf("m1's --prefetch 36 not honoured: %+v", m)
	}
}

// A manager that leaves prefetch to the interchange holds as many tasks as
// its workers beyond them until it has run some; then deep for tasks that
// take no time, none for long ones. One that registers without the flag
// (an older manager) holds exactly its workers plus its prefetch.
func TestAdaptivePrefetchFollowsDurations(t *testing.T) {
	e := start(t, interchange.Options{}, true)
	fast := testutil.NewDealer(t, "fake manager fast", "fast", e.ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true})
	fast.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "fast", Workers: 4, Prefetch: 1000,
		AdaptivePrefetch: true, ProtocolVersion: messages.Version})
	fast.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	fast.SetHeartbeat(testutil.Interval)
	e.push(t, 200, 1)
	count := func(p *testutil.Peer, want int) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() error {
			if n := len(p.Tasks("")); n != want {
				return fmt.Errorf("manager has %d tasks, want %d", n, want)
			}
			return nil
		})
	}
	count(fast, 8)
	// Results of tasks that took no time: it may hold up to its ceiling.
	now := time.Now().UnixNano()
	b := &messages.ResultBatch{}
	for _, x := range fast.Tasks("")[:4] {
		b.Results = append(b.Results, messages.Result{ID: x.ID, Attempt: 1, Code: messages.Success, Started: now, Finished: now})
	}
	fast.Send(t, "", b)
	count(fast, 200)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if m, _ := managerView(e.ix, "fast"); !m.PrefetchAdaptive || m.Prefetch != 1000 {
			return fmt.Errorf("fast manager: %+v, want adaptive prefetch 1000", m)
		}
		return nil
	})

	slow := testutil.NewDealer(t, "fake manager slow", "slow", e.ix.ManagersAddr(), testutil.PeerOptions{AckTasks: true})
	slow.Send(t, "", &messages.Registration{Role: messages.RoleManager, ID: "slow", Workers: 2, Prefetch: 1000,
		AdaptivePrefetch: true, ProtocolVersion: messages.Version})
	slow.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	slow.SetHeartbeat(testutil.Interval)
	// The fast one is full now (it holds 196 beyond 4 workers), so these
	// go to the slow one: 2 + 2 before anything ended.
	e.push(t, 10, 1)
	count(slow, 4)
	now = time.Now().UnixNano()
	b = &messages.ResultBatch{}
	for _, x := range slow.Tasks("")[:2] {
		b.Results = append(b.Results, messages.Result{ID: x.ID, Attempt: 1, Code: messages.Success, Started: now - int64(5*time.Second), Finished: now})
	}
	slow.Send(t, "", b)
	// 5 s tasks: nothing beyond its workers, so it gets none now (it
	// still holds 2 unstarted) until two more end.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if m, _ := managerView(e.ix, "slow"); m.Prefetch != 0 || m.TaskSeconds < 4 {
			return fmt.Errorf("slow manager: %+v, want prefetch 0", m)
		}
		return nil
	})
	slow.Sync(t, "")
	slow.Sync(t, "")
	if n := len(slow.Tasks("")); n != 4 {
		t.Errorf("slow manager received %d tasks, want 4", n)
	}

	// An older manager: its prefetch is explicit.
	old := e.manager(t, "old", 2, 1)
	e.push(t, 10, 1)
	count(old, 3)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if m, ok := managerView(e.ix, "old"); !ok || m.PrefetchAdaptive || m.Prefetch != 1 {
			return fmt.Errorf("old manager: %+v, want explicit prefetch 1", m)
		}
		return nil
	})
}

// Queued tasks wait per owner and dispatch takes owners in turn: a user
// who comes late after another's backlog gets the next free worker.
func TestOwnersTakeTurns(t *testing.T) {
	e := start(t, interchange.Options{Shares: map[string]float64{"carol": 3}}, true)
	e.pushSpecs(t, "alice", repeat(100, taskspec.Spec{Kind: taskspec.KindNoop})...)
	e.pushSpecs(t, "bob", repeat(10, taskspec.Spec{Kind: taskspec.KindNoop})...)
	testutil.WaitFor(t, 5*time.Second, func() error {
		st := e.ix.Status()
		if st.QueuedByOwner["alice"] != 100 || st.QueuedByOwner["bob"] != 10 {
			return fmt.Errorf("queued by owner %v", st.QueuedByOwner)
		}
		return nil
	})
	if v := e.metric(t, "queued_tasks", "owner", "bob"); v != 10 {
		t.Errorf("switchyard_interchange_queued_tasks{owner=bob} = %v, want 10", v)
	}
	m := e.manager(t, "m1", 4, 0)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(m.Tasks("")); n != 4 {
			return fmt.Errorf("manager has %d tasks", n)
		}
		return nil
	})
	owners := func(ts []messages.Task) map[string]int {
		c := map[string]int{}
		for _, x := range ts {
			c[x.Owner]++
		}
		return c
	}
	if c := owners(m.Tasks("")); c["alice"] != 2 || c["bob"] != 2 {
		t.Errorf("first 4 tasks by owner %v, want 2 of alice's and 2 of bob's", c)
	}
	// carol, weighing 3, gets 3 of each 4 turns while all three wait.
	e.pushSpecs(t, "carol", repeat(40, taskspec.Spec{Kind: taskspec.KindNoop})...)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if st := e.ix.Status(); st.QueuedByOwner["carol"] != 40 {
			return fmt.Errorf("queued by owner %v", st.QueuedByOwner)
		}
		return nil
	})
	m2 := e.manager(t, "m2", 20, 0)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := len(m2.Tasks("")); n != 20 {
			return fmt.Errorf("manager has %d tasks", n)
		}
		return nil
	})
	c := owners(m2.Tasks(""))
	if c["carol"] < 11 || c["carol"] > 13 {
		t.Errorf("20 tasks among alice, bob and carol (weight 3) by owner %v, want carol about 12", c)
	}
}

// User A's long backlog of short sleeps, then user B's few: B's first task
// starts within a fraction of A's backlog, not after it.
func TestLateUserStartsSoon(t *testing.T) {
	nA := 4000
	if v := os.Getenv("SWITCHYARD_SCHED_BACKLOG"); v != "" {
		nA, _ = strconv.Atoi(v)
	}
	e := start(t, interchange.Options{}, true)
	e.realManager(t, "m1", 4, -1)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := e.ix.Status(); st.Managers != 1 {
			return fmt.Errorf("%d managers", st.Managers)
		}
		return nil
	})
	var aIDs []messages.TaskID
	for sent := 0; sent < nA; sent += 5000 {
		aIDs = append(aIDs, e.pushSpecs(t, "alice", repeat(min(5000, nA-sent), sleepSpec(0.001))...)...)
	}
	// B submits once A's work is under way.
	testutil.WaitFor(t, 20*time.Second, func() error {
		if len(e.fwd.Results(ep)) < 20 {
			return fmt.Errorf("%d results", len(e.fwd.Results(ep)))
		}
		return nil
	})
	bAt := time.Now()
	bIDs := e.pushSpecs(t, "bob", repeat(10, sleepSpec(0.1))...)
	got := e.waitResults(t, bIDs, 60*time.Second)
	first := int64(-1)
	var waits []time.Duration
	for _, r := range got {
		if first < 0 || r.Started < first {
			first = r.Started
		}
		waits = append(waits, time.Duration(r.Started-bAt.UnixNano()))
	}
	slices.Sort(waits)
	wait := time.Duration(first - bAt.UnixNano())
	aDone := 0
	for _, r := range e.fwd.Results(ep) {
		if r.Finished <= first && r.Started > 0 {
			aDone++
		}
	}
	t.Logf("alice %d x sleep 0.001, then bob 10 x sleep 0.1 on 4 workers: bob's first started %s after he submitted (median %s, last %s); alice had %d done by then",
		nA, wait.Round(time.Millisecond), waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond), aDone)
	if wait > time.Second {
		t.Errorf("bob's first task started %s after he submitted, want within a second", wait)
	}
	if aDone > nA/2 {
		t.Errorf("alice had %d of %d done before bob's first started: bob waited behind her", aDone, nA)
	}
	e.waitResults(t, aIDs, 120*time.Second)
}

// mixSleep is the run time of the long tasks of TestMixedTasksMakespan;
// SWITCHYARD_SCHED_MIX_SLEEP=5 runs the full-size case.
func mixSleep(t *testing.T) float64 {
	if v := os.Getenv("SWITCHYARD_SCHED_MIX_SLEEP"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			t.Fatalf("SWITCHYARD_SCHED_MIX_SLEEP=%q: want seconds", v)
		}
		return f
	}
	return 3
}

// 10 sleeps among 10,000 no-ops on two 8-worker managers: no sleep waits
// for another's worker, so the last task ends about one sleep after the
// last sleep was reached in the queue, close to the bound max(total run
// time / workers, longest task); the log says how close. (The no-ops all
// run within the first sleep's run, even under the race detector.)
func TestMixedTasksMakespan(t *testing.T) {
	d := mixSleep(t)
	e := start(t, interchange.Options{}, true)
	e.realManager(t, "m1", 8, -1)
	e.realManager(t, "m2", 8, -1)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := e.ix.Status(); st.Managers != 2 {
			return fmt.Errorf("%d managers", st.Managers)
		}
		return nil
	})
	var specs []taskspec.Spec
	var isSleep []bool
	for i := range 10_000 {
		specs = append(specs, taskspec.Spec{Kind: taskspec.KindNoop})
		isSleep = append(isSleep, false)
		if i%1000 == 500 {
			specs = append(specs, sleepSpec(d))
			isSleep = append(isSleep, true)
		}
	}
	begin := time.Now()
	var ids []messages.TaskID
	for len(specs) > 0 {
		n := min(len(specs), 2000)
		ids = append(ids, e.pushSpecs(t, "alice", specs[:n]...)...)
		specs = specs[n:]
	}
	var sleepIDs []messages.TaskID
	for i, id := range ids {
		if isSleep[i] {
			sleepIDs = append(sleepIDs, id)
		}
	}
	got := e.waitResults(t, ids, time.Duration(4*d*float64(time.Second))+60*time.Second)
	var last int64
	var work, longest time.Duration
	for _, r := range got {
		if r.Code != messages.Success {
			t.Fatalf("task %s: %s (%s)", r.ID, r.Code.State(), r.Error)
		}
		last = max(last, r.Finished)
		run := time.Duration(r.Finished - r.Started)
		work += run
		longest = max(longest, run)
	}
	bound := max(work/16, longest)
	makespan := time.Duration(last - begin.UnixNano())
	t.Logf("10 x sleep %gs + 10,000 noops on 2 x 8 workers: makespan %s, bound %s (%.1f%% over)",
		d, makespan.Round(time.Millisecond), bound.Round(time.Millisecond), 100*(float64(makespan)/float64(bound)-1))
	sleeps := map[messages.TaskID]messages.Result{}
	for _, id := range sleepIDs {
		sleeps[id] = got[id]
	}
	if err := noneWaited(sleeps); err != nil {
		t.Errorf("sleeps: %v", err)
	}
}

// User A's backlog (SWITCHYARD_SCHED_NOOPS=1000000: that many no-ops, the
// full size), then user B's 10 short sleeps on two 8-worker managers:
// each of B's starts before A's backlog is done and none waits for another
// of B's (the log has how soon each started).
func TestLateUserStartsSoonBehindNoops(t *testing.T) {
	// By default alice's backlog is 40,000 sleeps of 1 ms, so it lasts
	// seconds even where the race detector slows the loop down as much as
	// it does the store, and bob's sleeps are 0.5 s, so one that waited
	// behind alice's tasks is told apart from one that waited for another
	// of his; at full size they are 0.1 s, as measured.
	nA, aSpec, bSleep := 40_000, sleepSpec(0.001), 0.5
	if v := os.Getenv("SWITCHYARD_SCHED_NOOPS"); v != "" {
		nA, _ = strconv.Atoi(v)
		aSpec, bSleep = taskspec.Spec{Kind: taskspec.KindNoop}, 0.1
	}
	e := start(t, interchange.Options{}, true)
	e.realManager(t, "m1", 8, -1)
	e.realManager(t, "m2", 8, -1)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := e.ix.Status(); st.Managers != 2 {
			return fmt.Errorf("%d managers", st.Managers)
		}
		return nil
	})
	// The interchange is handed what the forwarder's --max-inflight
	// (100,000 by default) would hand it, within its pause threshold; the
	// rest of a larger backlog would wait at the forwarder, per owner,
	// where bob's tasks do not queue behind it.
	held := min(nA, servingstate.DefaultPauseQueued-5000)
	for sent := 0; sent < held; sent += 5000 {
		e.pushSpecs(t, "alice", repeat(min(5000, held-sent), aSpec)...)
	}
	// All of it taken in, so bob's batch does not wait behind hers on
	// the way.
	testutil.WaitFor(t, 60*time.Second, func() error {
		acked := 0
		for _, r := range e.fwd.All() {
			if a, ok := r.Msg.(*messages.Ack); ok {
				acked += len(a.IDs)
			}
		}
		if acked < held {
			return fmt.Errorf("%d of %d tasks taken in", acked, held)
		}
		return nil
	})
	testutil.WaitFor(t, 60*time.Second, func() error {
		if n := len(e.fwd.Results(ep)); n < 1000 {
			return fmt.Errorf("%d results", n)
		}
		return nil
	})
	bAt := time.Now()
	bIDs := e.pushSpecs(t, "bob", repeat(10, sleepSpec(bSleep))...)
	got := e.waitResults(t, bIDs, 60*time.Second)
	if n := e.fwd.Count(func(r testutil.Received) bool { return r.Msg != nil && r.Msg.Type() == messages.TypeNack }); n > 0 {
		t.Errorf("%d task batches refused", n)
	}
	var waits []time.Duration
	for _, r := range got {
		waits = append(waits, time.Duration(r.Started-bAt.UnixNano()))
	}
	slices.Sort(waits)
	t.Logf("alice %d tasks, then bob 10 x sleep %g on 2 x 8 workers: bob's started after he submitted: median %s, last %s (all: %v)",
		nA, bSleep, waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond), waits)
	lastStart := bAt.Add(waits[len(waits)-1]).UnixNano()
	isB := map[messages.TaskID]bool{}
	for _, id := range bIDs {
		isB[id] = true
	}
	aDone := 0
	for _, r := range e.fwd.Results(ep) {
		if !isB[r.ID] && r.Finished <= lastStart {
			aDone++
		}
	}
	t.Logf("alice had %d of %d done when bob's last started", aDone, held)
	if aDone >= held {
		t.Errorf("alice had all %d done before bob's last task started: he waited behind her", held)
	}
	// His tasks have not run before, so each manager takes no more of
	// them than it has workers: none waits for another of his.
	if err := noneWaited(got); err != nil {
		t.Errorf("bob: %v", err)
	}
}
