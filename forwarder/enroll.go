package forwarder

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
	"github.com/switchyard-hpc/switchyard/internal/store"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// ErrEndpointExists is returned when an endpoint is created twice.
var ErrEndpointExists = errors.New("endpoint already exists")

// ErrNoEndpoint is returned for an endpoint that was never created.
var ErrNoEndpoint = errors.New("no such endpoint")

// enrollment is which CURVE public key may connect as which endpoint,
// and who owns each endpoint: the store's endpoint records, cached here
// because the ZAP handler reads them on its own goroutine for every
// connection.
type enrollment struct {
	mu    sync.RWMutex
	st    taskstore.Store
	byID  map[string]*taskstore.Endpoint
	byKey map[string]string
	// miss, when set, reads the store again for an id or key not known
	// (another forwarder created it); never called under mu.
	miss func()
}

// reload reads the store's endpoints again and returns, by id, the keys
// that no longer count (deleted or replaced).
// The lock is held across the read, as add holds it across its write.
func (e *enrollment) reload() (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	eps, err := e.st.Endpoints()
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*taskstore.Endpoint, len(eps))
	byKey := make(map[string]string, len(eps))
	for i := range eps {
		ep := &eps[i]
		if !curve.Valid(ep.PublicKey) || ValidEndpointID(ep.ID) != nil {
			continue
		}
		byID[ep.ID] = ep
		byKey[ep.PublicKey] = ep.ID
	}
	gone := map[string]string{}
	for id, old := range e.byID {
		if now, ok := byID[id]; !ok || now.PublicKey != old.PublicKey {
			gone[id] = old.PublicKey
		}
	}
	e.byID, e.byKey = byID, byKey
	return gone, nil
}

// retry calls the miss hook, if any, and says whether to look again.
func (e *enrollment) retry() bool {
	if e.miss == nil {
		return false
	}
	e.miss()
	return true
}

func loadEnrollment(st taskstore.Store) (*enrollment, error) {
	e := &enrollment{st: st, byID: make(map[string]*taskstore.Endpoint), byKey: make(map[string]string)}
	eps, err := st.Endpoints()
	if err != nil {
		return nil, fmt.Errorf("read created endpoints: %w", err)
	}
	for i := range eps {
		ep := &eps[i]
		if !curve.Valid(ep.PublicKey) || ValidEndpointID(ep.ID) != nil {
			return nil, fmt.Errorf("created endpoints in %s: bad entry %q", st.Describe(), ep.ID)
		}
		e.byID[ep.ID] = ep
		e.byKey[ep.PublicKey] = ep.ID
	}
	return e, nil
}

// add enrolls rec (an endpoint id, its key, its owner); oldKey is the key
// it replaced, if any. A replaced endpoint keeps its owner and shares.
func (e *enrollment) add(rec taskstore.Endpoint, replace bool) (oldKey string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, ok := e.byID[rec.ID]
	if ok && !replace {
		return "", fmt.Errorf("%w: %q", ErrEndpointExists, rec.ID)
	}
	if ok {
		key := rec.PublicKey
		rec = *old
		rec.PublicKey = key
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC()
	}
	if err := e.st.PutEndpoint(rec); err != nil {
		return "", fmt.Errorf("save created endpoint: %w", err)
	}
	if ok {
		delete(e.byKey, old.PublicKey)
		oldKey = old.PublicKey
	}
	e.byID[rec.ID] = &rec
	e.byKey[rec.PublicKey] = rec.ID
	return oldKey, nil
}

func (e *enrollment) remove(id string) (key string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.byID[id]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNoEndpoint, id)
	}
	if err := e.st.DeleteEndpoint(id); err != nil {
		return "", fmt.Errorf("save deleted endpoint: %w", err)
	}
	delete(e.byID, id)
	delete(e.byKey, rec.PublicKey)
	return rec.PublicKey, nil
}

// cached is keyOf without reading the store on a miss.
func (e *enrollment) cached(id string) (string, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	rec, ok := e.byID[id]
	if !ok {
		return "", false
	}
	return rec.PublicKey, true
}

func (e *enrollment) has(id string) bool {
	_, ok := e.keyOf(id)
	return ok
}

