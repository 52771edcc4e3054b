package forwarder

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/statedir"
)

// ErrEndpointExists is returned when an endpoint is created twice.
var ErrEndpointExists = errors.New("endpoint already exists")

// ErrNoEndpoint is returned for an endpoint that was never created.
var ErrNoEndpoint = errors.New("no such endpoint")

// enrollment is which CURVE public key may connect as which endpoint. The
// ZAP handler reads it on its own goroutine, so it is locked; it is kept
// in STATE_DIR/endpoints.json (0600) when there is a state dir.
type enrollment struct {
	mu    sync.RWMutex
	path  string
	byID  map[string]string
	byKey map[string]string
}

type enrollmentFile struct {
	Endpoints map[string]string `json:"endpoints"` // endpoint id → public key
}

func loadEnrollment(path string) (*enrollment, error) {
	e := &enrollment{path: path, byID: make(map[string]string), byKey: make(map[string]string)}
	if path == "" {
		return e, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read enrolled endpoints: %w", err)
	}
	var f enrollmentFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("enrolled endpoints %s: %w", path, err)
	}
	for id, key := range f.Endpoints {
		if !curve.Valid(key) || ValidEndpointID(id) != nil {
			return nil, fmt.Errorf("enrolled endpoints %s: bad entry %q", path, id)
		}
		e.byID[id] = key
		e.byKey[key] = id
	}
	return e, nil
}

// save writes the table; the caller holds mu.
func (e *enrollment) save() error {
	if e.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(enrollmentFile{Endpoints: e.byID}, "", "  ")
	if err != nil {
		return err
	}
	tmp := e.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save enrolled endpoints: %w", err)
	}
	if err := os.Rename(tmp, e.path); err != nil {
		return fmt.Errorf("save enrolled endpoints: %w", err)
	}
	return nil
}

// add enrolls key for id; oldKey is the key it replaced, if any.
func (e *enrollment) add(id, key string, replace bool) (oldKey string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, ok := e.byID[id]
	if ok && !replace {
		return "", fmt.Errorf("%w: %q", ErrEndpointExists, id)
	}
	if ok {
		delete(e.byKey, old)
	}
	e.byID[id] = key
	e.byKey[key] = id
	if err := e.save(); err != nil {
		delete(e.byKey, key)
		if ok {
			e.byID[id], e.byKey[old] = old, id
		} else {
			delete(e.byID, id)
		}
		return "", err
	}
	return old, nil
}

func (e *enrollment) remove(id string) (key string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	key, ok := e.byID[id]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNoEndpoint, id)
	}
	delete(e.byID, id)
	delete(e.byKey, key)
	if err := e.save(); err != nil {
		e.byID[id], e.byKey[key] = key, id
		return "", err
	}
	return key, nil
}

func (e *enrollment) has(id string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	_, ok := e.byID[id]
	return ok
}

func (e *enrollment) keyOf(id string) (string, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	k, ok := e.byID[id]
	return k, ok
}

// idOf is the endpoint a key was enrolled for.
func (e *enrollment) idOf(key string) (string, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	id, ok := e.byKey[key]
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

// CreateEndpoint enrolls an endpoint: it makes the key pair its
// interchange will use and returns the credential to hand it. replace
// gives an existing endpoint a new key (the old one stops working).
func (f *Forwarder) CreateEndpoint(id string, replace bool) (*curve.Credentials, error) {
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
	old, err := f.enrolled.add(id, kp.Public, replace)
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
	e, err := loadEnrollment(dir.File("endpoints.json"))
	if err != nil {
		return nil, err
	}
	kp, err := curve.NewKeyPair()
	if err != nil {
		return nil, err
	}
	if _, err := e.add(id, kp.Public, true); err != nil {
		return nil, err
	}
	return &curve.Credentials{Kind: curve.KindEndpoint, ID: id, ServerKey: server.Public, Client: kp, Address: zmqAddr}, nil
}
