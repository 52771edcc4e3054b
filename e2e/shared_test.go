package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// sharedSite is two forwarder processes on one PostgreSQL database, an
// endpoint created through the first, its interchange given both
// forwarders' addresses, and one manager.
type sharedSite struct {
	t        testing.TB
	pg       *pgtest.Server
	bin, dir string
	fwd      [2]*testutil.Proc
	http     [2]int
	zmq      [2]int
	api      [2]*client.Client
	ix       *testutil.Proc
	// starts is where tasks log their own start.
	starts string
}

const sharedEP = "shared"

// startSharedSite starts the site; order says which forwarder the
// interchange tries first. Forwarder 1 reaches PostgreSQL over its unix
// socket, forwarder 0 over TCP, so a rule on the TCP port cuts forwarder 0
// alone.
func startSharedSite(t testing.TB, order [2]int, workers int) *sharedSite {
	bin := testutil.Switchyard(t)
	pg := pgtest.Start(t)
	tcpURL := pg.Database(t)
	db := tcpURL[strings.LastIndex(tcpURL, "/")+1 : strings.Index(tcpURL, "?")]
	sockURL := fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", pgtest.Superuser, db, pg.Sock, pg.Port)
	s := &sharedSite{t: t, pg: pg, bin: bin, dir: t.TempDir()}
	s.starts = filepath.Join(s.dir, "starts.log")
	common := launch.Common{HeartbeatInterval: 200 * time.Millisecond, HeartbeatThreshold: time.Second}
	for i, url := range []string{tcpURL, sockURL} {
		s.http[i], s.zmq[i] = testutil.Port(t), testutil.Port(t)
		f := launch.Forwarder{Common: common, ListenZMQ: testutil.ZMQ(s.zmq[i]), Store: url}
		f.ListenHTTP, f.StateDir = testutil.Addr(s.http[i]), filepath.Join(s.dir, fmt.Sprintf("state-fwd%d", i))
		s.fwd[i] = testutil.StartProc(t, s.dir, fmt.Sprintf("forwarder%d", i), bin, f.Args()...)
		tok := s.fwd[i].WaitFile(t, filepath.Join(f.StateDir, "admin.token"), 30*time.Second)
		s.api[i] = client.New("http://"+testutil.Addr(s.http[i]), client.WithToken(tok))
	}
	creds, err := s.api[0].CreateEndpoint(context.Background(), sharedEP, false)
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(s.dir, "shared.credentials")
	if err := os.WriteFile(credPath, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	ixHTTP, ixMgrs := testutil.Port(t), testutil.Port(t)
	ix := launch.Interchange{Common: common, EndpointID: sharedEP, Credentials: credPath,
		Forwarder: testutil.ZMQ(s.zmq[order[0]]) + "," + testutil.ZMQ(s.zmq[order[1]]), ListenManagers: testutil.ZMQ(ixMgrs)}
	ix.ListenHTTP, ix.StateDir = testutil.Addr(ixHTTP), filepath.Join(s.dir, "state-ix")
	s.ix = testutil.StartProc(t, s.dir, "interchange", bin, ix.Args()...)
	mcreds := filepath.Join(ix.StateDir, "manager.credentials")
	s.ix.WaitFile(t, mcreds, 30*time.Second)
	m := launch.Manager{Common: common, ManagerID: "m1", Interchange: testutil.ZMQ(ixMgrs), Credentials: mcreds, Workers: workers,
		AllowRoot: os.Geteuid() == 0}
	m.ListenHTTP, m.StateDir = testutil.Addr(testutil.Port(t)), filepath.Join(s.dir, "state-m1")
	testutil.StartProc(t, s.dir, "m1", bin, m.Args()...)
	s.waitHolder(order[0], 30*time.Second)
	return s
}

// holder is the forwarder the endpoint is connected to, or -1.
func (s *sharedSite) holder() int {
	for i, c := range s.api {
		if s.fwd[i].Exited() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		v, err := c.Endpoint(ctx, sharedEP, false)
		cancel()
		if err == nil && v.Connected {
			return i
		}
	}
	return -1
}

func (s *sharedSite) waitHolder(want int, d time.Duration) {
	s.t.Helper()
	testutil.WaitFor(s.t, d, func() error {
		if h := s.holder(); h != want {
			return fmt.Errorf("endpoint held by forwarder %d, want %d", h, want)
		}
		return nil
	})
}

// loggedTask is a task that appends n to the starts log when it starts.
func (s *sharedSite) loggedTask(n int) map[string]any {
	return map[string]any{"kind": "exec", "args": []string{"sh", "-c", "echo " + strconv.Itoa(n) + " >> " + s.starts}}
}

// runs counts the starts of each task in the log.
func (s *sharedSite) runs() map[int]int {
	b, _ := os.ReadFile(s.starts)
	out := map[int]int{}
	for _, l := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(l)
		if err == nil {
			out[n]++
		}
	}
	return out
}

