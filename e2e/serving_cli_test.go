package e2e

import (
	"strings"
	"testing"
)

// TestServingStateCLI drives `switchyard serving-state get|set|clear`
// against the interchange directly, through the forwarder, and against one
// manager through the forwarder.
func TestServingStateCLI(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	m := c.addManager("m1", 1, 0)
	expect := func(r cliResult, code int, words ...string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("exit %d, want %d: %s", r.code, code, r)
		}
		for _, w := range words {
			if !strings.Contains(r.stdout+r.stderr, w) {
				t.Fatalf("output lacks %q: %s", w, r)
			}
		}
	}
	ixTok := []string{"--token-file", c.tokenFile(c.addr(c.ixHTTP))}
	mTok := []string{"--token-file", c.tokenFile(c.addr(m.port))}
	expect(c.cli("serving-state", "get", "--url", c.ixAPI()), 4, "HTTP 401", "token")
	expect(c.cli(append([]string{"serving-state", "get", "--url", c.ixAPI()}, ixTok...)...), 0, "Current state: NONE_PAUSED", "Override: none")
	expect(c.cli("serving-state", "set", "PUSH_PAUSED", "--endpoint", c.ep, "--timeout", "1m"), 0,
		"Serving state forced to PUSH_PAUSED; the override clears itself after 1m.")
	expect(c.cli(append([]string{"serving-state", "get", "--url", c.ixAPI()}, ixTok...)...), 0, "Current state: PUSH_PAUSED", "clears in")
	expect(c.cli("serving-state", "get", "--endpoint", c.ep, "--json"), 0, `"override_active":true`)
	expect(c.cli("serving-state", "set", "BOGUS", "--endpoint", c.ep), 1,
		"Invalid state 'BOGUS'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED")
	expect(c.cli("serving-state", "set", "PUSH_PAUSED", "--endpoint", c.ep, "--timeout", "1k"), 1, "Invalid timeout '1k'")
	expect(c.cli("serving-state", "clear", "--endpoint", c.ep), 0, "Override cleared. Current state: NONE_PAUSED")
	expect(c.cli("serving-state", "set", "PUSH_AND_DISPATCH_PAUSED", "--endpoint", c.ep, "--manager", "m1"), 0,
		"forced to PUSH_AND_DISPATCH_PAUSED")
	expect(c.cli(append([]string{"serving-state", "get", "--url", m.base()}, mTok...)...), 0, "Current state: PUSH_AND_DISPATCH_PAUSED")
	expect(c.cli(append([]string{"serving-state", "clear", "--url", m.base()}, mTok...)...), 0, "Override cleared")
	expect(c.cli("serving-state", "get"), 1, "say which daemon")
}
