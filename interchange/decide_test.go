package interchange

import (
	"slices"
	"testing"
)

func TestShares(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		free  []int
		start int
		want  []int
	}{
		{"nothing queued", 0, []int{4, 4}, 0, []int{0, 0}},
		{"no managers", 5, nil, 0, []int{}},
		{"even split", 8, []int{10, 10}, 0, []int{4, 4}},
		{"remainder from start", 5, []int{10, 10}, 1, []int{2, 3}},
		{"capped by free slots, rest to others", 10, []int{1, 10, 10}, 0, []int{1, 5, 4}},
		{"more queued than all slots", 100, []int{3, 5}, 0, []int{3, 5}},
		{"full managers get nothing", 6, []int{0, 6, 0}, 0, []int{0, 6, 0}},
		{"fewer tasks than managers", 2, []int{5, 5, 5, 5}, 3, []int{1, 0, 0, 1}},
		{"four equal managers, big queue", 4000, []int{2000, 2000, 2000, 2000}, 0, []int{1000, 1000, 1000, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := shares(tc.n, tc.free, tc.start)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("shares(%d, %v, %d) = %v, want %v", tc.n, tc.free, tc.start, got, tc.want)
			}
			sum := 0
			for i, g := range got {
				sum += g
				if g > tc.free[i] {
					t.Fatalf("manager %d got %d for %d free slots", i, g, tc.free[i])
				}
			}
			if sum > tc.n {
				t.Fatalf("handed out %d of %d", sum, tc.n)
			}
		})
	}
}

func TestAfterLoss(t *testing.T) {
	for _, tc := range []struct {
		attempt    uint32
		maxRetries int
		next       uint32
		fail       bool
	}{
		{1, 2, 2, false},
		{2, 2, 3, false},
		{3, 2, 4, true},
		{1, 0, 2, true},
	} {
		next, fail := afterLoss(tc.attempt, tc.maxRetries)
		if next != tc.next || fail != tc.fail {
			t.Errorf("afterLoss(%d, %d) = %d, %v; want %d, %v", tc.attempt, tc.maxRetries, next, fail, tc.next, tc.fail)
		}
	}
}