// load submits batches of tasks every period, through the forwarders in
// turn (the other when one refuses or is down), until stop.
type load struct {
	mu       sync.Mutex
	accepted []string
	refused  int
	next     int
	stop     chan struct{}
	done     chan struct{}
}

func (s *sharedSite) startLoad(batch int, period time.Duration, task func(n int) map[string]any) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		turn := 0
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			specs := make([]any, batch)
			l.mu.Lock()
			for i := range specs {
				specs[i] = task(l.next)
				l.next++
			}
			l.mu.Unlock()
			turn++
			for try := 0; try < 2; try++ {
				c := s.api[(turn+try)%2]
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ids, err := c.Submit(ctx, sharedEP, specs...)
				cancel()
				l.mu.Lock()
				if err == nil {
					l.accepted = append(l.accepted, ids...)
				} else {
					l.refused++
				}
				l.mu.Unlock()
				if err == nil {
					break
				}
			}
		}
	}()
	return l
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

func (l *load) end() []string {
	close(l.stop)
	<-l.done
	return l.accepted
}

// waitEnded waits until every id ended, read through any forwarder that
// answers, and returns how many succeeded.
func (s *sharedSite) waitEnded(ids []string, d time.Duration) int {
	s.t.Helper()
	ok := 0
	testutil.WaitFor(s.t, d, func() error {
		var last error
		for i, c := range s.api {
			if s.fwd[i].Exited() {
				continue
			}
			ok = 0
			pending := 0
			for lo := 0; lo < len(ids); lo += 1000 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				vs, err := c.Status(ctx, ids[lo:min(lo+1000, len(ids))])
				cancel()
				if err != nil {
					last = err
					break
				}
				for _, v := range vs {
					switch {
					case v.State == "success":
						ok++
					case v.State != "failed" && v.State != "cancelled":
						pending++
					}
				}
			}
			if last != nil {
				continue
			}
			if pending > 0 {
				return fmt.Errorf("%d of %d tasks not ended", pending, len(ids))
			}
			return nil
		}
		return errors.Join(errors.New("no forwarder answers"), last)
	})
	return ok
}

// stored lists every task in the database through a forwarder that
// answers (the listing reads the database): with those accepted, it
// tells how many were stored although their submit was answered with an
// error (the commit went through, its answer was lost).
func (s *sharedSite) stored() int {
	s.t.Helper()
	for i, c := range s.api {
		if s.fwd[i].Exited() {
			continue
		}
		n, cursor := 0, ""
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			page, err := c.ListTasks(ctx, client.TaskQuery{Endpoint: sharedEP, Limit: client.MaxListPage, Cursor: cursor})
			cancel()
			if err != nil {
				s.t.Fatal(err)
			}
			n += len(page.Tasks)
			if cursor = page.NextCursor; cursor == "" {
				return n
			}
		}
	}
	s.t.Fatal("no forwarder answers")
	return 0
}

