package messages

import "testing"

func TestChunkTasksAndResults(t *testing.T) {
	mk := func(n, size int) []Task {
		ts := make([]Task, n)
		for i := range ts {
			ts[i].Payload = make([]byte, size)
		}
		return ts
	}
	cases := []struct {
		name      string
		n, size   int
		maxItems  int
		wantFirst int
	}{
		{"small tasks stop at the item cap", 5000, 20, 1000, 1000},
		{"fewer than the cap", 10, 20, 1000, 10},
		{"bytes stop the batch", 100, 1 << 20, 1000, 15},
		{"one oversize task still goes alone", 3, MaxBatchBytes * 2, 1000, 1},
		{"empty", 0, 0, 1000, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := mk(tc.n, tc.size)
			if got := ChunkTasks(ts, tc.maxItems); got != tc.wantFirst {
				t.Fatalf("ChunkTasks = %d, want %d", got, tc.wantFirst)
			}
			rs := make([]Result, tc.n)
			for i := range rs {
				rs[i].Payload = ts[i].Payload
			}
			if got := ChunkResults(rs, tc.maxItems); got != tc.wantFirst {
				t.Fatalf("ChunkResults = %d, want %d", got, tc.wantFirst)
			}
		})
	}
}
