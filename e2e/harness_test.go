// Package e2e tests Switchyard end to end: it builds ./cmd/switchyard once,
// starts the forwarder, interchange and managers as real processes on free
// loopback ports (testutil's process kit, with the flags of the launch
// spec), and talks to them only over their public interfaces (HTTP, the
// CLI, signals).
//
// Set SWITCHYARD_E2E_RACE=1 to build the daemons with -race as well; their
// logs are then checked for "DATA RACE". Set SWITCHYARD_E2E_LOGS=1 to print
// every daemon's log even when a test passes.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// binPath is the switchyard binary built by TestMain.
var binPath string

func TestMain(m *testing.M) {
	var err error
	if binPath, err = testutil.BuildOnce(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	code := m.Run()
	testutil.RemoveBuilt()
	os.Exit(code)
}

// ---------------------------------------------------------------- polling

// waitFor polls cond until it returns nil or timeout passes; the last error
// says what was still missing.
func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := poll(timeout, 10*time.Millisecond, cond); err != nil {
		t.Fatalf("timed out after %s: %v", timeout, err)
	}
}

// poll is waitFor without the test: it returns the last error on timeout.
func poll(timeout, step time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(step)
	}
}

// proc is one daemon process (testutil's process kit).
type proc = testutil.Proc

// ---------------------------------------------------------------- cluster

const (
	defaultInterval  = 100 * time.Millisecond
	defaultThreshold = 500 * time.Millisecond
)

// cluster is one endpoint: a forwarder, an interchange and managers, each a
// real process with its own ports and state dir.
type cluster struct {
	t         testing.TB
	dir       string
	ep        string
	interval  time.Duration
	threshold time.Duration

	fwdHTTP, fwdZMQ   int
	ixHTTP, ixManager int

	d    *testutil.Daemons
	fwd  *proc
	ix   *proc
	mgrs map[string]*manager
	http *http.Client
	// token is the forwarder's admin token; creds the endpoint's
	// enrollment file.
	token, creds string
}

type manager struct {
	*proc
	id   string
	port int
}

func (m *manager) base() string { return fmt.Sprintf("http://127.0.0.1:%d", m.port) }

type clusterOpts struct {
	endpoint  string
	interval  time.Duration
	threshold time.Duration
	// ixArgs are extra interchange flags.
	ixArgs []string
}

// newCluster starts a forwarder and an interchange and waits until the
// forwarder sees the endpoint connected.
func newCluster(t testing.TB, o clusterOpts) *cluster {
	t.Helper()
	if o.endpoint == "" {
		o.endpoint = "e2e"
	}
	if o.interval == 0 {
		o.interval = defaultInterval
	}
	if o.threshold == 0 {
		o.threshold = defaultThreshold
	}
	d := testutil.StartDaemons(t, binPath, testutil.DaemonsOptions{Endpoint: o.endpoint, Interval: o.interval, Threshold: o.threshold,
		Interchange: launch.Interchange{Extra: o.ixArgs}})
	return &cluster{t: t, d: d, dir: d.Dir, ep: d.Endpoint, interval: o.interval, threshold: o.threshold,
		fwdHTTP: d.FwdHTTP, fwdZMQ: d.FwdZMQ, ixHTTP: d.IxHTTP, ixManager: d.IxManagers,
		fwd: d.Forwarder, ix: d.Interchange, token: d.Token, creds: d.Creds,
		mgrs: map[string]*manager{}, http: &http.Client{Timeout: 60 * time.Second}}
}

// with is the cluster seen from a subtest: helpers that fail, fail t.
// (FailNow must run on the goroutine of the test it stops.)
func (c *cluster) with(t testing.TB) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

func (c *cluster) addr(port int) string { return testutil.Addr(port) }
func (c *cluster) api() string          { return c.d.API() }
func (c *cluster) ixAPI() string        { return c.d.IxAPI() }

// tokenFile is the admin token file of the daemon at host:port.
func (c *cluster) tokenFile(host string) string {
	switch host {
	case c.addr(c.fwdHTTP):
		return filepath.Join(c.dir, "state-forwarder", "admin.token")
	case c.addr(c.ixHTTP):
		return filepath.Join(c.dir, "state-interchange", "admin.token")
	}
	for id, m := range c.mgrs {
		if c.addr(m.port) == host {
			return filepath.Join(c.dir, "state-"+id, "admin.token")
		}
	}
	return ""
}

