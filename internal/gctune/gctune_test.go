package gctune

import "testing"

func TestLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ base, live, want int64 }{
		{256 * mib, 0, 256 * mib},
		{256 * mib, 100 * mib, 256 * mib},
		{256 * mib, 146 * mib, 256 * mib},
		{256 * mib, 147 * mib, 272 * mib},
		{256 * mib, 1000 * mib, 1760 * mib},
	} {
		if got := Limit(c.base, c.live); got != c.want {
			t.Errorf("Limit(%d MiB, %d MiB) = %d MiB, want %d MiB", c.base/mib, c.live/mib, got/mib, c.want/mib)
		}
	}
}
