package interchange

import "math"

// countStart notes that a worker started t in its current dispatch: the
// first running report, or a result with a start time, of a dispatch is
// one run. A task given back or taken from a lost node and started again
// elsewhere runs again, and runs says so.
func (t *itask) countStart() {
	if !t.started {
		t.started = true
		if t.runs < math.MaxUint16 {
			t.runs++
		}
	}
}
