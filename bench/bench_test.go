package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/curve"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP switchyard_interchange_heartbeats_sent_total Heartbeats sent, by link.
# TYPE switchyard_interchange_heartbeats_sent_total counter
switchyard_interchange_heartbeats_sent_total{link="forwarder"} 7
switchyard_interchange_heartbeats_sent_total{link="manager"} 1.5e+03
process_cpu_seconds_total 12.25
go_memstats_heap_inuse_bytes 4.194304e+06
odd_line_without_value
labelled{a="x y",b="2"} 3 1700000000000
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"switchyard_interchange_heartbeats_sent_total", nil, 1507},
		{"switchyard_interchange_heartbeats_sent_total", []string{"link", "manager"}, 1500},
		{"switchyard_interchange_heartbeats_sent_total", []string{"link", "nobody"}, 0},
		{"process_cpu_seconds_total", nil, 12.25},
		{"go_memstats_heap_inuse_bytes", nil, 4194304},
		{"labelled", []string{"a", "x y"}, 3},
		{"missing", nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name+strings.Join(tc.labels, "="), func(t *testing.T) {
			if got := m.Sum(tc.name, tc.labels...); got != tc.want {
				t.Errorf("Sum = %g, want %g", got, tc.want)
			}
		})
	}
	if !m.Has("process_cpu_seconds_total") || m.Has("odd_line_without_value") {
		t.Errorf("Has is wrong: %v", m)
	}
}

