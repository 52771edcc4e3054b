package forwarder

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/auth"
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
	return tt.listRange(tf, after, 0, limit)
}

// listOwner is listRange of one owner's tasks, read through her index:
// a user with few tasks among millions costs her tasks, not theirs.
func (tt *taskTable) listOwner(tf TaskFilter, after, hi uint64, limit int) ([]Task, bool) {
	const chunk = 256
	var out []Task
	for {
		// One chunk of her seqs at a time, read under the lock.
		tt.mu.RLock()
		var seqs []uint64
		if idx, ok := tt.owners.Lookup(tf.Owner); ok && int(idx) < len(tt.byOwner) {
			all := tt.byOwner[idx]
			i, _ := slices.BinarySearch(all, after+1)
			seqs = slices.Clone(all[i:min(len(all), i+chunk)])
		}
		var live []Task
		var keys []taskstore.Key
		for _, seq := range seqs {
			if hi > 0 && seq > hi {
				break
			}
			r, ok := tt.ends.Get(seq)
			switch {
			case !ok: // pruned, or refused
			case !r.Ended():
				live = append(live, tt.live[slotOf(r)].Task)
			default:
				keys = append(keys, taskstore.Key{Seq: seq})
			}
		}
		tt.mu.RUnlock()
		if len(seqs) == 0 {
			return out, false
		}
		stored, found := make([]Task, len(keys)), make([]bool, len(keys))
		if len(keys) > 0 {
			if err := tt.st.Get(keys, stored, found); err != nil {
				tt.log.WithError(err).Warn("cannot list tasks from the store")
			}
		}
		page := live
		for i := range stored {
			if found[i] {
				page = append(page, stored[i])
			}
		}
		slices.SortFunc(page, func(a, b Task) int { return cmp.Compare(a.Seq, b.Seq) })
		for i := range page {
			if !tf.Match(&page[i]) {
				continue
			}
			if len(out) == limit {
				return out, true
			}
			out = append(out, page[i])
		}
		after = seqs[len(seqs)-1]
		if hi > 0 && after >= hi {
			return out, false
		}
	}
}

// listRange is list of the tasks with seq up to hi (0: no bound).
func (tt *taskTable) listRange(tf TaskFilter, after, hi uint64, limit int) ([]Task, bool) {
	if tf.OwnerSet && !tt.byID {
		return tt.listOwner(tf, after, hi, limit)
	}
	var out []Task
	more := false
	err := tt.st.List(tf, after, func(t *Task) bool {
		if hi > 0 && t.Seq > hi {
			return false
		}
		tt.mu.RLock()
		e, _, _, known := tt.find(t.ID)
		if e != nil {
			*t = e.Task
		}
		tt.mu.RUnlock()
		if (!known && !tt.byID) || !tf.Match(t) {
			// Pruned or refused (its delete not yet written), or not
			// asked for. A store found by id holds other forwarders'
			// tasks, which this index does not know.
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

// listRequest is a parsed GET /v1/tasks query.
type listRequest struct {
	filter TaskFilter
	after  uint64
	limit  int
}

// errStatus is a refusal with the HTTP status that says why.
type errStatus struct {
	status int
	msg    string
}

func (e *errStatus) Error() string { return e.msg }

func refuse(status int, format string, args ...any) *errStatus {
	return &errStatus{status: status, msg: fmt.Sprintf(format, args...)}
}

// parseList reads a listing's query for who: the one place that decides
// whose tasks a listing may show (the API's and the web UI's).
func parseList(who auth.Identity, q url.Values) (listRequest, *errStatus) {
	for k := range q {
		switch k {
		case "endpoint", "state", "owner", "since", "limit", "cursor":
		default:
			return listRequest{}, refuse(http.StatusBadRequest, "unknown parameter %q; GET /v1/tasks takes endpoint, state, owner (admins), since, limit and cursor", k)
		}
	}
	lr := listRequest{filter: TaskFilter{Endpoint: q.Get("endpoint")}, limit: DefaultListLimit}
	tf := &lr.filter
	if q.Has("owner") {
		if o := q.Get("owner"); !who.Admin && o != who.User {
			return lr, refuse(http.StatusForbidden, "only admins list other users' tasks; leave out owner to list your own")
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
				return lr, refuse(http.StatusBadRequest, "invalid state %q; legal values: %s (several separated by commas)", name, stateNames())
			}
			tf.States = append(tf.States, st)
		}
	}
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return lr, refuse(http.StatusBadRequest, "invalid since %q: use an RFC 3339 time such as 2026-11-22T12:00:00Z", s)
		}
		tf.Since = t
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return lr, refuse(http.StatusBadRequest, "invalid limit %q: use a whole number from 1 to %d", s, MaxListLimit)
		}
		lr.limit = n
	}
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseUint(s, 36, 64)
		if err != nil {
			return lr, refuse(http.StatusBadRequest, "invalid cursor %q: pass the next_cursor of the previous page as it is", s)
		}
		lr.after = n
	}
	return lr, nil
}

// handleList answers GET /v1/tasks: the caller's tasks (an admin's: every
// task, or one owner's with ?owner=), filtered and paged by cursor.
func (f *Forwarder) handleList(w http.ResponseWriter, r *http.Request) {
	lr, bad := parseList(user(r), r.URL.Query())
	if bad != nil {
		f.fail(w, bad.status, "%s", bad.msg)
		return
	}
	ts, more := f.tasks.list(lr.filter, lr.after, lr.limit)
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

// storedSeq is the highest seq below which every task is in the store
// (or was refused): a listing up to it misses nothing later.
func (tt *taskTable) storedSeq() uint64 {
	if tt.shared != nil {
		// Other forwarders number tasks in blocks of their own.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s, err := tt.shared.MaxSeq(ctx); err == nil {
			return s
		}
	}
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	s := tt.seq
	for first := range tt.adding {
		s = min(s, first-1)
	}
	return s
}

// latest returns up to n tasks matching tf with seq below before (0: any),
// newest first. The store lists forward only, so it scans windows back
// from the newest, each one four times the last: the usual page, the
// newest tasks, costs a scan of about n.
func (tt *taskTable) latest(tf TaskFilter, before uint64, n int) []Task {
	tt.mu.RLock()
	hi := tt.seq
	tt.mu.RUnlock()
	if tt.shared != nil {
		hi = tt.storedSeq()
	}
	if before > 0 {
		hi = min(hi, before-1)
	}
	var out []Task // newest first
	window := uint64(max(n, 16))
	for hi > 0 && len(out) < n {
		lo := uint64(0)
		if hi > window {
			lo = hi - window
		}
		var got []Task
		err := tt.st.List(tf, lo, func(t *Task) bool {
			if t.Seq > hi {
				return false
			}
			got = append(got, *t)
			return true
		})
		if err != nil {
			tt.log.WithError(err).Warn("cannot list tasks from the store")
			break
		}
		for i := len(got) - 1; i >= 0 && len(out) < n; i-- {
			t := got[i]
			tt.mu.RLock()
			e, _, _, known := tt.find(t.ID)
			if e != nil {
				t = e.Task
			}
			tt.mu.RUnlock()
			if known && tf.Match(&t) {
				out = append(out, t)
			}
		}
		hi, window = lo, window*4
	}
	return out
}

func stateNames() string {
	names := make([]string, len(messages.AllStates))
	for i, s := range messages.AllStates {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}
