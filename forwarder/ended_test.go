package forwarder_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

func endedIDs(e client.Ended) []string {
	var out []string
	for _, t := range e.Tasks {
		out = append(out, t.TaskID+"="+t.State)
	}
	return out
}

// GET /v1/tasks/ended reports each of the caller's tasks once as it ends,
// after a cursor, long-polling for the first; POST /v1/tasks/census says
// which of many tasks ended without the whole records.
func TestEndedAndCensus(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	alice := f.User(t, "alice", false)
	bob := f.User(t, "bob", false)
	f.Share(t, "ep1", "alice", "bob")
	ctx := t.Context()
	start, err := alice.Ended(ctx, "", 0, 0)
	if err != nil || start.Cursor == "" || len(start.Tasks) != 0 || start.Reset {
		t.Fatalf("no cursor: %+v %v; want a cursor and nothing else", start, err)
	}
	noop := map[string]any{"kind": "noop"}
	a, err := alice.Submit("ep1", noop, noop, noop, noop)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bob.Submit("ep1", noop)
	if err != nil {
		t.Fatal(err)
	}

	// A long poll that ends when a task ends.
	got := make(chan client.Ended, 1)
	go func() {
		e, err := alice.Ended(ctx, start.Cursor, 30*time.Second, 0)
		if err != nil {
			t.Error(err)
		}
		got <- e
	}()
	if _, err := alice.Client.Cancel(ctx, a[0]); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if s := strings.Join(endedIDs(first), " "); s != a[0]+"=cancelled" || first.More {
		t.Fatalf("long poll: %q more=%v; want %s=cancelled", s, first.More, a[0])
	}

	// Bob's end is not alice's to see.
	if _, err := bob.Client.Cancel(ctx, b[0]); err != nil {
		t.Fatal(err)
	}
	if e, err := alice.Ended(ctx, first.Cursor, 0, 0); err != nil || len(e.Tasks) != 0 {
		t.Fatalf("alice after bob's cancel: %v %v; want nothing", endedIDs(e), err)
	}
	for _, id := range a[1:3] {
		if _, err := alice.Client.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	p1, err := alice.Ended(ctx, first.Cursor, 0, 1)
	if err != nil || len(p1.Tasks) != 1 || p1.Tasks[0].TaskID != a[1] || !p1.More {
		t.Fatalf("limit 1: %v more=%v %v; want %s and more", endedIDs(p1), p1.More, err, a[1])
	}
	p2, err := alice.Ended(ctx, p1.Cursor, 0, 1)
	if err != nil || len(p2.Tasks) != 1 || p2.Tasks[0].TaskID != a[2] || p2.More {
		t.Fatalf("next page: %v more=%v %v; want %s and no more", endedIDs(p2), p2.More, err, a[2])
	}
	all, err := admin.Ended(ctx, start.Cursor, 0, 0)
	if err != nil || len(all.Tasks) != 4 {
		t.Fatalf("admin sees %v %v; want all 4 ends", endedIDs(all), err)
	}

	// A cursor of another run resets; a malformed one is refused.
	if e, err := alice.Ended(ctx, "0123456789ab-3", 0, 0); err != nil || !e.Reset || e.Cursor == "" || len(e.Tasks) != 0 {
		t.Fatalf("foreign cursor: %+v %v; want reset and a new cursor", e, err)
	}
	if code, body, _ := alice.Do("GET", "/v1/tasks/ended?after=nonsense", nil, nil); code != http.StatusBadRequest || !strings.Contains(string(body), "cursor") {
		t.Fatalf("bad cursor: %d %s", code, body)
	}
	if code, body, _ := alice.Do("GET", "/v1/tasks/ended?limit=0", nil, nil); code != http.StatusBadRequest || !strings.Contains(string(body), "limit") {
		t.Fatalf("limit 0: %d %s", code, body)
	}

	stranger := uuid.NewString()
	cs, err := alice.Census(ctx, []string{a[0], a[1], a[3], b[0], stranger})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Ended) != 2 || cs.Ended[0].TaskID != a[0] || cs.Ended[1].State != "cancelled" || cs.Pending != 1 ||
		strings.Join(cs.Unknown, " ") != b[0]+" "+stranger {
		t.Fatalf("census: %+v; want a0 and a1 ended, a3 pending, bob's and a stranger unknown", cs)
	}
}
