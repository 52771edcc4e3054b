package forwarder

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/switchyard-hpc/switchyard/internal/textcap"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
	"github.com/switchyard-hpc/switchyard/messages"
)

// The web UI (docs/contract.md, Web UI): server-rendered pages at /ui/ on
// the API's listener. A sign-in trades a token for a session cookie; the
// session keeps the token's hash, never the token, and every page and
// form goes through the API's own mux or checks with the session's
// identity, so the UI can show and do nothing the API would refuse.

//go:embed ui
var uiFiles embed.FS

const (
	uiCookie = "switchyard_session"
	// maxUISessions bounds memory: sign-ins past it end the oldest.
	maxUISessions = 10000
	// uiPageSize is the tasks page's length.
	uiPageSize = 50
	// uiCSP allows nothing inline and nothing from elsewhere.
	uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

type uiSession struct {
	tokenHash string // "" on an --insecure forwarder
	csrf      string
	expires   time.Time
	// flash is shown once on the next page; secret too (a new token or
	// credential, shown once, never put in a URL).
	flash  []uiFlash
	secret *uiSecret
}

type uiFlash struct {
	Error bool
	Text  string
}

type uiSecret struct {
	Label, Value, Hint string
}

type webUI struct {
	f      *Forwarder
	pages  map[string]*template.Template
	static http.Handler

	mu       sync.Mutex
	sessions map[string]*uiSession // by the hash of the cookie's value
}

func (f *Forwarder) uiRoutes() http.Handler {
	u := &webUI{f: f, pages: map[string]*template.Template{}, sessions: map[string]*uiSession{}}
	f.ui = u
	funcs := template.FuncMap{
		"when":     uiWhen,
		"took":     uiTook,
		"ago":      uiAgo,
		"terminal": func(s messages.TaskState) bool { return s.Terminal() },
		"join":     strings.Join,
		"states":   func() []messages.TaskState { return messages.AllStates },
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/layout.html"))
	names, _ := fs.Glob(uiFiles, "ui/pages/*.html")
	for _, n := range names {
		t := template.Must(template.Must(base.Clone()).ParseFS(uiFiles, n))
		u.pages[strings.TrimSuffix(strings.TrimPrefix(n, "ui/pages/"), ".html")] = t
	}
	static, _ := fs.Sub(uiFiles, "ui/static")
	u.static = http.StripPrefix("/ui/static/", http.FileServerFS(static))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/tasks", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui/static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		u.static.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /ui/signin", u.signinPage)
	mux.HandleFunc("POST /ui/signin", u.signin)
	mux.HandleFunc("POST /ui/signout", u.with(u.signout))
	mux.HandleFunc("GET /ui/tasks", u.with(u.tasksPage))
	mux.HandleFunc("GET /ui/tasks/poll", u.with(u.tasksPoll))
	mux.HandleFunc("GET /ui/tasks/{id}", u.with(u.taskPage))
	mux.HandleFunc("POST /ui/tasks/{id}/cancel", u.with(u.cancelTask))
	mux.HandleFunc("GET /ui/endpoints", u.with(u.endpointsPage))
	mux.HandleFunc("POST /ui/endpoints", u.with(u.createEndpoint))
	mux.HandleFunc("GET /ui/endpoints/{ep}", u.with(u.endpointPage))
	mux.HandleFunc("POST /ui/endpoints/{ep}/{action}", u.with(u.endpointAction))
	mux.HandleFunc("GET /ui/tokens", u.with(u.adminOnly(u.tokensPage)))
	mux.HandleFunc("POST /ui/tokens", u.with(u.adminOnly(u.createToken)))
	mux.HandleFunc("POST /ui/tokens/{id}/revoke", u.with(u.adminOnly(u.revokeToken)))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		u.errorPage(w, r, nil, http.StatusNotFound, "No such page.")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer browsers send "Origin: null"
		// on form posts, and the Origin check needs it.
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-store")
		}
		if r.Method == http.MethodPost && !sameOrigin(r) {
			u.errorPage(w, r, nil, http.StatusForbidden, "Refused: this form was sent from another site.")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// sameOrigin says whether a POST came from a page of this server: its
// Origin (which browsers send with every POST) names this host, or, in
// its absence, Sec-Fetch-Site does not say another site.
func sameOrigin(r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if o := r.Header.Get("Origin"); o != "" {
		return o == scheme+"://"+r.Host
	}
	s := r.Header.Get("Sec-Fetch-Site")
	return s == "" || s == "same-origin" || s == "none"
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// uiReq is one signed-in request: who, and her session.
type uiReq struct {
	*http.Request
	who  auth.Identity
	sess *uiSession
	key  string
}

// with finds the request's session: without a live one, a page
// redirects to the sign-in and anything else is 401. POSTs must carry the
// session's CSRF token.
func (u *webUI) with(h func(http.ResponseWriter, *uiReq)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ur, ok := u.session(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/poll") {
				http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
				return
			}
			u.errorPage(w, r, nil, http.StatusUnauthorized, "Not signed in, or the session has ended; sign in again.")
			return
		}
		if r.Method == http.MethodPost {
			ur.Body = http.MaxBytesReader(w, ur.Body, 1<<16)
			got := ur.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(ur.sess.csrf)) != 1 {
				u.errorPage(w, r, ur, http.StatusForbidden, "Refused: the form's session token is missing or stale; reload the page and try again.")
				return
			}
		}
		h(w, ur)
	}
}

