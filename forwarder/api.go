package forwarder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

func init() { uuid.EnableRandPool() }

// Limits of the HTTP API.
const (
	MaxTasksPerRequest = 100000
	MaxIDsPerRequest   = 100000
	MaxWait            = 5 * time.Minute
)

var endpointIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidEndpointID reports whether id may name an endpoint.
func ValidEndpointID(id string) error {
	if !endpointIDPattern.MatchString(id) {
		return fmt.Errorf("invalid endpoint id %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

func (f *Forwarder) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/endpoints/{ep}/tasks", f.methods(map[string]http.HandlerFunc{"POST": f.handleSubmit}))
	mux.HandleFunc("/v1/endpoints/{ep}/servingState", f.methods(map[string]http.HandlerFunc{
		"GET": f.handleServingState, "POST": f.admin(f.handleServingState)}))
	mux.HandleFunc("/v1/endpoints/{ep}/managers/{id}/drain", f.methods(map[string]http.HandlerFunc{"POST": f.admin(f.handleDrain)}))
	mux.HandleFunc("/v1/endpoints/{ep}/share", f.methods(map[string]http.HandlerFunc{"POST": f.handleShare(true)}))
	mux.HandleFunc("/v1/endpoints/{ep}/unshare", f.methods(map[string]http.HandlerFunc{"POST": f.handleShare(false)}))
	mux.HandleFunc("/v1/endpoints/{ep}", f.methods(map[string]http.HandlerFunc{"GET": f.handleEndpoint,
		"DELETE": f.handleDeleteEndpoint}))
	mux.HandleFunc("/v1/endpoints", f.methods(map[string]http.HandlerFunc{"GET": f.handleEndpoints,
		"POST": f.handleCreateEndpoint}))
	mux.HandleFunc("/v1/tokens", f.methods(map[string]http.HandlerFunc{"GET": f.admin(f.handleTokens),
		"POST": f.admin(f.handleCreateToken)}))
	mux.HandleFunc("/v1/tokens/{id}", f.methods(map[string]http.HandlerFunc{"DELETE": f.admin(f.handleRevokeToken)}))
	mux.HandleFunc("/v1/tasks", f.methods(map[string]http.HandlerFunc{"GET": f.handleList}))
	mux.HandleFunc("/v1/tasks/status", f.methods(map[string]http.HandlerFunc{"POST": f.handleStatus}))
	mux.HandleFunc("/v1/tasks/ended", f.methods(map[string]http.HandlerFunc{"GET": f.handleEnded}))
	mux.HandleFunc("/v1/tasks/census", f.methods(map[string]http.HandlerFunc{"POST": f.handleCensus}))
	mux.HandleFunc("/v1/tasks/cancel", f.methods(map[string]http.HandlerFunc{"POST": f.handleCancelBatch}))
	mux.HandleFunc("/v1/tasks/{id}", f.methods(map[string]http.HandlerFunc{"GET": f.handleGet, "DELETE": f.handleCancel}))
	mux.Handle("/metrics", promhttp.HandlerFor(f.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "tasks": f.tasks.len()})
	})
	if f.opts.Pprof {
		pp := http.NewServeMux()
		httpx.MountPprof(pp)
		mux.Handle("/debug/pprof/", f.admin(pp.ServeHTTP))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.fail(w, http.StatusNotFound, "no such path %s; see GET /v1/endpoints, POST /v1/endpoints/{ep}/tasks, GET /v1/tasks, GET /v1/tasks/{id}", r.URL.Path)
	})
	// The web UI calls this mux with its session's identity, so its pages
	// and forms pass the API's own checks.
	f.api = mux
	var api http.Handler
	if f.opts.Insecure {
		api = auth.Anonymous(mux)
	} else {
		verify := func(tok string) (auth.Identity, bool) { return f.access.verify(tok) }
		api = auth.Require(verify, mux, func() { f.m.httpErrors.WithLabelValues("401").Inc() })
	}
	if f.opts.NoUI {
		return httpx.Identify("forwarder", api)
	}
	outer := http.NewServeMux()
	outer.Handle("/ui/", f.uiRoutes())
	outer.Handle("/ui", http.RedirectHandler("/ui/", http.StatusSeeOther))
	outer.Handle("/", api)
	return httpx.Identify("forwarder", outer)
}

