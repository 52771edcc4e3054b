package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
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

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilt()
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

// proc is a child process (testutil's process kit).
type proc = testutil.Proc

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
