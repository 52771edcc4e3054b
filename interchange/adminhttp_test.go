package interchange_test

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/manager"
)

// The interchange's and manager's admin HTTP is the forwarder's server:
// TLS with --tls-cert/--tls-key, and the same connection guard (idle
// sockets cannot lock the admin out). Before, both served plain HTTP with
// fixed defaults.
func TestAdminHTTPTakesTLSAndTheGuard(t *testing.T) {
	cert, key, pool := testutil.SelfSigned(t, t.TempDir())
	f := testutil.StartForwarder(t, forwarder.Options{})
	cfg := httpx.Config{TLSCert: cert, TLSKey: key, MaxConns: 4}
	ix := testutil.StartInterchange(t, interchange.Options{Forwarder: f.ZMQAddr(), HTTP: cfg})
	mg := testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", HTTP: cfg})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for name, addr := range map[string]string{"interchange": ix.HTTPAddr(), "manager": mg.HTTPAddr()} {
		// Idle sockets up to the cap, and past it.
		for range 8 {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			defer conn.Close()
		}
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s over HTTPS with 8 idle sockets open: %v %v", name, resp, err)
		}
		resp.Body.Close()
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("%s answered plain HTTP", name)
			}
		}
	}
}