func (e *enrollment) keyOf(id string) (string, bool) {
	k, ok := e.cached(id)
	if !ok && e.retry() {
		k, ok = e.cached(id)
	}
	return k, ok
}

// idOf is the endpoint a key was enrolled for.
func (e *enrollment) idOf(key string) (string, bool) {
	look := func() (string, bool) {
		e.mu.RLock()
		defer e.mu.RUnlock()
		id, ok := e.byKey[key]
		return id, ok
	}
	id, ok := look()
	if !ok && e.retry() {
		id, ok = look()
	}
	return id, ok
}

func (e *enrollment) ids() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.byID))
	for id := range e.byID {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// CreateEndpoint enrolls an endpoint owned by the bootstrap admin: it
// makes the key pair its interchange will use and returns the credential
// to hand it. replace gives an existing endpoint a new key (the old one
// stops working).
func (f *Forwarder) CreateEndpoint(id string, replace bool) (*curve.Credentials, error) {
	return f.createEndpoint(taskstore.Endpoint{ID: id, Owner: BootstrapUser}, replace)
}

// createEndpoint enrolls rec with a new key pair; rec names the endpoint,
// its owner and whether it is multi-user.
func (f *Forwarder) createEndpoint(rec taskstore.Endpoint, replace bool) (*curve.Credentials, error) {
	id := rec.ID
	if err := ValidEndpointID(id); err != nil {
		return nil, err
	}
	if f.opts.Insecure {
		return nil, errors.New("this forwarder runs with --insecure: endpoints connect without enrollment")
	}
	kp, err := curve.NewKeyPair()
	if err != nil {
		return nil, err
	}
	rec.PublicKey = kp.Public
	old, err := f.enrolled.add(rec, replace)
	if err != nil {
		return nil, err
	}
	if old != "" {
		// The old key's connection goes at once.
		f.mbox.Post(event{kind: evRevoke, ep: id, key: old})
	}
	return &curve.Credentials{Kind: curve.KindEndpoint, ID: id, ServerKey: f.serverKey.Public, Client: kp, Address: f.zmqAddr}, nil
}

// DeleteEndpoint revokes an endpoint at once: its connection is dropped,
// its key refused from then on, its tasks that have not ended fail and the
// forwarder forgets it (admin_api.go).
func (f *Forwarder) DeleteEndpoint(id string) error {
	_, err := f.deleteEndpoint(id, "")
	return err
}

// EndpointEnrolled reports whether an endpoint was created (always true
// on an insecure forwarder, where any id may connect).
func (f *Forwarder) EndpointEnrolled(id string) bool { return f.opts.Insecure || f.enrolled.has(id) }

// EnrolledEndpoints lists created endpoints.
func (f *Forwarder) EnrolledEndpoints() []string { return f.enrolled.ids() }

// EnrollOffline enrolls endpoint id in the state dir of a forwarder that
// is not running (it takes the dir's lock), the way `endpoint up` sets up
// its own endpoint. An endpoint already enrolled gets a new key.
func EnrollOffline(stateDir, id, zmqAddr string) (*curve.Credentials, error) {
	return EnrollOfflineIn(stateDir, "pebble", id, zmqAddr)
}

// EnrollOfflineIn is EnrollOffline into the store storeURL names (the
// forwarder's --store).
func EnrollOfflineIn(stateDir, storeURL, id, zmqAddr string) (*curve.Credentials, error) {
	if err := ValidEndpointID(id); err != nil {
		return nil, err
	}
	dir, err := statedir.Open(stateDir, "forwarder")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	server, _, err := curve.LoadOrCreate(dir.File("curve.key"))
	if err != nil {
		return nil, err
	}
	st, _, err := taskstore.Open(taskstore.Config{URL: storeURL, Dir: dir.Path, Durability: store.SurviveHostCrash})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	e, err := loadEnrollment(st)
	if err != nil {
		return nil, err
	}
	kp, err := curve.NewKeyPair()
	if err != nil {
		return nil, err
	}
	if _, err := e.add(taskstore.Endpoint{ID: id, PublicKey: kp.Public, Owner: BootstrapUser}, true); err != nil {
		return nil, err
	}
	return &curve.Credentials{Kind: curve.KindEndpoint, ID: id, ServerKey: server.Public, Client: kp, Address: zmqAddr}, nil
}
