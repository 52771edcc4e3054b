package forwarder_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	zmq "github.com/pebbe/zmq4"
	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Issue 14: without a token nothing but /healthz and /metrics answers; the
// refusal is a 401 with a JSON error and changes nothing.
func TestNoTokenIsRefused(t *testing.T) {
	_, admin := startForwarder(t, forwarder.Options{})
	ids, err := admin.Submit("ep1", map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", "syt_not-a-real-token", admin.Token() + "x"} {
		anon := admin.As(tok)
		cases := []struct{ method, path, body string }{
			{"POST", "/v1/endpoints/ep1/tasks", `{"tasks":[{"kind":"exec","args":["id"]}]}`},
			{"GET", "/v1/tasks/" + ids[0], ""},
			{"GET", "/v1/tasks/" + ids[0] + "?wait=1s", ""},
			{"POST", "/v1/tasks/status", `{"task_ids":["` + ids[0] + `"]}`},
			{"DELETE", "/v1/tasks/" + ids[0], ""},
			{"POST", "/v1/tasks/cancel", `{"task_ids":["` + ids[0] + `"]}`},
			{"POST", "/v1/endpoints/ep1/servingState", `{"state":"PUSH_AND_DISPATCH_PAUSED"}`},
			{"GET", "/v1/endpoints", ""},
			{"POST", "/v1/tokens", `{"user":"mallory","admin":true}`},
			{"POST", "/v1/endpoints", `{"endpoint_id":"evil"}`},
			{"POST", "/v1/endpoints/ep1/managers/m1/drain", ""},
		}
		for _, tc := range cases {
			var body any
			if tc.body != "" {
				body = testutil.Raw(tc.body)
			}
			resp, err := anon.Send(testutil.Request{Method: tc.method, Path: tc.path, Body: body})
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Error string }
			if resp.Code != http.StatusUnauthorized || json.Unmarshal(resp.Body, &e) != nil || !strings.Contains(e.Error, "token") {
				t.Errorf("token %q: %s %s = HTTP %d %s; want 401 with a JSON error about the token", tok, tc.method, tc.path, resp.Code, resp.Body)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
			}
		}
		for _, path := range []string{"/healthz", "/metrics"} {
			if resp, err := anon.Send(testutil.Request{Method: "GET", Path: path}); err != nil || resp.Code != http.StatusOK {
				t.Errorf("GET %s without a token: %v %d; it must stay open for probes and Prometheus", path, err, resp.Code)
			}
		}
	}
	if v, err := admin.Get(ids[0]); err != nil || v.State == "cancelled" {
		t.Fatalf("a refused request changed the task: %+v %v", v, err)
	}
	if n := taskCount(t, admin); n != 1 {
		t.Fatalf("%d tasks stored; refused submissions must store nothing", n)
	}
	if _, err := admin.Client.Endpoint(t.Context(), "evil", false); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("an endpoint was created without a token: %v", err)
	}
}