func (f *Forwarder) methods(h map[string]http.HandlerFunc) http.HandlerFunc {
	allowed := make([]string, 0, len(h))
	for m := range h {
		allowed = append(allowed, m)
	}
	sort.Strings(allowed)
	return func(w http.ResponseWriter, r *http.Request) {
		if fn, ok := h[r.Method]; ok {
			fn(w, r)
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		f.fail(w, http.StatusMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))
	}
}

func (f *Forwarder) fail(w http.ResponseWriter, status int, format string, args ...any) {
	f.m.httpErrors.WithLabelValues(strconv.Itoa(status)).Inc()
	httpx.Fail(w, status, format, args...)
}

// readJSON decodes a body into v, answering the client itself on failure.
func (f *Forwarder) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	return f.decodeJSON(w, http.MaxBytesReader(w, r.Body, f.opts.MaxBodyBytes), v)
}

func (f *Forwarder) decodeJSON(w http.ResponseWriter, body io.Reader, v any) bool {
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			f.fail(w, http.StatusRequestEntityTooLarge, "body over the limit of %d bytes; split the request", f.opts.MaxBodyBytes)
		case errors.Is(err, io.EOF):
			f.fail(w, http.StatusBadRequest, "empty body; send a JSON object")
		default:
			f.fail(w, http.StatusBadRequest, "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return false
	}
	if dec.More() {
		f.fail(w, http.StatusBadRequest, "malformed JSON: more than one value in the body")
		return false
	}
	return true
}

// readRaw reads the body, one JSON value, in one validating pass (a
// decode into a RawMessage scans it twice); the decoder explains a body
// that is not valid.
func (f *Forwarder) readRaw(w http.ResponseWriter, r *http.Request) (json.RawMessage, bool) {
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= f.opts.MaxBodyBytes {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, f.opts.MaxBodyBytes)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			f.fail(w, http.StatusRequestEntityTooLarge, "body over the limit of %d bytes; split the request", f.opts.MaxBodyBytes)
		} else {
			f.fail(w, http.StatusBadRequest, "cannot read the body: %v", err)
		}
		return nil, false
	}
	if json.Valid(buf.Bytes()) {
		return buf.Bytes(), true
	}
	var raw json.RawMessage
	if !f.decodeJSON(w, &buf, &raw) {
		return nil, false
	}
	f.fail(w, http.StatusBadRequest, "malformed JSON")
	return nil, false
}

// listField reads {"<name>": [ ... ]} and returns the list's raw items,
// answering the client itself when the body has another shape.
func (f *Forwarder) listField(w http.ResponseWriter, r *http.Request, name, example string) ([]json.RawMessage, bool) {
	raw, ok := f.readRaw(w, r)
	if !ok {
		return nil, false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		f.fail(w, http.StatusBadRequest, "the body must be a JSON object like %s", example)
		return nil, false
	}
	if items, ok := listItems(raw, name); ok {
		return items, true
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		f.fail(w, http.StatusBadRequest, "the body must be a JSON object like %s", example)
		return nil, false
	}
	v, ok := obj[name]
	if !ok {
		f.fail(w, http.StatusBadRequest, "body needs a %q list, like %s", name, example)
		return nil, false
	}
	v = bytes.TrimSpace(v)
	var items []json.RawMessage
	if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &items) != nil {
		f.fail(w, http.StatusBadRequest, "%q must be a list, like %s", name, example)
		return nil, false
	}
	return items, true
}

