package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

func TestReadBanner(t *testing.T) {
	log := `interchange | time="x" level=info msg="  API: not me"
switchyard: admin token in /v/forwarder/admin.token
  export SWITCHYARD_TOKEN=syt_abc
switchyard: endpoint "local" up
  API:         http://127.0.0.1:4000   (export SWITCHYARD_API=http://127.0.0.1:4000)
  interchange: http://127.0.0.1:4001/status
manager-1   | time="x" msg="  export SWITCHYARD_TOKEN=wrong"
`
	path := filepath.Join(t.TempDir(), "up.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	b := readBanner(path)
	want := banner{api: "http://127.0.0.1:4000", ixHTTP: "http://127.0.0.1:4001", token: "syt_abc", up: true}
	if b != want {
		t.Errorf("banner %+v, want %+v", b, want)
	}
	if b := readBanner(path + ".missing"); b.up || b.api != "" {
		t.Errorf("banner of a missing file: %+v", b)
	}
}

func TestSucceededIn(t *testing.T) {
	cases := []struct {
		out  string
		want int
	}{
		{"100000 tasks: 99998 success, 2 failed, 0 cancelled\n", 99998},
		{"a1  success\na2  failed\na3  success\n", 2},
		{"", 0},
	}
	for _, tc := range cases {
		if got, _ := succeededIn(tc.out); got != tc.want {
			t.Errorf("succeededIn(%q) = %d, want %d", tc.out, got, tc.want)
		}
	}
}

// checkCLIReport asserts what a --cli run of n tasks must show.
func checkCLIReport(t *testing.T, rep *Report, n int) {
	t.Helper()
	c := rep.CLI
	if c == nil {
		t.Fatalf("no cli result in %+v", rep)
	}
	if c.WaitExit != 0 || c.SubmitExit != 0 || c.Succeeded != n || c.Tasks != n {
		t.Errorf("wait exit %d, submit exit %d, %d of %d succeeded (%q)", c.WaitExit, c.SubmitExit, c.Succeeded, n, c.WaitOutput)
	}
	if c.TasksPerSec <= 0 || c.Seconds <= 0 {
		t.Errorf("%.0f tasks/s in %.3fs", c.TasksPerSec, c.Seconds)
	}
	seen := map[string]bool{}
	sum, daemons := 0.0, 0.0
	for _, p := range rep.Processes {
		seen[p.Name] = true
		sum += p.CPUSeconds
		if p.PeakRSS == 0 || p.PID <= 0 || p.CPUSeconds < 0 {
			t.Errorf("process %+v", p)
		}
		if p.Source == "rusage" {
			// The clients' CPU comes in microseconds: each used some.
			if p.CPUSeconds <= 0 || p.CPUMicrosPerTk <= 0 {
				t.Errorf("client %+v used no CPU", p)
			}
			continue
		}
		// A daemon's CPU comes from /proc in 10 ms clock ticks, and
		// thousands of no-ops may take less than one in one of them;
		// together they take several (20,000 take about 0.2 s).
		daemons += p.CPUSeconds
	}
	if daemons <= 0 {
		t.Errorf("the daemons used no CPU in all: %+v", rep.Processes)
	}
	for _, name := range []string{"forwarder", "interchange", "manager-1", "submit", "wait", "endpoint up"} {
		if !seen[name] {
			t.Errorf("no %s among %+v", name, rep.Processes)
		}
	}
	if c.TotalCPUSeconds != sum || c.TotalCPUMicrosPerTk <= 0 {
		t.Errorf("total CPU %g (%g µs/task), processes add to %g", c.TotalCPUSeconds, c.TotalCPUMicrosPerTk, sum)
	}
	// Persistence is on: the interchange commits at least once.
	if c.InterchangeCommits == nil || *c.InterchangeCommits < 1 || c.InterchangeCommitsPerTask == nil {
		t.Errorf("interchange store commits %v", c.InterchangeCommits)
	}
}

func TestCLIPath(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	// Enough tasks that the daemons' CPU shows in 10 ms ticks (3,000 took
	// under one tick each once the daemons got fast).
	const n = 20000
	rep, err := Run(context.Background(), Config{Exe: bin, CLI: true, Tasks: n, Managers: 1, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "cli" || rep.Throughput != nil {
		t.Errorf("mode %s, throughput %+v", rep.Mode, rep.Throughput)
	}
	checkCLIReport(t, rep, n)
	if rep.Dir != "" {
		t.Errorf("temp dir %s kept without Keep", rep.Dir)
	}
	var text bytes.Buffer
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User's path", "| ", "wait - --quiet", "tasks/s", "all daemons + clients", "idle while tasks queued",
		"store commits per task", "manager-1", "submit", "Targets"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}

	// The command itself, with --json.
	out, err := exec.Command(bin, "bench", "--cli", "--tasks", strconv.Itoa(n), "--managers", "1", "--workers", "4", "--json", "--quiet").Output()
	if err != nil {
		t.Fatalf("bench --cli --json: %v\n%s", err, out)
	}
	var jrep Report
	if err := json.Unmarshal(out, &jrep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, out)
	}
	checkCLIReport(t, &jrep, n)
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	cli, _ := raw["cli"].(map[string]any)
	for _, k := range []string{"tasks_per_second", "wait_exit_code", "succeeded", "total_cpu_us_per_task", "idle_while_queued_max_seconds",
		"interchange_store_commits_per_task"} {
		if _, ok := cli[k]; !ok {
			t.Errorf("JSON cli object lacks %q: %v", k, cli)
		}
	}
	procs, _ := raw["processes"].([]any)
	for _, p := range procs {
		m, _ := p.(map[string]any)
		for _, k := range []string{"name", "cpu_seconds", "cpu_us_per_task", "peak_rss_bytes"} {
			if _, ok := m[k]; !ok {
				t.Errorf("JSON process lacks %q: %v", k, m)
			}
		}
	}
}

func TestCLIRefusesAPI(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	for _, args := range [][]string{
		{"bench", "--cli", "--api", "http://127.0.0.1:1"},
		{"bench", "--cli", "--batch", "10"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("%v succeeded:\n%s", args, out)
		}
		if !strings.Contains(string(out), "--cli") || !strings.Contains(string(out), "--"+strings.SplitN(args[2], "-", 3)[2]) {
			t.Errorf("%v: the error does not name the flags:\n%s", args, out)
		}
	}
}
