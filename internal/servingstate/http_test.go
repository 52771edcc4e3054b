package servingstate_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

type httpCase struct {
	name     string
	method   string
	form     url.Values // sent as application/x-www-form-urlencoded
	json     string     // sent as application/json
	accept   string
	pressure bool // measured PUSH_PAUSED before the request
	preset   *messages.ServingState

	wantCode    int
	wantBody    []string // substrings of the answer
	wantCurrent string   // effective state afterwards ("" = unchanged)
	wantJSON    bool
}

func call(t *testing.T, srv *httptest.Server, tc httpCase) (int, http.Header, string) {
	t.Helper()
	var body *strings.Reader
	ctype := ""
	switch {
	case tc.form != nil:
		body = strings.NewReader(tc.form.Encode())
		ctype = "application/x-www-form-urlencoded"
	case tc.json != "":
		body = strings.NewReader(tc.json)
		ctype = "application/json"
	default:
		body = strings.NewReader("")
	}
	req, err := http.NewRequest(tc.method, srv.URL+"/servingState", body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if tc.accept != "" {
		req.Header.Set("Accept", tc.accept)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", tc.method, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, resp.Header, b.String()
}

func TestHandler(t *testing.T) {
	const legal = "Invalid state 'INVALID'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED"
	cases := []httpCase{
		{name: "GET text", method: "GET", wantCode: 200,
			wantBody: []string{"Current state: NONE_PAUSED\n", "Measured state: NONE_PAUSED (queued 0 / pause at 10;", "Override: none"}},
		{name: "GET text with override", method: "GET", preset: st(push), wantCode: 200,
			wantBody: []string{"Current state: PUSH_PAUSED\n", "Override: PUSH_PAUSED, set ", "until cleared"}},
		{name: "GET JSON", method: "GET", accept: "application/json", preset: st(both), wantCode: 200, wantJSON: true,
			wantBody: []string{`"current_state":"PUSH_AND_DISPATCH_PAUSED"`, `"measured_state":"NONE_PAUSED"`, `"override_active":true`}},
		{name: "POST form", method: "POST", form: url.Values{"state": {"PUSH_PAUSED"}, "timeout": {"30s"}}, wantCode: 200,
			wantBody: []string{"Serving state forced to PUSH_PAUSED; the override clears itself after 30s."}, wantCurrent: "PUSH_PAUSED"},
		{name: "POST form without timeout", method: "POST", form: url.Values{"state": {"PUSH_AND_DISPATCH_PAUSED"}}, wantCode: 200,
			wantBody: []string{"stays until cleared"}, wantCurrent: "PUSH_AND_DISPATCH_PAUSED"},
		{name: "POST form clear", method: "POST", preset: st(both), form: url.Values{"state": {""}}, wantCode: 200,
			wantBody: []string{"Override cleared. Current state: NONE_PAUSED"}, wantCurrent: "NONE_PAUSED"},
		{name: "POST JSON", method: "POST", json: `{"state":"PUSH_PAUSED","timeout":"1m"}`, wantCode: 200,
			wantBody: []string{"Serving state forced to PUSH_PAUSED"}, wantCurrent: "PUSH_PAUSED"},
		{name: "POST JSON answer in JSON", method: "POST", json: `{"state":"PUSH_PAUSED","force":true}`, accept: "application/json",
			wantCode: 200, wantJSON: true, wantBody: []string{`"message":"Serving state forced to PUSH_PAUSED`, `"serving_state":{`, `"override_forced":true`},
			wantCurrent: "PUSH_PAUSED"},
		{name: "POST JSON force as string", method: "POST", pressure: true, json: `{"state":"NONE_PAUSED","force":"true"}`, wantCode: 200,
			wantCurrent: "NONE_PAUSED"},
		{name: "POST form force under pressure", method: "POST", pressure: true, form: url.Values{"state": {"NONE_PAUSED"}, "force": {"true"}},
			wantCode: 200, wantBody: []string{"Forced below the measured PUSH_PAUSED"}, wantCurrent: "NONE_PAUSED"},

		{name: "bad state form", method: "POST", preset: st(push), form: url.Values{"state": {"INVALID"}}, wantCode: 400,
			wantBody: []string{legal}},
		{name: "bad state JSON", method: "POST", preset: st(push), json: `{"state":"INVALID"}`, wantCode: 400, wantBody: []string{legal}},
		{name: "bad state JSON answer in JSON", method: "POST", json: `{"state":"INVALID"}`, accept: "application/json", wantCode: 400,
			wantJSON: true, wantBody: []string{`"error":"Invalid state 'INVALID'.`}},
		{name: "bad timeout form", method: "POST", preset: st(push), form: url.Values{"state": {"NONE_PAUSED"}, "timeout": {"1k"}}, wantCode: 400,
			wantBody: []string{"Invalid timeout '1k'. Use a positive Go duration like 30s, 1m or 500ms"}},
		{name: "bad timeout JSON", method: "POST", json: `{"state":"PUSH_PAUSED","timeout":"-1s"}`, wantCode: 400,
			wantBody: []string{"Invalid timeout '-1s'"}},
		{name: "bad force", method: "POST", form: url.Values{"state": {"PUSH_PAUSED"}, "force": {"perhaps"}}, wantCode: 400,
			wantBody: []string{"Invalid force 'perhaps'"}},
		{name: "form without state", method: "POST", preset: st(push), form: url.Values{"timeout": {"1m"}}, wantCode: 400,
			wantBody: []string{"missing field 'state'"}},
		{name: "malformed JSON", method: "POST", preset: st(push), json: `{"state":`, wantCode: 400, wantBody: []string{"malformed JSON"}},
		// A JSON body that does not name "state" (here a typo) must be
		// refused like the form without it, not read as "clear".
		{name: "JSON without state", method: "POST", preset: st(push), json: `{"stat":"PUSH_PAUSED"}`, wantCode: 400,
			wantBody: []string{"state"}},
		{name: "unforced less restrictive", method: "POST", pressure: true, form: url.Values{"state": {"NONE_PAUSED"}}, wantCode: 409,
			wantBody: []string{"would hide real pressure", "force=true"}},
		{name: "unforced less restrictive JSON", method: "POST", pressure: true, json: `{"state":"NONE_PAUSED","force":false}`,
			accept: "application/json", wantCode: 409, wantJSON: true, wantBody: []string{`"error":"measured state is PUSH_PAUSED`}},
		{name: "PUT", method: "PUT", form: url.Values{"state": {"PUSH_PAUSED"}}, wantCode: 405, wantBody: []string{"method PUT not allowed; use GET or POST"}},
		{name: "DELETE", method: "DELETE", preset: st(push), wantCode: 405, wantBody: []string{"not allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newController(t)
			now := time.Now()
			if tc.pressure {
				c.Measure(servingstate.Sample{Queued: 50}, now)
			} else {
				c.Measure(servingstate.Sample{}, now)
			}
			if tc.preset != nil {
				if _, err := c.Set(tc.preset, 0, true, "preset", now); err != nil {
					t.Fatal(err)
				}
			}
			before := c.Snapshot(time.Now())
			srv := httptest.NewServer(servingstate.Handler(c, logx.Discard()))
			defer srv.Close()
			code, hdr, body := call(t, srv, tc)
			if code != tc.wantCode {
				t.Fatalf("HTTP %d, want %d; body %q", code, tc.wantCode, body)
			}
			for _, w := range tc.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("body %q does not contain %q", body, w)
				}
			}
			ct := hdr.Get("Content-Type")
			if tc.wantJSON {
				if !strings.HasPrefix(ct, "application/json") || !json.Valid([]byte(body)) {
					t.Errorf("want JSON; Content-Type %q body %q", ct, body)
				}
			} else if !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if code == 405 && hdr.Get("Allow") != "GET, POST" {
				t.Errorf("Allow %q, want \"GET, POST\"", hdr.Get("Allow"))
			}
			after := c.Snapshot(time.Now())
			if code >= 400 {
				if after.Current != before.Current || after.OverrideActive != before.OverrideActive || after.Override != before.Override {
					t.Errorf("a refused request changed the state: before %+v, after %+v", before, after)
				}
			}
			if tc.wantCurrent != "" && after.Current != tc.wantCurrent {
				t.Errorf("current state %s after the request, want %s", after.Current, tc.wantCurrent)
			}
		})
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return testutil.Metric(t, reg, name, labels...)
}

func TestMetricsCollector(t *testing.T) {
	c := newController(t)
	reg := prometheus.NewRegistry()
	servingstate.Register(reg, "test", c)
	p := "switchyard_test_serving_"

	now := time.Now()
	c.Measure(servingstate.Sample{}, now)
	if v := gauge(t, reg, p+"measured_state"); v != 0 {
		t.Errorf("measured_state = %g, want 0", v)
	}
	if v := gauge(t, reg, p+"override_active"); v != 0 {
		t.Errorf("override_active = %g with no override", v)
	}
	if v := gauge(t, reg, p+"override_expiry_timestamp_seconds"); v != 0 {
		t.Errorf("override_expiry_timestamp_seconds = %g with no override", v)
	}

	// A forced pause is told apart from a real one by the labels.
	if _, err := c.Set(st(both), time.Hour, true, "test", now); err != nil {
		t.Fatal(err)
	}
	if v := gauge(t, reg, p+"effective_state"); v != 2 {
		t.Errorf("effective_state = %g, want 2", v)
	}
	if v := gauge(t, reg, p+"measured_state"); v != 0 {
		t.Errorf("measured_state = %g under an override, want 0 (measured stays measured)", v)
	}
	if v := gauge(t, reg, p+"override_active", "state", "PUSH_AND_DISPATCH_PAUSED", "forced", "true"); v != 1 {
		t.Errorf("override_active{state=PUSH_AND_DISPATCH_PAUSED,forced=true} = %g, want 1; series %v", v,
			testutil.MetricLabels(t, reg, p+"override_active"))
	}
	exp := gauge(t, reg, p+"override_expiry_timestamp_seconds")
	if want := float64(now.Add(time.Hour).UnixMilli()) / 1000; exp < want-1 || exp > want+1 {
		t.Errorf("override_expiry_timestamp_seconds = %f, want about %f", exp, want)
	}

	// Real pressure, no override.
	if _, err := c.Set(nil, 0, false, "test", now); err != nil {
		t.Fatal(err)
	}
	c.Measure(servingstate.Sample{Queued: 50}, now.Add(2*time.Second))
	if v := gauge(t, reg, p+"measured_state"); v != 1 {
		t.Errorf("measured_state = %g under queue pressure, want 1", v)
	}
	if v := gauge(t, reg, p+"effective_state"); v != 1 {
		t.Errorf("effective_state = %g, want 1", v)
	}
	if v := gauge(t, reg, p+"override_active"); v != 0 {
		t.Errorf("override_active = %g after clearing", v)
	}
	c.Measure(servingstate.Sample{Queued: 50}, now.Add(5*time.Second))
	if v := gauge(t, reg, p+"paused_seconds_total", "cause", "queue"); v != 3 {
		t.Errorf("paused_seconds_total{cause=queue} = %g, want 3", v)
	}

	// Reading the metrics does not change the state.
	before := c.Snapshot(time.Now())
	for i := 0; i < 3; i++ {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if after := c.Snapshot(time.Now()); after.Current != before.Current || after.Measured != before.Measured {
		t.Errorf("scraping changed the state: %+v -> %+v", before, after)
	}
}