// Issue 14: anyone could read, wait on or cancel anyone's tasks. Now
// another user gets 404 (the task might as well not exist); admins see all.
func TestTasksBelongToTheirSubmitter(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	alice := f.User(t, "alice", false)
	bob := f.User(t, "bob", false)
	f.Share(t, "ep1", "alice", "bob")
	ids, err := alice.Submit("ep1", map[string]any{"kind": "exec", "args": []string{"echo", "alice-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	id := ids[0]
	for _, path := range []string{"/v1/tasks/" + id, "/v1/tasks/" + id + "?wait=200ms"} {
		code, body, _ := bob.Do("GET", path, nil, nil)
		if code != http.StatusNotFound || bytes.Contains(body, []byte("alice")) {
			t.Errorf("bob GET %s = %d %s; want 404 that says nothing of the task", path, code, body)
		}
	}
	if code, body, _ := bob.Do("DELETE", "/v1/tasks/"+id, nil, nil); code != http.StatusNotFound {
		t.Errorf("bob cancels alice's task: %d %s; want 404", code, body)
	}
	var batch struct{ Tasks []client.Cancel }
	bob.Must(t, http.StatusOK, "POST", "/v1/tasks/cancel", map[string]any{"task_ids": []string{id}}, &batch)
	if len(batch.Tasks) != 1 || batch.Tasks[0].State != "unknown" || batch.Tasks[0].Cancelled {
		t.Errorf("bob's batch cancel of alice's task: %+v; want unknown, not cancelled", batch.Tasks)
	}
	sts, err := bob.Status([]string{id})
	if err != nil || sts[0].State != "unknown" || sts[0].EndpointID != "" {
		t.Errorf("bob's status of alice's task: %+v %v; want unknown", sts, err)
	}
	if v, err := alice.Get(id); err != nil || v.State == "cancelled" {
		t.Fatalf("alice's own view: %+v %v; want her task, not cancelled", v, err)
	}
	if v, err := admin.Get(id); err != nil || v.TaskID != id {
		t.Fatalf("admin's view of alice's task: %+v %v", v, err)
	}
	if cv, err := alice.Client.Cancel(t.Context(), id); err != nil || !cv.Cancelled {
		t.Fatalf("alice cancels her own task: %+v %v", cv, err)
	}
}

// Issue 14: any user could pause an endpoint with no timeout or lift a
// pressure pause with force, unlogged. Admin operations now answer 403 to
// others, and the forwarder logs who asked.
func TestAdminOperationsNeedAnAdmin(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{Pprof: true})
	alice := f.User(t, "alice", false)
	cases := []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/endpoints/ep1/servingState", testutil.Raw(`{"state":"PUSH_AND_DISPATCH_PAUSED"}`)},
		{"POST", "/v1/endpoints/ep1/servingState", testutil.Raw(`{"state":"NONE_PAUSED","force":true}`)},
		{"POST", "/v1/tokens", map[string]any{"user": "alice", "admin": true}},
		{"GET", "/v1/tokens", nil},
		{"DELETE", "/v1/tokens/admin", nil},
		{"POST", "/v1/endpoints", map[string]any{"endpoint_id": "site", "multi_user": true}},
		{"POST", "/v1/endpoints/ep1/managers/m1/drain", nil},
		{"GET", "/debug/pprof/cmdline", nil},
		{"GET", "/debug/pprof/heap", nil},
	}
	for _, tc := range cases {
		code, body, err := alice.Do(tc.method, tc.path, tc.body, nil)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusForbidden || !strings.Contains(string(body), "admin") {
			t.Errorf("alice %s %s = %d %s; want 403 naming the admin need", tc.method, tc.path, code, body)
		}
	}
	if !f.Log.Contains("admin request refused") || !f.Log.Contains("user=alice") {
		t.Errorf("refusals are not logged with the user's name:\n%s", f.Log.String())
	}
	if !f.EndpointEnrolled("ep1") {
		t.Fatal("alice deleted ep1")
	}
	if f.EndpointEnrolled("site") {
		t.Fatal("alice created a multi-user endpoint")
	}
	// The admin may, and is logged by name.
	admin.Must(t, http.StatusOK, "GET", "/debug/pprof/cmdline", nil, nil)
	if !f.Log.Contains(`msg="admin request" component=forwarder method=GET path=/debug/pprof/cmdline`) {
		t.Errorf("admin request not logged:\n%s", f.Log.String())
	}
}

// Tokens are stored hashed, listed without secrets, and a revoked token
// stops working at once.
func TestTokenLifecycle(t *testing.T) {
	dir := t.TempDir()
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, "ep1")
	admin := f.Client()
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil || strings.TrimSpace(string(b)) != f.AdminToken() {
		t.Fatalf("STATE_DIR/admin.token: %q %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "admin.token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode %v, want 0600", fi.Mode().Perm())
	}
	alice := f.User(t, "alice", false)
	f.Share(t, "ep1", "alice")
	if _, err := alice.Submit("ep1", map[string]any{"kind": "noop"}); err != nil {
		t.Fatal(err)
	}
	toks, err := admin.Client.Tokens(t.Context())
	if err != nil || len(toks) != 2 || toks[0].User != "admin" || !toks[0].Admin || toks[1].User != "alice" || toks[1].Admin {
		t.Fatalf("Tokens: %+v %v; want admin and alice", toks, err)
	}
	raw := admin.Must(t, http.StatusOK, "GET", "/v1/tokens", nil, nil)
	if bytes.Contains(raw, []byte(alice.Token())) || bytes.Contains(raw, []byte(f.AdminToken())) {
		t.Fatalf("GET /v1/tokens shows a secret: %s", raw)
	}
	f.Stop()
	if in := append(filesHolding(t, filepath.Join(dir, taskstore.PebbleDir), alice.Token()), filesHolding(t, filepath.Join(dir, taskstore.PebbleDir), f.AdminToken())...); len(in) > 0 {
		t.Fatalf("a token is stored in clear in %v; only its hash may be", in)
	}
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	if f2.AdminToken() != f.AdminToken() {
		t.Fatal("the admin token changed across a restart")
	}
	alice2 := testutil.NewClient(f2.URL, alice.Token())
	if _, err := alice2.Client.Endpoints(t.Context()); err != nil {
		t.Fatalf("alice's token after a restart: %v", err)
	}
	if _, err := f2.Client().Client.RevokeTokens(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Client.Endpoints(t.Context()); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("revoked token still works: %v", err)
	}
	if _, err := f2.Client().Client.RevokeTokens(t.Context(), "admin"); client.StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("revoking the bootstrap admin token over the API: %v; want 400 saying to replace the file", err)
	}
}