func (f *Forwarder) handleSubmit(w http.ResponseWriter, r *http.Request) {
	epID := r.PathValue("ep")
	if err := ValidEndpointID(epID); err != nil {
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	who := user(r)
	if !f.canUseNow(who, epID) {
		how := "create one with 'switchyard endpoint create ID', or ask an endpoint's owner to share it with you"
		if f.opts.Insecure {
			how = "this forwarder runs --insecure: an endpoint is known once its interchange has registered"
		}
		f.fail(w, http.StatusNotFound, "unknown endpoint %q; endpoints you may use: %s (%s)", epID, knownList(f.usableEndpoints(who)), how)
		return
	}
	raw, ok := f.listField(w, r, "tasks", `{"tasks":[{"kind":"noop"}]}`)
	if !ok {
		return
	}
	if len(raw) == 0 {
		f.fail(w, http.StatusBadRequest, `"tasks" is empty; send at least one task`)
		return
	}
	if len(raw) > MaxTasksPerRequest {
		f.fail(w, http.StatusRequestEntityTooLarge, "%d tasks in one request; the limit is %d", len(raw), MaxTasksPerRequest)
		return
	}
	// Tasks of one request are often alike (submit -n, a sweep's
	// constant part): each distinct text is parsed and encoded once, and
	// tasks that are alike share the encoded spec.
	specs := make([]taskspec.Spec, len(raw))
	encoded := make([][]byte, len(raw))
	for i, rt := range raw {
		if i > 0 && bytes.Equal(rt, raw[i-1]) {
			specs[i], encoded[i] = specs[i-1], encoded[i-1]
			continue
		}
		s, err := taskspec.Parse(rt)
		if err != nil {
			f.fail(w, http.StatusBadRequest, "tasks[%d]: %v", i, err)
			return
		}
		specs[i], encoded[i] = s, s.Encode()
		if len(encoded[i]) > s.MaxBytes() {
			f.fail(w, http.StatusRequestEntityTooLarge, "tasks[%d] is %d bytes encoded; the limit is %d", i, len(encoded[i]), s.MaxBytes())
			return
		}
	}
	if err := f.tasks.storeErr(); err != nil {
		f.fail(w, http.StatusServiceUnavailable, "not accepting tasks: the task store is failing (%v); reads still work", err)
		return
	}
	var accepted []messages.TaskID
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if err := validIdemKey(key); err != nil {
			f.fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		e, replay, err := f.idem.begin(r.Context(), who.User+"\x00"+epID+"\x00"+key, hashTasks(raw))
		switch {
		case errors.Is(err, errIdemMismatch):
			f.fail(w, http.StatusUnprocessableEntity, "%v; use a new key for new tasks", err)
			return
		case err != nil:
			return // the client went away
		case replay != nil:
			writeRaw(w, http.StatusAccepted, appendIDs(nil, replay))
			return
		}
		defer func() { f.idem.finish(e, accepted) }()
	}
	state := messages.StateReceived
	if v, ok := f.Endpoint(epID); !ok || !v.Connected || v.ServingState != messages.NonePaused.String() {
		state = messages.StateWaitingForEndpoint
	}
	now := time.Now()
	ts := make([]*entry, len(specs))
	ids := make([]messages.TaskID, len(specs))
	for i, s := range specs {
		u, err := uuid.NewRandom()
		if err != nil {
			f.fail(w, http.StatusServiceUnavailable, "cannot make task ids: %v", err)
			return
		}
		id := messages.TaskID(u)
		ts[i] = &entry{Task: Task{ID: id, Endpoint: epID, Owner: who.User, Kind: s.Kind, Spec: encoded[i], State: state, Attempts: 1, CreatedAt: now.UnixNano()}}
		ids[i] = id
	}
	if err := f.tasks.add(ts, quota{tasks: f.opts.MaxTasksPerUser, bytes: f.opts.MaxPendingBytesPerUser}); err != nil {
		var tooMany *errTooManyTasks
		if errors.As(err, &tooMany) {
			f.fail(w, http.StatusTooManyRequests, "user %s: %v", who.User, err)
			return
		}
		f.fail(w, http.StatusServiceUnavailable, "tasks not accepted: the task store could not save them (%v); nothing was queued", err)
		return
	}
	accepted = ids
	f.m.submitted.Add(float64(len(ts)))
	if !f.endpointKnown(epID) {
		// Deleted while these were being stored: they fail like the
		// endpoint's other tasks, and the loop never hears of it again.
		if _, err := f.tasks.failEndpoint(epID, fmt.Sprintf("endpoint %s was deleted", epID)); err != nil {
			f.log.WithError(err).WithField("endpoint", epID).Error("tasks of a deleted endpoint read failed, but the store could not save that; they fail again at the next start")
			f.fail(w, http.StatusServiceUnavailable, "endpoint %s was deleted while these tasks were stored; they read failed, but the task store could not save that (%v)", epID, err)
			return
		}
		writeRaw(w, http.StatusAccepted, appendIDs(nil, ids))
		return
	}
	f.mbox.Post(event{kind: evSubmitted, ep: epID, tasks: ts})
	writeRaw(w, http.StatusAccepted, appendIDs(nil, ids))
}

func (f *Forwarder) parseID(w http.ResponseWriter, s string) (messages.TaskID, bool) {
	id, err := messages.ParseTaskID(s)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "invalid task id %q: %v", s, err)
		return id, false
	}
	return id, true
}

