package interchange

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

func TestShares(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		free  []int
		start int
		want  []int
	}{
		{"nothing queued", 0, []int{4, 4}, 0, []int{0, 0}},
		{"no managers", 5, nil, 0, []int{}},
		{"even split", 8, []int{10, 10}, 0, []int{4, 4}},
		{"remainder from start", 5, []int{10, 10}, 1, []int{2, 3}},
		{"capped by free slots, rest to others", 10, []int{1, 10, 10}, 0, []int{1, 5, 4}},
		{"more queued than all slots", 100, []int{3, 5}, 0, []int{3, 5}},
		{"full managers get nothing", 6, []int{0, 6, 0}, 0, []int{0, 6, 0}},
		{"fewer tasks than managers", 2, []int{5, 5, 5, 5}, 3, []int{1, 0, 0, 1}},
		{"four equal managers, big queue", 4000, []int{2000, 2000, 2000, 2000}, 0, []int{1000, 1000, 1000, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := shares(tc.n, tc.free, tc.start)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("shares(%d, %v, %d) = %v, want %v", tc.n, tc.free, tc.start, got, tc.want)
			}
			sum := 0
			for i, g := range got {
				sum += g
				if g > tc.free[i] {
					t.Fatalf("manager %d got %d for %d free slots", i, g, tc.free[i])
				}
			}
			if sum > tc.n {
				t.Fatalf("handed out %d of %d", sum, tc.n)
			}
		})
	}
}

func TestAfterLoss(t *testing.T) {
	for _, tc := range []struct {
		attempt    uint32
		maxRetries int
		next       uint32
		fail       bool
	}{
		{1, 2, 2, false},
		{2, 2, 3, false},
		{3, 2, 4, true},
		{1, 0, 2, true},
	} {
		next, fail := afterLoss(tc.attempt, tc.maxRetries)
		if next != tc.next || fail != tc.fail {
			t.Errorf("afterLoss(%d, %d) = %d, %v; want %d, %v", tc.attempt, tc.maxRetries, next, fail, tc.next, tc.fail)
		}
	}
}

func TestPrefetchDepth(t *testing.T) {
	cases := []struct {
		name     string
		workers  int
		rtt, dur float64
		haveDur  bool
		ceiling  int
		want     int
	}{
		{"nothing measured: as many as workers", 4, 0, 0, false, 1000, 4},
		{"nothing measured, low ceiling", 4, 0, 0, false, 2, 2},
		{"no-ops take no time: the ceiling", 8, 0.001, 0, true, 1000, 1000},
		{"short tasks: deep", 8, 0.002, 0.0001, true, 1000, 960},
		{"short tasks past the ceiling", 8, 0.01, 0.00001, true, 1000, 1000},
		{"1 ms tasks, 0.5 ms trips", 4, 0.0005, 0.001, true, 1000, 24},
		{"10 ms tasks", 4, 0.001, 0.01, true, 1000, 3},
		{"100 ms tasks", 4, 0.001, 0.1, true, 1000, 0},
		{"long tasks: none", 4, 0.001, 6, true, 1000, 0},
		{"no trip measured yet", 4, 0, 0.5, true, 1000, 0},
	}
	for _, tc := range cases {
		if got := prefetchDepth(tc.workers, tc.rtt, tc.dur, tc.haveDur, tc.ceiling); got != tc.want {
			t.Errorf("%s: prefetchDepth(%d, %v, %v, %v, %d) = %d, want %d", tc.name, tc.workers, tc.rtt, tc.dur, tc.haveDur, tc.ceiling, got, tc.want)
		}
	}
}

