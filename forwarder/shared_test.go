package forwarder_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/manager"
)

// Two forwarders on one database: tasks accepted and ended through one
// are read, listed by status and waited for through the other, whose
// index never saw them.
func TestSharedStoreReadsThroughAnyForwarder(t *testing.T) {
	url := pgtest.Start(t).Database(t)
	a := testutil.StartForwarder(t, forwarder.Options{StateDir: t.TempDir(), Store: url})
	b := testutil.StartForwarder(t, forwarder.Options{StateDir: t.TempDir(), Store: url})
	a.Enroll(t, "ep1")
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: a.ZMQAddr()})
	ids, err := a.Client().Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", "shared"}}, 100)...)
	if err != nil {
		t.Fatal(err)
	}
	// b waits on a task that has not ended yet: it sees the end in the
	// database once a stores it.
	type waited struct {
		state string
		err   error
	}
	got := make(chan waited, 1)
	go func() {
		var v struct {
			State string `json:"state"`
		}
		code, _, err := b.Client().Do(http.MethodGet, "/v1/tasks/"+ids[0]+"?wait=60s", nil, &v)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("HTTP %d", code)
		}
		got <- waited{v.State, err}
	}()
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 4})
	for _, v := range b.Client().WaitTerminal(t, ids, 60*time.Second) {
		if v.State != "success" || len(v.Result) == 0 {
			t.Fatalf("task through the other forwarder: %+v", v)
		}
	}
	if w := <-got; w.err != nil || w.state != "success" {
		t.Fatalf("wait through the other forwarder: %+v", w)
	}
}