func (f *Forwarder) handleGet(w http.ResponseWriter, r *http.Request) {
	id, ok := f.parseID(w, r.PathValue("id"))
	if !ok {
		return
	}
	var wait time.Duration
	if ws := r.URL.Query().Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			f.fail(w, http.StatusBadRequest, "invalid wait %q: use a Go duration like 10s (at most %s)", ws, MaxWait)
			return
		}
		wait = max(min(d, MaxWait), time.Nanosecond)
	}
	var t Task
	if t, ok = f.tasks.get(id); !ok || !visible(r, &t) {
		f.fail(w, http.StatusNotFound, "unknown task id %s (finished tasks are kept for %s)", id, f.opts.Retention)
		return
	}
	if wait > 0 {
		d := wait
		ctx, cancel := context.WithTimeout(r.Context(), d)
		t, ok = f.tasks.wait(ctx, id)
		cancel()
	} else {
		t, ok = f.tasks.get(id)
	}
	if !ok {
		f.fail(w, http.StatusNotFound, "unknown task id %s (finished tasks are kept for %s)", id, f.opts.Retention)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, viewOf(&t))
}

func (f *Forwarder) readIDs(w http.ResponseWriter, r *http.Request) ([]messages.TaskID, bool) {
	items, ok := f.listField(w, r, "task_ids", `{"task_ids":["5f0c1e2a-0b1c-4d2e-8f90-123456789abc"]}`)
	if !ok {
		return nil, false
	}
	if len(items) > MaxIDsPerRequest {
		f.fail(w, http.StatusRequestEntityTooLarge, "%d ids in one request; the limit is %d", len(items), MaxIDsPerRequest)
		return nil, false
	}
	ids := make([]messages.TaskID, len(items))
	for i, item := range items {
		// Nearly every item is a plain quoted id: no decoder needed.
		if len(item) == 38 && item[0] == '"' && item[37] == '"' {
			if id, err := messages.ParseTaskID(string(item[1:37])); err == nil {
				ids[i] = id
				continue
			}
		}
		var s string
		if err := json.Unmarshal(item, &s); err != nil {
			f.fail(w, http.StatusBadRequest, "task_ids[%d] must be a string task id, got %s", i, truncate(item, 40))
			return nil, false
		}
		id, err := messages.ParseTaskID(s)
		if err != nil {
			f.fail(w, http.StatusBadRequest, "task_ids[%d] %q: %v", i, s, err)
			return nil, false
		}
		ids[i] = id
	}
	return ids, true
}

