package taskstore_test

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

// storeURLs give the --store value of a scheme whose state lives outside
// the state dir (a database): one per dir, so a reopen finds its state.
var storeURLs = map[string]func(t *testing.T, dir string) string{}

// opener opens a fresh store of one implementation, or reopens the one in
// dir; the suite runs for every registered scheme.
func open(t *testing.T, scheme, dir string) taskstore.Store {
	t.Helper()
	url := scheme
	if u, ok := storeURLs[scheme]; ok {
		url = u(t, dir)
	}
	s, _, err := taskstore.Open(taskstore.Config{URL: url, Dir: dir, Log: logx.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// durable says whether a scheme's state survives Close and Open.
func durable(scheme string) bool { return scheme != "memory" }

func newTask(seq uint64, owner, ep string) *taskstore.Task {
	return &taskstore.Task{ID: messages.TaskID(uuid.New()), Seq: seq, Endpoint: ep, Owner: owner, Kind: "noop",
		Spec: []byte(`{"kind":"noop"}`), State: messages.StateReceived, CreatedAt: time.Now().UnixNano()}
}

func end(t *taskstore.Task, st messages.TaskState, result string) {
	t.State, t.Result, t.CompletedAt = st, []byte(result), time.Now().UnixNano()
	t.Error = ""
	if st == messages.StateFailed {
		t.Error = "boom"
	}
}

func get(t *testing.T, s taskstore.Store, keys ...taskstore.Key) ([]taskstore.Task, []bool) {
	t.Helper()
	out, found := make([]taskstore.Task, len(keys)), make([]bool, len(keys))
	if err := s.Get(keys, out, found); err != nil {
		t.Fatal(err)
	}
	return out, found
}

func TestConformance(t *testing.T) {
	schemes := taskstore.Schemes()
	for _, want := range []string{"pebble", "memory", "postgres"} {
		if !slices.Contains(schemes, want) {
			t.Fatalf("%s store not registered: %v", want, schemes)
		}
	}
	for _, scheme := range schemes {
		t.Run(scheme, func(t *testing.T) {
			t.Run("tasks", func(t *testing.T) { testTasks(t, scheme) })
			t.Run("list", func(t *testing.T) { testList(t, scheme) })
			t.Run("prune", func(t *testing.T) { testPrune(t, scheme) })
			t.Run("tokens and endpoints", func(t *testing.T) { testAccess(t, scheme) })
			t.Run("concurrent", func(t *testing.T) { testConcurrent(t, scheme) })
		})
	}
}

// Add, complete (async and now), requeue, get, census and recovery.
func testTasks(t *testing.T, scheme string) {
	dir := t.TempDir()
	s := open(t, scheme, dir)
	ts := []*taskstore.Task{newTask(1, "alice", "ep"), newTask(2, "bob", "ep"), newTask(3, "alice", "ep2"), newTask(4, "", "ep")}
	if err := s.Add(ts); err != nil {
		t.Fatal(err)
	}
	out, found := get(t, s, taskstore.KeyOf(ts[0]), taskstore.Key{ID: messages.TaskID(uuid.New()), Seq: 99})
	if bySeq, ok := get(t, s, taskstore.Key{Seq: ts[1].Seq}); !ok[0] || bySeq[0].ID != ts[1].ID {
		t.Fatalf("get by seq alone: %+v %v", bySeq[0], ok[0])
	}
	if !found[0] || found[1] || out[0].Owner != "alice" || out[0].State != messages.StateReceived || string(out[0].Spec) != `{"kind":"noop"}` {
		t.Fatalf("get after add: %+v %v", out[0], found)
	}
	end(ts[0], messages.StateSuccess, `"ok"`)
	end(ts[1], messages.StateFailed, `{"exit_code":3}`)
	done := make(chan error, 1)
	s.Complete(ts[:2], func(err error) { done <- err })
	// The caller may reuse its tasks once Complete returns.
	ts0 := *ts[0]
	ts[0].Result = []byte("changed after Complete")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	*ts[0] = ts0
	end(ts[2], messages.StateCancelled, "")
	if err := s.CompleteNow(ts[2:3]); err != nil {
		t.Fatal(err)
	}
	ts[3].State, ts[3].Attempts = messages.StateWaitingForEndpoint, 2
	s.Requeue(ts[3:])
	// A Complete with nothing of its own still waits for earlier writes.
	s.Complete(nil, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	check := func(s taskstore.Store) {
		t.Helper()
		out, found := get(t, s, taskstore.KeyOf(ts[0]), taskstore.KeyOf(ts[1]), taskstore.KeyOf(ts[2]), taskstore.KeyOf(ts[3]))
		for i := range ts {
			if !found[i] {
				t.Fatalf("task %d not found", i)
			}
			g, w := out[i], ts[i]
			if g.ID != w.ID || g.Seq != w.Seq || g.State != w.State || string(g.Result) != string(w.Result) || g.Owner != w.Owner ||
				g.Endpoint != w.Endpoint || g.Error != w.Error || g.Attempts != w.Attempts || g.CompletedAt != w.CompletedAt {
				t.Fatalf("task %d reads %+v, want %+v", i, g, *w)
			}
		}
		census := map[messages.TaskID]string{}
		unknown := messages.TaskID(uuid.New())
		// A seq of another task with the wrong id is not that task.
		if err := s.Census([]taskstore.Key{taskstore.KeyOf(ts[0]), taskstore.KeyOf(ts[1]), taskstore.KeyOf(ts[3]), {ID: unknown, Seq: ts[2].Seq}}, func(k taskstore.Key, owner string, st messages.TaskState, known bool) {
			census[k.ID] = fmt.Sprintf("%s/%s/%v", owner, st, known)
		}); err != nil {
			t.Fatal(err)
		}
		want := map[messages.TaskID]string{ts[0].ID: "alice/success/true", ts[1].ID: "bob/failed/true",
			ts[3].ID: "/waiting-for-endpoint/true", unknown: "//false"}
		for id, w := range want {
			if census[id] != w {
				t.Fatalf("census of %v: %q, want %q", id, census[id], w)
			}
		}
	}
	check(s)
	if !durable(scheme) {
		s.Close()
		return
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, scheme, dir)
	defer s.Close()
	var recovered []uint64
	if err := s.Recover(func(t *taskstore.Task) { recovered = append(recovered, t.Seq) }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(recovered)
	if !slices.Equal(recovered, []uint64{1, 2, 3, 4}) {
		t.Fatalf("recovered seqs %v", recovered)
	}
	check(s)
}

func testList(t *testing.T, scheme string) {
	s := open(t, scheme, t.TempDir())
	defer s.Close()
	var ts []*taskstore.Task
	for i := range 10 {
		owner, ep := "alice", "ep"
		if i%2 == 1 {
			owner = "bob"
		}
		if i >= 8 {
			ep = "other"
		}
		ts = append(ts, newTask(uint64(i+1), owner, ep))
	}
	if err := s.Add(ts); err != nil {
		t.Fatal(err)
	}
	list := func(f taskstore.Filter, after uint64, limit int) []uint64 {
		var seqs []uint64
		if err := s.List(f, after, func(t *taskstore.Task) bool {
			seqs = append(seqs, t.Seq)
			return len(seqs) < limit
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	for _, c := range []struct {
		name  string
		f     taskstore.Filter
		after uint64
		limit int
		want  []uint64
	}{
		{"all", taskstore.Filter{}, 0, 100, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"after", taskstore.Filter{}, 7, 100, []uint64{8, 9, 10}},
		{"stop", taskstore.Filter{}, 0, 3, []uint64{1, 2, 3}},
		{"owner", taskstore.Filter{Owner: "bob", OwnerSet: true}, 0, 100, []uint64{2, 4, 6, 8, 10}},
		{"endpoint", taskstore.Filter{Endpoint: "other"}, 0, 100, []uint64{9, 10}},
		{"owner and endpoint", taskstore.Filter{Endpoint: "other", Owner: "alice", OwnerSet: true}, 0, 100, []uint64{9}},
		{"since", taskstore.Filter{Since: time.Now().Add(time.Hour)}, 0, 100, nil},
	} {
		if got := list(c.f, c.after, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func testPrune(t *testing.T, scheme string) {
	s := open(t, scheme, t.TempDir())
	defer s.Close()
	ts := []*taskstore.Task{newTask(1, "a", "ep"), newTask(2, "a", "ep"), newTask(3, "a", "ep")}
	if err := s.Add(ts); err != nil {
		t.Fatal(err)
	}
	end(ts[0], messages.StateSuccess, "1")
	end(ts[1], messages.StateFailed, "2")
	ts[1].CompletedAt = time.Now().Add(2 * time.Hour).UnixNano() // completes after the cutoff
	if err := s.CompleteNow(ts[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Prune([]taskstore.Key{taskstore.KeyOf(ts[0])}); err != nil {
		t.Fatal(err)
	}
	// A Complete with nothing of its own waits for the prune to be written.
	done := make(chan error, 1)
	s.Complete(nil, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, found := get(t, s, taskstore.KeyOf(ts[0]), taskstore.KeyOf(ts[1]), taskstore.KeyOf(ts[2]))
	if found[0] || !found[1] || !found[2] {
		t.Fatalf("after prune found %v, want [false true true]", found)
	}
	var listed []uint64
	if err := s.List(taskstore.Filter{}, 0, func(t *taskstore.Task) bool { listed = append(listed, t.Seq); return true }); err != nil || !slices.Equal(listed, []uint64{2, 3}) {
		t.Fatalf("listed after prune: %v %v", listed, err)
	}
}

func testAccess(t *testing.T, scheme string) {
	dir := t.TempDir()
	s := open(t, scheme, dir)
	now := time.Now().UTC().Truncate(time.Second)
	for _, tok := range []taskstore.Token{{Hash: "h1", ID: "t1", User: "alice", CreatedAt: now}, {Hash: "h2", ID: "t2", User: "root", Admin: true, Groups: []string{"lab"}, CreatedAt: now, CreatedBy: "admin"}} {
		if err := s.PutToken(tok); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteTokens([]string{"h1"}); err != nil {
		t.Fatal(err)
	}
	eps := []taskstore.Endpoint{{ID: "a", PublicKey: "k1", Owner: "carol", Users: []string{"dave"}, Groups: []string{"lab"}, CreatedAt: now},
		{ID: "b", PublicKey: "k2", Owner: "admin", MultiUser: true, CreatedAt: now}, {ID: "c", PublicKey: "k3", CreatedAt: now}}
	for _, e := range eps {
		if err := s.PutEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	eps[0].PublicKey = "k4"
	if err := s.PutEndpoint(eps[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEndpoint("c"); err != nil {
		t.Fatal(err)
	}
	check := func(s taskstore.Store) {
		t.Helper()
		toks, err := s.Tokens()
		if err != nil || len(toks) != 1 || !reflect.DeepEqual(toks[0], taskstore.Token{Hash: "h2", ID: "t2", User: "root", Admin: true, Groups: []string{"lab"}, CreatedAt: now, CreatedBy: "admin"}) {
			t.Fatalf("tokens: %+v %v", toks, err)
		}
		got, err := s.Endpoints()
		if err != nil || len(got) != 2 {
			t.Fatalf("endpoints: %+v %v", got, err)
		}
		slices.SortFunc(got, func(a, b taskstore.Endpoint) int { return map[bool]int{true: -1, false: 1}[a.ID < b.ID] })
		if g := got[0]; g.ID != "a" || g.PublicKey != "k4" || g.Owner != "carol" || !slices.Equal(g.Users, []string{"dave"}) || !slices.Equal(g.Groups, []string{"lab"}) || !g.CreatedAt.Equal(now) {
			t.Fatalf("endpoint a: %+v", g)
		}
		if g := got[1]; g.ID != "b" || !g.MultiUser || g.Owner != "admin" {
			t.Fatalf("endpoint b: %+v", g)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if durable(scheme) {
		s = open(t, scheme, dir)
		defer s.Close()
		check(s)
	}
}

// Writers and readers at once (run with -race).
func testConcurrent(t *testing.T, scheme string) {
	s := open(t, scheme, t.TempDir())
	defer s.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seq := uint64(0)
	next := func() uint64 { mu.Lock(); defer mu.Unlock(); seq++; return seq }
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				ts := []*taskstore.Task{newTask(next(), fmt.Sprint("u", w), "ep")}
				if err := s.Add(ts); err != nil {
					t.Error(err)
					return
				}
				end(ts[0], messages.StateSuccess, `"x"`)
				done := make(chan error, 1)
				s.Complete(ts, func(err error) { done <- err })
				if err := <-done; err != nil {
					t.Error(err)
					return
				}
				out, found := make([]taskstore.Task, 1), make([]bool, 1)
				if err := s.Get([]taskstore.Key{taskstore.KeyOf(ts[0])}, out, found); err != nil || !found[0] || out[0].State != messages.StateSuccess {
					t.Errorf("read back: %+v %v %v", out[0], found[0], err)
					return
				}
				_ = s.List(taskstore.Filter{}, 0, func(*taskstore.Task) bool { return true })
			}
		}()
	}
	wg.Wait()
}
