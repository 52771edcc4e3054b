package forwarder

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Paging of GET /v1/tasks.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// TaskFilter selects tasks for a listing; zero fields match everything.
type TaskFilter = taskstore.Filter

// ListedTask is one task of a listing: the task view plus its owner.
type ListedTask struct {
	TaskView
	Owner string `json:"owner,omitempty"`
}

// list returns up to limit tasks matching tf accepted after the one of
// sequence number after, in acceptance order, and whether more follow.
// Every task is stored when accepted; a task still in memory is newer
// there.
func (tt *taskTable) list(tf TaskFilter, after uint64, limit int) ([]Task, bool) {
	var out []Task
	more := false
	err := tt.st.List(tf, after, func(t *Task) bool {
		tt.mu.RLock()
		e, _, _, known := tt.find(t.ID)
		if e != nil {
			*t = e.Task
		}
		tt.mu.RUnlock()
		if !known || !tf.Match(t) {
			// Pruned or refused (its delete not yet written), or not asked for.
			return true
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, *t)
		return true
	})
	if err != nil {
		tt.log.WithError(err).Warn("cannot list tasks from the store")
	}
	return out, more
}

// handleList answers GET /v1/tasks: the caller's tasks (an admin's: every
// task, or one owner's with ?owner=), filtered and paged by cursor.
func (f *Forwarder) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "endpoint", "state", "owner", "since", "limit", "cursor":
		default:
			f.fail(w, http.StatusBadRequest, "unknown parameter %q; GET /v1/tasks takes endpoint, state, owner (admins), since, limit and cursor", k)
			return
		}
	}
	who := user(r)
	tf := TaskFilter{Endpoint: q.Get("endpoint")}
	if q.Has("owner") {
		if o := q.Get("owner"); !who.Admin && o != who.User {
			f.fail(w, http.StatusForbidden, "only admins list other users' tasks; leave out owner to list your own")
			return
		}
		tf.Owner, tf.OwnerSet = q.Get("owner"), true
	}
	if !who.Admin {
		tf.Owner, tf.OwnerSet = who.User, true
	}
	if s := q.Get("state"); s != "" {
		for _, name := range strings.Split(s, ",") {
			st, err := messages.ParseTaskState(strings.TrimSpace(name))
			if err != nil {
				f.fail(w, http.StatusBadRequest, "invalid state %q; legal values: %s (several separated by commas)", name, stateNames())
				return
			}
			tf.States = append(tf.States, st)
		}
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			f.fail(w, http.StatusBadRequest, "invalid since %q: use an RFC 3339 time such as 2026-11-22T12:00:00Z", s)
			return
		}
		tf.Since = t
	}
	limit := DefaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			f.fail(w, http.StatusBadRequest, "invalid limit %q: use a whole number from 1 to %d", s, MaxListLimit)
			return
		}
		limit = n
	}
	var after uint64
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseUint(s, 36, 64)
		if err != nil {
			f.fail(w, http.StatusBadRequest, "invalid cursor %q: pass the next_cursor of the previous page as it is", s)
			return
		}
		after = n
	}
	ts, more := f.tasks.list(tf, after, limit)
	out := make([]ListedTask, len(ts))
	for i := range ts {
		out[i] = ListedTask{TaskView: viewOf(&ts[i]), Owner: ts[i].Owner}
	}
	next := ""
	if more && len(ts) > 0 {
		next = strconv.FormatUint(ts[len(ts)-1].Seq, 36)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tasks": out, "next_cursor": next})
}

func stateNames() string {
	names := make([]string, len(messages.AllStates))
	for i, s := range messages.AllStates {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}