func (f *Forwarder) handleStatus(w http.ResponseWriter, r *http.Request) {
	ids, ok := f.readIDs(w, r)
	if !ok {
		return
	}
	out := make([]any, len(ids))
	ts, found := f.tasks.getMany(ids)
	for i, id := range ids {
		if t := &ts[i]; found[i] && visible(r, t) {
			out[i] = viewOf(t)
		} else {
			out[i] = map[string]string{"task_id": id.String(), "state": string(messages.StateNotFound), "error": "unknown task id"}
		}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tasks": out})
}

// CancelView is the answer to a cancel.
type CancelView struct {
	TaskID    string             `json:"task_id"`
	State     messages.TaskState `json:"state"`
	Cancelled bool               `json:"cancelled"`
	Message   string             `json:"message"`
}

// Cancel ends the tasks that have not ended and tells their endpoints.
func (f *Forwarder) Cancel(ids []messages.TaskID) ([]CancelView, error) {
	ts, known, changed, err := f.tasks.cancel(ids)
	if err != nil {
		return nil, err
	}
	out := make([]CancelView, len(ids))
	byEP := map[string][]messages.TaskID{}
	for i, id := range ids {
		t := ts[i]
		switch {
		case !known[i]:
			out[i] = CancelView{TaskID: id.String(), State: messages.StateNotFound, Message: "unknown task id"}
		case changed[i]:
			f.m.cancels.Inc()
			byEP[t.Endpoint] = append(byEP[t.Endpoint], id)
			out[i] = CancelView{TaskID: id.String(), State: t.State, Cancelled: true, Message: "cancelled"}
		default:
			out[i] = CancelView{TaskID: id.String(), State: t.State,
				Message: fmt.Sprintf("task already ended as %s; left as it is", t.State)}
		}
	}
	for ep, ids := range byEP {
		f.mbox.Post(event{kind: evCancel, ep: ep, ids: ids})
	}
	return out, nil
}

func (f *Forwarder) handleCancel(w http.ResponseWriter, r *http.Request) {
	id, ok := f.parseID(w, r.PathValue("id"))
	if !ok {
		return
	}
	if t, ok := f.tasks.get(id); !ok || !visible(r, &t) {
		f.fail(w, http.StatusNotFound, "unknown task id %s", id)
		return
	}
	all, err := f.Cancel([]messages.TaskID{id})
	if err != nil {
		f.fail(w, http.StatusServiceUnavailable, "cancel recorded but not yet stored (the task store is failing: %v); it is retried every second and the task reads cancelled meanwhile", err)
		return
	}
	res := all[0]
	if res.State == messages.StateNotFound {
		f.fail(w, http.StatusNotFound, "unknown task id %s", id)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

func (f *Forwarder) handleCancelBatch(w http.ResponseWriter, r *http.Request) {
	ids, ok := f.readIDs(w, r)
	if !ok {
		return
	}
	// Tasks of other users read as unknown and are left alone.
	mine := ids[:0:0]
	var hidden []int
	for i, id := range ids {
		if t, ok := f.tasks.get(id); ok && !visible(r, &t) {
			hidden = append(hidden, i)
			continue
		}
		mine = append(mine, id)
	}
	res, err := f.Cancel(mine)
	for _, i := range hidden {
		res = slices.Insert(res, i, CancelView{TaskID: ids[i].String(), State: messages.StateNotFound, Message: "unknown task id"})
	}
	if err != nil {
		f.fail(w, http.StatusServiceUnavailable, "cancel recorded but not yet stored (the task store is failing: %v); it is retried every second and the task reads cancelled meanwhile", err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tasks": res})
}

func (f *Forwarder) handleEndpoints(w http.ResponseWriter, r *http.Request) {
	who := user(r)
	all := f.Endpoints()
	out := make([]EndpointView, 0, len(all))
	for _, v := range all {
		if v, ok := f.viewFor(who, v); ok {
			out = append(out, v)
		}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"endpoints": out})
}

// viewFor is endpoint view v as who may see it, or false when she may not.
func (f *Forwarder) viewFor(who auth.Identity, v EndpointView) (EndpointView, bool) {
	rec, ok := f.enrolled.get(v.EndpointID)
	if !ok {
		return v, f.opts.Insecure || who.Admin
	}
	if !mayUse(who, &rec) {
		return v, false
	}
	return withAccess(v, &rec, who), true
}

func (f *Forwarder) handleEndpoint(w http.ResponseWriter, r *http.Request) {
	id, who := r.PathValue("ep"), user(r)
	v, ok := f.Endpoint(id)
	if ok {
		v, ok = f.viewFor(who, v)
	}
	if !ok {
		f.unknownEndpoint(w, who, id)
		return
	}
	if p := r.URL.Query().Get("probe"); p != "" && p != "0" && p != "false" {
		start := time.Now()
		res := f.roundTrip(r.Context(), event{kind: evProbe, ep: id}, 5*time.Second)
		probe := map[string]any{"ok": res.err == nil}
		if res.err != nil {
			probe["error"] = res.err.Error()
		} else {
			probe["rtt_ms"] = float64(time.Since(start).Microseconds()) / 1000
		}
		v, _ = f.Endpoint(id)
		v, _ = f.viewFor(who, v)
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"endpoint_id": v.EndpointID, "connected": v.Connected,
			"last_heartbeat": v.LastHeartbeat, "managers": v.Managers, "workers": v.Workers,
			"idle_workers": v.IdleWorkers, "queued": v.Queued, "queued_by_owner": v.QueuedByOwner, "outstanding": v.Outstanding,
			"serving_state": v.ServingState, "held_by_forwarder": v.Held, "blocks": v.Blocks, "manager_list": v.ManagerList, "probe": probe})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

// roundTrip hands an event to the loop and waits for its answer.
func (f *Forwarder) roundTrip(ctx context.Context, ev event, timeout time.Duration) commandResult {
	ev.reply = make(chan commandResult, 1)
	f.mbox.Post(ev)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case res := <-ev.reply:
		return res
	case <-t.C:
		return commandResult{err: fmt.Errorf("no answer from the endpoint within %s", timeout)}
	case <-ctx.Done():
		return commandResult{err: ctx.Err()}
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