// kill -9 of the forwarder holding the endpoint: the interchange moves to
// the other within seconds, and every task accepted through either ends;
// tasks log their own start, so runs beyond the first are counted.
func TestSharedForwarderKill9(t *testing.T) {
	s := startSharedSite(t, [2]int{0, 1}, 8)
	l := s.startLoad(20, 50*time.Millisecond, s.loggedTask)
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := l.count(); n < 1000 {
			return fmt.Errorf("%d tasks accepted", n)
		}
		return nil
	})
	killed := s.fwd[0].Kill9()
	s.waitHolder(1, 15*time.Second)
	moved := time.Since(killed)
	s.fwd[0].Restart()
	n0 := l.count()
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := l.count(); n < n0+1000 {
			return fmt.Errorf("%d tasks accepted since the kill", n-n0)
		}
		return nil
	})
	ids := l.end()
	ok := s.waitEnded(ids, 120*time.Second)
	runs := s.runs()
	again := 0
	for _, r := range runs {
		if r > 1 {
			again += r - 1
		}
	}
	t.Logf("kill -9 of the holder: the endpoint moved in %s; %d tasks accepted (%d stored), %d succeeded, %d started, %d runs beyond the first",
		moved.Round(time.Millisecond), len(ids), s.stored(), ok, len(runs), again)
	if ok != len(ids) {
		t.Fatalf("%d of %d accepted tasks did not succeed", len(ids)-ok, len(ids))
	}
	if len(runs) < len(ids) {
		t.Fatalf("%d tasks logged a start, %d accepted", len(runs), len(ids))
	}
	if moved > 10*time.Second {
		t.Fatalf("the endpoint took %s to move", moved)
	}
}

// A forwarder cut from the database (nftables drops its connections to
// PostgreSQL) stops renewing its lease, drops the endpoint's connection
// and refuses it; the interchange moves to the other forwarder, which
// takes the lease, and every task accepted ends.
func TestSharedForwarderCutFromDatabase(t *testing.T) {
	s := startSharedSite(t, [2]int{0, 1}, 8)
	l := s.startLoad(20, 50*time.Millisecond, s.loggedTask)
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := l.count(); n < 1000 {
			return fmt.Errorf("%d tasks accepted", n)
		}
		return nil
	})
	p := startPartition(t, s.pg.Port) // forwarder 0 alone uses TCP
	cut := time.Now()
	s.waitHolder(1, 20*time.Second)
	moved := time.Since(cut)
	if got := s.fwd[0].GrepLog("lease of endpoint lost"); len(got) == 0 {
		t.Fatal("forwarder 0 did not say it lost the lease")
	}
	n0 := l.count()
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := l.count(); n < n0+1000 {
			return fmt.Errorf("%d tasks accepted since the cut", n-n0)
		}
		return nil
	})
	p.heal()
	ids := l.end()
	ok := s.waitEnded(ids, 120*time.Second)
	runs := s.runs()
	again := 0
	for _, r := range runs {
		again += r - 1
	}
	if os.Getenv("SHARED_DEBUG") != "" {
		s.ix.DumpLog()
		s.fwd[1].DumpLog()
	}
	// A submit cut off before its commit's answer came back is retried
	// through the other forwarder by the load: both copies run.
	t.Logf("forwarder cut from the database: the endpoint moved in %s; %d tasks accepted (%d stored), %d succeeded, %d runs beyond the first",
		moved.Round(time.Millisecond), len(ids), s.stored(), ok, again)
	if ok != len(ids) {
		t.Fatalf("%d of %d accepted tasks did not succeed", len(ids)-ok, len(ids))
	}
}