func (u *webUI) session(r *http.Request) (*uiReq, bool) {
	c, err := r.Cookie(uiCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	key := auth.Hash(c.Value)
	u.mu.Lock()
	s, ok := u.sessions[key]
	if ok && time.Now().After(s.expires) {
		delete(u.sessions, key)
		ok = false
	}
	u.mu.Unlock()
	if !ok {
		return nil, false
	}
	var who auth.Identity
	if u.f.opts.Insecure {
		who = auth.Identity{User: "anonymous", Admin: true}
	} else if who, ok = u.f.access.verifyHash(s.tokenHash); !ok {
		// Its token was revoked: the session ends with it.
		u.mu.Lock()
		delete(u.sessions, key)
		u.mu.Unlock()
		return nil, false
	}
	r = r.WithContext(auth.WithIdentity(r.Context(), who))
	return &uiReq{Request: r, who: who, sess: s, key: key}, true
}

func (u *webUI) adminOnly(h func(http.ResponseWriter, *uiReq)) func(http.ResponseWriter, *uiReq) {
	return func(w http.ResponseWriter, r *uiReq) {
		if !r.who.Admin {
			u.f.log.WithFields(logrus.Fields{"user": r.who.User, "method": r.Method, "path": r.URL.Path}).Warn("web UI admin page refused: not an admin")
			u.errorPage(w, r.Request, r, http.StatusForbidden, "This page is for admins; user "+r.who.User+" is not an admin.")
			return
		}
		h(w, r)
	}
}

func (u *webUI) signinPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.session(r); ok {
		http.Redirect(w, r, "/ui/tasks", http.StatusSeeOther)
		return
	}
	u.render(w, r, nil, http.StatusOK, "signin", "Sign in", "", map[string]any{"Insecure": u.f.opts.Insecure})
}

func (u *webUI) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<14)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	var hash string
	if !u.f.opts.Insecure {
		who, ok := u.f.access.verify(tok)
		if !ok {
			u.f.m.httpErrors.WithLabelValues("401").Inc()
			u.render(w, r, nil, http.StatusUnauthorized, "signin", "Sign in", "",
				map[string]any{"Error": "That token is not valid (unknown or revoked)."})
			return
		}
		hash = auth.Hash(tok)
		u.f.log.WithFields(logrus.Fields{"user": who.User, "token_id": who.TokenID}).Info("web UI sign-in")
	}
	sid := randomString(32)
	now := time.Now()
	s := &uiSession{tokenHash: hash, csrf: randomString(24), expires: now.Add(u.f.opts.UISessionTTL)}
	u.mu.Lock()
	if len(u.sessions) >= maxUISessions {
		u.sweep(now)
	}
	u.sessions[auth.Hash(sid)] = s
	u.mu.Unlock()
	// A session cookie: the browser forgets it when it closes; the server
	// forgets the session at its expiry.
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: sid, Path: "/ui/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, "/ui/tasks", http.StatusSeeOther)
}

