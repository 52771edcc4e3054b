package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// Throughput of a two-user multi-user endpoint against a single-user one,
// same processes and managers (two local blocks of 4 workers), 20,000
// noop tasks each way through the HTTP API, two submitters at once. Run
// with: go test -run '^$' -bench MultiUserThroughput -benchtime 1x ./e2e/
func BenchmarkMultiUserThroughput(b *testing.B) {
	t := b
	const n = 20000
	alice, bob := testutil.AddUser(t, "sy-alice"), testutil.AddUser(t, "sy-bob")
	blocks := []string{"--provider", "local", "--max-blocks", "2", "--workers-per-node", "4", "--walltime", "0",
		"--block-period", "200ms", "--max-idle", "10m", "--min-blocks", "2", "--init-blocks", "2", "--no-persist"}
	for round := range 3 {
		// Twice each, alternating, so neither runs on a colder host.
		single := startMultiUser(t, "", append(blocks, "--allow-root")...)
		admin := testutil.NewClient(single.api, single.token)
		rate1 := measure(t, n, admin, admin)
		multi := startMultiUser(t, fmt.Sprintf("alice-sy %s\nbob-sy %s\n", alice.Name, bob.Name), append(blocks, "--max-blocks-per-user", "1", "--min-blocks", "1", "--init-blocks", "1")...)
		rate2 := measure(t, n, multi.user(t, "alice-sy"), multi.user(t, "bob-sy"))
		t.Logf("round %d: %d noop tasks: single-user endpoint %.0f tasks/s, two-user multi-user endpoint %.0f tasks/s", round+1, n, rate1, rate2)
		t.ReportMetric(rate1, "single-user-tasks/s")
		t.ReportMetric(rate2, "two-user-tasks/s")
		single.ix.Stop()
		multi.ix.Stop()
	}
}

// measure waits for both users' managers (a warm-up task each), then
// submits n/2 noops as each user at once and follows the ended tasks.
func measure(t testing.TB, n int, users ...*testutil.Client) float64 {
	t.Helper()
	noop := map[string]any{"kind": "noop"}
	for _, u := range users {
		ids, err := u.Submit("mu", noop)
		if err != nil {
			t.Fatal(err)
		}
		u.WaitTerminal(t, ids, 60*time.Second)
	}
	ctx := context.Background()
	cursors := make([]string, len(users))
	for i, u := range users {
		e, err := u.Client.Ended(ctx, "", 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		cursors[i] = e.Cursor
	}
	batch := make([]any, n/len(users))
	for i := range batch {
		batch[i] = noop
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(users))
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; off < len(batch); off += 5000 {
				if _, err := u.Submit("mu", batch[off:min(off+5000, len(batch))]...); err != nil {
					errs[i] = err
					return
				}
			}
			// Follow this user's ends until all of hers are in (the
			// admin's list has everyone's: one follower suffices).
			want := len(batch)
			if users[0] == users[len(users)-1] {
				if i > 0 {
					return
				}
				want = n
			}
			got := 0
			deadline := time.Now().Add(5 * time.Minute)
			for got < want && time.Now().Before(deadline) {
				e, err := u.Client.Ended(ctx, cursors[i], 5*time.Second, 100000)
				if err != nil {
					errs[i] = err
					return
				}
				cursors[i] = e.Cursor
				got += len(e.Tasks)
			}
			if got < want {
				errs[i] = fmt.Errorf("only %d of %d tasks ended", got, want)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
