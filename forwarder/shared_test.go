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

// sharedPair is two forwarders on one database with endpoint ep1
// created through the first, and alice allowed to submit to it.
func sharedPair(t *testing.T) (a, b *testutil.Forwarder, alice string) {
	url := pgtest.Start(t).Database(t)
	a = testutil.StartForwarder(t, forwarder.Options{StateDir: t.TempDir(), Store: url})
	b = testutil.StartForwarder(t, forwarder.Options{StateDir: t.TempDir(), Store: url})
	if a.ServerKey() != b.ServerKey() {
		t.Fatalf("the forwarders present different CURVE keys: %s, %s", a.ServerKey(), b.ServerKey())
	}
	a.Enroll(t, "ep1")
	var out struct {
		Token string `json:"token"`
	}
	a.Client().Must(t, http.StatusCreated, http.MethodPost, "/v1/tokens", map[string]any{"user": "alice"}, &out)
	a.Share(t, "ep1", "alice")
	return a, b, out.Token
}

// Tasks submitted through the forwarder that does not hold the endpoint
// run at once (NOTIFY), and are listed and followed through it; a token
// and an endpoint created through one forwarder work on the other.
func TestSharedSubmitThroughEitherForwarder(t *testing.T) {
	a, b, alice := sharedPair(t)
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: a.ZMQAddr()})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 4})
	viaB := testutil.NewClient(b.URL, alice)
	var start forwarder.EndedPage
	viaB.Must(t, http.StatusOK, http.MethodGet, "/v1/tasks/ended", nil, &start)
	ids, err := viaB.Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", "b"}}, 200)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range viaB.WaitTerminal(t, ids, 30*time.Second) {
		if v.State != "success" {
			t.Fatalf("task through the forwarder without the endpoint: %+v", v)
		}
	}
	// The ended feed of b names every one of them, ended by a.
	seen := map[string]bool{}
	cursor := start.Cursor
	testutil.WaitFor(t, 10*time.Second, func() error {
		var p forwarder.EndedPage
		viaB.Must(t, http.StatusOK, http.MethodGet, "/v1/tasks/ended?wait=1s&after="+cursor, nil, &p)
		cursor = p.Cursor
		for _, e := range p.Tasks {
			seen[e.TaskID.String()] = true
		}
		if len(seen) < len(ids) {
			return fmt.Errorf("%d of %d ends followed through b", len(seen), len(ids))
		}
		return nil
	})
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("ended feed of b misses %s", id)
		}
	}
	// b lists them, with the state a stored.
	var list struct {
		Tasks []forwarder.ListedTask `json:"tasks"`
	}
	viaB.Must(t, http.StatusOK, http.MethodGet, "/v1/tasks?limit=1000", nil, &list)
	if len(list.Tasks) != len(ids) {
		t.Fatalf("b lists %d tasks of alice, want %d", len(list.Tasks), len(ids))
	}
	for _, lt := range list.Tasks {
		if lt.State != "success" {
			t.Fatalf("b lists %+v", lt)
		}
	}
}

// An interchange given both forwarders moves to the second when the
// first stops; the second takes the lease and every task ends, those
// submitted through either forwarder meanwhile too.
func TestSharedLeaseMovesWithTheInterchange(t *testing.T) {
	a, b, alice := sharedPair(t)
	creds, err := a.CreateEndpoint("ep1", true)
	if err != nil {
		t.Fatal(err)
	}
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Credentials: creds, Forwarder: a.ZMQAddr() + "," + b.ZMQAddr()})
	testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 4})
	connected := func(f *testutil.Forwarder) func() error {
		return func() error {
			if v, _ := f.Endpoint("ep1"); !v.Connected {
				return fmt.Errorf("endpoint not connected to %s", f.ZMQAddr())
			}
			return nil
		}
	}
	testutil.WaitFor(t, 10*time.Second, connected(a))
	viaA, viaB := testutil.NewClient(a.URL, alice), testutil.NewClient(b.URL, alice)
	sleepy := map[string]any{"kind": "exec", "args": []string{"sleep", "0.2"}}
	ids, err := viaA.Submit("ep1", manyOf(sleepy, 40)...)
	if err != nil {
		t.Fatal(err)
	}
	a.Stop()
	more, err := viaB.Submit("ep1", manyOf(sleepy, 40)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, connected(b))
	for _, v := range viaB.WaitTerminal(t, append(ids, more...), 60*time.Second) {
		if v.State != "success" {
			t.Fatalf("task across the move: %+v", v)
		}
	}
}

// With the endpoint held by a and no manager, tasks submitted through b
// wait; a cancel through b ends one (a is told and cancels it on the
// interchange), and deleting the endpoint through b fails the rest on
// both forwarders and drops the interchange's connection at a.
func TestSharedCancelAndDeleteThroughTheOther(t *testing.T) {
	a, b, alice := sharedPair(t)
	testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: a.ZMQAddr()})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := a.Endpoint("ep1"); !v.Connected {
			return fmt.Errorf("endpoint not connected to a")
		}
		return nil
	})
	viaA, viaB := testutil.NewClient(a.URL, alice), testutil.NewClient(b.URL, alice)
	ids, err := viaB.Submit("ep1", manyOf(map[string]any{"kind": "noop"}, 20)...)
	if err != nil {
		t.Fatal(err)
	}
	// a dispatches them: they reach the interchange's queue.
	testutil.WaitFor(t, 10*time.Second, func() error {
		v, err := viaA.Get(ids[19])
		if err != nil || v.State != "waiting-for-nodes" {
			return fmt.Errorf("through a: %+v %v", v, err)
		}
		return nil
	})
	viaB.Must(t, http.StatusOK, http.MethodDelete, "/v1/tasks/"+ids[0], nil, nil)
	testutil.WaitFor(t, 10*time.Second, func() error {
		v, err := viaA.Get(ids[0])
		if err != nil || v.State != "cancelled" {
			return fmt.Errorf("cancelled through b, through a: %+v %v", v, err)
		}
		return nil
	})
	b.Client().Must(t, http.StatusOK, http.MethodDelete, "/v1/endpoints/ep1", nil, nil)
	for _, c := range []*testutil.Client{viaA, viaB} {
		testutil.WaitFor(t, 10*time.Second, func() error {
			vs, err := c.Status(ids[1:])
			if err != nil {
				return err
			}
			for _, v := range vs {
				if v.State != "failed" {
					return fmt.Errorf("after the deletion: %+v", v)
				}
			}
			return nil
		})
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, _ := a.Endpoint("ep1"); v.Connected {
			return fmt.Errorf("the deleted endpoint is still connected to a")
		}
		return nil
	})
}
