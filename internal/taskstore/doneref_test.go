package taskstore

import (
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Every field of a DoneRef reads back as packed, at the edges of each.
func TestDoneRefRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano()
	for _, c := range []struct {
		state     messages.TaskState
		completed int64
		owner     uint32
		wantSec   int64
		wantOwner uint32
	}{
		{messages.StateSuccess, now, 1, now / 1e9, 1},
		{messages.StateFailed, now + 999_999_999, MaxOwners, now / 1e9, MaxOwners},
		{messages.StateCancelled, 0, 7, 0, 7},
		{messages.StateSuccess, -5, 3, 0, 3},
		{messages.StateFailed, now, MaxOwners + 1, now / 1e9, 0},    // too many owners: read from the record
		{messages.StateSuccess, 7258118400 * 1e9, 2, 7258118400, 2}, // the year 2200
		{messages.StateRunning, now, 4, now / 1e9, 4},               // not ended
	} {
		r := NewDoneRef(c.state, c.completed, c.owner)
		wantState := c.state
		if !c.state.Terminal() {
			wantState = messages.StateUnknown
		}
		if r.State() != wantState || r.Ended() != c.state.Terminal() || r.Completed() != c.wantSec || r.Owner() != c.wantOwner {
			t.Errorf("%s/%d/%d: read back %s ended=%v %d %d", c.state, c.completed, c.owner, r.State(), r.Ended(), r.Completed(), r.Owner())
		}
	}
}

func TestOwners(t *testing.T) {
	o := NewOwners()
	a, b := o.Index("alice"), o.Index("")
	if a == 0 || b == 0 || a == b || o.Index("alice") != a {
		t.Fatalf("indexes %d %d", a, b)
	}
	if n, ok := o.Name(a); !ok || n != "alice" {
		t.Fatalf("name %q %v", n, ok)
	}
	if _, ok := o.Name(0); ok {
		t.Fatal("index 0 names nobody")
	}
	if _, ok := o.Lookup("bob"); ok {
		t.Fatal("bob was never added")
	}
}
