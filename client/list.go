package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxListPage is the largest page GET /v1/tasks serves.
const MaxListPage = 1000

// TaskQuery selects tasks for ListTasks; zero fields match everything.
type TaskQuery struct {
	Endpoint string
	States   []string
	// Owner is for admins: another user's tasks. Others always see only
	// their own.
	Owner string
	Since time.Time
	// Limit is the page size (the server's default when 0, at most 1000).
	Limit  int
	Cursor string
}

// ListedTask is a task of a listing; Owner is who submitted it.
type ListedTask struct {
	Task
	Owner string `json:"owner,omitempty"`
}

// TaskPage is one page of GET /v1/tasks; NextCursor is empty on the last.
type TaskPage struct {
	Tasks      []ListedTask `json:"tasks"`
	NextCursor string       `json:"next_cursor"`
}

// ListTasks reads one page of tasks in acceptance order. Pass the page's
// NextCursor as q.Cursor for the next one.
func (c *Client) ListTasks(ctx context.Context, q TaskQuery) (TaskPage, error) {
	v := url.Values{}
	if q.Endpoint != "" {
		v.Set("endpoint", q.Endpoint)
	}
	if len(q.States) > 0 {
		v.Set("state", strings.Join(q.States, ","))
	}
	if q.Owner != "" {
		v.Set("owner", q.Owner)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	path := "/v1/tasks"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var p TaskPage
	err := c.call(ctx, http.MethodGet, path, nil, &p)
	return p, err
}

// AllTasks reads every page of q, up to max tasks (0: no cap).
func (c *Client) AllTasks(ctx context.Context, q TaskQuery, max int) ([]ListedTask, error) {
	var out []ListedTask
	for {
		p, err := c.ListTasks(ctx, q)
		if err != nil {
			return out, err
		}
		out = append(out, p.Tasks...)
		if max > 0 && len(out) >= max {
			return out[:max], nil
		}
		if p.NextCursor == "" {
			return out, nil
		}
		q.Cursor = p.NextCursor
	}
}
