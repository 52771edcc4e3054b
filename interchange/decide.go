package interchange

// Decisions the loop takes, as functions of plain values so a table test
// covers them without sockets.

// shares splits n queued tasks among managers with free[i] slots each:
// as evenly as the slots allow (water-filling), never more than a
// manager's free slots. A remainder that does not divide goes one task
// each to managers in order from start, so no manager is always first.
func shares(n int, free []int, start int) []int {
	out := make([]int, len(free))
	k := len(free)
	if k == 0 || n <= 0 {
		return out
	}
	left := make([]int, k)
	active := 0
	for i, f := range free {
		if f > 0 {
			left[i] = f
			active++
		}
	}
	for n > 0 && active > 0 {
		per := n / active
		if per == 0 {
			for j := 0; j < k && n > 0; j++ {
				i := (start + j) % k
				if left[i] > 0 {
					out[i]++
					left[i]--
					n--
				}
			}
			break
		}
		for i := range left {
			if left[i] == 0 {
				continue
			}
			give := min(per, left[i])
			out[i] += give
			left[i] -= give
			n -= give
			if left[i] == 0 {
				active--
			}
		}
	}
	return out
}

// afterLoss is what happens to a task whose manager was lost holding
// attempt: it runs again as next, or fails when that would exceed
// maxRetries re-runs.
func afterLoss(attempt uint32, maxRetries int) (next uint32, fail bool) {
	next = attempt + 1
	return next, int(next) > maxRetries+1
}
