package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Client talks JSON to one daemon's HTTP API. It is safe for concurrent use.
type Client struct {
	Base string
	HTTP *http.Client
}

// NewClient returns a client for base (http://host:port).
func NewClient(base string) *Client {
	if !strings.HasPrefix(base, "http") {
		base = "http://" + base
	}
	return &Client{Base: base, HTTP: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// Raw is a body sent as it is (not JSON-encoded).
type Raw string

// Request is the full form of a call.
type Request struct {
	Method  string
	Path    string
	Body    any // nil, Raw, []byte, or a value to encode as JSON
	Header  map[string]string
	Timeout time.Duration
}

// Response is what came back.
type Response struct {
	Code   int
	Header http.Header
	Body   []byte
}

// Send performs r; a non-2xx status is not an error.
func (c *Client) Send(r Request) (Response, error) {
	var body io.Reader
	ctype := ""
	switch b := r.Body.(type) {
	case nil:
	case Raw:
		body = strings.NewReader(string(b))
		ctype = "application/json"
	case []byte:
		body = bytes.NewReader(b)
		ctype = "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return Response{}, fmt.Errorf("encode body: %w", err)
		}
		body = bytes.NewReader(j)
		ctype = "application/json"
	}
	req, err := http.NewRequest(r.Method, c.Base+r.Path, body)
	if err != nil {
		return Response{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	hc := c.HTTP
	if r.Timeout > 0 {
		cp := *hc
		cp.Timeout = r.Timeout
		hc = &cp
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read body: %w", r.Method, r.Path, err)
	}
	return Response{Code: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Do sends body as JSON (or raw, see Send) and decodes a 2xx answer into
// out when out is not nil. It returns the status and the raw body.
func (c *Client) Do(method, path string, body, out any) (int, []byte, error) {
	resp, err := c.Send(Request{Method: method, Path: path, Body: body})
	if err != nil {
		return 0, nil, err
	}
	if out != nil && resp.Code/100 == 2 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return resp.Code, resp.Body, fmt.Errorf("%s %s: decode %q: %w", method, path, resp.Body, err)
		}
	}
	return resp.Code, resp.Body, nil
}

// Must is Do that fails the test on a transport error or a status other
// than want. Call it only from the test's goroutine.
func (c *Client) Must(t testing.TB, want int, method, path string, body, out any) []byte {
	t.Helper()
	code, raw, err := c.Do(method, path, body, out)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		t.Fatalf("%s %s: HTTP %d, want %d: %s", method, path, code, want, raw)
	}
	return raw
}

// TaskView is the forwarder's JSON task object as tests read it.
type TaskView struct {
	TaskID      string          `json:"task_id"`
	EndpointID  string          `json:"endpoint_id"`
	Kind        string          `json:"kind"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	Result      json.RawMessage `json:"result"`
	Error       string          `json:"error"`
	CreatedAt   *time.Time      `json:"created_at"`
	CompletedAt *time.Time      `json:"completed_at"`
}

// Terminal reports whether the task has ended.
func (v TaskView) Terminal() bool {
	return v.State == "success" || v.State == "failed" || v.State == "cancelled"
}

// Submit posts tasks (each a JSON-encodable object) to endpoint ep and
// returns their ids.
func (c *Client) Submit(ep string, tasks ...any) ([]string, error) {
	var out struct {
		TaskIDs []string `json:"task_ids"`
	}
	code, raw, err := c.Do(http.MethodPost, "/v1/endpoints/"+ep+"/tasks", map[string]any{"tasks": tasks}, &out)
	if err != nil {
		return nil, err
	}
	if code != http.StatusAccepted {
		return nil, fmt.Errorf("submit: HTTP %d: %s", code, raw)
	}
	if len(out.TaskIDs) != len(tasks) {
		return nil, fmt.Errorf("submit: %d ids for %d tasks", len(out.TaskIDs), len(tasks))
	}
	return out.TaskIDs, nil
}

// Status reads many tasks at once, in chunks, in the order of ids.
func (c *Client) Status(ids []string) ([]TaskView, error) {
	out := make([]TaskView, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), 5000)
		var res struct {
			Tasks []TaskView `json:"tasks"`
		}
		code, raw, err := c.Do(http.MethodPost, "/v1/tasks/status", map[string]any{"task_ids": ids[:n]}, &res)
		if err != nil {
			return nil, err
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("status: HTTP %d: %s", code, raw)
		}
		if len(res.Tasks) != n {
			return nil, fmt.Errorf("status: %d answers for %d ids", len(res.Tasks), n)
		}
		out = append(out, res.Tasks...)
		ids = ids[n:]
	}
	return out, nil
}

// Get reads one task.
func (c *Client) Get(id string) (TaskView, error) {
	var v TaskView
	code, raw, err := c.Do(http.MethodGet, "/v1/tasks/"+id, nil, &v)
	if err != nil {
		return v, err
	}
	if code != http.StatusOK {
		return v, fmt.Errorf("get %s: HTTP %d: %s", id, code, raw)
	}
	return v, nil
}

// WaitTerminal polls until every task has ended and returns their views.
func (c *Client) WaitTerminal(t testing.TB, ids []string, timeout time.Duration) []TaskView {
	t.Helper()
	var views []TaskView
	WaitFor(t, timeout, func() error {
		vs, err := c.Status(ids)
		if err != nil {
			return err
		}
		open := 0
		var example TaskView
		for _, v := range vs {
			if !v.Terminal() {
				if open == 0 {
					example = v
				}
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d tasks not ended, e.g. %s in %s (attempts %d)", open, len(ids), example.TaskID, example.State, example.Attempts)
		}
		views = vs
		return nil
	})
	return views
}
