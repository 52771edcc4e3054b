package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequire(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	var who Identity
	h := Require(Single(tok), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := From(r); ok {
			who = id
		}
	}), nil)
	cases := []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/status", "", 401},
		{"GET", "/status", "Bearer " + tok + "x", 401},
		{"GET", "/status", "Basic " + tok, 401},
		{"GET", "/status", "Bearer ", 401},
		{"GET", "/status", "Bearer " + tok, 200},
		{"GET", "/status", "bearer " + tok, 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"POST", "/metrics", "", 401},
		{"GET", "/metrics/../status", "", 401},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.auth, w.Code, tc.want)
		}
		if w.Code == 401 && (!strings.Contains(w.Body.String(), `"error"`) || w.Header().Get("Content-Type") != "application/json") {
			t.Errorf("401 without a JSON error: %s", w.Body)
		}
	}
	if !who.Admin || who.User != "admin" {
		t.Errorf("identity %+v", who)
	}
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := LoadOrCreateAdminToken(dir)
	if err != nil || !created || !strings.HasPrefix(tok, "syt_") || len(tok) < 40 {
		t.Fatalf("first start: %q %v %v", tok, created, err)
	}
	p := filepath.Join(dir, AdminTokenFile)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	again, created, err := LoadOrCreateAdminToken(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second start: %q %v %v", again, created, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v after a restart, want 0600", fi.Mode().Perm())
	}
}

// What checking a token costs per request (one per POST of up to 100,000
// tasks).
func BenchmarkRequire(b *testing.B) {
	tok, _ := NewToken()
	h := Require(Single(tok), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	r := httptest.NewRequest("POST", "/v1/endpoints/x/tasks", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