// Issue 14: a typo in an endpoint id was accepted with 202 and waited
// forever; 2000 POSTs to random ids made 2000 stored endpoints and tasks.
// Now an endpoint exists only once created; anything else is a 404 naming
// the known ones, and leaves no state behind.
func TestUnknownEndpointsLeaveNoState(t *testing.T) {
	logs := &bytes.Buffer{}
	l, err := logx.New("text", "info", logs)
	if err != nil {
		t.Fatal(err)
	}
	f := testutil.StartForwarder(t, forwarder.Options{Log: logrusEntry(l)})
	f.Enroll(t, "local")
	c := f.Client()
	code, body, err := c.Do("POST", "/v1/endpoints/lcoal/tasks", map[string]any{"tasks": []any{map[string]any{"kind": "noop"}}}, nil)
	if err != nil || code != http.StatusNotFound || !strings.Contains(string(body), "lcoal") || !strings.Contains(string(body), "endpoints you may use: local") {
		t.Fatalf("typo endpoint: %d %s %v; want 404 naming the known endpoints", code, body, err)
	}
	for i := 0; i < 2000; i++ {
		code, _, err := c.Do("POST", "/v1/endpoints/"+uuid.NewString()+"/tasks", testutil.Raw(`{"tasks":[{"kind":"noop"}]}`), nil)
		if err != nil || code != http.StatusNotFound {
			t.Fatalf("random endpoint %d: %d %v", i, code, err)
		}
	}
	// Registrations under other ids are refused too: a key enrolled for
	// local registers as local only (a key never enrolled does not get
	// through the CURVE handshake at all; see e2e/chain's attack tests).
	p := testutil.NewDealer(t, "squatter", "local", f.ZMQAddr(), testutil.PeerOptions{})
	for i := 0; i < 50; i++ {
		p.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "squat", ProtocolVersion: messages.Version})
	}
	rep := p.ExpectType(t, 5*time.Second, "", messages.TypeErrorReply).Msg.(*messages.ErrorReply)
	if rep.Code != messages.CodeRefused || !strings.Contains(rep.Reason, `enrolled for endpoint "local"`) {
		t.Fatalf("registration as a never-created endpoint: %+v", rep)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := p.Count(func(r testutil.Received) bool { return r.Type() == messages.TypeErrorReply }); n < 50 {
			return fmt.Errorf("%d of 50 registrations refused", n)
		}
		return nil
	})
	if n := taskCount(t, c); n != 0 {
		t.Fatalf("%d tasks stored for endpoints that do not exist", n)
	}
	eps, err := c.Client.Endpoints(t.Context())
	if err != nil || len(eps) != 1 || eps[0].EndpointID != "local" {
		t.Fatalf("endpoints after the flood: %+v %v; want only local", eps, err)
	}
	metrics, err := c.Client.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(metrics, []byte(`endpoint_id="`)); n > 4 {
		t.Fatalf("%d endpoint metric series after the flood; only local's may exist", n)
	}
	if bytes.Contains(metrics, []byte("squat")) || bytes.Contains(metrics, []byte("lcoal")) {
		t.Fatal("a never-created endpoint has a metric series")
	}
	if n := strings.Count(logs.String(), "registration refused"); n > logx.DefaultBurst {
		t.Fatalf("%d log lines for 50 refused registrations; repeated warnings must be rate-limited", n)
	}
}

