package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
)

// Client is the API client (package client) with helpers for tests: raw
// requests of any status and calls that fail the test. It is safe for
// concurrent use.
type Client struct {
	*client.Client
}

// NewClient returns a client for base (http://host:port) that sends token
// (none when empty).
func NewClient(base, token string) *Client {
	return &Client{client.New(base, client.WithToken(token), client.WithHTTPClient(&http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}))}
}

// As returns a client of the same daemon that sends another token.
func (c *Client) As(token string) *Client { return &Client{c.Client.WithToken(token)} }

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
	switch b := r.Body.(type) {
	case nil:
	case Raw:
		body = strings.NewReader(string(b))
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return Response{}, fmt.Errorf("encode body: %w", err)
		}
		body = bytes.NewReader(j)
	}
	h := http.Header{}
	for k, v := range r.Header {
		h.Set(k, v)
	}
	ctx := context.Background()
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	resp, err := c.Client.Do(ctx, client.Request{Method: r.Method, Path: r.Path, Body: body, Header: h})
	if err != nil {
		return Response{}, err
	}
	return Response{Code: resp.Status, Header: resp.Header, Body: resp.Body}, nil
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

// TaskView is the forwarder's JSON task object.
type TaskView = client.Task

// Submit posts tasks (each a JSON-encodable object) to endpoint ep and
// returns their ids.
func (c *Client) Submit(ep string, tasks ...any) ([]string, error) {
	return c.Client.Submit(context.Background(), ep, tasks...)
}

// Status reads many tasks at once, in chunks, in the order of ids.
func (c *Client) Status(ids []string) ([]TaskView, error) {
	return c.Client.Status(context.Background(), ids)
}

// Get reads one task.
func (c *Client) Get(id string) (TaskView, error) {
	return c.Client.Task(context.Background(), id)
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

// Form posts form fields (name, value, name, value...) and returns the
// status and body; it fails the test on a transport error.
func (c *Client) Form(t testing.TB, path string, kv ...string) (int, string) {
	t.Helper()
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	resp, err := c.Client.Do(context.Background(), client.Request{Method: http.MethodPost, Path: path,
		Body: strings.NewReader(v.Encode()), ContentType: "application/x-www-form-urlencoded",
		Header: http.Header{"Accept": {"text/plain"}}})
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.Status, string(resp.Body)
}

// Text reads path as plain text, whatever its status; it fails the test
// on a transport error.
func (c *Client) Text(t testing.TB, path string) string {
	t.Helper()
	resp, err := c.Client.Do(context.Background(), client.Request{Method: http.MethodGet, Path: path,
		Header: http.Header{"Accept": {"text/plain"}}})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return string(resp.Body)
}
