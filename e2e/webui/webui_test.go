// Package webui_test drives the forwarder's web UI in headless Chromium
// against real daemons (forwarder, interchanges, managers in-process).
package webui_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/manager"
)

// site is a forwarder with two endpoints: ep1 with a manager that runs
// exec and python tasks, and "broken", whose only (local) block's manager
// fails at start.
type site struct {
	fwd   *testutil.Forwarder
	admin *testutil.Client
	alice *testutil.Client
	token map[string]string
}

func startSite(t *testing.T) *site {
	t.Helper()
	const iv, th = 100 * time.Millisecond, 5 * time.Second
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: iv, HeartbeatThreshold: th})
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: fwd.ZMQAddr(),
		HeartbeatInterval: iv, HeartbeatThreshold: th, Credentials: fwd.Enroll(t, "ep1")})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), Credentials: ix.ManagerCredentials(),
		ManagerID: "m1", Workers: 4, Python: "/usr/bin/python3", HeartbeatInterval: iv, HeartbeatThreshold: th})

	// A manager binary that cannot start: its block fails with a reason.
	bad := filepath.Join(t.TempDir(), "broken-manager")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'cannot open /scratch: no such file or directory' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 1, MaxBlocks: 1, InitBlocks: 1, NodesPerBlock: 1,
		WorkersPerNode: 1, MaxIdle: time.Minute, Period: 200 * time.Millisecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	testutil.StartInterchange(t, interchange.Options{EndpointID: "broken", Forwarder: fwd.ZMQAddr(), StateDir: t.TempDir(),
		HeartbeatInterval: iv, HeartbeatThreshold: th, Credentials: fwd.Enroll(t, "broken"), Blocks: cfg, ManagerBinary: bad})

	s := &site{fwd: fwd, admin: fwd.Client(), token: map[string]string{"admin": fwd.AdminToken()}}
	var out struct {
		Token string `json:"token"`
	}
	s.admin.Must(t, http.StatusCreated, http.MethodPost, "/v1/tokens", map[string]any{"user": "alice"}, &out)
	s.token["alice"] = out.Token
	s.alice = testutil.NewClient(fwd.URL, out.Token)
	fwd.Share(t, "ep1", "alice")
	testutil.WaitFor(t, 20*time.Second, func() error {
		v, _ := fwd.Endpoint("ep1")
		if !v.Connected || v.Managers != 1 {
			return fmt.Errorf("ep1: connected %v, %d managers", v.Connected, v.Managers)
		}
		b, _ := fwd.Endpoint("broken")
		if !strings.Contains(string(b.Blocks), `"failed"`) {
			return fmt.Errorf("broken: blocks %s", b.Blocks)
		}
		return nil
	})
	return s
}

// pythonCall is cloudpickle of (fn, args, kwargs) for a Python expression.
func pythonCall(t *testing.T, call string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import sys, cloudpickle\nsys.stdout.buffer.write(cloudpickle.dumps("+call+"))").Output()
	if err != nil {
		t.Fatalf("python3 with cloudpickle (scripts/install-deps.sh installs it): %v", err)
	}
	return base64.StdEncoding.EncodeToString(out)
}

func waitEnded(t *testing.T, c *testutil.Client, id string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() error {
		var v struct {
			State string `json:"state"`
		}
		c.Must(t, http.StatusOK, http.MethodGet, "/v1/tasks/"+id, nil, &v)
		if v.State != "success" && v.State != "failed" && v.State != "cancelled" {
			return fmt.Errorf("task %s is %s", id, v.State)
		}
		return nil
	})
}

