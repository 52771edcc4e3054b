package interchange_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/curve"
)

// The admin HTTP needs the interchange's own token, except /healthz and
// /metrics. On first start the interchange writes that token and the
// credential its managers read (both 0600), and takes its endpoint id from
// its enrollment credential.
func TestInterchangeAdminAndEnrollment(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{})
	cred := f.Enroll(t, "enrolled")
	state := filepath.Join(t.TempDir(), "ix")
	ix := testutil.StartInterchange(t, interchange.Options{Credentials: cred, EndpointID: "enrolled", Forwarder: f.ZMQAddr(), StateDir: state})
	for name, want := range map[string]os.FileMode{auth.AdminTokenFile: 0o600, "manager.credentials": 0o600, "curve.key": 0o600} {
		fi, err := os.Stat(filepath.Join(state, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v; want mode %v", name, fi, err, want)
		}
	}
	mc, err := curve.ReadCredentials(filepath.Join(state, "manager.credentials"), curve.KindManager)
	if err != nil || mc.Address != ix.ManagersAddr() {
		t.Fatalf("manager credential: %+v %v", mc, err)
	}
	anon := testutil.NewClient(ix.URL, "")
	for _, p := range []string{"/status", "/servingState"} {
		if resp, err := anon.Send(testutil.Request{Method: "GET", Path: p}); err != nil || resp.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %v %d", p, err, resp.Code)
		}
	}
	if resp, err := anon.Send(testutil.Request{Method: "POST", Path: "/servingState", Body: testutil.Raw(`{"state":"PUSH_AND_DISPATCH_PAUSED"}`)}); err != nil || resp.Code != http.StatusUnauthorized {
		t.Fatalf("pause without a token: %v %d", err, resp.Code)
	}
	if got := ix.Client().Text(t, "/servingState"); !strings.Contains(got, "Current state: NONE_PAUSED") {
		t.Fatalf("a refused pause changed the state, or the token does not work: %q", got)
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if resp, err := anon.Send(testutil.Request{Method: "GET", Path: p}); err != nil || resp.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %v %d", p, err, resp.Code)
		}
	}
	// The credential names the endpoint; another id is refused.
	_, err = interchange.New(interchange.Options{Credentials: cred, EndpointID: "other", Forwarder: f.ZMQAddr(),
		ListenManagers: "tcp://127.0.0.1:*", ListenHTTP: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), `enroll endpoint "enrolled"`) {
		t.Fatalf("--endpoint-id other with enrolled's credential: %v", err)
	}
	if _, err := interchange.New(interchange.Options{Credentials: mc}); err == nil || !strings.Contains(err.Error(), `"endpoint" credential`) {
		t.Fatalf("a manager credential given as enrollment: %v", err)
	}
}