// 20 kill -9 of a random forwarder under a steady 2,000 tasks/s (noops,
// and one in 20 a task that logs its start): tasks accepted and ended,
// the longest pause in ends, runs beyond the first. A measurement of
// minutes, run with: go test -run '^$' -bench SharedKill9Soak -benchtime 1x ./e2e/
func BenchmarkSharedKill9Soak(b *testing.B) {
	t := b
	s := startSharedSite(t, [2]int{0, 1}, 16)
	l := s.startLoad(100, 50*time.Millisecond, func(n int) map[string]any {
		if n%20 == 0 {
			return s.loggedTask(n)
		}
		return map[string]any{"kind": "noop"}
	})
	// Follow the ended feed (its cursor is good on either forwarder) and
	// note the longest time without an end.
	var mu sync.Mutex
	var longest time.Duration
	var longestAt time.Time
	followDone := make(chan struct{})
	stopFollow := make(chan struct{})
	go func() {
		defer close(followDone)
		cursor, last, turn := "", time.Time{}, 0
		for {
			select {
			case <-stopFollow:
				return
			default:
			}
			turn++
			c := s.api[turn%2]
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			page, err := c.Ended(ctx, cursor, time.Second, 100000)
			cancel()
			if err != nil {
				continue
			}
			cursor = page.Cursor
			if len(page.Tasks) > 0 {
				now := time.Now()
				mu.Lock()
				if !last.IsZero() && now.Sub(last) > longest {
					longest, longestAt = now.Sub(last), now
				}
				mu.Unlock()
				last = now
			}
		}
	}()
	testutil.WaitFor(t, 30*time.Second, func() error {
		if n := l.count(); n < 10000 {
			return fmt.Errorf("%d tasks accepted", n)
		}
		return nil
	})
	var moves []time.Duration
	for k := 0; k < 20; k++ {
		victim := rand.IntN(2)
		h := s.holder()
		killed := s.fwd[victim].Kill9()
		if victim == h {
			s.waitHolder(1-victim, 30*time.Second)
			moves = append(moves, time.Since(killed))
		}
		s.fwd[victim].Restart()
		testutil.WaitFor(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := s.api[victim].Endpoint(ctx, sharedEP, false)
			return err
		})
		n0 := l.count()
		testutil.WaitFor(t, 30*time.Second, func() error {
			if n := l.count(); n < n0+4000 {
				return fmt.Errorf("%d tasks accepted since kill %d", n-n0, k+1)
			}
			return nil
		})
	}
	ids := l.end()
	ok := s.waitEnded(ids, 300*time.Second)
	close(stopFollow)
	<-followDone
	runs := s.runs()
	logged, again := 0, 0
	for _, r := range runs {
		logged++
		again += r - 1
	}
	l.mu.Lock()
	refused := l.refused
	l.mu.Unlock()
	var worst time.Duration
	for _, m := range moves {
		worst = max(worst, m)
	}
	t.Logf("20 kill -9 (%d of the holder; the endpoint moved in at most %s): %d tasks accepted (%d stored), %d succeeded, %d lost; %d submits refused and sent to the other forwarder; longest pause in ends %s (at %s); %d logged tasks started, %d runs beyond the first",
		len(moves), worst.Round(time.Millisecond), len(ids), s.stored(), ok, len(ids)-ok, refused, longest.Round(time.Millisecond), longestAt.Format("15:04:05.000"), logged, again)
	if ok != len(ids) {
		t.Fatalf("%d of %d accepted tasks did not succeed", len(ids)-ok, len(ids))
	}
}

// 100,000 noop tasks through one, then both, forwarders on PostgreSQL (batches of 10,000 from two submitters, each
// to its forwarder, or both to the first), followed on the ended feed;
// tasks/s from the first submit to the last end. One manager of 8
// workers, as `switchyard bench --cli` starts.
// Run with: go test -run '^$' -bench SharedThroughput -benchtime 1x ./e2e/
func BenchmarkSharedThroughput(b *testing.B) {
	const n = 100_000
	for _, fwds := range []int{1, 2} {
		b.Run(fmt.Sprintf("forwarders=%d", fwds), func(t *testing.B) {
			s := startSharedSite(t, [2]int{0, 1}, 8)
			ctx := context.Background()
			first, err := s.api[0].Ended(ctx, "", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			const batch = 10000
			specs := make([]any, batch)
			for i := range specs {
				specs[i] = map[string]any{"kind": "noop"}
			}
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for sub := 0; sub < 2; sub++ {
				c := s.api[sub%fwds]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := 0; done < n/2; done += batch {
						if _, err := c.Submit(ctx, sharedEP, specs[:min(batch, n/2-done)]...); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			ended, cursor := 0, first.Cursor
			for ended < n/2*2 {
				page, err := s.api[0].Ended(ctx, cursor, time.Second, 100000)
				if err != nil {
					t.Fatal(err)
				}
				cursor = page.Cursor
				ended += len(page.Tasks)
				if time.Since(start) > 10*time.Minute {
					t.Fatalf("%d of %d ended after 10 minutes", ended, n)
				}
			}
			secs := time.Since(start).Seconds()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			t.Logf("%d forwarder(s) on PostgreSQL: %d noop tasks in %.2fs: %.0f tasks/s", fwds, ended, secs, float64(ended)/secs)
			t.ReportMetric(float64(ended)/secs, "tasks/s")
		})
	}
}
