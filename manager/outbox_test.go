package manager

import (
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

func TestOutboxHoldsUntilAcked(t *testing.T) {
	o := newOutbox()
	id := func(b byte) messages.TaskID { return messages.TaskID{b} }
	put := func(b byte) { o.put(&mtask{}, messages.Result{ID: id(b), Attempt: 1}) }
	put(1)
	put(2)
	if q := o.queued(); len(q) != 2 || o.len() != 2 || q[0].ID != id(1) || q[1].ID != id(2) {
		t.Fatalf("queued %v held %d, want 1 and 2 held", q, o.len())
	}
	t0 := time.Unix(100, 0)
	o.sent(2, t0.UnixNano())
	if o.waiting() != 0 || len(o.queued()) != 0 {
		t.Fatal("sent items still queued")
	}
	o.ack(id(1))
	o.ack(id(1))
	if _, ok := o.get(id(1)); ok || o.len() != 1 {
		t.Fatalf("after the ack of 1: held %d", o.len())
	}
	th := time.Second
	if n := o.resendDue(t0.Add(th/2), th); n != 0 {
		t.Fatalf("re-sent %d before the threshold", n)
	}
	if n := o.resendDue(t0.Add(2*th), th); n != 1 || o.queued()[0].ID != id(2) {
		t.Fatalf("re-sent %d after the threshold, want only the unacked one", n)
	}
	// Not again while queued, and at most once per threshold.
	if n := o.resendDue(t0.Add(4*th), th); n != 0 {
		t.Fatalf("re-sent %d still queued", n)
	}
	o.sent(1, t0.Add(4*th).UnixNano())
	if n := o.resendDue(t0.Add(4*th+th/2), th); n != 0 {
		t.Fatalf("re-sent %d twice within one threshold", n)
	}
	o.resendAll()
	if q := o.queued(); len(q) != 1 || q[0].ID != id(2) {
		t.Fatalf("resendAll queued %v, want the 1 held", q)
	}
	o.requeue(id(2))
	o.requeue(id(9))
	if o.waiting() != 2 {
		t.Fatalf("requeue of held and unknown ids: %d waiting, want 2", o.waiting())
	}
	// A newer result for an id takes the older one's place.
	o.put(&mtask{}, messages.Result{ID: id(2), Attempt: 2})
	if r, ok := o.get(id(2)); !ok || r.Attempt != 2 || o.len() != 1 {
		t.Fatalf("after a newer result: %+v, held %d", r, o.len())
	}
}
