package forwarder

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/zsock"
	"github.com/switchyard-hpc/switchyard/messages"
)

// Buckets of the forwarder's store besides tasks.
const (
	tokensBucket    = "tokens"
	endpointsBucket = "endpoints"
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
type TokenInfo struct {
	ID        string    `json:"token_id"`
	User      string    `json:"user"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	hash      string
}

// EndpointRecord is a created endpoint: only its public key is kept.
type EndpointRecord struct {
	ID        string    `json:"endpoint_id"`
	PublicKey string    `json:"public_key"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// access holds tokens (hashed) and created endpoints, kept in the store.
type access struct {
	st *store.Store

	mu        sync.RWMutex
	byHash    map[string]*TokenInfo
	endpoints map[string]EndpointRecord
	byKey     map[string]string
	onDelete  []func(id string)
}

func newAccess(st *store.Store) (*access, error) {
	a := &access{st: st, byHash: map[string]*TokenInfo{}, endpoints: map[string]EndpointRecord{}, byKey: map[string]string{}}
	if st == nil {
		return a, nil
	}
	err := st.ForEach(tokensBucket, func(k, v []byte) error {
		var t TokenInfo
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("token record: %w", err)
		}
		t.hash = string(k)
		a.byHash[t.hash] = &t
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = st.ForEach(endpointsBucket, func(k, v []byte) error {
		var e EndpointRecord
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("endpoint record %q: %w", k, err)
		}
		a.endpoints[e.ID] = e
		a.byKey[e.PublicKey] = e.ID
		return nil
	})
	return a, err
}

func (a *access) write(ops []store.Op) error {
	if a.st == nil {
		return nil
	}
	return a.st.WriteSync(ops)
}

// verify says who holds token.
func (a *access) verify(token string) (auth.Identity, bool) {
	h := auth.Hash(token)
	a.mu.RLock()
	t, ok := a.byHash[h]
	a.mu.RUnlock()
	if !ok {
		return auth.Identity{}, false
	}
	return auth.Identity{User: t.User, Admin: t.Admin, TokenID: t.ID}, true
}

// bootstrap makes sure the admin token of the state dir is known.
func (a *access) bootstrap(token string) error {
	if _, ok := a.verify(token); ok {
		return nil
	}
	_, err := a.add(token, BootstrapUser, true, "")
	return err
}

func (a *access) add(token, user string, admin bool, by string) (TokenInfo, error) {
	id, err := auth.NewID()
	if err != nil {
		return TokenInfo{}, err
	}
	t := &TokenInfo{ID: id, User: user, Admin: admin, CreatedAt: time.Now().UTC(), CreatedBy: by, hash: auth.Hash(token)}
	b, _ := json.Marshal(t)
	if err := a.write([]store.Op{{Bucket: tokensBucket, Key: []byte(t.hash), Value: b}}); err != nil {
		return TokenInfo{}, fmt.Errorf("token not stored: %w", err)
	}
	a.mu.Lock()
	a.byHash[t.hash] = t
	a.mu.Unlock()
	return *t, nil
}

// createToken makes a token for user and returns it with its record.
func (a *access) createToken(user string, admin bool, by string) (string, TokenInfo, error) {
	if err := ValidUser(user); err != nil {
		return "", TokenInfo{}, err
	}
	tok, err := auth.NewToken()
	if err != nil {
		return "", TokenInfo{}, err
	}
	info, err := a.add(tok, user, admin, by)
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
		if (t.ID == idOrUser || t.User == idOrUser) && t.hash != bootstrapHash {
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
	ops := make([]store.Op, len(gone))
	for i, t := range gone {
		ops[i] = store.Op{Bucket: tokensBucket, Key: []byte(t.hash)}
	}
	if err := a.write(ops); err != nil {
		return nil, fmt.Errorf("revocation not stored: %w", err)
	}
	out := make([]TokenInfo, len(gone))
	a.mu.Lock()
	for i, t := range gone {
		delete(a.byHash, t.hash)
		out[i] = *t
	}
	a.mu.Unlock()
	return out, nil
}

var errEndpointExists = errors.New("endpoint already exists")

func (a *access) createEndpoint(id, pub, by string) (EndpointRecord, error) {
	e := EndpointRecord{ID: id, PublicKey: pub, CreatedAt: time.Now().UTC(), CreatedBy: by}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.endpoints[id]; ok {
		return EndpointRecord{}, fmt.Errorf("%w: %q (delete it first to enroll it again)", errEndpointExists, id)
	}
	b, _ := json.Marshal(e)
	if err := a.write([]store.Op{{Bucket: endpointsBucket, Key: []byte(id), Value: b}}); err != nil {
		return EndpointRecord{}, fmt.Errorf("endpoint not stored: %w", err)
	}
	a.endpoints[id] = e
	a.byKey[pub] = id
	return e, nil
}

func (a *access) deleteEndpoint(id string) (bool, error) {
	a.mu.Lock()
	e, ok := a.endpoints[id]
	if !ok {
		a.mu.Unlock()
		return false, nil
	}
	if err := a.write([]store.Op{{Bucket: endpointsBucket, Key: []byte(id)}}); err != nil {
		a.mu.Unlock()
		return true, fmt.Errorf("deletion not stored: %w", err)
	}
	delete(a.endpoints, id)
	delete(a.byKey, e.PublicKey)
	fns := append([]func(string){}, a.onDelete...)
	a.mu.Unlock()
	for _, fn := range fns {
		fn(id)
	}
	return true, nil
}

func (a *access) endpoint(id string) (EndpointRecord, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	e, ok := a.endpoints[id]
	return e, ok
}

func (a *access) endpointIDs() []string {
	a.mu.RLock()
	out := make([]string, 0, len(a.endpoints))
	for id := range a.endpoints {
		out = append(out, id)
	}
	a.mu.RUnlock()
	sort.Strings(out)
	return out
}

// setupAccess loads tokens and endpoints, makes sure the admin token of
// STATE_DIR/admin.token is known (writing it on first start) and loads or
// makes the forwarder's CURVE key pair (STATE_DIR/curve.key).
func (f *Forwarder) setupAccess() error {
	var err error
	if f.access, err = newAccess(f.store); err != nil {
		return fmt.Errorf("forwarder: read tokens and endpoints: %w", err)
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
		if f.curveKey, _, err = curve.LoadOrCreate(f.dir.File("curve.key")); err != nil {
			return fmt.Errorf("forwarder: %w", err)
		}
	} else {
		if f.adminToken, err = auth.NewToken(); err != nil {
			return err
		}
		if f.curveKey, err = curve.NewKeyPair(); err != nil {
			return err
		}
	}
	if f.opts.Insecure {
		f.log.Warn("--insecure: the HTTP API takes requests without a token, and every caller is an admin")
	}
	return f.access.bootstrap(f.adminToken)
}

// admitted says whether an interchange may register as endpoint id: only
// created endpoints may (--insecure: any).
func (f *Forwarder) admitted(id string) bool {
	if _, ok := f.access.endpoint(id); ok || f.opts.Insecure {
		return true
	}
	f.log.WithField("endpoint", id).Warn("registration refused: endpoint was never created")
	if fr, err := (&messages.ErrorReply{Code: messages.CodeRefused, Reason: "unknown endpoint " + id + "; an admin creates it with 'switchyard endpoint create'"}).Pack(); err == nil {
		_ = zsock.Send(f.router, []byte(id), fr)
	}
	return false
}

// EndpointKey is the CURVE public key enrolled for endpoint id.
func (f *Forwarder) EndpointKey(id string) (pub string, ok bool) {
	e, ok := f.access.endpoint(id)
	return e.PublicKey, ok
}

// EndpointByKey is the endpoint a CURVE public key was enrolled for.
func (f *Forwarder) EndpointByKey(pub string) (id string, ok bool) {
	f.access.mu.RLock()
	defer f.access.mu.RUnlock()
	id, ok = f.access.byKey[pub]
	return id, ok
}

// OnEndpointDeleted registers fn to be called (on the deleting goroutine,
// after the deletion is stored) with the id of each deleted endpoint.
func (f *Forwarder) OnEndpointDeleted(fn func(id string)) {
	f.access.mu.Lock()
	f.access.onDelete = append(f.access.onDelete, fn)
	f.access.mu.Unlock()
}

// ServerPublicKey is the forwarder's own CURVE public key.
func (f *Forwarder) ServerPublicKey() string { return f.curveKey.Public }

// AdminToken is the admin token (the one in STATE_DIR/admin.token).
func (f *Forwarder) AdminToken() string { return f.adminToken }

// CreateEndpoint enrolls endpoint id: it makes the endpoint's CURVE key
// pair, keeps the public key and returns the credential the interchange
// reads with --credentials. by is the admin who asked.
func (f *Forwarder) CreateEndpoint(id, by string) (*curve.Credentials, error) {
	if err := ValidEndpointID(id); err != nil {
		return nil, err
	}
	kp, err := curve.NewKeyPair()
	if err != nil {
		return nil, err
	}
	if _, err := f.access.createEndpoint(id, kp.Public, by); err != nil {
		return nil, err
	}
	f.log.WithFields(map[string]any{"endpoint": id, "user": by}).Info("endpoint created")
	return &curve.Credentials{Kind: curve.KindEndpoint, ID: id, ServerKey: f.curveKey.Public, Client: kp, Address: f.zmqAddr}, nil
}

// DeleteEndpoint revokes endpoint id: its tasks that have not ended fail,
// and the loop forgets it. found is false for an endpoint never created.
func (f *Forwarder) DeleteEndpoint(id, by string) (found bool, failed int, err error) {
	found, err = f.access.deleteEndpoint(id)
	if !found || err != nil {
		return found, 0, err
	}
	failed, err = f.tasks.failEndpoint(id, fmt.Sprintf("endpoint %s was deleted by %s", id, by))
	f.mbox.Post(event{kind: evEndpointDeleted, ep: id})
	f.log.WithFields(map[string]any{"endpoint": id, "user": by, "failed_tasks": failed}).Info("endpoint deleted")
	return true, failed, err
}

// forgetEndpoint drops a deleted endpoint's loop state and view, so it
// leaves no metric series behind. Called by the loop.
func (f *Forwarder) forgetEndpoint(ls *loopState, id string) {
	if ep, ok := ls.eps[id]; ok {
		for n, ch := range ep.probes {
			ch <- commandResult{err: errors.New("endpoint was deleted")}
			delete(ep.probes, n)
		}
	}
	delete(ls.eps, id)
	delete(ls.reregAsked, id)
	f.viewMu.Lock()
	delete(f.views, id)
	f.viewMu.Unlock()
}
