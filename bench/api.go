package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// api is a small client of the forwarder's HTTP API, shaped for the
// benchmark: bodies are built once and decoded into the few fields used.
type api struct {
	base string
	hc   *http.Client
}

func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}}
}

func newAPI(base string, hc *http.Client) *api {
	base = strings.TrimRight(base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &api{base: base, hc: hc}
}

func (a *api) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// noopBody is a submission of n no-op tasks.
func noopBody(n int) []byte {
	var b bytes.Buffer
	b.Grow(11 + 16*n)
	b.WriteString(`{"tasks":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"kind":"noop"}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func (a *api) submit(ctx context.Context, ep string, body []byte) ([]string, error) {
	var out struct {
		TaskIDs []string `json:"task_ids"`
	}
	if err := a.do(ctx, http.MethodPost, "/v1/endpoints/"+url.PathEscape(ep)+"/tasks", body, http.StatusAccepted, &out); err != nil {
		return nil, err
	}
	return out.TaskIDs, nil
}

type taskState struct {
	ID    string `json:"task_id"`
	State string `json:"state"`
	Error string `json:"error"`
}

func terminal(state string) bool {
	return state == "success" || state == "failed" || state == "cancelled"
}

func (a *api) status(ctx context.Context, ids []string) ([]taskState, error) {
	body, err := json.Marshal(map[string][]string{"task_ids": ids})
	if err != nil {
		return nil, err
	}
	var out struct {
		Tasks []taskState `json:"tasks"`
	}
	if err := a.do(ctx, http.MethodPost, "/v1/tasks/status", body, http.StatusOK, &out); err != nil {
		return nil, err
	}
	if len(out.Tasks) != len(ids) {
		return nil, fmt.Errorf("status of %d ids returned %d tasks", len(ids), len(out.Tasks))
	}
	return out.Tasks, nil
}

// wait long-polls one task until it is terminal or wait passes.
func (a *api) wait(ctx context.Context, id string, wait time.Duration) (taskState, error) {
	var out taskState
	err := a.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id)+"?wait="+wait.String(), nil, http.StatusOK, &out)
	return out, err
}

type endpointView struct {
	Connected    bool   `json:"connected"`
	Managers     int    `json:"managers"`
	Workers      int    `json:"workers"`
	Queued       int    `json:"queued"`
	Outstanding  int    `json:"outstanding"`
	Held         int    `json:"held_by_forwarder"`
	ServingState string `json:"serving_state"`
}

func (a *api) endpoint(ctx context.Context, ep string) (endpointView, error) {
	var v endpointView
	err := a.do(ctx, http.MethodGet, "/v1/endpoints/"+url.PathEscape(ep), nil, http.StatusOK, &v)
	return v, err
}

// ixStatus is the part of the interchange's GET /status the bench reads.
type ixStatus struct {
	ForwarderConnected bool `json:"forwarder_connected"`
	Managers           int  `json:"managers"`
	Queued             int  `json:"queued"`
	Outstanding        int  `json:"outstanding"`
}

func ixStatusOf(ctx context.Context, hc *http.Client, base string) (ixStatus, error) {
	var v ixStatus
	a := newAPI(base, hc)
	err := a.do(ctx, http.MethodGet, "/status", nil, http.StatusOK, &v)
	return v, err
}

// pollUntil calls cond every step until it returns nil, ctx ends or
// timeout passes.
func pollUntil(ctx context.Context, timeout, step time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
		}
	}
}