// Deleting an endpoint revokes it: tasks still waiting for it fail with
// that reason, and its state and metric series go away.
func TestDeletedEndpointFailsItsTasks(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	f.Enroll(t, "gone")
	ids, err := admin.Submit("gone", map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := admin.Client.DeleteEndpoint(t.Context(), "gone")
	if err != nil || n != 2 {
		t.Fatalf("DeleteEndpoint: %d %v; want 2 tasks failed", n, err)
	}
	for _, v := range admin.WaitTerminal(t, ids, 5*time.Second) {
		if v.State != "failed" || !strings.Contains(v.Error, "endpoint gone was deleted by admin") {
			t.Fatalf("task of a deleted endpoint: %+v", v)
		}
	}
	if _, err := admin.Submit("gone", map[string]any{"kind": "noop"}); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("submit to a deleted endpoint: %v; want 404", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		m, err := admin.Client.Metrics(t.Context())
		if err != nil {
			return err
		}
		if bytes.Contains(m, []byte(`endpoint_id="gone"`)) {
			return fmt.Errorf("deleted endpoint still has metric series")
		}
		return nil
	})
	if _, err := admin.Client.DeleteEndpoint(t.Context(), "gone"); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("deleting twice: %v; want 404", err)
	}
}

// Creating an endpoint that exists is a 409; with replace it gets a new
// key: its interchange is dropped at once, the old key is refused from then
// on, and its tasks stay.
func TestReplacedEndpointKeepsItsTasks(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	old := f.Enroll(t, "ep1")
	ix := testutil.NewDealer(t, "old interchange", "ep1", f.ZMQAddr(), testutil.PeerOptions{Credentials: old})
	ix.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "ep1", ProtocolVersion: messages.Version})
	ix.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	ids, err := admin.Submit("ep1", map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Client.CreateEndpoint(t.Context(), "ep1", false); client.StatusOf(err) != http.StatusConflict ||
		!strings.Contains(err.Error(), "replace") {
		t.Fatalf("creating ep1 again: %v; want 409 naming replace", err)
	}
	raw, err := admin.Client.CreateEndpoint(t.Context(), "ep1", true)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Client struct {
			Public string `json:"public_key"`
		} `json:"client"`
	}
	if err := json.Unmarshal(raw, &cred); err != nil || cred.Client.Public == "" || cred.Client.Public == old.Client.Public {
		t.Fatalf("replaced credential %s: %v; want a new key", raw, err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v, ok := f.Endpoint("ep1"); !ok || v.Connected || v.LostReason != "credential revoked" {
			return fmt.Errorf("endpoint view %+v %v; want disconnected, credential revoked", v, ok)
		}
		return nil
	})
	ix.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "ep1", ProtocolVersion: messages.Version})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := testutil.Metric(t, f.Reg, "switchyard_forwarder_registrations_refused_total"); n != 1 {
			return fmt.Errorf("%g registrations refused; want the old key's", n)
		}
		return nil
	})
	if v, _ := f.Endpoint("ep1"); v.Connected {
		t.Fatalf("the old key registered again: %+v", v)
	}
	if v, err := admin.Get(ids[0]); err != nil || v.Terminal() {
		t.Fatalf("task of a re-keyed endpoint: %+v %v; want it still waiting", v, err)
	}
}