// addManager starts a manager with its own admin HTTP port and state dir
// and waits until the interchange lists it. prefetch < 0 keeps the
// manager's default.
func (c *cluster) addManager(id string, workers, prefetch int, extra ...string) *manager {
	c.t.Helper()
	m := c.startManager(id, workers, prefetch, extra...)
	c.waitManagerListed(id, 30*time.Second)
	return m
}

// startManager starts a manager without waiting for it.
func (c *cluster) startManager(id string, workers, prefetch int, extra ...string) *manager {
	c.t.Helper()
	spec := launch.Manager{ManagerID: id, Workers: workers, Extra: extra}
	if prefetch >= 0 {
		spec.Prefetch = new(prefetch)
	}
	mp := c.d.StartManager(c.t, spec)
	m := &manager{proc: mp.Proc, id: id, port: mp.Port}
	c.mgrs[id] = m
	return m
}

func (c *cluster) waitManagerListed(id string, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, func() error {
		st, err := c.ixStatus()
		if err != nil {
			return err
		}
		if !st.lists(id) {
			return fmt.Errorf("interchange does not list manager %s yet (managers: %v)", id, st.ids())
		}
		return nil
	})
}

// ---------------------------------------------------------------- HTTP

// httpResult is an HTTP answer of any status.
type httpResult struct {
	status int
	header http.Header
	body   []byte
}

func (r httpResult) String() string {
	b := r.body
	if len(b) > 500 {
		b = append(b[:500:500], "..."...)
	}
	return fmt.Sprintf("HTTP %d %s", r.status, bytes.TrimSpace(b))
}

// clientFor is the API client of the daemon that serves u, and the path
// and query of u.
func (c *cluster) clientFor(u string) (*client.Client, string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, "", err
	}
	return client.New(pu.Scheme+"://"+pu.Host, client.WithHTTPClient(c.http), client.WithToken(c.tokenFor(pu.Host))), pu.RequestURI(), nil
}

// tokenFor is the bearer token of the daemon at host:port (each keeps its
// own in STATE_DIR/admin.token).
func (c *cluster) tokenFor(host string) string {
	if host == c.addr(c.fwdHTTP) {
		return c.token
	}
	if f := c.tokenFile(host); f != "" {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// send performs r against the daemon that serves u.
func (c *cluster) send(u string, r client.Request) (httpResult, error) {
	cl, path, err := c.clientFor(u)
	if err != nil {
		return httpResult{}, err
	}
	r.Path = path
	resp, err := cl.Do(context.Background(), r)
	if err != nil {
		return httpResult{}, err
	}
	return httpResult{status: resp.Status, header: resp.Header, body: resp.Body}, nil
}

// do sends a request; body is JSON-encoded unless it is []byte or an
// io.Reader.
func (c *cluster) do(method, url string, body any) (httpResult, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return httpResult{}, err
		}
		rd = bytes.NewReader(raw)
	}
	return c.send(url, client.Request{Method: method, Body: rd})
}

// mustDo is do that fails the test on a transport error.
func (c *cluster) mustDo(method, url string, body any) httpResult {
	c.t.Helper()
	r, err := c.do(method, url, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// getJSON decodes a 200 answer into out.
func (c *cluster) getJSON(url string, out any) error {
	r, err := c.do("GET", url, nil)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, r)
	}
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("GET %s: decode %q: %w", url, r.body, err)
	}
	return nil
}

// ---------------------------------------------------------------- forwarder API

// taskView is the forwarder's task object.
type taskView = client.Task

// execResult is the result of an exec task.
type execResult = client.ExecResult

// execOf decodes v's result as an exec result; no result is an error.
func execOf(v taskView) (execResult, error) {
	if len(v.Result) == 0 || string(v.Result) == "null" {
		return execResult{}, fmt.Errorf("task %s has no result", v.TaskID)
	}
	return v.Exec()
}

func terminal(state string) bool { return client.Terminal(state) }

type task map[string]any