func TestWebUI(t *testing.T) {
	s := startSite(t)
	shots := t.TempDir()
	base := s.fwd.URL

	// Plain HTTP first: headers, cookie attributes, CSRF and Origin.
	t.Run("headers and cookie", func(t *testing.T) {
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Get(base + "/ui/tasks")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/signin" {
			t.Errorf("/ui/tasks signed out: %d to %q; want 303 to /ui/signin", resp.StatusCode, resp.Header.Get("Location"))
		}
		for _, p := range []string{"/ui/signin", "/ui/static/ui.js", "/ui/static/ui.css"} {
			resp, err := hc.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			csp := resp.Header.Get("Content-Security-Policy")
			if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline") {
				t.Errorf("%s: %d with CSP %q; want 200 and a CSP of 'self' scripts without unsafe-inline", p, resp.StatusCode, csp)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("%s: headers %v", p, resp.Header)
			}
		}
		// Sign-in from another site is refused before the token is looked at.
		resp = postForm(t, hc, base+"/ui/signin", "http://evil.example", url.Values{"token": {s.token["admin"]}})
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("cross-site sign-in: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
		}
		resp = postForm(t, hc, base+"/ui/signin", base, url.Values{"token": {"syt_wrong"}})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("wrong token: %d, want 401", resp.StatusCode)
		}
		resp = postForm(t, hc, base+"/ui/signin", base, url.Values{"token": {s.token["admin"]}})
		var sess *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "switchyard_session" {
				sess = c
			}
		}
		if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/ui/" || sess.MaxAge != 0 || !sess.Expires.IsZero() ||
			strings.Contains(sess.Value, s.token["admin"]) {
			t.Fatalf("session cookie %+v; want an HttpOnly, SameSite=Strict session cookie on /ui/ that is not the token", sess)
		}
		// A form without the session's CSRF token, or from another origin.
		resp = postForm(t, hc, base+"/ui/tokens", base, url.Values{"user": {"mallory"}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("token form without CSRF token: %d, want 403", resp.StatusCode)
		}
		page := get(t, hc, base+"/ui/tokens")
		csrf := between(page, `name="csrf" value="`, `"`)
		resp = postForm(t, hc, base+"/ui/tokens", "http://evil.example", url.Values{"user": {"mallory"}, "csrf": {csrf}})
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("token form from another origin: %d, want 403", resp.StatusCode)
		}
		var toks struct {
			Tokens []struct {
				User string `json:"user"`
			} `json:"tokens"`
		}
		s.admin.Must(t, http.StatusOK, http.MethodGet, "/v1/tokens", nil, &toks)
		for _, tk := range toks.Tokens {
			if tk.User == "mallory" {
				t.Errorf("a refused form made a token for mallory")
			}
		}
		// Nothing of the token leaks into the page or a URL.
		if strings.Contains(page, s.token["admin"]) {
			t.Errorf("the tokens page contains the admin token")
		}
	})

	b := startBrowser(t)
	adminTab := b.newTab(t)
	admin := adminTab

	signIn := func(t *testing.T, tb *tab, user string) {
		t.Helper()
		tb = tb.on(t)
		tb.navigate(base + "/ui/")
		if got := tb.str("location.pathname"); got != "/ui/signin" {
			t.Fatalf("signed out, /ui/ went to %s; want /ui/signin", got)
		}
		tb.submitForm("form[action='/ui/signin']", map[string]string{"token": s.token[user]})
		if got := tb.str("location.pathname"); got != "/ui/tasks" {
			t.Fatalf("after sign-in at %s; want /ui/tasks", got)
		}
		if who := tb.str(`document.getElementById("who").textContent`); !strings.HasPrefix(strings.TrimSpace(who), user) {
			t.Fatalf("signed in as %q; want %s", who, user)
		}
		if c := tb.str("document.cookie"); c != "" {
			t.Errorf("script can read cookies %q; the session cookie must be HttpOnly", c)
		}
		if strings.Contains(tb.str("location.href"), "syt_") {
			t.Errorf("a token in the URL %s", tb.str("location.href"))
		}
	}

	t.Run("sign in with a wrong token", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/signin")
		admin.submitForm("form[action='/ui/signin']", map[string]string{"token": "syt_not-a-token"})
		if msg := admin.str(`(document.getElementById("signin-error")||{}).textContent||""`); !strings.Contains(msg, "not valid") {
			t.Errorf("wrong token: page says %q; %s", msg, admin.str("location.href + ' ' + document.body.innerText"))
		}
		admin.screenshot(shots, "signin")
	})

	signIn(t, admin, "admin")

	// Earlier tasks, so the page has something to show.
	execIDs, err := s.admin.Submit("ep1", map[string]any{"kind": "exec", "args": []string{"sh", "-c", "echo hello from $0; echo warn >&2", "switchyard"}},
		map[string]any{"kind": "exec", "args": []string{"sh", "-c", "exit 7"}})
	if err != nil {
		t.Fatal(err)
	}
	pyIDs, err := s.admin.Submit("ep1", map[string]any{"kind": "python", "payload": pythonCall(t, "(lambda n: {'squares': [i*i for i in range(n)]}, (6,), {})")},
		map[string]any{"kind": "python", "payload": pythonCall(t, "(lambda: 1/0, (), {})")})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range append(execIDs, pyIDs...) {
		waitEnded(t, s.admin, id)
	}

	t.Run("tasks page updates live", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/tasks")
		admin.waitTrue(10*time.Second, fmt.Sprintf(`document.querySelector('tr[data-id=%q]')`, pyIDs[1]))
		// Time from the API's answer to the row in the open page.
		var worst time.Duration
		for i := 0; i < 3; i++ {
			start := time.Now()
			ids, err := s.admin.Submit("ep1", map[string]any{"kind": "sleep", "args": []string{"0.3"}})
			if err != nil {
				t.Fatal(err)
			}
			submitted := time.Since(start)
			shown := admin.waitTrue(10*time.Second, fmt.Sprintf(`document.querySelector('tr[data-id=%q]')`, ids[0]))
			t.Logf("task %d: submit took %s, then it showed on the open tasks page after %s", i, submitted.Round(time.Millisecond), shown.Round(time.Millisecond))
			worst = max(worst, shown)
			// Its state follows: it ends as success without a reload.
			admin.waitTrue(10*time.Second, fmt.Sprintf(`(document.querySelector('tr[data-id=%q]')||{}).dataset.state === "success"`, ids[0]))
		}
		// The goal is 1 s; a loaded CI machine gets some slack.
		if worst > 2*time.Second {
			t.Errorf("a submitted task took %s to show on the open tasks page; want about 1s", worst)
		}
		t.Logf("submit to shown on the tasks page: at most %s over 3 tasks", worst)
		admin.screenshot(shots, "tasks")

		// Filters: state and endpoint narrow the list, through the list API's rules.
		admin.navigate(base + "/ui/tasks?state=failed&endpoint=ep1")
		rows := admin.str(`[...document.querySelectorAll('#task-rows tr')].map(r => r.dataset.state).join(",")`)
		if rows == "" || strings.ReplaceAll(rows, "failed", "") != strings.Repeat(",", strings.Count(rows, ",")) {
			t.Errorf("state=failed shows rows in states %q", rows)
		}
		admin.navigate(base + "/ui/tasks?order=oldest")
		if first := admin.str(`document.querySelector('#task-rows tr').dataset.id`); first != execIDs[0] {
			t.Errorf("oldest first starts with %s; want the first task %s", first, execIDs[0])
		}
	})

	t.Run("paging", func(t *testing.T) {
		admin := adminTab.on(t)
		specs := make([]any, 120)
		for i := range specs {
			specs[i] = map[string]any{"kind": "noop"}
		}
		ids, err := s.admin.Submit("ep1", specs...)
		if err != nil {
			t.Fatal(err)
		}
		rows := `[...document.querySelectorAll('#task-rows tr')].map(r => r.dataset.id).join(" ")`
		admin.navigate(base + "/ui/tasks?endpoint=ep1")
		first := strings.Fields(admin.str(rows))
		if len(first) != 50 || first[0] != ids[119] || first[49] != ids[70] {
			t.Fatalf("newest page: %d rows from %s to %s; want 50, newest first", len(first), first[0], first[len(first)-1])
		}
		admin.navigate(base + admin.str(`document.getElementById("older").getAttribute("href")`))
		second := strings.Fields(admin.str(rows))
		if len(second) != 50 || second[0] != ids[69] || second[49] != ids[20] {
			t.Errorf("older page: %d rows from %s; want the next 50", len(second), second[0])
		}
		admin.navigate(base + "/ui/tasks?order=oldest&endpoint=ep1")
		admin.navigate(base + admin.str(`document.getElementById("next").getAttribute("href")`))
		if got := strings.Fields(admin.str(rows)); len(got) != 50 {
			t.Errorf("second page oldest first: %d rows", len(got))
		}
	})

	t.Run("task pages", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/tasks/" + execIDs[0])
		if out := admin.str(`document.getElementById("stdout").textContent`); out != "hello from switchyard\n" {
			t.Errorf("exec stdout %q", out)
		}
		if e := admin.str(`document.getElementById("stderr").textContent`); e != "warn\n" {
			t.Errorf("exec stderr %q", e)
		}
		admin.screenshot(shots, "task-exec")
		admin.navigate(base + "/ui/tasks/" + pyIDs[0])
		if v := admin.str(`document.getElementById("py-text").textContent`); v != "{'squares': [0, 1, 4, 9, 16, 25]}" {
			t.Errorf("python value shown as %q", v)
		}
		admin.screenshot(shots, "task-python")
		admin.navigate(base + "/ui/tasks/" + pyIDs[1])
		if v := admin.str(`document.getElementById("py-text").textContent`); !strings.Contains(v, "ZeroDivisionError: division by zero") || !strings.Contains(v, "Traceback") {
			t.Errorf("python exception shown as %q", v)
		}
		if st := admin.str(`document.getElementById("task-state").textContent`); st != "failed" {
			t.Errorf("state %q", st)
		}
		admin.screenshot(shots, "task-python-error")
	})

	t.Run("endpoints", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/endpoints")
		if n := admin.str(`String(document.querySelectorAll('#endpoints tbody tr').length)`); n != "2" {
			t.Errorf("%s endpoints listed, want ep1 and broken", n)
		}
		if txt := admin.str(`document.querySelector('tr[data-endpoint="broken"]').textContent`); !strings.Contains(txt, "failed") {
			t.Errorf("broken's row %q does not count its failed block", txt)
		}
		admin.screenshot(shots, "endpoints")
		admin.navigate(base + "/ui/endpoints/broken")
		reason := admin.str(`(document.querySelector('#blocks td.reason')||{}).textContent||""`)
		if !strings.Contains(reason, "cannot open /scratch") {
			t.Errorf("failed block's reason %q; want the manager's own words", reason)
		}
		admin.screenshot(shots, "endpoint-failed-block")

		// Managers as the interchange reports them, on its periodic
		// reports: reload until m1 is listed.
		testutil.WaitFor(t, 20*time.Second, func() error {
			admin.navigate(base + "/ui/endpoints/ep1")
			if row := admin.str(`(document.querySelector('#managers tr[data-manager="m1"]')||{}).textContent||""`); !strings.Contains(row, "m1") || !strings.Contains(row, "4") {
				return fmt.Errorf("managers table: %q", row)
			}
			return nil
		})
		if v := admin.str(`document.getElementById("override").textContent`); v != "none" {
			t.Errorf("override %q before any", v)
		}
		admin.submitForm("#serving-form", map[string]string{"state": "PUSH_PAUSED", "timeout": "10m"})
		if v := admin.str(`document.getElementById("override").textContent`); !strings.Contains(v, "PUSH_PAUSED") || !strings.Contains(v, "clears in") {
			t.Errorf("override after pausing: %q", v)
		}
		if v := admin.str(`document.getElementById("serving-state").textContent`); v != "PUSH_PAUSED" {
			t.Errorf("serving state after pausing: %q", v)
		}
		admin.screenshot(shots, "endpoint")
		admin.submitForm("#serving-form", map[string]string{"state": ""})
		if v := admin.str(`document.getElementById("override").textContent`); v != "none" {
			t.Errorf("override after clearing: %q", v)
		}
	})

	t.Run("tokens", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/tokens")
		admin.submitForm("#token-form", map[string]string{"user": "carol"})
		tok := admin.str(`(document.getElementById("secret")||{}).textContent||""`)
		if !strings.HasPrefix(tok, "syt_") {
			t.Fatalf("new token shown as %q", tok)
		}
		code, _, err := testutil.NewClient(base, tok).Do(http.MethodGet, "/v1/tasks", nil, nil)
		if err != nil || code != http.StatusOK {
			t.Errorf("the token made in the UI: %d %v", code, err)
		}
		if strings.Contains(admin.str("location.href"), tok) {
			t.Errorf("the new token is in the URL")
		}
		// Shown once: a reload no longer shows it.
		admin.navigate(base + "/ui/tokens")
		if admin.str(`String(!!document.getElementById("secret"))`) != "false" {
			t.Errorf("the token is shown again")
		}
		admin.screenshot(shots, "tokens")
		id := admin.str(`[...document.querySelectorAll('#tokens tbody tr')].find(r => r.children[1].textContent === "carol").dataset.token`)
		admin.submitForm(fmt.Sprintf(`form[action="/ui/tokens/%s/revoke"]`, id), nil)
		if code, _, _ := testutil.NewClient(base, tok).Do(http.MethodGet, "/v1/tasks", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("revoked in the UI, the token still gets %d", code)
		}
	})

	t.Run("another user", func(t *testing.T) {
		ids, err := s.alice.Submit("ep1", map[string]any{"kind": "exec", "args": []string{"echo", "alice's"}})
		if err != nil {
			t.Fatal(err)
		}
		waitEnded(t, s.alice, ids[0])
		alice := b.newTab(t)
		signIn(t, alice, "alice")
		alice.waitTrue(10*time.Second, fmt.Sprintf(`document.querySelector('tr[data-id=%q]')`, ids[0]))
		if n := alice.str(`String(document.querySelectorAll('#task-rows tr').length)`); n != "1" {
			t.Errorf("alice sees %s tasks; want only her own", n)
		}
		if alice.str(`String(!!document.querySelector('nav a[href="/ui/tokens"]'))`) != "false" {
			t.Errorf("alice's menu offers the tokens page")
		}
		alice.screenshot(shots, "tasks-user")
		alice.navigate(base + "/ui/tasks/" + execIDs[0])
		if st := alice.str(`document.getElementById("error-status").textContent`); !strings.HasPrefix(st, "404") {
			t.Errorf("the admin's task, to alice: %q; want 404", st)
		}
		alice.navigate(base + "/ui/tokens")
		if st := alice.str(`document.getElementById("error-status").textContent`); !strings.HasPrefix(st, "403") {
			t.Errorf("the tokens page, to alice: %q; want 403", st)
		}
		alice.screenshot(shots, "forbidden")
		alice.navigate(base + "/ui/endpoints/broken")
		if st := alice.str(`document.getElementById("error-status").textContent`); !strings.HasPrefix(st, "404") {
			t.Errorf("an endpoint not shared with alice: %q; want 404", st)
		}
		// Admin forms are not offered, and the API refuses them anyway.
		alice.navigate(base + "/ui/endpoints/ep1")
		if alice.str(`String(!!document.getElementById("serving-form"))`) != "false" {
			t.Errorf("alice is offered the serving-state form")
		}
		alice.eval(`(() => { const f = document.createElement("form"); f.method = "post"; f.action = "/ui/endpoints/ep1/serving";
			for (const [k, v] of [["csrf", document.querySelector("input[name=csrf]").value], ["state", "PUSH_AND_DISPATCH_PAUSED"]]) {
				const i = document.createElement("input"); i.name = k; i.value = v; f.appendChild(i); }
			document.body.appendChild(f); f.submit(); })()`)
		alice.waitTrue(10*time.Second, `document.querySelector(".flash.error")`)
		if msg := alice.str(`document.querySelector(".flash.error").textContent`); !strings.Contains(msg, "403") {
			t.Errorf("alice pausing ep1: %q; want the API's 403", msg)
		}
		if v, _ := s.fwd.Endpoint("ep1"); v.ServingState != "NONE_PAUSED" {
			t.Errorf("ep1 is %s after alice's refused pause", v.ServingState)
		}
		if p := alice.consoleProblems(); len(p) > 0 {
			t.Errorf("console: %v", p)
		}
		alice.submitForm("form[action='/ui/signout']", nil)
		if got := alice.str("location.pathname"); got != "/ui/signin" {
			t.Errorf("after sign-out at %s", got)
		}
		alice.navigate(base + "/ui/tasks")
		if got := alice.str("location.pathname"); got != "/ui/signin" {
			t.Errorf("signed out, /ui/tasks shows %s", got)
		}
	})

	t.Run("share and drain", func(t *testing.T) {
		admin := adminTab.on(t)
		admin.navigate(base + "/ui/endpoints/broken")
		admin.submitForm(`form[action="/ui/endpoints/broken/share"]`, map[string]string{"users": "alice"})
		if code, _, _ := s.alice.Do(http.MethodGet, "/v1/endpoints/broken", nil, nil); code != http.StatusOK {
			t.Errorf("shared in the UI, broken is %d to alice", code)
		}
		admin.navigate(base + "/ui/endpoints/ep1")
		admin.submitForm(`form[action="/ui/endpoints/ep1/drain"]`, map[string]string{"manager": "no-such-manager"})
		if msg := admin.str(`(document.querySelector(".flash.error")||{}).textContent||""`); !strings.Contains(msg, "no-such-manager") {
			t.Errorf("draining an unknown manager: %q; want the endpoint's refusal", msg)
		}
		admin.submitForm(`form[action="/ui/endpoints/ep1/drain"]`, map[string]string{"manager": "m1", "grace": "1s"})
		if msg := admin.str(`(document.querySelector(".flash")||{}).textContent||""`); !strings.Contains(msg, "m1 is draining") {
			t.Errorf("draining m1: %q", msg)
		}
		testutil.WaitFor(t, 20*time.Second, func() error {
			if v, _ := s.fwd.Endpoint("ep1"); v.Managers != 0 {
				return fmt.Errorf("ep1 has %d managers", v.Managers)
			}
			return nil
		})
	})

	if p := admin.consoleProblems(); len(p) > 0 {
		t.Errorf("console of the admin's tab (CSP violations or script errors): %v", p)
	}
	entries, _ := os.ReadDir(shots)
	for _, e := range entries {
		t.Logf("screenshot %s", filepath.Join(shots, e.Name()))
	}
}

func postForm(t *testing.T, hc *http.Client, u, origin string, form url.Values) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func get(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = io.Copy(&buf, resp.Body)
	return buf.String()
}

func between(s, a, b string) string {
	_, rest, ok := strings.Cut(s, a)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, b)
	return v
}
