package forwarder

import (
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// CreateEndpoint with replace posts a revocation whether or not the
// endpoint was connected; when the loop handles it after the endpoint has
// registered with its new key, that connection stays. A connection with a
// replaced key is dropped as revoked.
func TestRevocationDropsOnlyAReplacedKey(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	f, err := New(Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: true, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.res.Close()
	defer f.http.Close()
	cred, err := f.CreateEndpoint("ep1", true)
	if err != nil {
		t.Fatal(err)
	}
	lp := newLoop(f)
	ep := lp.endpointFor("ep1")
	lp.router.Bind(&ep.Peer, []byte("ep1/000000000001"), "ep1|"+cred.Client.Public, time.Now())
	ep.connected = true

	lp.handleEvent(&event{kind: evRevoke, ep: "ep1"})
	if !ep.connected {
		t.Fatalf("a revocation dropped the connection that holds the current key: %q", ep.lostReason)
	}
	if _, err := f.CreateEndpoint("ep1", true); err != nil {
		t.Fatal(err)
	}
	lp.handleEvent(&event{kind: evRevoke, ep: "ep1"})
	if ep.connected || ep.lostReason != "credential revoked" {
		t.Fatalf("the connection with the replaced key: connected %v, lost reason %q", ep.connected, ep.lostReason)
	}
}
