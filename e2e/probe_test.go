package e2e

import (
	"strings"
	"testing"
)

// TestProbe: the one synchronous probe, over HTTP and the CLI.
func TestProbe(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.addManager("m1", 1, 0)
	var v struct {
		Connected bool `json:"connected"`
		Probe     struct {
			OK    bool    `json:"ok"`
			RTTms float64 `json:"rtt_ms"`
			Error string  `json:"error"`
		} `json:"probe"`
	}
	if err := c.getJSON(c.api()+"/v1/endpoints/"+c.ep+"?probe=1", &v); err != nil {
		t.Fatal(err)
	}
	if !v.Connected || !v.Probe.OK || v.Probe.RTTms <= 0 {
		t.Fatalf("probe of a connected endpoint: %+v", v)
	}
	r := c.cli("endpoints", c.ep, "--probe")
	if r.code != 0 || !strings.Contains(r.stdout, "probe of "+c.ep+": answered in") {
		t.Fatalf("switchyard endpoints --probe: %s", r)
	}
	t.Logf("PROBE round trip %.3f ms", v.Probe.RTTms)
	if res, err := c.do("GET", c.api()+"/v1/endpoints/nobody?probe=1", nil); err != nil || res.status != 404 {
		t.Fatalf("probe of an unknown endpoint: %v %v", res, err)
	}
}
