package testutil

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/curve"
)

// Daemons and fake peers started by a test, by the address others connect
// to, so that a daemon or peer started against them enrolls itself the way
// a user would (endpoint create, manager.credentials) without every test
// spelling it out. Tests of the default path therefore run with CurveZMQ.
var (
	enrollMu     sync.Mutex
	forwarders   = map[string]*Forwarder{}
	interchanges = map[string]*Interchange{}
	fakeServers  = map[string]*Peer{}
	// enrolled keeps one credential per forwarder and endpoint, so a second
	// interchange (a restart) uses the same key, as a user's would.
	enrolled = map[string]*curve.Credentials{}
)

func remember[T any](m map[string]T, addr string, v T, t testing.TB) {
	enrollMu.Lock()
	m[addr] = v
	enrollMu.Unlock()
	t.Cleanup(func() {
		enrollMu.Lock()
		delete(m, addr)
		enrollMu.Unlock()
	})
}

func lookup[T any](m map[string]T, addr string) (T, bool) {
	enrollMu.Lock()
	defer enrollMu.Unlock()
	v, ok := m[addr]
	return v, ok
}

// credentialsFor finds what a client of addr needs: an endpoint credential
// (kind endpoint, for id) from a forwarder, the manager credential of an
// interchange, or fresh keys for a fake server. nil when addr is unknown.
func credentialsFor(t testing.TB, addr, kind, id string) *curve.Credentials {
	t.Helper()
	if p, ok := lookup(fakeServers, addr); ok && p.serverKey != "" {
		return p.Credentials(t, kind, id)
	}
	switch kind {
	case curve.KindEndpoint:
		if f, ok := lookup(forwarders, addr); ok {
			key := addr + " " + id
			if c, ok := lookup(enrolled, key); ok && f.EndpointEnrolled(id) {
				return c
			}
			c, err := f.CreateEndpoint(id, true)
			if err != nil {
				t.Fatalf("create endpoint %s: %v", id, err)
			}
			remember(enrolled, key, c, t)
			return c
		}
	case curve.KindManager:
		if ix, ok := lookup(interchanges, addr); ok {
			return ix.ManagerCredentials()
		}
	}
	return nil
}

// EnrollOffline enrolls endpoint id in a forwarder state dir before the
// forwarder starts and writes the credential next to it; it returns the
// credential's path, for `interchange --credentials`.
func EnrollOffline(t testing.TB, forwarderState, id, zmqAddr string) string {
	t.Helper()
	c, err := forwarder.EnrollOffline(forwarderState, id, zmqAddr)
	if err != nil {
		t.Fatalf("enroll %s: %v", id, err)
	}
	path := filepath.Join(filepath.Dir(forwarderState), id+".credentials")
	if err := curve.WriteCredentials(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}
