package forwarder_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

func TestListTasks(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	f.Enroll(t, "ep2")
	alice := f.User(t, "alice", false)
	bob := f.User(t, "bob", false)
	f.Share(t, "ep1", "alice", "bob")
	f.Share(t, "ep2", "alice", "bob")
	before := time.Now().Add(-time.Second)
	var aliceIDs []string
	for range 5 {
		ids, err := alice.Submit("ep1", map[string]any{"kind": "noop"})
		if err != nil {
			t.Fatal(err)
		}
		aliceIDs = append(aliceIDs, ids...)
	}
	bobIDs, err := bob.Submit("ep2", map[string]any{"kind": "noop"}, map[string]any{"kind": "noop"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	// Paging by 2 walks alice's five tasks in submission order, once each.
	var got []string
	q := client.TaskQuery{Limit: 2}
	pages := 0
	for {
		p, err := alice.ListTasks(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, lt := range p.Tasks {
			got = append(got, lt.TaskID)
		}
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	if !slices.Equal(got, aliceIDs) || pages != 3 {
		t.Fatalf("alice's pages (%d): %v; want %v in 3 pages", pages, got, aliceIDs)
	}

	all, err := admin.AllTasks(ctx, client.TaskQuery{}, 0)
	if err != nil || len(all) != 7 {
		t.Fatalf("admin lists %d tasks (%v); want 7", len(all), err)
	}
	byBob, err := admin.AllTasks(ctx, client.TaskQuery{Owner: "bob"}, 0)
	if err != nil || len(byBob) != 2 || byBob[0].Owner != "bob" || byBob[0].TaskID != bobIDs[0] {
		t.Fatalf("admin lists bob's tasks: %+v %v", byBob, err)
	}
	ep2, err := admin.AllTasks(ctx, client.TaskQuery{Endpoint: "ep2"}, 0)
	if err != nil || len(ep2) != 2 {
		t.Fatalf("tasks of ep2: %d %v; want 2", len(ep2), err)
	}
	// The endpoints are not connected, so no task has ended.
	done, err := admin.AllTasks(ctx, client.TaskQuery{States: []string{"success", "failed"}}, 0)
	if err != nil || len(done) != 0 {
		t.Fatalf("ended tasks: %d %v; want 0", len(done), err)
	}
	waiting, err := admin.AllTasks(ctx, client.TaskQuery{States: []string{"waiting-for-endpoint", "received"}}, 0)
	if err != nil || len(waiting) != 7 {
		t.Fatalf("waiting tasks: %d %v; want 7", len(waiting), err)
	}
	if old, err := admin.AllTasks(ctx, client.TaskQuery{Since: before}, 0); err != nil || len(old) != 7 {
		t.Fatalf("since a second ago: %d %v; want 7", len(old), err)
	}
	if later, err := admin.AllTasks(ctx, client.TaskQuery{Since: time.Now().Add(time.Hour)}, 0); err != nil || len(later) != 0 {
		t.Fatalf("since in an hour: %d %v; want 0", len(later), err)
	}
	// Bob never sees alice's tasks, and may not ask for them.
	mine, err := bob.AllTasks(ctx, client.TaskQuery{}, 0)
	if err != nil || len(mine) != 2 {
		t.Fatalf("bob lists %d tasks (%v); want his 2", len(mine), err)
	}
	if _, err := bob.ListTasks(ctx, client.TaskQuery{Owner: "alice"}); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("bob lists alice's tasks: %v; want 403", err)
	}

	for _, tc := range []struct{ query, want string }{
		{"state=bogus", `invalid state "bogus"`},
		{"since=yesterday", `invalid since "yesterday"`},
		{"limit=0", `invalid limit "0"`},
		{"limit=5000", "from 1 to 1000"},
		{"cursor=%21", `invalid cursor "!"`},
		{"user=bob", `unknown parameter "user"`},
	} {
		code, body, _ := admin.Do("GET", "/v1/tasks?"+tc.query, nil, nil)
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
			t.Errorf("GET /v1/tasks?%s = %d %s; want 400 with %q", tc.query, code, body, tc.want)
		}
	}
}
