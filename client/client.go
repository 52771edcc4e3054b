// Package client is the Go client of the forwarder's HTTP API (and of the
// admin HTTP of interchanges and managers). The CLI, the benchmark and the
// tests all use it, so the API has one client.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultAPI is the forwarder's default address (docs/contract.md, Commands).
const DefaultAPI = "http://127.0.0.1:8080"

// Environment variables the CLI and FromEnv read.
const (
	EnvAPI   = "SWITCHYARD_API"
	EnvToken = "SWITCHYARD_TOKEN"
)

// Client talks to one daemon's HTTP API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option changes a Client.
type Option func(*Client)

// WithToken sends Authorization: Bearer token with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = strings.TrimSpace(token) } }

// WithHTTPClient uses hc (timeouts, transport, TLS roots) for requests.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the daemon at base (http[s]://host:port or
// host:port).
func New(base string, opts ...Option) *Client {
	base = strings.TrimRight(base, "/")
	if base == "" {
		base = DefaultAPI
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	c := &Client{base: base, hc: &http.Client{Timeout: 10 * time.Minute}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Base is the URL the client talks to.
func (c *Client) Base() string { return c.base }

// Token is the bearer token sent, if any.
func (c *Client) Token() string { return c.token }

// WithToken returns a copy of c that sends another token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = strings.TrimSpace(token)
	return &cp
}

// ReadTokenFile reads a token kept in a file (such as STATE_DIR/admin.token).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}

// Error is an answer of status 400 or more: the status and the server's
// message.
type Error struct {
	Method  string
	Path    string
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// daemonHeader names the kind of daemon that answered (httpx.DaemonHeader).
const daemonHeader = "Switchyard-Daemon"

// UnreachableError says the server could not be reached at all (refused
// connection, DNS, TLS, timeout): no HTTP answer came.
type UnreachableError struct {
	Base string
	Err  error
}

func (e *UnreachableError) Error() string { return fmt.Sprintf("cannot reach %s: %v", e.Base, e.Err) }
func (e *UnreachableError) Unwrap() error { return e.Err }

// StatusOf is the HTTP status carried by err, or 0 when err is not an
// answer of the server.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Request is one call in its full form, for callers that need a raw body,
// headers or a status other than 2xx (tests of bad input).
type Request struct {
	Method string
	Path   string
	// Body is sent as it is; ContentType defaults to application/json
	// when there is a body.
	Body        io.Reader
	ContentType string
	// ContentLength, when not zero, is sent as the body's length.
	ContentLength int64
	Header        http.Header
}

// Response is an answer of any status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r Response) String() string {
	b := r.Body
	if len(b) > 500 {
		b = append(b[:500:500], "..."...)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, bytes.TrimSpace(b))
}

// Do performs r; any status is a Response, only a transport failure is an
// error.
func (c *Client) Do(ctx context.Context, r Request) (Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, c.base+r.Path, r.Body)
	if err != nil {
		return Response{}, err
	}
	if r.Body != nil {
		ct := r.ContentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if r.ContentLength > 0 {
		req.ContentLength = r.ContentLength
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, ctx.Err()
		}
		return Response{}, &UnreachableError{Base: c.base, Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read answer: %w", r.Method, r.Path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// call sends body (JSON-encoded unless it is []byte) and decodes a 2xx
// answer into out; any other status is an *Error.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(j)
	}
	resp, err := c.Do(ctx, Request{Method: method, Path: path, Body: rd})
	if err != nil {
		return err
	}
	if resp.Status >= 400 {
		return errorOf(method, path, resp)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = resp.Body
		return nil
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("%s %s: decode answer %q: %w", method, path, truncate(resp.Body, 200), err)
	}
	return nil
}

func errorOf(method, path string, resp Response) *Error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(resp.Body))
	if json.Unmarshal(resp.Body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if d := resp.Header.Get(daemonHeader); d != "" && d != "forwarder" && strings.HasPrefix(path, "/v1/") {
		msg = fmt.Sprintf("this is a%s %s's admin API, not the forwarder's; point %s (or --api) at the forwarder (default %s). The %s said: %s",
			map[bool]string{true: "n"}[d == "interchange"], d, EnvAPI, DefaultAPI, d, msg)
	}
	return &Error{Method: method, Path: path, Status: resp.Status, Message: msg}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

func esc(s string) string { return url.PathEscape(s) }
