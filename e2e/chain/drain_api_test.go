package chain_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// `switchyard manager drain` goes through the forwarder's API
// (client.DrainManager): only an admin may ask, an unknown manager is a
// 404, and the drained manager leaves while the other keeps running tasks.
func TestDrainThroughTheAPIIsAdminOnly(t *testing.T) {
	c := testutil.StartChain(t, chainOpts)
	listed := func(id string) bool {
		for _, m := range c.Interchange.Status().ManagerList {
			if m.ID == id {
				return true
			}
		}
		return false
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !listed("m1") || !listed("m2") {
			return fmt.Errorf("interchange lists %+v", c.Interchange.Status().ManagerList)
		}
		return nil
	})
	alice := c.Forwarder.User(t, "alice", false)
	if _, err := alice.Client.DrainManager(t.Context(), c.Endpoint, "m1", 0); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("drain asked by a non-admin: %v; want 403", err)
	}
	if _, err := c.Client.Client.DrainManager(t.Context(), c.Endpoint, "m9", 0); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("drain of an unknown manager: %v; want 404", err)
	}
	if c.Forwarder.Log.Contains("manager drain requested") {
		t.Fatalf("a refused drain was passed on:\n%s", c.Forwarder.Log.String())
	}
	if _, err := c.Client.Client.DrainManager(t.Context(), c.Endpoint, "m1", time.Second); err != nil {
		t.Fatalf("drain asked by the admin: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		if listed("m1") {
			return fmt.Errorf("m1 still registered")
		}
		return nil
	})
	runNoops(t, c, 50)
}