func noop() task                   { return task{"kind": "noop"} }
func sleepTask(secs string) task   { return task{"kind": "sleep", "args": []string{secs}} }
func execTask(args ...string) task { return task{"kind": "exec", "args": args} }

// submit posts tasks in batches and returns their ids in order.
func (c *cluster) submit(tasks []task, batch int) []string {
	c.t.Helper()
	if batch <= 0 {
		batch = len(tasks)
	}
	var ids []string
	for i := 0; i < len(tasks); i += batch {
		chunk := tasks[i:min(i+batch, len(tasks))]
		r := c.mustDo("POST", c.api()+"/v1/endpoints/"+c.ep+"/tasks", map[string]any{"tasks": chunk})
		if r.status != http.StatusAccepted {
			c.t.Fatalf("submit %d tasks: want 202, got %s", len(chunk), r)
		}
		var resp struct {
			TaskIDs []string `json:"task_ids"`
		}
		if err := json.Unmarshal(r.body, &resp); err != nil {
			c.t.Fatalf("submit: decode %s: %v", r, err)
		}
		if len(resp.TaskIDs) != len(chunk) {
			c.t.Fatalf("submit %d tasks: got %d ids", len(chunk), len(resp.TaskIDs))
		}
		ids = append(ids, resp.TaskIDs...)
	}
	return ids
}

// statuses reads tasks through POST /v1/tasks/status, keyed by id.
func (c *cluster) statuses(ids []string) (map[string]taskView, error) {
	out := make(map[string]taskView, len(ids))
	for i := 0; i < len(ids); i += 5000 {
		chunk := ids[i:min(i+5000, len(ids))]
		r, err := c.do("POST", c.api()+"/v1/tasks/status", map[string]any{"task_ids": chunk})
		if err != nil {
			return nil, err
		}
		if r.status != http.StatusOK {
			return nil, fmt.Errorf("POST /v1/tasks/status: %s", r)
		}
		var resp struct {
			Tasks []taskView `json:"tasks"`
		}
		if err := json.Unmarshal(r.body, &resp); err != nil {
			return nil, fmt.Errorf("POST /v1/tasks/status: decode: %w", err)
		}
		if len(resp.Tasks) != len(chunk) {
			return nil, fmt.Errorf("POST /v1/tasks/status: asked for %d tasks, got %d", len(chunk), len(resp.Tasks))
		}
		for j, tv := range resp.Tasks {
			if tv.TaskID != chunk[j] {
				return nil, fmt.Errorf("POST /v1/tasks/status: answer %d is task %s, want %s (order must follow the request)", j, tv.TaskID, chunk[j])
			}
			out[tv.TaskID] = tv
		}
	}
	return out, nil
}

func (c *cluster) mustStatuses(ids []string) map[string]taskView {
	c.t.Helper()
	s, err := c.statuses(ids)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *cluster) getTask(id string) (taskView, error) {
	var v taskView
	err := c.getJSON(c.api()+"/v1/tasks/"+id, &v)
	return v, err
}

// countStates summarises tasks by state.
func countStates(s map[string]taskView) map[string]int {
	out := map[string]int{}
	for _, v := range s {
		out[v.State]++
	}
	return out
}

