package interchange

import "unique"

// owner is a task's owner (the user who submitted it), interned: the tasks
// of one user share one copy of the name, and the handle costs a task 8
// bytes, not a string's 16. The zero handle is no owner (a task from a
// forwarder that predates owners).
type owner = unique.Handle[string]

// ownerName is the owner's name, "" for none.
func ownerName(o owner) string {
	if o == (owner{}) {
		return ""
	}
	return o.Value()
}

// owners interns names; it remembers the last one, since a batch's tasks
// usually share their owner (and then their name string too).
type owners struct {
	last string
	h    owner
}

func (c *owners) intern(name string) owner {
	if name == "" {
		return owner{}
	}
	if name != c.last || c.h == (owner{}) {
		c.h = unique.Make(name)
		c.last = c.h.Value()
	}
	return c.h
}
