package chain_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/taskspec"
)

// Managers of blocks, started without heartbeat flags, take the
// interchange's 200ms interval and 2s threshold, so busy managers are not
// taken for lost between reports (at their own 10s default they were); each serves /metrics on a free port, which the
// interchange lists at GET /sd (no token, like /metrics), and the
// forwarder's GET /v1/endpoints/{ep} lists them under manager_list.
func TestLocalBlockManagersHeartbeatAndDiscovery(t *testing.T) {
	bin := testutil.BuildSwitchyard(t)
	cfg := &blocks.Config{Provider: blocks.ProviderLocal, MinBlocks: 1, MaxBlocks: 1, InitBlocks: 1, NodesPerBlock: 2,
		WorkersPerNode: 2, MaxIdle: time.Minute, Period: 200 * time.Millisecond, ManagerArgs: testutil.AllowRootArgs(bin)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fwd := testutil.StartForwarder(t, forwarder.Options{HeartbeatInterval: 200 * time.Millisecond, HeartbeatThreshold: 5 * time.Second})
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: fwd.ZMQAddr(), StateDir: t.TempDir(),
		HeartbeatInterval: 200 * time.Millisecond, HeartbeatThreshold: 2 * time.Second, Blocks: cfg, ManagerBinary: bin})
	client := fwd.Client()

	type epManager struct {
		ID          string    `json:"manager_id"`
		Hostname    string    `json:"hostname"`
		BlockID     string    `json:"block_id"`
		Workers     int       `json:"workers"`
		IdleWorkers int       `json:"idle_workers"`
		Draining    bool      `json:"draining"`
		LastSeen    time.Time `json:"last_seen"`
	}
	var ms []epManager
	testutil.WaitFor(t, 30*time.Second, func() error {
		var v struct {
			ManagerList []epManager `json:"manager_list"`
		}
		client.Must(t, 200, "GET", "/v1/endpoints/ep1", nil, &v)
		if len(v.ManagerList) != 2 {
			return fmt.Errorf("manager_list %+v", v.ManagerList)
		}
		ms = v.ManagerList
		return nil
	})
	for _, m := range ms {
		if m.BlockID == "" || !strings.HasPrefix(m.ID, m.BlockID) || m.Workers != 2 || m.Hostname == "" || m.LastSeen.IsZero() {
			t.Errorf("manager_list entry %+v", m)
		}
	}

	// /sd, without a token; each target serves the manager's metrics.
	var sd []interchange.SDTarget
	resp, err := http.Get(ix.URL + "/sd")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /sd: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&sd); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(sd) != 2 {
		t.Fatalf("/sd lists %+v, want the 2 managers", sd)
	}
	for _, g := range sd {
		if len(g.Targets) != 1 || g.Labels["manager_id"] == "" || g.Labels["block_id"] == "" {
			t.Fatalf("/sd entry %+v", g)
		}
		r, err := http.Get("http://" + g.Targets[0] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !strings.Contains(string(body), "switchyard_manager_") {
			t.Fatalf("metrics of %s: %.200s", g.Targets[0], body)
		}
	}

	// Four tasks of 4s, twice the interchange's 2s threshold: with the
	// managers' own 10s default they were taken for lost and ran again.
	specs := make([]any, 4)
	for i := range specs {
		specs[i] = taskspec.Spec{Kind: "sleep", Args: []string{"4"}}
	}
	ids, err := client.Submit("ep1", specs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range client.WaitTerminal(t, ids, 60*time.Second) {
		if v.State != "success" || v.Attempts != 1 {
			t.Errorf("task %s: %s after %d attempts (%s)", v.TaskID, v.State, v.Attempts, v.Error)
		}
	}
	if n := testutil.Metric(t, ix.Reg, "switchyard_interchange_managers_lost_total", "reason", "heartbeat timeout"); n != 0 {
		t.Errorf("%g managers lost to the heartbeat timeout", n)
	}
	t.Logf("2 block managers took the 200ms interval; /sd lists %d scrape targets; 4 × sleep 4 succeeded at attempt 1", len(sd))
}