// sweep drops expired sessions and, if still full, the ones ending
// soonest; u.mu is held.
func (u *webUI) sweep(now time.Time) {
	for k, s := range u.sessions {
		if now.After(s.expires) {
			delete(u.sessions, k)
		}
	}
	if len(u.sessions) < maxUISessions {
		return
	}
	keys := make([]string, 0, len(u.sessions))
	for k := range u.sessions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return u.sessions[keys[i]].expires.Before(u.sessions[keys[j]].expires) })
	for _, k := range keys[:len(keys)/10+1] {
		delete(u.sessions, k)
	}
}

func (u *webUI) signout(w http.ResponseWriter, r *uiReq) {
	u.mu.Lock()
	delete(u.sessions, r.key)
	u.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: uiCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r.Request, "/ui/signin", http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Title, Nav string
	Who        auth.Identity
	SignedIn   bool
	CSRF       string
	Flash      []uiFlash
	Secret     *uiSecret
	Data       any
}

func (u *webUI) render(w http.ResponseWriter, r *http.Request, ur *uiReq, status int, name, title, nav string, data any) {
	p := page{Title: title, Nav: nav, Data: data}
	if ur != nil {
		p.Who, p.SignedIn, p.CSRF = ur.who, true, ur.sess.csrf
		u.mu.Lock()
		p.Flash, p.Secret = ur.sess.flash, ur.sess.secret
		ur.sess.flash, ur.sess.secret = nil, nil
		u.mu.Unlock()
	}
	var buf bytes.Buffer
	if err := u.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		u.f.log.WithError(err).WithField("page", name).Error("web UI page failed to render")
		http.Error(w, "the page failed to render", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if status != http.StatusOK {
		u.f.m.httpErrors.WithLabelValues(strconv.Itoa(status)).Inc()
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (u *webUI) errorPage(w http.ResponseWriter, r *http.Request, ur *uiReq, status int, msg string) {
	if ur == nil {
		if s, ok := u.session(r); ok {
			ur = s
		}
	}
	u.render(w, r, ur, status, "error", http.StatusText(status), "", map[string]any{"Status": status, "Message": msg})
}

// flash queues a message for the next page of the session.
func (u *webUI) flash(r *uiReq, isErr bool, format string, args ...any) {
	u.mu.Lock()
	r.sess.flash = append(r.sess.flash, uiFlash{Error: isErr, Text: fmt.Sprintf(format, args...)})
	u.mu.Unlock()
}

// api sends a request through the API's mux as the session's user, so
// it meets every check the API makes, and returns the status and body.
func (u *webUI) api(r *uiReq, method, path string, q url.Values, body any) (int, []byte) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	target := path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(auth.WithIdentity(ctx, r.who), method, target, rd)
	if err != nil {
		return http.StatusBadRequest, []byte(`{"error":"bad request"}`)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	rec := &recorder{h: http.Header{}, status: http.StatusOK}
	u.f.api.ServeHTTP(rec, req)
	return rec.status, rec.body.Bytes()
}

// recorder keeps an in-process API answer.
type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (c *recorder) Header() http.Header { return c.h }
func (c *recorder) Write(b []byte) (int, error) {
	c.wrote = true
	return c.body.Write(b)
}
func (c *recorder) WriteHeader(s int) {
	if !c.wrote {
		c.status, c.wrote = s, true
	}
}

// apiError is the API's error text of a refusal.
func apiError(status int, body []byte) string {
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && (e.Error != "" || e.Message != "") {
		return e.Error + e.Message
	}
	return fmt.Sprintf("%d %s", status, strings.TrimSpace(string(body)))
}

// --- tasks

// uiTask is one row of the tasks page and of its live updates.
type uiTask struct {
	Seq       string             `json:"seq"`
	ID        string             `json:"id"`
	Endpoint  string             `json:"endpoint"`
	Kind      string             `json:"kind"`
	State     messages.TaskState `json:"state"`
	Owner     string             `json:"owner"`
	Attempts  uint32             `json:"attempts"`
	Error     string             `json:"error,omitempty"`
	Created   string             `json:"created"`
	Completed string             `json:"completed,omitempty"`
	Took      string             `json:"took,omitempty"`
}

func rowOf(t *Task) uiTask {
	r := uiTask{Seq: strconv.FormatUint(t.Seq, 36), ID: t.ID.String(), Endpoint: t.Endpoint, Kind: t.Kind,
		State: t.State, Owner: t.Owner, Attempts: t.Attempts, Error: textcap.Cap(t.Error, 200)}
	if t.CreatedAt != 0 {
		r.Created = uiWhen(time.Unix(0, t.CreatedAt))
	}
	if t.CompletedAt != 0 {
		r.Completed = uiWhen(time.Unix(0, t.CompletedAt))
		if t.CreatedAt != 0 {
			r.Took = uiTook(time.Duration(t.CompletedAt - t.CreatedAt))
		}
	}
	return r
}

// taskFilter reads the tasks page's filters into the list API's query
// (parseList then decides what the user may see). since also takes a Go
// duration: "1h" is the last hour.
func taskFilter(r *uiReq) (url.Values, map[string]string, *errStatus) {
	in := r.URL.Query()
	form := map[string]string{}
	q := url.Values{}
	for _, k := range []string{"state", "endpoint", "owner", "since"} {
		v := strings.TrimSpace(in.Get(k))
		form[k] = v
		if v == "" {
			continue
		}
		if k == "since" {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				v = time.Now().Add(-d).UTC().Format(time.RFC3339Nano)
			}
		}
		q.Set(k, v)
	}
	_, bad := parseList(r.who, q)
	return q, form, bad
}

func (u *webUI) tasksPage(w http.ResponseWriter, r *uiReq) {
	q, form, bad := taskFilter(r)
	data := map[string]any{"Form": form, "Endpoints": u.usable(r.who)}
	if bad != nil {
		u.flash(r, true, "%s", bad.msg)
		data["Tasks"] = []uiTask{}
		u.render(w, r.Request, r, bad.status, "tasks", "Tasks", "tasks", data)
		return
	}
	lr, _ := parseList(r.who, q)
	in := r.URL.Query()
	var rows []uiTask
	switch {
	case in.Get("cursor") != "" || in.Get("order") == "oldest":
		// Submission order, paged by the list API's cursor.
		if c := in.Get("cursor"); c != "" {
			q.Set("cursor", c)
		}
		q.Set("limit", strconv.Itoa(uiPageSize))
		lr, bad = parseList(r.who, q)
		if bad != nil {
			u.errorPage(w, r.Request, r, bad.status, bad.msg)
			return
		}
		ts, more := u.f.tasks.list(lr.filter, lr.after, lr.limit)
		for i := range ts {
			rows = append(rows, rowOf(&ts[i]))
		}
		data["Oldest"] = true
		if more && len(ts) > 0 {
			data["Next"] = pageLink(form, "cursor", strconv.FormatUint(ts[len(ts)-1].Seq, 36))
		}
	default:
		// Newest first, live: what a status page is for.
		var before uint64
		if b := in.Get("before"); b != "" {
			n, err := strconv.ParseUint(b, 36, 64)
			if err != nil {
				u.errorPage(w, r.Request, r, http.StatusBadRequest, "invalid before "+strconv.Quote(b))
				return
			}
			before = n
		}
		// Read before the listing: a task added meanwhile shows in both,
		// and the script drops the second.
		if before == 0 {
			data["After"] = strconv.FormatUint(u.f.tasks.storedSeq(), 36)
		}
		ts := u.f.tasks.latest(lr.filter, before, uiPageSize+1)
		if len(ts) > uiPageSize {
			ts = ts[:uiPageSize]
			data["Older"] = pageLink(form, "before", strconv.FormatUint(ts[len(ts)-1].Seq, 36))
		}
		for i := range ts {
			rows = append(rows, rowOf(&ts[i]))
		}
		data["Live"] = before == 0
		poll := url.Values{}
		for k, v := range form {
			if v != "" {
				poll.Set(k, v)
			}
		}
		data["Poll"] = "/ui/tasks/poll?" + poll.Encode()
	}
	if data["Poll"] == nil {
		// Older pages still follow the states of the rows they show.
		data["Poll"] = "/ui/tasks/poll"
	}
	data["Tasks"] = rows
	data["OldestLink"] = pageLink(form, "order", "oldest")
	data["NewestLink"] = pageLink(form, "", "")
	u.render(w, r.Request, r, http.StatusOK, "tasks", "Tasks", "tasks", data)
}

func pageLink(form map[string]string, k, v string) string {
	q := url.Values{}
	for fk, fv := range form {
		if fv != "" {
			q.Set(fk, fv)
		}
	}
	if k != "" {
		q.Set(k, v)
	}
	if len(q) == 0 {
		return "/ui/tasks"
	}
	return "/ui/tasks?" + q.Encode()
}

// tasksPoll answers the tasks page's script: rows newer than after that
// match the filters, and the states of the rows it shows that had not
// ended (ids, comma-separated, at most 200).
func (u *webUI) tasksPoll(w http.ResponseWriter, r *uiReq) {
	q, _, bad := taskFilter(r)
	if bad != nil {
		u.pollJSON(w, bad.status, map[string]string{"error": bad.msg})
		return
	}
	lr, _ := parseList(r.who, q)
	in := r.URL.Query()
	after, err := strconv.ParseUint(in.Get("after"), 36, 64)
	if err != nil && in.Get("after") != "" {
		u.pollJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid after"})
		return
	}
	// Up to the stored watermark only, and the next poll goes on from
	// where this one stopped, so a scan never repeats and a batch still
	// being written is not skipped.
	var fresh []uiTask
	next := ""
	if in.Get("after") != "" {
		top := u.f.tasks.storedSeq()
		next = strconv.FormatUint(max(after, top), 36)
		if top > after {
			ts, more := u.f.tasks.listRange(lr.filter, after, top, 200)
			for i := range ts {
				fresh = append(fresh, rowOf(&ts[i]))
			}
			if more && len(ts) > 0 {
				next = strconv.FormatUint(ts[len(ts)-1].Seq, 36)
			}
		}
	}
	states := map[string]uiTask{}
	if s := in.Get("ids"); s != "" {
		var ids []messages.TaskID
		for _, p := range strings.Split(s, ",") {
			if id, err := messages.ParseTaskID(p); err == nil && len(ids) < 200 {
				ids = append(ids, id)
			}
		}
		ts, found := u.f.tasks.getMany(ids)
		for i := range ts {
			if found[i] && visible(r.Request, &ts[i]) {
				states[ts[i].ID.String()] = rowOf(&ts[i])
			}
		}
	}
	u.pollJSON(w, http.StatusOK, map[string]any{"tasks": orEmptyRows(fresh), "states": states, "after": next})
}

func orEmptyRows(r []uiTask) []uiTask {
	if r == nil {
		return []uiTask{}
	}
	return r
}

func (u *webUI) pollJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// uiTaskDetail is the task page.
type uiTaskDetail struct {
	uiTask
	Spec       taskspec.Spec
	SpecErr    string
	PayloadLen int
	Exec       *struct {
		ExitCode  *int   `json:"exit_code"`
		Stdout    string `json:"stdout"`
		Stderr    string `json:"stderr"`
		Truncated bool   `json:"truncated"`
	}
	Python    *pythonResult
	RawResult string
	Ended     bool
}

func (u *webUI) taskPage(w http.ResponseWriter, r *uiReq) {
	id, err := messages.ParseTaskID(r.PathValue("id"))
	if err != nil {
		u.errorPage(w, r.Request, r, http.StatusNotFound, "No such task.")
		return
	}
	t, ok := u.f.tasks.get(id)
	if !ok || !visible(r.Request, &t) {
		// Another user's task does not exist, as in the API.
		u.errorPage(w, r.Request, r, http.StatusNotFound, "No such task (finished tasks are kept for "+u.f.opts.Retention.String()+").")
		return
	}
	d := uiTaskDetail{uiTask: rowOf(&t), Ended: t.State.Terminal()}
	d.Error = t.Error
	if d.Spec, err = taskspec.Decode(t.Spec); err != nil {
		d.SpecErr = err.Error()
	}
	d.PayloadLen = len(d.Spec.Payload)
	if len(t.Result) > 0 {
		switch t.Kind {
		case taskspec.KindPython:
			var p pythonResult
			if json.Unmarshal(t.Result, &p) == nil {
				d.Python = &p
			}
		case taskspec.KindExec:
			d.Exec = &struct {
				ExitCode  *int   `json:"exit_code"`
				Stdout    string `json:"stdout"`
				Stderr    string `json:"stderr"`
				Truncated bool   `json:"truncated"`
			}{}
			if json.Unmarshal(t.Result, d.Exec) != nil {
				d.Exec = nil
			}
		}
		if d.Python == nil && d.Exec == nil {
			var out bytes.Buffer
			if json.Indent(&out, t.Result, "", "  ") == nil {
				d.RawResult = out.String()
			} else {
				d.RawResult = string(t.Result)
			}
		}
	}
	u.render(w, r.Request, r, http.StatusOK, "task", "Task "+d.ID, "tasks", d)
}

func (u *webUI) cancelTask(w http.ResponseWriter, r *uiReq) {
	id := r.PathValue("id")
	status, body := u.api(r, http.MethodDelete, "/v1/tasks/"+url.PathEscape(id), nil, nil)
	if status == http.StatusNotFound {
		u.errorPage(w, r.Request, r, http.StatusNotFound, "No such task.")
		return
	}
	if status != http.StatusOK {
		u.flash(r, true, "Cancel refused: %s", apiError(status, body))
	} else {
		var v CancelView
		_ = json.Unmarshal(body, &v)
		u.flash(r, false, "%s", v.Message)
	}
	http.Redirect(w, r.Request, "/ui/tasks/"+url.PathEscape(id), http.StatusSeeOther)
}

// --- endpoints

// uiManager is one row of an endpoint's managers, as its interchange
// last reported them.
type uiManager struct {
	ID          string     `json:"manager_id"`
	Hostname    string     `json:"hostname"`
	BlockID     string     `json:"block_id"`
	Workers     int        `json:"workers"`
	IdleWorkers int        `json:"idle_workers"`
	Draining    bool       `json:"draining"`
	LastSeen    *time.Time `json:"last_seen"`
}

// uiEndpoint is an endpoint as its pages show it.
type uiEndpoint struct {
	EndpointView
	BlockList    []blocks.View
	ManagerRows  []uiManager
	BlocksBy     map[string]int
	Manageable   bool
	ServingView  *servingstate.View
	ServingError string
}

func (u *webUI) endpointOf(r *uiReq, v EndpointView) uiEndpoint {
	e := uiEndpoint{EndpointView: v, BlocksBy: map[string]int{}}
	if len(v.ManagerList) > 0 {
		_ = json.Unmarshal(v.ManagerList, &e.ManagerRows)
	}
	if len(v.Blocks) > 0 {
		_ = json.Unmarshal(v.Blocks, &e.BlockList)
		for _, b := range e.BlockList {
			e.BlocksBy[b.State]++
		}
	}
	if rec, ok := u.f.enrolled.get(v.EndpointID); ok {
		e.Manageable = mayManage(r.who, &rec)
	} else {
		e.Manageable = r.who.Admin
	}
	return e
}

// usable lists the endpoints who may use, for the filters.
func (u *webUI) usable(who auth.Identity) []string { return u.f.usableEndpoints(who) }

func (u *webUI) endpointsPage(w http.ResponseWriter, r *uiReq) {
	status, body := u.api(r, http.MethodGet, "/v1/endpoints", nil, nil)
	var res struct {
		Endpoints []EndpointView `json:"endpoints"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &res) != nil {
		u.errorPage(w, r.Request, r, status, apiError(status, body))
		return
	}
	eps := make([]uiEndpoint, len(res.Endpoints))
	for i, v := range res.Endpoints {
		eps[i] = u.endpointOf(r, v)
	}
	u.render(w, r.Request, r, http.StatusOK, "endpoints", "Endpoints", "endpoints", map[string]any{"Endpoints": eps})
}

func (u *webUI) endpointPage(w http.ResponseWriter, r *uiReq) {
	ep := r.PathValue("ep")
	status, body := u.api(r, http.MethodGet, "/v1/endpoints/"+url.PathEscape(ep), nil, nil)
	var v EndpointView
	if status != http.StatusOK || json.Unmarshal(body, &v) != nil {
		u.errorPage(w, r.Request, r, status, apiError(status, body))
		return
	}
	e := u.endpointOf(r, v)
	if v.Connected {
		status, body = u.api(r, http.MethodGet, "/v1/endpoints/"+url.PathEscape(ep)+"/servingState", nil, nil)
		var sv servingstate.View
		if status == http.StatusOK && json.Unmarshal(body, &sv) == nil {
			e.ServingView = &sv
		} else {
			e.ServingError = apiError(status, body)
		}
	}
	u.render(w, r.Request, r, http.StatusOK, "endpoint", "Endpoint "+ep, "endpoints", map[string]any{
		"E": e, "ServingStates": []string{messages.NonePaused.String(), messages.PushPaused.String(), messages.PushAndDispatchPaused.String()}})
}

func (u *webUI) createEndpoint(w http.ResponseWriter, r *uiReq) {
	id := strings.TrimSpace(r.PostFormValue("endpoint_id"))
	status, body := u.api(r, http.MethodPost, "/v1/endpoints", nil, map[string]any{"endpoint_id": id, "replace": r.PostFormValue("replace") == "on"})
	if status != http.StatusCreated {
		u.flash(r, true, "Endpoint %s not created: %s", id, apiError(status, body))
		http.Redirect(w, r.Request, "/ui/endpoints", http.StatusSeeOther)
		return
	}
	var res struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	_ = json.Unmarshal(body, &res)
	var out bytes.Buffer
	_ = json.Indent(&out, res.Credentials, "", "  ")
	u.mu.Lock()
	r.sess.secret = &uiSecret{Label: "Enrollment credential of " + id, Value: out.String(),
		Hint: "Shown once. Save it as a file (mode 0600) and start the interchange with --credentials FILE."}
	u.mu.Unlock()
	u.flash(r, false, "Endpoint %s created.", id)
	http.Redirect(w, r.Request, "/ui/endpoints/"+url.PathEscape(id), http.StatusSeeOther)
}

// splitNames reads "alice, bob lab" as a list of names.
func splitNames(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// endpointAction runs one endpoint form through the API.
func (u *webUI) endpointAction(w http.ResponseWriter, r *uiReq) {
	ep, action := r.PathValue("ep"), r.PathValue("action")
	base := "/v1/endpoints/" + url.PathEscape(ep)
	back := "/ui/endpoints/" + url.PathEscape(ep)
	var (
		status int
		body   []byte
		done   string
	)
	switch action {
	case "serving":
		st := r.PostFormValue("state")
		req := map[string]any{"state": st, "timeout": strings.TrimSpace(r.PostFormValue("timeout")), "force": r.PostFormValue("force") == "on"}
		status, body = u.api(r, http.MethodPost, base+"/servingState", nil, req)
		var res struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &res)
		done = res.Message
	case "drain":
		m := strings.TrimSpace(r.PostFormValue("manager"))
		q := url.Values{}
		if g := strings.TrimSpace(r.PostFormValue("grace")); g != "" {
			q.Set("grace", g)
		}
		status, body = u.api(r, http.MethodPost, base+"/managers/"+url.PathEscape(m)+"/drain", q, nil)
		done = "Manager " + m + " is draining."
	case "share", "unshare":
		req := ShareRequest{Users: splitNames(r.PostFormValue("users")), Groups: splitNames(r.PostFormValue("groups"))}
		status, body = u.api(r, http.MethodPost, base+"/"+action, nil, req)
		done = "Endpoint " + ep + " " + action + "d."
	case "delete":
		if r.PostFormValue("confirm") != ep {
			u.flash(r, true, "Not deleted: type the endpoint's id to confirm.")
			http.Redirect(w, r.Request, back, http.StatusSeeOther)
			return
		}
		status, body = u.api(r, http.MethodDelete, base, nil, nil)
		if status == http.StatusOK {
			u.flash(r, false, "Endpoint %s deleted.", ep)
			http.Redirect(w, r.Request, "/ui/endpoints", http.StatusSeeOther)
			return
		}
	default:
		u.errorPage(w, r.Request, r, http.StatusNotFound, "No such page.")
		return
	}
	switch {
	case status == http.StatusNotFound && action != "drain" && action != "serving":
		u.errorPage(w, r.Request, r, status, apiError(status, body))
		return
	case status >= 300:
		u.flash(r, true, "Refused (%d): %s", status, apiError(status, body))
	default:
		u.flash(r, false, "%s", done)
	}
	http.Redirect(w, r.Request, back, http.StatusSeeOther)
}

// --- tokens (admins)

func (u *webUI) tokensPage(w http.ResponseWriter, r *uiReq) {
	status, body := u.api(r, http.MethodGet, "/v1/tokens", nil, nil)
	var res struct {
		Tokens []TokenInfo `json:"tokens"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &res) != nil {
		u.errorPage(w, r.Request, r, status, apiError(status, body))
		return
	}
	u.render(w, r.Request, r, http.StatusOK, "tokens", "Tokens", "tokens", map[string]any{"Tokens": res.Tokens})
}

func (u *webUI) createToken(w http.ResponseWriter, r *uiReq) {
	name := strings.TrimSpace(r.PostFormValue("user"))
	req := map[string]any{"user": name, "admin": r.PostFormValue("admin") == "on", "groups": splitNames(r.PostFormValue("groups"))}
	status, body := u.api(r, http.MethodPost, "/v1/tokens", nil, req)
	if status != http.StatusCreated {
		u.flash(r, true, "Token not created: %s", apiError(status, body))
	} else {
		var res struct {
			Token string `json:"token"`
		}
		_ = json.Unmarshal(body, &res)
		u.mu.Lock()
		r.sess.secret = &uiSecret{Label: "Token for " + name, Value: res.Token,
			Hint: "Shown once; it is stored only as a hash. Hand it to its user: SWITCHYARD_TOKEN=... or --token-file."}
		u.mu.Unlock()
	}
	http.Redirect(w, r.Request, "/ui/tokens", http.StatusSeeOther)
}

func (u *webUI) revokeToken(w http.ResponseWriter, r *uiReq) {
	id := r.PathValue("id")
	status, body := u.api(r, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
	if status != http.StatusOK {
		u.flash(r, true, "Not revoked: %s", apiError(status, body))
	} else {
		u.flash(r, false, "Token %s revoked.", id)
	}
	http.Redirect(w, r.Request, "/ui/tokens", http.StatusSeeOther)
}

// --- formatting

func uiWhen(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

func uiTook(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func uiAgo(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := time.Since(*t)
	if d < time.Second {
		return "just now"
	}
	return d.Round(time.Second).String() + " ago"
}