// The queue serves owners in turn by weight, each in its own order; a
// task put back goes first again, and an owner coming late starts level.
func TestQueueTakesOwnersInTurn(t *testing.T) {
	var l loop
	weights := map[string]float64{"carol": 3}
	l.q.weight = func(o owner) float64 {
		if w, ok := weights[ownerName(o)]; ok {
			return w
		}
		return 1
	}
	var names owners
	add := func(who string, n int) []*itask {
		var ts []*itask
		for i := range n {
			tk := &itask{owner: names.intern(who), seq: uint64(i)}
			l.enqueueBack(tk, time.Now())
			ts = append(ts, tk)
		}
		return ts
	}
	take := func(n int) string {
		var out []byte
		for range n {
			tk := l.pop(&l.q, nil, new(int))
			if tk == nil {
				out = append(out, '.')
				continue
			}
			out = append(out, ownerName(tk.owner)[0])
		}
		return string(out)
	}
	add("alice", 100)
	if got := take(3); got != "aaa" {
		t.Fatalf("one owner: %q", got)
	}
	bob := add("bob", 3)
	if got := take(4); got != "baba" && got != "abab" {
		t.Fatalf("alice and bob: %q, want them in turn", got)
	}
	// bob's last task is cancelled while queued: skipped, and bob retired.
	l.unqueue(bob[2])
	if got := take(2); got != "aa" {
		t.Fatalf("after bob's last was cancelled: %q", got)
	}
	add("carol", 40)
	got := take(40)
	if c := strings.Count(got, "c"); c != 30 {
		t.Errorf("carol (weight 3) got %d of 40 turns, want 30: %q", c, got)
	}
	// A task put back goes first.
	tk := l.pop(&l.q, nil, new(int))
	l.enqueueFront(tk)
	if again := l.pop(&l.q, nil, new(int)); again != tk {
		t.Errorf("a task put back was not taken first")
	}
	counts := map[string]int{}
	l.q.byOwner(counts)
	if counts["alice"]+counts["carol"] != l.queued || l.queued != l.q.n {
		t.Errorf("counts %v, queued %d, n %d", counts, l.queued, l.q.n)
	}
	for l.pop(&l.q, nil, new(int)) != nil {
	}
	if l.queued != 0 || len(l.q.active) != 0 || len(l.q.owners) != 0 {
		t.Errorf("drained queue: queued %d, %d active, %d owners", l.queued, len(l.q.active), len(l.q.owners))
	}
}

// A manager that leaves its prefetch to us takes long tasks (an owner's
// whose tasks run long, or have not run once it ran some) only up to its
// workers plus their own prefetch; meanwhile it gets the others' tasks,
// and the long owner keeps her turn for when it has room.
func TestLongTasksCapped(t *testing.T) {
	var l loop
	var names owners
	add := func(who string, n int) {
		for range n {
			l.enqueueBack(&itask{owner: names.intern(who)}, time.Now())
		}
	}
	m := &manager{reg: messages.Registration{Workers: 4, Prefetch: 1000}, pf: prefetch{adaptive: true, rtt: 0.001}}
	take := func(n int) string {
		var out []byte
		long := m.nlong
		for range n {
			tk := l.pop(&l.q, m, &long)
			if tk == nil {
				out = append(out, '.')
				continue
			}
			if tk.long {
				m.nlong++
			}
			out = append(out, ownerName(tk.owner)[0])
		}
		return string(out)
	}
	// Neither has run a task, nor has the manager: it holds what its own
	// prefetch allows.
	add("alice", 10)
	add("bob", 10)
	if m.longCap(l.q.runOf(names.intern("alice"))) >= 0 {
		t.Fatalf("a manager that ran nothing caps tasks not run yet")
	}
	// Once it has run some (its prefetch sized by them), tasks of owners
	// who ran none are long.
	m.pf.known = true
	if got := take(6); got != "abab.." {
		t.Fatalf("nothing run yet, 4 workers: %q, want 4 then none", got)
	}
	// alice's tasks take no time, bob's a second.
	ran := func(who string, d time.Duration) {
		l.q.runOf(names.intern(who)).ranFor(&messages.Result{Started: 1, Finished: 1 + int64(d)})
	}
	ran("alice", 0)
	ran("bob", time.Second)
	if got := take(3); got != "aaa" {
		t.Fatalf("bob's long, the manager full of long tasks: %q, want alice's", got)
	}
	// One of bob's ends there: he is next, for one.
	m.nlong--
	if got := take(3); got != "baa" {
		t.Fatalf("room for one long task: %q, want bob's first", got)
	}
	// An explicit prefetch is honoured as it is; bob has the turns he
	// was passed over for first.
	m.pf.adaptive = false
	if got := take(8); got != "bbbbabab" {
		t.Fatalf("explicit prefetch: %q", got)
	}
}
