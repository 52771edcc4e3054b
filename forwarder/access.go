package forwarder

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// BootstrapUser owns the admin token of STATE_DIR/admin.token.
const BootstrapUser = "admin"

var userPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// ValidUser reports whether name may name a user.
func ValidUser(name string) error {
	if !userPattern.MatchString(name) {
		return fmt.Errorf("invalid user name %q: use 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", name)
	}
	return nil
}

// TokenInfo is a stored token without its secret.
type TokenInfo = taskstore.Token

// access holds tokens (hashed), kept in the store and cached here for
// every request's check. Created endpoints are in the enrollment table
// (enroll.go).
type access struct {
	st taskstore.Store

	mu     sync.RWMutex
	byHash map[string]*TokenInfo
	// miss, when set, reads a token not known here from the store
	// (another forwarder created it).
	miss func(hash string) (TokenInfo, bool)
}

// reload reads every token again (another forwarder changed them).
// The lock is held across the read, so a token added or revoked
// meanwhile is applied after it, not undone by it.
func (a *access) reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts, err := a.st.Tokens()
	if err != nil {
		return err
	}
	m := make(map[string]*TokenInfo, len(ts))
	for i := range ts {
		m[ts[i].Hash] = &ts[i]
	}
	a.byHash = m
	return nil
}

func newAccess(st taskstore.Store) (*access, error) {
	a := &access{st: st, byHash: map[string]*TokenInfo{}}
	ts, err := st.Tokens()
	for i := range ts {
		a.byHash[ts[i].Hash] = &ts[i]
	}
	return a, err
}

// verify says who holds token.
func (a *access) verify(token string) (auth.Identity, bool) {
	return a.verifyHash(auth.Hash(token))
}

// verifyHash says who holds the token of hash h (a web UI session keeps
// the hash, never the token, so a revoked token ends its sessions).
func (a *access) verifyHash(h string) (auth.Identity, bool) {
	a.mu.RLock()
	t, ok := a.byHash[h]
	a.mu.RUnlock()
	if !ok && a.miss != nil {
		var found TokenInfo
		if found, ok = a.miss(h); ok {
			t = &found
			a.mu.Lock()
			a.byHash[h] = t
			a.mu.Unlock()
		}
	}
	if !ok {
		return auth.Identity{}, false
	}
	return auth.Identity{User: t.User, Admin: t.Admin, Groups: t.Groups, TokenID: t.ID}, true
}

// bootstrap makes sure the admin token of the state dir is known.
func (a *access) bootstrap(token string) error {
	if _, ok := a.verify(token); ok {
		return nil
	}
	_, err := a.add(token, BootstrapUser, true, nil, "")
	return err
}

func (a *access) add(token, user string, admin bool, groups []string, by string) (TokenInfo, error) {
	id, err := auth.NewID()
	if err != nil {
		return TokenInfo{}, err
	}
	t := &TokenInfo{ID: id, User: user, Admin: admin, Groups: groups, CreatedAt: time.Now().UTC(), CreatedBy: by, Hash: auth.Hash(token)}
	if err := a.st.PutToken(*t); err != nil {
		return TokenInfo{}, fmt.Errorf("token not stored: %w", err)
	}
	a.mu.Lock()
	a.byHash[t.Hash] = t
	a.mu.Unlock()
	return *t, nil
}

// createToken makes a token for user and returns it with its record.
func (a *access) createToken(user string, admin bool, groups []string, by string) (string, TokenInfo, error) {
	if err := ValidUser(user); err != nil {
		return "", TokenInfo{}, err
	}
	for _, g := range groups {
		if err := ValidUser(g); err != nil {
			return "", TokenInfo{}, fmt.Errorf("group: %w", err)
		}
	}
	tok, err := auth.NewToken()
	if err != nil {
		return "", TokenInfo{}, err
	}
	info, err := a.add(tok, user, admin, groups, by)
	return tok, info, err
}

func (a *access) tokens() []TokenInfo {
	a.mu.RLock()
	out := make([]TokenInfo, 0, len(a.byHash))
	for _, t := range a.byHash {
		out = append(out, *t)
	}
	a.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].User != out[j].User {
			return out[i].User < out[j].User
		}
		return out[i].CreatedAt.Before(out[j].CreatedAt)
	})
	return out
}

var errNothingToRevoke = errors.New("no such token id or user")

// revoke removes the token with id idOrUser, or every token of that user.
// The bootstrap token stays: it is replaced by deleting the file.
func (a *access) revoke(idOrUser, bootstrapHash string) ([]TokenInfo, error) {
	a.mu.Lock()
	var gone []*TokenInfo
	for _, t := range a.byHash {
		if (t.ID == idOrUser || t.User == idOrUser) && t.Hash != bootstrapHash {
			gone = append(gone, t)
		}
	}
	a.mu.Unlock()
	if len(gone) == 0 {
		if bootstrapHash != "" && idOrUser == BootstrapUser {
			return nil, fmt.Errorf("the admin token of STATE_DIR/%s cannot be revoked over the API; delete that file and restart the forwarder to replace it", auth.AdminTokenFile)
		}
		return nil, fmt.Errorf("%w %q", errNothingToRevoke, idOrUser)
	}
	hashes := make([]string, len(gone))
	for i, t := range gone {
		hashes[i] = t.Hash
	}
	if err := a.st.DeleteTokens(hashes); err != nil {
		return nil, fmt.Errorf("revocation not stored: %w", err)
	}
	out := make([]TokenInfo, len(gone))
	a.mu.Lock()
	for i, t := range gone {
		delete(a.byHash, t.Hash)
		out[i] = *t
	}
	a.mu.Unlock()
	return out, nil
}

// setupAccess loads tokens and makes sure the admin token of
// STATE_DIR/admin.token is known (writing it on first start).
func (f *Forwarder) setupAccess() error {
	var err error
	if f.access, err = newAccess(f.store); err != nil {
		return fmt.Errorf("forwarder: read tokens: %w", err)
	}
	if f.shared != nil {
		f.access.miss = f.shared.missedToken
	}
	if f.dir != nil {
		var created bool
		if f.adminToken, created, err = auth.LoadOrCreateAdminToken(f.dir.Path); err != nil {
			return fmt.Errorf("forwarder: %w", err)
		}
		p := f.dir.File(auth.AdminTokenFile)
		if created {
			f.log.WithField("path", p).Info("admin token created; use it with SWITCHYARD_TOKEN=$(cat " + p + ") or --token-file " + p)
		} else {
			f.log.WithField("path", p).Info("admin token read")
		}
	} else if f.adminToken, err = auth.NewToken(); err != nil {
		return err
	}
	if f.opts.Insecure {
		f.log.Warn("--insecure: the HTTP API takes requests without a token, and every caller is an admin")
	}
	return f.access.bootstrap(f.adminToken)
}

// AdminToken is the admin token (the one in STATE_DIR/admin.token).
func (f *Forwarder) AdminToken() string { return f.adminToken }