// --insecure turns enrollment off, so an endpoint is known once an
// interchange has registered as it; before that a submission is still a
// 404 (a typo must not wait forever), and endpoints cannot be created.
func TestInsecureForwarderKnowsConnectedEndpoints(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{Insecure: true})
	anyone := f.Client().As("")
	_, err := anyone.Submit("ep1", map[string]any{"kind": "noop"})
	if client.StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "endpoints you may use: none") ||
		!strings.Contains(err.Error(), "once its interchange has registered") {
		t.Fatalf("submit before any interchange connected: %v; want 404 saying how an endpoint becomes known", err)
	}
	if _, err := anyone.Client.CreateEndpoint(t.Context(), "ep1", false); client.StatusOf(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("create on an insecure forwarder: %v; want 400 naming --insecure", err)
	}
	ix := testutil.NewDealer(t, "plain interchange", "ep1", f.ZMQAddr(), testutil.PeerOptions{Insecure: true})
	ix.Send(t, "", &messages.Registration{Role: messages.RoleInterchange, ID: "ep1", ProtocolVersion: messages.Version})
	ix.ExpectType(t, 5*time.Second, "", messages.TypeHeartbeat)
	testutil.WaitFor(t, 5*time.Second, func() error {
		_, err := anyone.Submit("ep1", map[string]any{"kind": "noop"})
		return err
	})
	_, err = anyone.Submit("ep2", map[string]any{"kind": "noop"})
	if client.StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "endpoints you may use: ep1") {
		t.Fatalf("submit to a typo beside a connected endpoint: %v; want 404 naming ep1", err)
	}
}

// The per-user cap on tasks in flight: 429 past it, per user, and room
// again once tasks end.
func TestMaxTasksPerUser(t *testing.T) {
	f, _ := startForwarder(t, forwarder.Options{MaxTasksPerUser: 5})
	alice := f.User(t, "alice", false)
	bob := f.User(t, "bob", false)
	f.Share(t, "ep1", "alice", "bob")
	ids, err := alice.Submit("ep1", manyOf(map[string]any{"kind": "noop"}, 4)...)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _ := alice.Do("POST", "/v1/endpoints/ep1/tasks", map[string]any{"tasks": manyOf(map[string]any{"kind": "noop"}, 2)}, nil)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "limit of 5") {
		t.Fatalf("alice past her cap: %d %s; want 429 naming the limit", code, body)
	}
	if _, err := bob.Submit("ep1", manyOf(map[string]any{"kind": "noop"}, 5)...); err != nil {
		t.Fatalf("bob is not limited by alice's tasks: %v", err)
	}
	if _, err := alice.Client.CancelMany(t.Context(), ids[:2]); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Submit("ep1", manyOf(map[string]any{"kind": "noop"}, 3)...); err != nil {
		t.Fatalf("alice after two of her tasks ended: %v", err)
	}
}

// Issue 14: 500 slow-body connections stayed open indefinitely. Now a
// request must arrive within the read timeout, and open connections are
// capped.
func TestSlowClientsAreBounded(t *testing.T) {
	const maxConns = 4
	f, c := startForwarder(t, forwarder.Options{HTTP: httpx.Config{ReadTimeout: 300 * time.Millisecond,
		ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxConns: maxConns}})
	addr := f.HTTPAddr()
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST /v1/endpoints/ep1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n{\"tasks\":[", f.AdminToken())
	}
	// Each slow request is ended by the server, not left open.
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Fatalf("slow connection %d still open after 20s (read timeout 300ms): %v", i, err)
		}
		conn.Close()
	}
	// Connections held open without a request no longer lock clients
	// out: a new one takes the place of the idlest.
	var held []net.Conn
	for i := 0; i < maxConns; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	c.Must(t, http.StatusOK, "GET", "/v1/endpoints", nil, nil)
	for _, conn := range held {
		conn.Close()
	}
}

