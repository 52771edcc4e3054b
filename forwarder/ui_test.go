package forwarder_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

// The web UI is on by default and --no-ui turns it off; the API is the
// same either way.
func TestWebUIOnAndOff(t *testing.T) {
	for _, off := range []bool{false, true} {
		f := testutil.StartForwarder(t, forwarder.Options{NoUI: off})
		resp, err := http.Get(f.URL + "/ui/signin")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case !off && (resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `name="token"`)):
			t.Errorf("UI on: /ui/signin %d %.200s", resp.StatusCode, body)
		case off && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusNotFound:
			t.Errorf("--no-ui: /ui/signin %d %.200s; want the API's answer to an unknown path", resp.StatusCode, body)
		}
		f.Client().Must(t, http.StatusOK, http.MethodGet, "/v1/endpoints", nil, nil)
	}
}

// Signed out, the tasks page's poll answers 401 and reveals nothing.
func TestWebUIPollNeedsASession(t *testing.T) {
	f := testutil.StartForwarder(t, forwarder.Options{})
	resp, err := http.Get(f.URL + "/ui/tasks/poll?after=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("poll without a session: %d, want 401", resp.StatusCode)
	}
}
