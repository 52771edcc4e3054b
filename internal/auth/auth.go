// Package auth holds bearer tokens: making them, keeping only their
// hashes, the admin token file a daemon writes on first start, and the
// HTTP middleware that lets a request through only with a valid token.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchyard-hpc/switchyard/internal/httpx"
)

// AdminTokenFile is the name of the admin token in a state directory.
const AdminTokenFile = "admin.token"

// tokenPrefix marks a Switchyard token, so one pasted in the wrong place is
// recognisable (and secret scanners can find it).
const tokenPrefix = "syt_"

// NewToken makes a random 256-bit token.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// NewID makes a short random id for a token record.
func NewID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make token id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Hash is what is stored instead of a token. SHA-256 suffices: tokens are
// 256 random bits, so there is nothing to guess and no need for a slow hash.
func Hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// LoadOrCreateAdminToken reads dir/admin.token, or writes a new token
// there (mode 0600) when there is none. created says which.
func LoadOrCreateAdminToken(dir string) (token string, created bool, err error) {
	p := filepath.Join(dir, AdminTokenFile)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", false, fmt.Errorf("admin token file %s is empty; delete it to have a new one made", p)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return "", false, fmt.Errorf("tighten %s: %w", p, err)
		}
		return t, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("read admin token: %w", err)
	}
	if token, err = NewToken(); err != nil {
		return "", false, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	return token, true, f.Close()
}

// Identity is who made a request.
type Identity struct {
	User  string
	Admin bool
	// Groups are the groups the token's user is in, for endpoints shared
	// with a group.
	Groups  []string
	TokenID string
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// From returns the identity the middleware put in the request's context.
func From(r *http.Request) (Identity, bool) {
	id, ok := r.Context().Value(ctxKey{}).(Identity)
	return id, ok
}

// Verifier says who holds a token, or false when nobody does.
type Verifier func(token string) (Identity, bool)

// Single accepts exactly one token (an interchange's or manager's admin
// token) as the admin.
func Single(token string) Verifier {
	want := sha256.Sum256([]byte(token))
	return func(t string) (Identity, bool) {
		got := sha256.Sum256([]byte(t))
		if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
			return Identity{User: "admin", Admin: true}, true
		}
		return Identity{}, false
	}
}

// Open reports whether a request needs no token: GET (or HEAD) /healthz,
// /metrics and the interchange's /sd (scrape targets) carry no task data,
// so Prometheus reads them as usual.
func Open(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return r.URL.Path == "/healthz" || r.URL.Path == "/metrics" || r.URL.Path == "/sd"
}

// Require lets a request through to next only with a valid bearer token
// (except the open paths); others get 401 with a JSON error. refused, when
// not nil, is told of each refusal (for a metric).
func Require(verify Verifier, next http.Handler, refused func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Open(r) {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := bearer(r)
		if !ok {
			unauthorized(w, refused, "this request needs Authorization: Bearer TOKEN (the admin token is in the daemon's STATE_DIR/admin.token; the CLI reads SWITCHYARD_TOKEN or --token-file)")
			return
		}
		id, ok := verify(tok)
		if !ok {
			unauthorized(w, refused, "the bearer token is not valid (unknown or revoked)")
			return
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}

func unauthorized(w http.ResponseWriter, refused func(), msg string) {
	if refused != nil {
		refused()
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	// A connection that failed to authenticate is not kept for more.
	w.Header().Set("Connection", "close")
	httpx.Fail(w, http.StatusUnauthorized, "%s", msg)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	t := strings.TrimSpace(h[len(p):])
	return t, t != ""
}

// AdminOnly answers 403 unless the request's identity is an admin.
func AdminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := From(r); !ok || !id.Admin {
			httpx.Fail(w, http.StatusForbidden, "%s %s needs an admin token; user %q is not an admin", r.Method, r.URL.Path, id.User)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Anonymous lets every request through as an admin: --insecure only.
func Anonymous(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), Identity{User: "anonymous", Admin: true})))
	})
}

// DaemonToken is the admin token of an interchange's or manager's admin
// HTTP: STATE_DIR/admin.token (made on first start), or, without a state
// directory, a fresh token held in memory only (then only /healthz and
// /metrics are of use from outside). path is where it is kept, if anywhere.
func DaemonToken(stateDir string) (token, path string, created bool, err error) {
	if stateDir == "" {
		token, err = NewToken()
		return token, "", true, err
	}
	token, created, err = LoadOrCreateAdminToken(stateDir)
	return token, filepath.Join(stateDir, AdminTokenFile), created, err
}
