package interchange_test

import (
	"crypto/tls"
	"fmt"
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

// Mismatched heartbeat settings between forwarder and interchange had
// each side declare the other lost, reconnect every few seconds and send
// every held result again. The forwarder now announces its timing at
// registration and the interchange takes it for that link.
func TestInterchangeTakesTheForwardersHeartbeat(t *testing.T) {
	for _, c := range []struct {
		name     string
		fwd, ix  time.Duration // intervals; thresholds are 3 times
		minBeats float64
	}{
		{"fast forwarder, slow interchange", 150 * time.Millisecond, 5 * time.Second, 6},
		{"slow forwarder, fast interchange", 5 * time.Second, 150 * time.Millisecond, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: c.fwd, HeartbeatThreshold: 3 * c.fwd})
			ix := testutil.StartInterchange(t, interchange.Options{Forwarder: f.ZMQAddr(), HeartbeatInterval: c.ix, HeartbeatThreshold: 3 * c.ix})
			testutil.WaitFor(t, 10*time.Second, func() error {
				if !ix.Log.Contains("heartbeat timing of the forwarder link taken from the forwarder") {
					return fmt.Errorf("the interchange has not taken the forwarder's timing")
				}
				return nil
			})
			// Long enough for either side's old threshold to have passed
			// several times: counted in the interchange's status reports,
			// which it sends every interval of its own.
			reports := func() float64 {
				return testutil.Metric(t, ix.Reg, "switchyard_interchange_heartbeats_sent_total", "link", "forwarder")
			}
			start := time.Now()
			testutil.WaitFor(t, 20*time.Second, func() error {
				if time.Since(start) < 6*min(c.fwd, c.ix) {
					return fmt.Errorf("waiting for %v", 6*min(c.fwd, c.ix))
				}
				if b := reports(); b < c.minBeats {
					return fmt.Errorf("%v heartbeats to the forwarder, want %v", b, c.minBeats)
				}
				return nil
			})
			if n := testutil.Metric(t, f.Reg, "switchyard_forwarder_endpoints_lost_total", "reason", "heartbeat timeout"); n != 0 {
				t.Errorf("the forwarder declared the interchange lost %v times", n)
			}
			if n := testutil.Metric(t, ix.Reg, "switchyard_interchange_forwarder_lost_total"); n != 0 {
				t.Errorf("the interchange declared the forwarder lost %v times", n)
			}
		})
	}
}
