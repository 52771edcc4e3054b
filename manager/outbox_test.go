package manager

import (
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

func TestOutboxHoldsUntilAcked(t *testing.T) {
	byID := make(map[messages.TaskID]*mtask)
	o := newOutbox(byID)
	id := func(b byte) messages.TaskID { return messages.TaskID{b} }
	// The loop puts a task's result while the task is in byID.
	put := func(b byte, attempt uint32) *mtask {
		mt := &mtask{task: messages.Task{ID: id(b), Attempt: attempt}}
		byID[id(b)] = mt
		o.put(mt, messages.Result{ID: id(b), Attempt: attempt})
		return mt
	}
	put(1, 1)
	put(2, 1)
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
	if _, ok := byID[id(1)]; ok || o.len() != 1 {
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

	// A newer attempt of 2 comes before its result is acknowledged: the
	// result is held aside until the ack, or until the newer one's.
	old := byID[id(2)]
	o.supersede(old)
	byID[id(2)] = &mtask{task: messages.Task{ID: id(2), Attempt: 2}}
	if o.older(id(2)) != old || o.len() != 1 {
		t.Fatalf("superseded result: %v, held %d", o.older(id(2)), o.len())
	}
	o.resendAll()
	if q := o.queued(); len(q) != 1 || q[0].Attempt != 1 {
		t.Fatalf("resendAll queued %v, want the superseded result", q)
	}
	o.sent(1, t0.Add(5*th).UnixNano())
	o.put(byID[id(2)], messages.Result{ID: id(2), Attempt: 2})
	if o.older(id(2)) != nil || o.len() != 1 || o.held(old) {
		t.Fatalf("after the newer result: superseded %v, held %d", o.older(id(2)), o.len())
	}
	o.ack(id(2))
	if _, ok := byID[id(2)]; ok || o.len() != 0 {
		t.Fatalf("after the ack of 2: held %d", o.len())
	}
	// An ack while the newer attempt runs drops the older result only.
	mt := put(3, 1)
	o.supersede(mt)
	byID[id(3)] = &mtask{task: messages.Task{ID: id(3), Attempt: 2}}
	o.ack(id(3))
	if _, ok := byID[id(3)]; !ok || o.older(id(3)) != nil || o.len() != 0 {
		t.Fatalf("ack of a superseded result: task kept %v, older %v, held %d", ok, o.older(id(3)), o.len())
	}
}