func TestQuantile(t *testing.T) {
	v := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	cases := []struct {
		q    float64
		want int
	}{{0.5, 5}, {0.99, 10}, {0.1, 1}, {0, 1}, {1, 10}}
	for _, tc := range cases {
		if got := quantile(v, tc.q); got != tc.want {
			t.Errorf("quantile(%g) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if got := quantile([]int{}, 0.5); got != 0 {
		t.Errorf("quantile of nothing = %d", got)
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS == 0 || s.HWM < s.RSS || s.RSSAnon == 0 {
		t.Errorf("implausible memory: %+v", s)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("ReadProc of a missing pid succeeded")
	}
}

func TestRawRelayDeliversEverything(t *testing.T) {
	tb, err := NoopTaskBytes(1000)
	if err != nil {
		t.Fatal(err)
	}
	// 16-byte id, attempt, length and a 15-byte payload: about 36 bytes.
	if tb < 30 || tb > 45 {
		t.Errorf("a no-op task is %.1f bytes on the wire", tb)
	}
	for _, size := range []int{int(tb), 1000 * int(tb)} {
		r, err := RawRelay(3000, size)
		if err != nil {
			t.Fatalf("%d-byte messages: %v", size, err)
		}
		if r.Messages != 3000 || r.MessageBytes != size || r.PerSecond <= 0 {
			t.Fatalf("%+v", r)
		}
	}
}

func TestStartedEndpoint(t *testing.T) {
	t.Setenv(childEnv, "1")
	for _, noPersist := range []bool{false, true} {
		cfg := Config{Exe: os.Args[0], Tasks: 3000, Batch: 500, Submitters: 2, RTT: 20, Raw: 2000,
			Managers: 1, Workers: 4, Prefetch: 200, Interval: 100 * time.Millisecond, NoPersist: noPersist}
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("no-persist=%v: %v", noPersist, err)
		}
		tp := rep.Throughput
		if tp == nil || tp.Tasks != 3000 || tp.Failed != 0 || tp.TasksPerSec <= 0 || tp.EndedRequests < 1 {
			t.Fatalf("throughput %+v", tp)
		}
		if rep.Persist == noPersist || rep.Mode != "started" {
			t.Errorf("persist=%v mode=%s", rep.Persist, rep.Mode)
		}
		if l := rep.Latency; l == nil || l.Tasks != 20 || l.MedianMS <= 0 || l.P99MS < l.MedianMS || l.Failed != 0 {
			t.Errorf("latency %+v", l)
		}
		if len(rep.Processes) != 3 {
			t.Fatalf("processes %+v", rep.Processes)
		}
		for _, p := range rep.Processes {
			if p.PID <= 0 || p.PeakRSS == 0 || p.RSS == 0 {
				t.Errorf("process %+v", p)
			}
		}
		if tp.AllCPUMicrosPerTk <= 0 {
			t.Errorf("CPU per task of all processes not measured: %+v", tp)
		}
		if rep.Raw == nil || rep.Raw.PerTask.Messages != 2000 || rep.FractionOfRaw <= 0 || len(rep.Targets) != 4 {
			t.Errorf("raw %+v, fraction %g, targets %+v", rep.Raw, rep.FractionOfRaw, rep.Targets)
		}
		var text bytes.Buffer
		if err := WriteText(&text, rep); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"tasks/s", "Round trip", "manager-1", "Raw ZMQ baseline", "Targets"} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("text report lacks %q:\n%s", want, text.String())
			}
		}
		if _, err := json.Marshal(rep); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartedEndpointQueued(t *testing.T) {
	t.Setenv(childEnv, "1")
	rep, err := Run(context.Background(), Config{Exe: os.Args[0], Queued: 5000, Batch: 1000, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	q := rep.Queued
	if q == nil || q.Tasks != 5000 || q.QueuedObserved < 5000 || rep.Throughput != nil {
		t.Fatalf("queued %+v", q)
	}
	if q.Interchange.RSSAfter == 0 || q.Forwarder.RSSAfter == 0 || q.Interchange.HeapAfter <= 0 {
		t.Errorf("memory %+v / %+v", q.Interchange, q.Forwarder)
	}
	if rep.Config["interchange_pause_queued_tasks"].(int) <= 5000 {
		t.Errorf("pause threshold not lifted: %v", rep.Config)
	}
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// TestTargetedSimulatedManagers runs the idle-managers scenario against an
// endpoint running inside the test.
func TestTargetedSimulatedManagers(t *testing.T) {
	const iv = 50 * time.Millisecond
	fw, err := forwarder.New(forwarder.Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: true,
		HeartbeatInterval: iv, HeartbeatThreshold: 10 * iv, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := fw.CreateEndpoint("tgt", false)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := interchange.New(interchange.Options{EndpointID: "tgt", Forwarder: fw.ZMQAddr(), ListenManagers: "tcp://127.0.0.1:*",
		ListenHTTP: "127.0.0.1:0", NoPersist: true, HeartbeatInterval: iv, HeartbeatThreshold: 10 * iv, Log: quiet(), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- fw.Run(ctx) }()
	go func() { done <- ix.Run(ctx) }()
	defer func() {
		cancel()
		for i := 0; i < 2; i++ {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()
	if err := pollUntil(ctx, 10*time.Second, 10*time.Millisecond, func() error {
		if !ix.Status().ForwarderConnected {
			return context.DeadlineExceeded
		}
		return nil
	}); err != nil {
		t.Fatalf("interchange not connected: %v", err)
	}
	rep, err := Run(ctx, Config{API: "http://" + fw.HTTPAddr(), EndpointID: "tgt", InterchangeHTTP: ix.HTTPAddr(),
		InterchangeManagers: ix.ManagersAddr(), ManagerCredentials: writeCreds(t, ix.ManagerCredentials()), Token: fw.AdminToken(),
		InterchangeToken: ix.AdminToken(), SimManagers: 20, SimInterval: iv, Duration: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Sims
	if s == nil || s.Managers != 20 || rep.Mode != "targeted" {
		t.Fatalf("sims %+v", s)
	}
	// Each manager reports every interval and is answered: about 2
	// messages per interval, both ways.
	want := 2 / iv.Seconds()
	if s.PerManagerPerSecond < want/2 || s.PerManagerPerSecond > 2*want {
		t.Errorf("%.1f messages/s per manager, want about %.0f", s.PerManagerPerSecond, want)
	}
	if s.ManagersToInterchange.By["ManagerStatusReport"] <= 0 || s.InterchangeToManagers.By["Heartbeat"] <= 0 {
		t.Errorf("links %+v / %+v", s.ManagersToInterchange, s.InterchangeToManagers)
	}
	if s.ManagersLost != 0 || s.InterchangeRSS == 0 {
		t.Errorf("lost %g, rss %d", s.ManagersLost, s.InterchangeRSS)
	}
}

func writeCreds(t *testing.T, c *curve.Credentials) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manager.credentials")
	if err := curve.WriteCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}
