package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	mgr "github.com/switchyard-hpc/switchyard/manager"
)

// PostgreSQL restarts under a steady load of 2,000 tasks/s: while it is
// down the forwarder answers 503 and takes nothing; once it is back the
// forwarder accepts tasks again by itself, and every task it accepted
// ends (results that could not be stored are sent again by the
// interchange).
func TestPostgresRestartUnderLoad(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.Database(t)
	hb := forwarder.Options{Store: url, StateDir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: time.Second}
	f := testutil.StartForwarder(t, hb)
	f.Enroll(t, "pg")
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "pg", Forwarder: f.ZMQAddr(), StateDir: t.TempDir(),
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: time.Second})
	testutil.StartManager(t, mgr.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 8,
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatThreshold: time.Second})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := f.Endpoint("pg"); !v.Connected {
			return errors.New("endpoint not connected")
		}
		return nil
	})
	c := f.Client()

	// 100 tasks every 50 ms from one submitter.
	const batch, period = 100, 50 * time.Millisecond
	specs := make([]any, batch)
	for i := range specs {
		specs[i] = map[string]any{"kind": "noop"}
	}
	var mu sync.Mutex
	var accepted []string
	var refused503, otherErrs int
	var firstAfterRestart time.Time
	var restarted time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ids, err := c.Submit("pg", specs...)
			mu.Lock()
			var he *client.Error
			switch {
			case err == nil:
				accepted = append(accepted, ids...)
				if !restarted.IsZero() && firstAfterRestart.IsZero() {
					firstAfterRestart = time.Now()
				}
			case errors.As(err, &he) && he.Status == http.StatusServiceUnavailable:
				refused503++
			default:
				otherErrs++
			}
			mu.Unlock()
		}
	}()
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted), refused503
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n, _ := count(); n < 4000 {
			return fmt.Errorf("%d tasks accepted before the restart", n)
		}
		return nil
	})
	stopped := time.Now()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, r := count(); r < 20 {
			return fmt.Errorf("%d answers of 503 while postgres is down", r)
		}
		return nil
	})
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	restarted = time.Now()
	mu.Unlock()
	testutil.WaitFor(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if firstAfterRestart.IsZero() {
			return errors.New("no task accepted since postgres came back")
		}
		return nil
	})
	n0, _ := count()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n, _ := count(); n < n0+4000 {
			return fmt.Errorf("%d tasks accepted after the restart", n-n0)
		}
		return nil
	})
	close(stop)
	<-done
	views := c.WaitTerminal(t, accepted, 120*time.Second)
	ok := 0
	for _, v := range views {
		if v.State == "success" {
			ok++
		}
	}
	t.Logf("postgres down %s; %d tasks accepted, %d succeeded, %d lost; %d answers 503, %d other errors; accepting again %s after postgres took connections",
		restarted.Sub(stopped).Round(time.Millisecond), len(accepted), ok, len(accepted)-ok, refused503, otherErrs, firstAfterRestart.Sub(restarted).Round(time.Millisecond))
	if ok != len(accepted) {
		t.Fatalf("%d of %d accepted tasks did not succeed", len(accepted)-ok, len(accepted))
	}
}
