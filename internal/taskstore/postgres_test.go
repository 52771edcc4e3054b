package taskstore_test

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
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
