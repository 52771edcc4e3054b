package forwarder

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

func openTable(t *testing.T, dir string) (*taskTable, taskstore.Store) {
	t.Helper()
	st, _, err := taskstore.Open(taskstore.Config{URL: "pebble", Dir: dir, Log: logx.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	tt := newTaskTable(st, logx.Discard())
	if _, _, err := tt.load(); err != nil {
		t.Fatal(err)
	}
	return tt, st
}

// counts says how many tasks are in memory and how many retired.
func (tt *taskTable) counts() (live, retired int) {
	for _, e := range tt.live {
		if e != nil {
			live++
		}
	}
	return live, len(tt.index) - live
}

func newTasks(n int, owner string) []*entry {
	ts := make([]*entry, n)
	for i := range ts {
		ts[i] = &entry{Task: Task{ID: messages.TaskID(uuid.New()), Endpoint: "ep", Owner: owner, Kind: "noop",
			Spec: []byte(`{"kind":"noop"}`), State: messages.StateReceived}}
	}
	return ts
}

// A task whose end is durable leaves memory but for a small reference, and
// still reads, lists, survives a restart and is pruned as before.
func TestFinishedTasksLeaveMemory(t *testing.T) {
	path := t.TempDir()
	tt, st := openTable(t, path)
	ts := newTasks(10, "alice")
	if err := tt.add(ts, quota{}); err != nil {
		t.Fatal(err)
	}
	var rs []messages.Result
	for _, task := range ts[:6] {
		rs = append(rs, messages.Result{ID: task.ID, Code: messages.Success, Payload: []byte(`"out-` + task.ID.String()[:4] + `"`)})
	}
	acked := make(chan error, 1)
	tt.completeBatch("ep", rs, nil, nil, func(err error) { acked <- err })
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	// Tasks retire before the ack callback runs.
	tt.mu.RLock()
	live, retired := tt.counts()
	tt.mu.RUnlock()
	if live != 4 || retired != 6 {
		t.Fatalf("%d tasks in memory, %d retired; want 4 and 6", live, retired)
	}
	cancelled := false // ts[9]
	check := func(tt *taskTable) {
		t.Helper()
		for i, task := range ts {
			got, ok := tt.get(task.ID)
			if !ok {
				t.Fatalf("task %d unknown", i)
			}
			if i < 6 {
				want := `"out-` + task.ID.String()[:4] + `"`
				if got.State != messages.StateSuccess || string(got.Result) != want || got.Owner != "alice" || string(got.Spec) != `{"kind":"noop"}` {
					t.Fatalf("finished task %d read back as %+v", i, got)
				}
			} else if got.State.Terminal() != (i == 9 && cancelled) {
				t.Fatalf("task %d is %s", i, got.State)
			}
		}
		listed, more := tt.list(TaskFilter{Owner: "alice", OwnerSet: true, States: []messages.TaskState{messages.StateSuccess}}, 0, 4)
		if len(listed) != 4 || !more || listed[0].ID != ts[0].ID || listed[3].ID != ts[3].ID {
			t.Fatalf("list of 4 successes: %d tasks, more=%v", len(listed), more)
		}
		listed, more = tt.list(TaskFilter{}, listed[3].Seq, 100)
		if cancelled && listed[5].State != messages.StateCancelled {
			t.Fatalf("cancelled task listed as %s", listed[5].State)
		}
		if len(listed) != 6 || more || listed[2].ID != ts[6].ID {
			t.Fatalf("list after the 4th: %d tasks, more=%v", len(listed), more)
		}
	}
	check(tt)

	// A result again for a retired task is a duplicate, acked as before.
	if v := tt.completeBatch("ep", rs[:1], nil, nil, nil); v[0] != messages.Same {
		t.Fatalf("repeated result: verdict %v, want Same", v[0])
	}
	// Cancelling a retired task leaves it and says what it is.
	out, known, changed, err := tt.cancel([]messages.TaskID{ts[0].ID, ts[9].ID})
	cancelled = true
	if err != nil || !known[0] || changed[0] || out[0].State != messages.StateSuccess || !changed[1] {
		t.Fatalf("cancel: %v known=%v changed=%v state=%s", err, known, changed, out[0].State)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	tt, st = openTable(t, path)
	defer st.Close()
	if live, retired := tt.counts(); live != 3 || retired != 7 {
		t.Fatalf("after a restart: %d tasks in memory, %d retired; want 3 and 7", live, retired)
	}
	check(tt)
	if n := tt.prune(time.Now().Add(time.Hour)); n != 7 || tt.len() != 3 {
		t.Fatalf("prune: %d pruned, %d left; want 7 and 3", n, tt.len())
	}
	if _, ok := tt.get(ts[0].ID); ok {
		t.Fatal("a pruned task still reads")
	}
}

// A cursor from a client is parsed without panicking and a cursor this
// run gave out reads back as itself.
func FuzzParseCursor(f *testing.F) {
	j := newJournal(8)
	j.next = 5
	for _, s := range []string{j.cursor(3), j.cursor(5), j.cursor(6), "x-1", "-", "", "abc", j.epoch + "-18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok, err := j.parseCursor(s)
		if err != nil && ok {
			t.Fatalf("%q: error and usable", s)
		}
		if ok && (n > j.next || j.cursor(n) != s && !strings.HasPrefix(s, j.epoch+"-")) {
			t.Fatalf("%q: usable at %d", s, n)
		}
	})
}

// BenchmarkRetainedTaskMemory measures the heap a finished task costs
// while it is kept for the retention time (the issue's "memory per
// finished task kept": at most 100 bytes in RAM, the rest on disk).
func BenchmarkRetainedTaskMemory(b *testing.B) {
	for _, persist := range []bool{true, false} {
		name := "store"
		if !persist {
			name = "no-persist"
		}
		b.Run(name, func(b *testing.B) {
			const n = 100000
			for range b.N {
				url := "memory"
				if persist {
					url = "pebble"
				}
				st, _, err := taskstore.Open(taskstore.Config{URL: url, Dir: b.TempDir(), Log: logx.Discard()})
				if err != nil {
					b.Fatal(err)
				}
				tt := newTaskTable(st, logx.Discard())
				before := heapLive()
				for off := 0; off < n; off += 5000 {
					ts := newTasks(5000, "alice")
					if err := tt.add(ts, quota{}); err != nil {
						b.Fatal(err)
					}
					rs := make([]messages.Result, len(ts))
					for i, t := range ts {
						rs[i] = messages.Result{ID: t.ID, Code: messages.Success, Payload: []byte(`{"exit_code":0,"stdout":"ok\n","stderr":""}`)}
					}
					done := make(chan error, 1)
					tt.completeBatch("ep", rs, nil, nil, func(err error) { done <- err })
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				after := heapLive()
				if tt.len() != n {
					b.Fatalf("%d tasks held, want %d", tt.len(), n)
				}
				b.ReportMetric(float64(after-before)/n, "B/finished-task")
				st.Close()
			}
		})
	}
}

func heapLive() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// The hand-written answers are byte for byte what encoding/json writes.
func TestRawJSONMatchesEncoder(t *testing.T) {
	enc := func(v any) string {
		var b bytes.Buffer
		_ = json.NewEncoder(&b).Encode(v)
		return b.String()
	}
	ids := []messages.TaskID{messages.TaskID(uuid.New()), messages.TaskID(uuid.New())}
	for _, list := range [][]messages.TaskID{nil, ids[:1], ids} {
		want := enc(map[string]any{"task_ids": list})
		if list == nil {
			want = `{"task_ids":[]}` + "\n"
		}
		if got := string(appendIDs(nil, list)); got != want {
			t.Errorf("ids: %q, want %q", got, want)
		}
	}
	j := newJournal(4)
	for _, p := range []EndedPage{
		{Cursor: j.cursor(0), Tasks: []EndedView{}},
		{Cursor: j.cursor(7), Tasks: []EndedView{{TaskID: ids[0], State: messages.StateSuccess}, {TaskID: ids[1], State: messages.StateCancelled}}, More: true},
		{Cursor: j.cursor(9), Tasks: []EndedView{}, Reset: true},
	} {
		if got, want := string(p.appendJSON(nil)), enc(p); got != want {
			t.Errorf("page: %q, want %q", got, want)
		}
	}
	for _, c := range []CensusView{
		{Ended: []EndedView{}, Unknown: []string{}},
		{Ended: []EndedView{{TaskID: ids[0], State: messages.StateSuccess}, {TaskID: ids[1], State: messages.StateFailed}}, Unknown: []string{"nope", ids[1].String()}, Pending: 12},
	} {
		if got, want := string(c.appendJSON(nil)), enc(c); got != want {
			t.Errorf("census: %q, want %q", got, want)
		}
	}
}

// scanCounter counts full scans of a store.
type scanCounter struct {
	taskstore.Store
	lists int
}

func (s *scanCounter) List(f taskstore.Filter, after uint64, fn func(*taskstore.Task) bool) error {
	s.lists++
	return s.Store.List(f, after, fn)
}

// tableWith makes a table over st holding n ended tasks of "bulk" and
// mine of "alice", her last one still running.
func tableWith(tb testing.TB, st taskstore.Store, n, mine int) (*taskTable, []*entry) {
	tt := newTaskTable(st, logx.Discard())
	if _, _, err := tt.load(); err != nil {
		tb.Fatal(err)
	}
	for off := 0; off < n; off += 5000 {
		ts := newTasks(min(5000, n-off), "bulk")
		if err := tt.add(ts, quota{}); err != nil {
			tb.Fatal(err)
		}
		rs := make([]messages.Result, len(ts))
		for i, t := range ts {
			rs[i] = messages.Result{ID: t.ID, Code: messages.Success}
		}
		done := make(chan error, 1)
		tt.completeBatch("ep", rs, nil, nil, func(err error) { done <- err })
		if err := <-done; err != nil {
			tb.Fatal(err)
		}
	}
	ts := newTasks(mine, "alice")
	if err := tt.add(ts, quota{}); err != nil {
		tb.Fatal(err)
	}
	if mine > 1 {
		done := make(chan error, 1)
		tt.completeBatch("ep", []messages.Result{{ID: ts[0].ID, Code: messages.Success}}, nil, nil, func(err error) { done <- err })
		if err := <-done; err != nil {
			tb.Fatal(err)
		}
	}
	return tt, ts
}

// Listing one user's tasks reads her index, not the whole store: a user
// with no tasks among many once cost seconds of CPU.
func TestListByOwnerUsesItsIndex(t *testing.T) {
	st, _, err := taskstore.Open(taskstore.Config{URL: "pebble", Dir: t.TempDir(), Log: logx.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sc := &scanCounter{Store: st}
	tt, mine := tableWith(t, sc, 20000, 3)
	got, more := tt.list(TaskFilter{Owner: "alice", OwnerSet: true}, 0, 2)
	if len(got) != 2 || !more || got[0].ID != mine[0].ID || got[0].State != messages.StateSuccess || got[1].ID != mine[1].ID {
		t.Fatalf("alice's first page: %d tasks, more=%v", len(got), more)
	}
	got, more = tt.list(TaskFilter{Owner: "alice", OwnerSet: true}, got[1].Seq, 2)
	if len(got) != 1 || more || got[0].ID != mine[2].ID {
		t.Fatalf("alice's second page: %d tasks, more=%v", len(got), more)
	}
	if got, _ := tt.list(TaskFilter{Owner: "nobody", OwnerSet: true}, 0, 100); len(got) != 0 {
		t.Fatalf("a user with no tasks lists %d", len(got))
	}
	if sc.lists != 0 {
		t.Fatalf("listing by owner scanned the store %d times", sc.lists)
	}
	// Pruned tasks leave the index too.
	if n := tt.prune(time.Now().Add(time.Hour)); n != 20001 {
		t.Fatalf("pruned %d, want 20001", n)
	}
	if got, _ := tt.list(TaskFilter{Owner: "alice", OwnerSet: true}, 0, 100); len(got) != 2 {
		t.Fatalf("after prune alice lists %d, want her 2 unended", len(got))
	}
}

// BenchmarkListByOwner: GET /v1/tasks of a user with no tasks, and of one
// with 10, while another user has 200,000 in the store.
func BenchmarkListByOwner(b *testing.B) {
	st, _, err := taskstore.Open(taskstore.Config{URL: "pebble", Dir: b.TempDir(), Log: logx.Discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tt, _ := tableWith(b, st, 200000, 10)
	for _, who := range []string{"nobody", "alice"} {
		b.Run(who, func(b *testing.B) {
			for range b.N {
				tt.list(TaskFilter{Owner: who, OwnerSet: true}, 0, 100)
			}
		})
	}
}