// waitTerminal waits until every task is terminal and returns them.
func (c *cluster) waitTerminal(ids []string, timeout time.Duration) map[string]taskView {
	c.t.Helper()
	var last map[string]taskView
	err := poll(timeout, 50*time.Millisecond, func() error {
		s, err := c.statuses(ids)
		if err != nil {
			return err
		}
		last = s
		for _, v := range s {
			if !terminal(v.State) {
				return fmt.Errorf("not all %d tasks terminal: %v", len(ids), countStates(s))
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("after %s: %v", timeout, err)
	}
	return last
}

// endpointView is GET /v1/endpoints/{ep}.
type endpointView = client.Endpoint

func (c *cluster) endpoint() (endpointView, error) {
	var v endpointView
	err := c.getJSON(c.api()+"/v1/endpoints/"+c.ep, &v)
	return v, err
}

func (c *cluster) waitEndpoint(timeout time.Duration, cond func(endpointView) error) endpointView {
	c.t.Helper()
	var v endpointView
	waitFor(c.t, timeout, func() error {
		var err error
		if v, err = c.endpoint(); err != nil {
			return err
		}
		return cond(v)
	})
	return v
}

// waitCapacity waits until the forwarder reports the endpoint connected
// with these totals.
func (c *cluster) waitCapacity(managers, workers int) {
	c.t.Helper()
	c.waitEndpoint(30*time.Second, func(v endpointView) error {
		if !v.Connected || v.Managers != managers || v.Workers != workers {
			return fmt.Errorf("endpoint connected=%v managers=%d workers=%d; want connected, %d managers, %d workers",
				v.Connected, v.Managers, v.Workers, managers, workers)
		}
		return nil
	})
}

// ---------------------------------------------------------------- interchange API

type ixManagerView struct {
	ID          string    `json:"manager_id"`
	Workers     int       `json:"workers"`
	IdleWorkers int       `json:"idle_workers"`
	Outstanding int       `json:"outstanding"`
	LastSeen    time.Time `json:"last_seen"`
	Registered  time.Time `json:"registered_at"`
}

type ixStatus struct {
	EndpointID         string          `json:"endpoint_id"`
	ForwarderConnected bool            `json:"forwarder_connected"`
	Managers           int             `json:"managers"`
	Workers            int             `json:"workers"`
	Queued             int             `json:"queued"`
	Outstanding        int             `json:"outstanding"`
	ResultsUndelivered int             `json:"results_undelivered"`
	ManagerList        []ixManagerView `json:"manager_list"`
}

func (s ixStatus) lists(id string) bool {
	for _, m := range s.ManagerList {
		if m.ID == id {
			return true
		}
	}
	return false
}

func (s ixStatus) manager(id string) (ixManagerView, bool) {
	for _, m := range s.ManagerList {
		if m.ID == id {
			return m, true
		}
	}
	return ixManagerView{}, false
}

func (s ixStatus) ids() []string {
	out := make([]string, 0, len(s.ManagerList))
	for _, m := range s.ManagerList {
		out = append(out, m.ID)
	}
	return out
}

func (c *cluster) ixStatus() (ixStatus, error) {
	var s ixStatus
	err := c.getJSON(c.ixAPI()+"/status", &s)
	return s, err
}

// mgrStatus is a manager's GET /status.
type mgrStatus struct {
	ManagerID   string `json:"manager_id"`
	Registered  bool   `json:"registered"`
	Workers     int    `json:"workers"`
	IdleWorkers int    `json:"idle_workers"`
	Held        int    `json:"tasks_held"`
	Pending     int    `json:"tasks_pending"`
	HeldResults int    `json:"results_unacked"`
}

func (c *cluster) mgrStatus(m *manager) (mgrStatus, error) {
	var s mgrStatus
	err := c.getJSON(m.base()+"/status", &s)
	return s, err
}

// ---------------------------------------------------------------- metrics

// metricValue finds one sample in Prometheus text: name with an optional
// label set such as `{state="cancelled"}`; ok is false when it is absent.
func metricValue(text, name, labels string) (float64, bool) {
	prefix := name + labels + " "
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			if err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

func (c *cluster) metrics(base string) (string, error) {
	r, err := c.do("GET", base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	if r.status != http.StatusOK {
		return "", fmt.Errorf("GET %s/metrics: %s", base, r)
	}
	return string(r.body), nil
}

// ---------------------------------------------------------------- CLI

type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// cli runs a client subcommand of the binary against the forwarder.
func (c *cluster) cli(args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{args[0], "--api", c.api()}, args[1:]...)
	cmd := exec.CommandContext(ctx, binPath, full...)
	cmd.Env = append(os.Environ(), "SWITCHYARD_API=http://127.0.0.1:1", // --api must win
		"SWITCHYARD_TOKEN="+c.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		c.t.Fatalf("switchyard %s: %v", strings.Join(full, " "), err)
	}
	if ctx.Err() != nil {
		c.t.Fatalf("switchyard %s: did not finish in 60s", strings.Join(full, " "))
	}
	return res
}

// ---------------------------------------------------------------- numbers

// durationStats gives the median and the p99 (nearest rank) of ds.
func durationStats(ds []time.Duration) (median, p99, maxd time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.99*float64(n))) - 1
	return median, s[max(rank, 0)], s[n-1]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}
