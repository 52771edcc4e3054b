package forwarder_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/pgtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/manager"
)

// migrate-store moves a forwarder from its embedded log to PostgreSQL:
// finished tasks keep their results, unfinished ones run after the move,
// a user's token and an endpoint's shares still count, and a second copy
// into the same database is refused.
func TestMigrateStoreToPostgres(t *testing.T) {
	dir := t.TempDir()
	f := testutil.StartForwarder(t, forwarder.Options{StateDir: dir})
	f.Enroll(t, "ep1")
	alice := f.User(t, "alice", false)
	f.Share(t, "ep1", "alice")
	ix := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: f.ZMQAddr()})
	m := testutil.StartManager(t, manager.Options{Interchange: ix.ManagersAddr(), ManagerID: "m1", Workers: 4})
	done, err := alice.Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", "before"}}, 50)...)
	if err != nil {
		t.Fatal(err)
	}
	alice.WaitTerminal(t, done, 60*time.Second)
	m.Stop()
	ix.Stop()
	open, err := alice.Submit("ep1", manyOf(map[string]any{"kind": "exec", "args": []string{"echo", "after"}}, 20)...)
	if err != nil {
		t.Fatal(err)
	}
	f.Stop()

	url := pgtest.Start(t).Database(t)
	n, err := forwarder.MigrateStore(dir, "", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Tasks != 70 || n.Unfinished != 20 || n.Endpoints != 1 || n.Tokens < 2 {
		t.Fatalf("migrated %+v", n)
	}
	if _, err := forwarder.MigrateStore(dir, "", url, nil); err == nil {
		t.Fatal("a second migration into a database with tasks was not refused")
	}

	// The state dir keeps the CURVE key the endpoint's credential names.
	f2 := testutil.StartForwarder(t, forwarder.Options{StateDir: dir, Store: url})
	alice2 := testutil.NewClient(f2.URL, alice.Token())
	ts, err := alice2.Status(done)
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range ts {
		if tv.State != "success" || string(tv.Result) == "" {
			t.Fatalf("finished task after the move: %+v", tv)
		}
	}
	ix2 := testutil.StartInterchange(t, interchange.Options{EndpointID: "ep1", Forwarder: f2.ZMQAddr()})
	testutil.StartManager(t, manager.Options{Interchange: ix2.ManagersAddr(), ManagerID: "m1", Workers: 4})
	for _, tv := range alice2.WaitTerminal(t, open, 60*time.Second) {
		if tv.State != "success" {
			t.Fatalf("unfinished task after the move ended %s", tv.State)
		}
	}
	// alice's token and share came along: she submits again.
	alice2.Must(t, http.StatusAccepted, http.MethodPost, "/v1/endpoints/ep1/tasks", map[string]any{"tasks": []any{map[string]any{"kind": "noop"}}}, nil)
}
