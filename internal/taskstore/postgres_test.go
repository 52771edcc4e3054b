package taskstore_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

// pg is the PostgreSQL server of this package's tests, started by TestMain
// so `go test ./internal/taskstore/` needs nothing running.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	var err error
	pg, err = pgtest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start postgres for the postgres store's tests:", err)
		if pg != nil {
			pg.Close()
		}
		os.Exit(1)
	}
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop postgres:", err)
	}
	os.Exit(code)
}

var (
	pgMu  sync.Mutex
	pgDBs = map[string]string{}
)

func init() {
	// postgresql is the same implementation under its other name.
	for _, scheme := range []string{"postgres", "postgresql"} {
		storeURLs[scheme] = func(t *testing.T, dir string) string {
			pgMu.Lock()
			defer pgMu.Unlock()
			if u, ok := pgDBs[dir]; ok {
				return u
			}
			u := pg.Database(t)
			pgDBs[dir] = u
			return u
		}
	}
}

// The postgres store finds a task by its id alone, as a forwarder that
// did not store it asks.
func TestPostgresFindsByID(t *testing.T) {
	s := open(t, "postgres", t.TempDir())
	defer s.Close()
	if f, ok := s.(taskstore.IDFinder); !ok || !f.FindsByID() {
		t.Fatal("the postgres store does not say it finds tasks by id")
	}
	tk := newTask(7, "alice", "ep")
	if err := s.Add([]*taskstore.Task{tk}); err != nil {
		t.Fatal(err)
	}
	out, found := get(t, s, taskstore.Key{ID: tk.ID}, taskstore.Key{ID: tk.ID, Seq: 8})
	if !found[0] || out[0].Seq != 7 || found[1] {
		t.Fatalf("by id: %v %+v", found, out[0])
	}
}

// Two handles on one database: seqs never collide, a lease is held by one
// at a time and passes on once it expires, an added task is told to the
// other handle with its seqs, and ends get journal positions in order.
func TestPostgresShared(t *testing.T) {
	url := pg.Database(t)
	openURL := func() taskstore.Shared {
		s, _, err := taskstore.Open(taskstore.Config{URL: url, Log: logx.Discard()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s.(taskstore.Shared)
	}
	a, b := openURL(), openURL()
	ctx := context.Background()

	seen := map[uint64]bool{}
	for i := 0; i < 50; i++ {
		for _, s := range []taskstore.Shared{a, b} {
			first, err := s.NextSeqs(5000)
			if err != nil {
				t.Fatal(err)
			}
			for q := first; q < first+5000; q++ {
				if seen[q] {
					t.Fatalf("seq %d given out twice", q)
				}
				seen[q] = true
			}
		}
	}

	ok, _, _, err := a.ClaimLease(ctx, "ep", "A", 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("a claims: %v %v", ok, err)
	}
	ok, by, left, err := b.ClaimLease(ctx, "ep", "B", time.Second)
	if err != nil || ok || by != "A" || left <= 0 {
		t.Fatalf("b claims a held lease: %v %q %v %v", ok, by, left, err)
	}
	if held, err := a.RenewLeases(ctx, "A", []string{"ep"}, 300*time.Millisecond); err != nil || len(held) != 1 {
		t.Fatalf("a renews: %v %v", held, err)
	}
	testutilWait(t, 5*time.Second, func() bool {
		ok, _, _, err := b.ClaimLease(ctx, "ep", "B", time.Second)
		return err == nil && ok
	})
	if held, err := a.RenewLeases(ctx, "A", []string{"ep"}, time.Second); err != nil || len(held) != 0 {
		t.Fatalf("a renews a lease b took: %v %v", held, err)
	}

	notices := make(chan taskstore.Notice, 16)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	ready := make(chan struct{})
	go func() { _ = b.Listen(lctx, func() { close(ready) }, func(n taskstore.Notice) { notices <- n }) }()
	<-ready
	first, _ := a.NextSeqs(2)
	t1, t2 := newTask(first, "alice", "ep"), newTask(first+1, "alice", "ep")
	if err := a.(taskstore.Store).Add([]*taskstore.Task{t1, t2}); err != nil {
		t.Fatal(err)
	}
	n := <-notices
	if n.Kind != taskstore.NoticeTasks || n.Endpoint != "ep" || n.First != first || n.Last != first+1 {
		t.Fatalf("notice %+v", n)
	}
	open, err := b.Unfinished(ctx, "ep", n.First, n.Last)
	if err != nil || len(open) != 2 {
		t.Fatalf("unfinished: %d %v", len(open), err)
	}
	head, _ := b.EndedHead(ctx)
	end(t2, messages.StateSuccess, `1`)
	if err := a.(taskstore.Store).CompleteNow([]*taskstore.Task{t2}); err != nil {
		t.Fatal(err)
	}
	if n := <-notices; n.Kind != taskstore.NoticeEnded {
		t.Fatalf("notice %+v", n)
	}
	ends, err := b.Ended(ctx, head, 10)
	if err != nil || len(ends) != 1 || ends[0].ID != t2.ID || ends[0].State != messages.StateSuccess {
		t.Fatalf("ended: %+v %v", ends, err)
	}
	// An end is final: a re-queue written later does not undo it.
	t2.State = messages.StateWaitingForEndpoint
	if err := a.(taskstore.Store).CompleteNow([]*taskstore.Task{t2}); err != nil {
		t.Fatal(err)
	}
	if open, _ := b.Unfinished(ctx, "ep", 0, 0); len(open) != 1 || open[0].ID != t1.ID {
		t.Fatalf("unfinished after the end: %d", len(open))
	}
}

func testutilWait(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}
