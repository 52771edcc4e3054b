package forwarder

import (
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// What CreateEndpoint posts to the loop drops only a connection that used
// a replaced key: creating a new endpoint revokes nothing, even when the
// loop handles it after the interchange registered with the new key.
func TestRevocationDropsOnlyAReplacedKey(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	f, err := New(Options{ListenHTTP: "127.0.0.1:0", ListenZMQ: "tcp://127.0.0.1:*", NoPersist: true, Log: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.res.Close()
	defer f.http.Close()
	lp := newLoop(f)
	handlePosted := func() {
		for _, ev := range f.mbox.Take(nil) {
			lp.handleEvent(&ev)
		}
	}
	cred, err := f.CreateEndpoint("ep1", true)
	if err != nil {
		t.Fatal(err)
	}
	ep := lp.endpointFor("ep1")
	lp.router.Bind(&ep.Peer, []byte("ep1/000000000001"), "ep1|"+cred.Client.Public, time.Now())
	ep.connected = true
	handlePosted()
	if !ep.connected {
		t.Fatalf("creating the endpoint dropped the connection that holds its key: %q", ep.lostReason)
	}
	if _, err := f.CreateEndpoint("ep1", true); err != nil {
		t.Fatal(err)
	}
	handlePosted()
	if ep.connected || ep.lostReason != "credential revoked" {
		t.Fatalf("the connection with the replaced key: connected %v, lost reason %q", ep.connected, ep.lostReason)
	}
}
