package observability

import (
	"github.com/switchyard-hpc/switchyard/e2e/testutil"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
)

// promBin and promtoolBin are Debian's prometheus package; scripts/install-deps.sh
// (run by `make test`) installs it when missing.
const (
	promBin     = "/usr/bin/prometheus"
	promtoolBin = "/usr/bin/promtool"
)

// repoRoot is the module root, one level above this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "switchyard")); err != nil {
		t.Fatalf("module root %s has no cmd/switchyard: %v", root, err)
	}
	return root
}

// requireExecutable fails (never skips) when a tool the test needs is
// missing: installing it is the build's job.
func requireExecutable(t testing.TB, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing (%v): install Debian's prometheus package, e.g. with scripts/install-deps.sh (run by `make test`)", path, err)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// switchyardBinary builds ./cmd/switchyard once per test binary.
func switchyardBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchyard-obs-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "switchyard")
		cmd := exec.Command(testutil.GoTool(), "build", "-o", binPath, "./cmd/switchyard")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/switchyard: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// ---------------------------------------------------------------- polling

// waitFor polls cond every 20ms until it returns nil; after timeout the
// test fails with what was still missing.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- ports

var (
	portMu sync.Mutex
	given  = map[int]bool{}
)

// freePort picks a loopback port nobody listens on, never the same twice.
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !given[p] {
			given[p] = true
			return p
		}
	}
	t.Fatal("no fresh free port after 100 tries")
	return 0
}

func hostPort(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }

// ---------------------------------------------------------------- processes

// proc is one child process whose output goes to a log file that is
// printed when the test fails.
type proc struct {
	t       testing.TB
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

func startProc(t testing.TB, dir, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	fmt.Fprintf(f, "=== %s %s\n", bin, strings.Join(args, " "))
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// Own process group, and die with the test binary if that is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("SWITCHYARD_OBS_LOGS") != "" {
			p.dumpLog()
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("%s: cannot send %v: it has exited", p.name, sig)
	}
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		p.t.Fatalf("%s: kill %v: %v", p.name, sig, err)
	}
}

func (p *proc) kill9() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s: still running 10s after SIGKILL", p.name)
	}
}

// stop sends SIGCONT and SIGTERM, then SIGKILL if it does not end in 10s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-p.done
	p.t.Errorf("%s (pid %d) did not exit within 10s of SIGTERM; killed", p.name, pid)
}

func (p *proc) dumpLog() {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		p.t.Logf("--- %s: no log: %v", p.name, err)
		return
	}
	const max = 20000
	if len(b) > max {
		b = append([]byte(fmt.Sprintf("...(%d bytes cut)...\n", len(b)-max)), b[len(b)-max:]...)
	}
	p.t.Logf("--- %s log (%s) ---\n%s--- end of %s log ---", p.name, p.logPath, b, p.name)
}

// ---------------------------------------------------------------- HTTP

// httpc talks to Prometheus; Switchyard's own APIs go through package client.
var httpc = &http.Client{Timeout: 30 * time.Second}

// tokens holds the bearer token of each daemon by host:port, filled as
// daemons start.
var tokens sync.Map

// apiClient is the Switchyard client of the daemon that serves u, and the
// path and query of u.
func apiClient(u string) (*client.Client, string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, "", err
	}
	tok, _ := tokens.Load(pu.Host)
	t, _ := tok.(string)
	return client.New(pu.Scheme+"://"+pu.Host, client.WithToken(t), client.WithHTTPClient(httpc)), pu.RequestURI(), nil
}

// doJSON sends body (JSON when not nil) and decodes a JSON answer into out
// when out is not nil. It returns the status code and the raw body.
func doJSON(method, u string, body, out any) (int, []byte, error) {
	c, path, err := apiClient(u)
	if err != nil {
		return 0, nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.Do(context.Background(), client.Request{Method: method, Path: path, Body: rd})
	if err != nil {
		return 0, nil, err
	}
	if out != nil && resp.Status/100 == 2 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp.Status, resp.Body, fmt.Errorf("decode %s %s: %v: %s", method, u, err, resp.Body)
		}
	}
	return resp.Status, resp.Body, nil
}

func postForm(u string, form url.Values) (int, []byte, error) {
	c, path, err := apiClient(u)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(context.Background(), client.Request{Method: http.MethodPost, Path: path,
		Body: strings.NewReader(form.Encode()), ContentType: "application/x-www-form-urlencoded"})
	if err != nil {
		return 0, nil, err
	}
	return resp.Status, resp.Body, nil
}

// ---------------------------------------------------------------- Prometheus API

type promClient struct{ base string }

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`  // instant: [ts, "v"]
	Values [][]any           `json:"values"` // range: [[ts, "v"], ...]
}

type promAnswer struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

// get decodes the answer's data into out: for the query endpoints that is
// {resultType, result}, for the label values endpoint a list of strings.
func (p promClient) get(path string, q url.Values, out any) error {
	resp, err := httpc.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var a promAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("GET %s: HTTP %d, not JSON: %.300s", path, resp.StatusCode, raw)
	}
	if a.Status != "success" {
		return fmt.Errorf("GET %s: HTTP %d %s: %s", path, resp.StatusCode, a.ErrorType, a.Error)
	}
	return json.Unmarshal(a.Data, out)
}

// result reads the result of a query answer.
func (p promClient) result(path string, q url.Values) ([]promSeries, error) {
	var data struct {
		Result []promSeries `json:"result"`
	}
	err := p.get(path, q, &data)
	return data.Result, err
}

// query runs an instant query at the current time.
func (p promClient) query(expr string) ([]promSeries, error) {
	return p.result("/api/v1/query", url.Values{"query": {expr}})
}

// queryRange runs a range query, as Grafana does for every panel.
func (p promClient) queryRange(expr string, start, end time.Time, step time.Duration) ([]promSeries, error) {
	return p.result("/api/v1/query_range", url.Values{"query": {expr},
		"start": {unixString(start)}, "end": {unixString(end)}, "step": {step.String()}})
}

// labelValues is what Grafana's label_values(selector, label) asks.
func (p promClient) labelValues(label, selector string, start, end time.Time) ([]string, error) {
	var out []string
	err := p.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {selector},
		"start": {unixString(start)}, "end": {unixString(end)}}, &out)
	return out, err
}

func unixString(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}

// sampleValue reads a [ts, "value"] pair.
func sampleValue(pair []any) float64 {
	if len(pair) != 2 {
		return math.NaN()
	}
	s, ok := pair[1].(string)
	if !ok {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// scalar runs an instant query that must return exactly one series and
// gives its value.
func (p promClient) scalar(expr string) (float64, error) {
	res, err := p.query(expr)
	if err != nil {
		return 0, err
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("%s: %d series, want 1", expr, len(res))
	}
	return sampleValue(res[0].Value), nil
}

// atLeast waits for "expr >= want" in Prometheus (the last scrape).
func (p promClient) atLeast(expr string, want float64) func() error {
	return func() error {
		v, err := p.scalar(expr)
		if err != nil {
			return err
		}
		if !(v >= want) {
			return fmt.Errorf("%s = %g, want >= %g", expr, v, want)
		}
		return nil
	}
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