// --tls-cert/--tls-key serve HTTPS; plain HTTP is then refused.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testutil.SelfSigned(t, dir)
	f := testutil.StartForwarder(t, forwarder.Options{HTTP: httpx.Config{TLSCert: certFile, TLSKey: keyFile}})
	f.Enroll(t, "ep1")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c := client.New("https://"+f.HTTPAddr(), client.WithToken(f.AdminToken()), client.WithHTTPClient(hc))
	if _, err := c.Submit(t.Context(), "ep1", map[string]any{"kind": "noop"}); err != nil {
		t.Fatalf("submit over HTTPS: %v", err)
	}
	plain := client.New("http://"+f.HTTPAddr(), client.WithToken(f.AdminToken()))
	if _, err := plain.Endpoints(t.Context()); err == nil || client.StatusOf(err) == http.StatusOK {
		t.Fatalf("plain HTTP to an HTTPS server: %v", err)
	}
	if _, err := forwarder.New(forwarder.Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*",
		HTTP: httpx.Config{TLSCert: certFile}}); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("a certificate without a key: %v", err)
	}
}

// Issue 14: a state directory that already existed kept a loose mode
// (0755 seen). It is tightened to 0700, and so is the store's directory.
func TestStateDirIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Stop()
	db := filepath.Join(dir, taskstore.PebbleDir)
	if err := os.Chmod(db, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	for path, want := range map[string]os.FileMode{dir: 0o700, db: 0o700, filepath.Join(dir, "admin.token"): 0o600,
		filepath.Join(dir, "curve.key"): 0o600, filepath.Join(dir, "LOCK"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
}

// Issue 14: 50,000 malformed messages wrote 9.9 MB of identical warnings
// (about 200 bytes each). 10,000 here, to keep the test short.
func TestMalformedFloodLogsLittle(t *testing.T) {
	logs := &bytes.Buffer{}
	l, err := logx.New("text", "info", logs)
	if err != nil {
		t.Fatal(err)
	}
	f := testutil.StartForwarder(t, forwarder.Options{Log: logrusEntry(l)})
	p := testutil.NewDealer(t, "noise", "noise", f.ZMQAddr(), testutil.PeerOptions{})
	const n = 10000
	for i := 0; i < n; i++ {
		if err := p.SendRaw("", [][]byte{{0xff, byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		if v := testutil.Metric(t, f.Reg, "switchyard_forwarder_malformed_messages_total"); v < n {
			return fmt.Errorf("%v of %d malformed messages counted", v, n)
		}
		return nil
	})
	f.Stop()
	if logs.Len() > 16<<10 {
		t.Fatalf("%d bytes of log for %d malformed messages", logs.Len(), n)
	}
	t.Logf("%d malformed messages: %d bytes of log", n, logs.Len())
}

func taskCount(t *testing.T, c *testutil.Client) int {
	t.Helper()
	var h struct{ Tasks int }
	c.Must(t, http.StatusOK, "GET", "/healthz", nil, &h)
	return h.Tasks
}

func logrusEntry(l *logrus.Logger) *logrus.Entry { return logrus.NewEntry(l) }

// An adversary opening 1,030 idle sockets (some sending an unauthenticated
// request and keeping the connection, some sending nothing) once locked
// every client out for the 2-minute idle timeout. Idle connections now give
// their place to new ones, and a failed authentication closes its
// connection, so a real client is answered at once.
func TestIdleSocketFloodLocksNobodyOut(t *testing.T) {
	f, c := startForwarder(t, forwarder.Options{})
	addr := f.HTTPAddr()
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for i := 0; i < 1030; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		if i%2 == 0 {
			fmt.Fprintf(conn, "GET /v1/endpoints HTTP/1.1\r\nHost: x\r\n\r\n")
		}
	}
	start := time.Now()
	var got []string
	for range 5 {
		t0 := time.Now()
		if _, err := c.Send(testutil.Request{Method: "GET", Path: "/v1/endpoints", Timeout: 5 * time.Second}); err != nil {
			t.Fatalf("a real client under 1,030 idle sockets: %v after %v", err, time.Since(t0))
		}
		got = append(got, time.Since(t0).Round(time.Microsecond).String())
	}
	t.Logf("5 requests under 1,030 idle sockets answered in %v (%v)", time.Since(start).Round(time.Millisecond), got)
	// The unauthenticated connections were closed after their 401.
	closed := 0
	for i := 0; i < len(conns); i += 2 {
		_ = conns[i].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, conns[i]); err == nil {
			closed++
		}
	}
	if closed != len(conns)/2 {
		t.Fatalf("%d of %d unauthenticated connections closed after their 401", closed, len(conns)/2)
	}
}

// One user could pin gigabytes of forwarder memory with large specs that
// wait (the cap counted tasks, not bytes). Specs not yet ended are now
// capped per user in bytes too: 429 past it, per user.
func TestMaxPendingBytesPerUser(t *testing.T) {
	f, _ := startForwarder(t, forwarder.Options{MaxPendingBytesPerUser: 64 << 10})
	alice, bob := f.User(t, "alice", false), f.User(t, "bob", false)
	f.Share(t, "ep1", "alice", "bob")
	big := map[string]any{"kind": "exec", "args": []string{"echo", strings.Repeat("x", 20<<10)}}
	if _, err := alice.Submit("ep1", big, big); err != nil {
		t.Fatal(err)
	}
	code, body, _ := alice.Do("POST", "/v1/endpoints/ep1/tasks", map[string]any{"tasks": []any{big, big}}, nil)
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "bytes") || !strings.Contains(string(body), "limit of 65536") {
		t.Fatalf("alice past her byte cap: %d %s; want 429 naming the byte limit", code, body)
	}
	if _, err := bob.Submit("ep1", big, big); err != nil {
		t.Fatalf("bob has his own cap: %v", err)
	}
}

// Failed CURVE handshakes left no log line or metric: libzmq drops the
// connection before the loop sees it. They are now counted by reason and
// logged, once a minute per reason, however many come.
func TestFailedHandshakesAreCountedAndLogged(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{})
	creds := f.Enroll(t, "ep1")
	zctx, err := zmq.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	stranger, err := curve.NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	wrongServer, _ := curve.NewKeyPair()
	for i := range 5 {
		for _, c := range []struct{ server, pub, sec string }{
			{creds.ServerKey, stranger.Public, stranger.Secret},            // a key never enrolled
			{wrongServer.Public, creds.Client.Public, creds.Client.Secret}, // the wrong server key
		} {
			sock, err := zsock.NewDealer(zctx, fmt.Sprintf("x-%d", i), f.ZMQAddr(), zsock.CurveClient(c.server, c.pub, c.sec))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = sock.SendMessageDontwait("hello")
			defer zsock.Close(sock)
		}
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		auth := testutil.Metric(t, f.Reg, "switchyard_forwarder_handshake_failures_total", "reason", "auth")
		var other float64
		for _, r := range []string{"protocol", "other"} {
			other += testutil.Metric(t, f.Reg, "switchyard_forwarder_handshake_failures_total", "reason", r)
		}
		if auth < 5 || other < 1 {
			return fmt.Errorf("handshake failures: auth %v, wrong server key %v", auth, other)
		}
		return nil
	})
	if n := strings.Count(f.Log.String(), "CURVE handshake on the interchanges socket failed"); n < 1 || n > 3 {
		t.Fatalf("%d log lines for 10+ failed handshakes; want one per reason", n)
	}
}
