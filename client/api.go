package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Task is the forwarder's task object.
type Task struct {
	TaskID      string          `json:"task_id"`
	EndpointID  string          `json:"endpoint_id,omitempty"`
	Kind        string          `json:"kind,omitempty"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	Runs        int             `json:"runs"`
	Result      json.RawMessage `json:"result"`
	Error       string          `json:"error,omitempty"`
	CreatedAt   *time.Time      `json:"created_at,omitempty"`
	CompletedAt *time.Time      `json:"completed_at,omitempty"`
}

// Terminal reports whether the task has ended.
func (t Task) Terminal() bool { return Terminal(t.State) }

// Terminal reports whether state is success, failed or cancelled.
func Terminal(state string) bool {
	return state == "success" || state == "failed" || state == "cancelled"
}

// ExecResult is the result of an exec task.
type ExecResult struct {
	ExitCode *int   `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// Exec decodes the task's result as an exec result.
func (t Task) Exec() (ExecResult, error) {
	var r ExecResult
	if len(t.Result) == 0 || string(t.Result) == "null" {
		return r, nil
	}
	err := json.Unmarshal(t.Result, &r)
	return r, err
}

// PythonResult is the result of a python task: the serialized value (or
// exception) and, from managers that make one, a short readable form of
// it (the value's repr() or the traceback's end, at most 2 KiB).
type PythonResult struct {
	Payload []byte `json:"payload"`
	Text    string `json:"text,omitempty"`
}

// Python decodes the task's result as a python result.
func (t Task) Python() (PythonResult, error) {
	var r PythonResult
	if len(t.Result) == 0 || string(t.Result) == "null" {
		return r, nil
	}
	err := json.Unmarshal(t.Result, &r)
	return r, err
}

// Endpoint is what GET /v1/endpoints/{ep} returns.
type Endpoint struct {
	EndpointID      string     `json:"endpoint_id"`
	Connected       bool       `json:"connected"`
	LastHeartbeat   *time.Time `json:"last_heartbeat"`
	Managers        int        `json:"managers"`
	Workers         int        `json:"workers"`
	IdleWorkers     int        `json:"idle_workers"`
	Queued          int        `json:"queued"`
	Outstanding     int        `json:"outstanding"`
	ServingState    string     `json:"serving_state"`
	Held            int        `json:"held_by_forwarder"`
	Hostname        string     `json:"hostname,omitempty"`
	SoftwareVersion string     `json:"software_version,omitempty"`
	LostReason      string     `json:"lost_reason,omitempty"`
	Owner           string     `json:"owner,omitempty"`
	MultiUser       bool       `json:"multi_user,omitempty"`
	// SharedWith is shown to the endpoint's owner and admins.
	SharedWith *Shares         `json:"shared_with,omitempty"`
	Probe      json.RawMessage `json:"probe,omitempty"`

	// QueuedByOwner is Queued per task owner (only the caller's own
	// unless she may manage the endpoint).
	QueuedByOwner map[string]int `json:"queued_by_owner,omitempty"`
}

// Shares are the users and groups an endpoint is shared with.
type Shares struct {
	Users  []string `json:"users"`
	Groups []string `json:"groups"`
}

// Cancel is the answer to cancelling one task.
type Cancel struct {
	TaskID    string `json:"task_id"`
	State     string `json:"state"`
	Cancelled bool   `json:"cancelled"`
	Message   string `json:"message"`
}

// Batch sizes the client splits long id lists into.
const statusChunk = 5000

// Submit posts tasks (each JSON-encodable: a map, a struct or a
// json.RawMessage) to endpoint ep and returns their ids in order.
func (c *Client) Submit(ctx context.Context, ep string, tasks ...any) ([]string, error) {
	b, err := json.Marshal(map[string]any{"tasks": tasks})
	if err != nil {
		return nil, fmt.Errorf("encode tasks: %w", err)
	}
	ids, err := c.SubmitBody(ctx, ep, b)
	if err == nil && len(ids) != len(tasks) {
		return ids, fmt.Errorf("submit: %d ids for %d tasks", len(ids), len(tasks))
	}
	return ids, err
}

// SubmitBody posts a ready-made body {"tasks":[...]} (the benchmark builds
// it once). It sends an Idempotency-Key and, when the answer is lost (the
// forwarder unreachable mid-request), sends the same request again with
// the same key, so the tasks are created once.
func (c *Client) SubmitBody(ctx context.Context, ep string, body []byte) ([]string, error) {
	key := uuid.NewString()
	delay := 100 * time.Millisecond
	for try := 1; ; try++ {
		ids, err := c.SubmitBodyKey(ctx, ep, body, key)
		var unreachable *UnreachableError
		if err == nil || !errors.As(err, &unreachable) || try == submitTries {
			return ids, err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay *= 2
	}
}

// submitTries is how many times SubmitBody sends a request whose answer
// was lost.
const submitTries = 4

// SubmitBodyKey posts body once with Idempotency-Key key: the same key and
// tasks again return the first request's ids.
func (c *Client) SubmitBodyKey(ctx context.Context, ep string, body []byte, key string) ([]string, error) {
	path := "/v1/endpoints/" + esc(ep) + "/tasks"
	resp, err := c.Do(ctx, Request{Method: http.MethodPost, Path: path, Body: bytes.NewReader(body),
		Header: http.Header{"Idempotency-Key": {key}}})
	if err != nil {
		return nil, err
	}
	if resp.Status >= 400 {
		return nil, errorOf(http.MethodPost, path, resp)
	}
	raw := resp.Body
	if ids, ok := fastIDs(raw); ok {
		return ids, nil
	}
	var out struct {
		TaskIDs []string `json:"task_ids"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("submit: decode answer %q: %w", truncate(raw, 200), err)
	}
	return out.TaskIDs, nil
}

// Task reads one task.
func (c *Client) Task(ctx context.Context, id string) (Task, error) {
	var t Task
	err := c.call(ctx, http.MethodGet, "/v1/tasks/"+esc(id), nil, &t)
	return t, err
}

// Wait long-polls one task for up to d (the server caps it at 5 minutes)
// and returns it, ended or not.
func (c *Client) Wait(ctx context.Context, id string, d time.Duration) (Task, error) {
	var t Task
	err := c.call(ctx, http.MethodGet, "/v1/tasks/"+esc(id)+"?wait="+d.Round(time.Millisecond).String(), nil, &t)
	return t, err
}

// Status reads many tasks, in chunks, in the order of ids. An unknown id
// comes back with state "unknown".
func (c *Client) Status(ctx context.Context, ids []string) ([]Task, error) {
	out := make([]Task, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), statusChunk)
		var res struct {
			Tasks []Task `json:"tasks"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/tasks/status", idsBody(ids[:n]), &res); err != nil {
			return nil, err
		}
		if len(res.Tasks) != n {
			return nil, fmt.Errorf("status of %d ids returned %d tasks", n, len(res.Tasks))
		}
		out = append(out, res.Tasks...)
		ids = ids[n:]
	}
	return out, nil
}

// Ended is a page of GET /v1/tasks/ended: tasks that ended after a cursor.
type Ended struct {
	Cursor string      `json:"cursor"`
	Tasks  []EndedTask `json:"tasks"`
	// More: more ends follow; ask again at once.
	More bool `json:"more"`
	// Reset: the cursor was not usable (another run of the forwarder, or
	// too old); tasks that ended before Cursor must be read with Status.
	Reset bool `json:"reset"`
}

// EndedTask is one task of an Ended page.
type EndedTask struct {
	TaskID string `json:"task_id"`
	State  string `json:"state"`
}

// Census is the answer of POST /v1/tasks/census.
type Census struct {
	Ended   []EndedTask `json:"ended"`
	Unknown []string    `json:"unknown"`
	Pending int         `json:"pending"`
}

// Census asks, in chunks, which of ids ended (and how), which are unknown
// and how many have not ended: a status call that stays small while most
// tasks run.
func (c *Client) Census(ctx context.Context, ids []string) (Census, error) {
	var out Census
	for len(ids) > 0 {
		n := min(len(ids), statusChunk)
		var raw json.RawMessage
		if err := c.call(ctx, http.MethodPost, "/v1/tasks/census", idsBody(ids[:n]), &raw); err != nil {
			return Census{}, err
		}
		res, ok := fastCensus(raw)
		if !ok {
			if err := json.Unmarshal(raw, &res); err != nil {
				return Census{}, fmt.Errorf("census: decode answer %q: %w", truncate(raw, 200), err)
			}
		}
		out.Ended = append(out.Ended, res.Ended...)
		out.Unknown = append(out.Unknown, res.Unknown...)
		out.Pending += res.Pending
		ids = ids[n:]
	}
	return out, nil
}

// Ended reads the caller's tasks that ended after cursor (empty: start
// now, nothing reported), waiting up to wait for the first one.
func (c *Client) Ended(ctx context.Context, cursor string, wait time.Duration, limit int) (Ended, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("after", cursor)
	}
	if wait > 0 {
		q.Set("wait", wait.Round(time.Millisecond).String())
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var raw json.RawMessage
	if err := c.call(ctx, http.MethodGet, "/v1/tasks/ended?"+q.Encode(), nil, &raw); err != nil {
		return Ended{}, err
	}
	if e, ok := fastEnded(raw); ok {
		return e, nil
	}
	var e Ended
	if err := json.Unmarshal(raw, &e); err != nil {
		return Ended{}, fmt.Errorf("ended: decode answer %q: %w", truncate(raw, 200), err)
	}
	return e, nil
}

// Cancel cancels one task; a task that already ended is left as it is.
func (c *Client) Cancel(ctx context.Context, id string) (Cancel, error) {
	var v Cancel
	err := c.call(ctx, http.MethodDelete, "/v1/tasks/"+esc(id), nil, &v)
	return v, err
}

// CancelMany cancels tasks in one call each chunk, in the order of ids.
func (c *Client) CancelMany(ctx context.Context, ids []string) ([]Cancel, error) {
	out := make([]Cancel, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), statusChunk)
		var res struct {
			Tasks []Cancel `json:"tasks"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/tasks/cancel", idsBody(ids[:n]), &res); err != nil {
			return nil, err
		}
		out = append(out, res.Tasks...)
		ids = ids[n:]
	}
	return out, nil
}

// Endpoints lists the endpoints the forwarder knows.
func (c *Client) Endpoints(ctx context.Context) ([]Endpoint, error) {
	var res struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	err := c.call(ctx, http.MethodGet, "/v1/endpoints", nil, &res)
	return res.Endpoints, err
}

// Endpoint reads one endpoint; probe also sends it a synchronous probe
// whose outcome is in Probe.
func (c *Client) Endpoint(ctx context.Context, id string, probe bool) (Endpoint, error) {
	var v Endpoint
	path := "/v1/endpoints/" + esc(id)
	if probe {
		path += "?probe=1"
	}
	err := c.call(ctx, http.MethodGet, path, nil, &v)
	return v, err
}

// Health reads GET /healthz.
func (c *Client) Health(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.call(ctx, http.MethodGet, "/healthz", nil, &raw)
	return raw, err
}

// Metrics reads the Prometheus text of GET /metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/metrics", Header: http.Header{"Accept": {"text/plain"}}})
	if err != nil {
		return nil, err
	}
	if resp.Status != http.StatusOK {
		return nil, errorOf(http.MethodGet, "/metrics", resp)
	}
	return resp.Body, nil
}

// DaemonStatus reads an interchange's or manager's GET /status into out.
func (c *Client) DaemonStatus(ctx context.Context, out any) error {
	return c.call(ctx, http.MethodGet, "/status", nil, out)
}

// ServingChange is a serving-state override: State "" clears it.
type ServingChange struct {
	State   string
	Timeout string // Go duration such as 30s; empty for none
	Force   bool
	Manager string // one manager of the endpoint (through the forwarder)
}

// ServingState reads a serving state and returns the answer as the server
// wrote it (plain text, or JSON when asJSON). With ep empty it asks the
// daemon the client points at (an interchange's or manager's admin HTTP);
// otherwise the forwarder relays it to endpoint ep (and manager, if set).
func (c *Client) ServingState(ctx context.Context, ep, manager string, asJSON bool) ([]byte, error) {
	path := servingPath(ep)
	if manager != "" {
		path += "?manager=" + url.QueryEscape(manager)
	}
	return c.serving(ctx, http.MethodGet, path, nil, asJSON)
}

// SetServingState sets or clears an override; see ServingState for ep.
func (c *Client) SetServingState(ctx context.Context, ep string, ch ServingChange, asJSON bool) ([]byte, error) {
	form := url.Values{}
	form.Set("state", ch.State)
	if ch.Timeout != "" {
		form.Set("timeout", ch.Timeout)
	}
	if ch.Force {
		form.Set("force", "true")
	}
	if ch.Manager != "" {
		form.Set("manager", ch.Manager)
	}
	return c.serving(ctx, http.MethodPost, servingPath(ep), []byte(form.Encode()), asJSON)
}

func servingPath(ep string) string {
	if ep == "" {
		return "/servingState"
	}
	return "/v1/endpoints/" + esc(ep) + "/servingState"
}

func (c *Client) serving(ctx context.Context, method, path string, form []byte, asJSON bool) ([]byte, error) {
	accept := "text/plain"
	if asJSON {
		accept = "application/json"
	}
	r := Request{Method: method, Path: path, Header: http.Header{"Accept": {accept}}}
	if form != nil {
		r.Body = bytes.NewReader(form)
		r.ContentType = "application/x-www-form-urlencoded"
	}
	resp, err := c.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	if resp.Status >= 400 {
		e := errorOf(method, path, resp)
		e.Message = strings.TrimSpace(e.Message)
		return nil, e
	}
	return resp.Body, nil
}

// idsBody is {"task_ids":[...]} written directly: an id list is most of
// what a status, census or cancel call sends.
func idsBody(ids []string) []byte {
	b := make([]byte, 0, 16+39*len(ids))
	b = append(b, `{"task_ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		if plainID(id) {
			b = append(b, '"')
			b = append(b, id...)
			b = append(b, '"')
			continue
		}
		q, _ := json.Marshal(id)
		b = append(b, q...)
	}
	return append(b, "]}"...)
}

// plainID: nothing in id needs escaping in JSON.
func plainID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			return false
		}
	}
	return true
}
