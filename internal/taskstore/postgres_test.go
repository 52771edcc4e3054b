package taskstore_test

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
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
