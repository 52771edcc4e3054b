package blocks

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func testConfig() *Config {
	c := &Config{Provider: "slurm", MinBlocks: 0, MaxBlocks: 4, NodesPerBlock: 1, WorkersPerNode: 2,
		Walltime: 30 * time.Minute, MaxIdle: 2 * time.Minute}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// short renders decisions as "submit 2", "drain b1", ... for comparison.
func short(ds []Decision) string {
	var s []string
	for _, d := range ds {
		switch d.Kind {
		case Submit, Backoff:
			s = append(s, fmt.Sprintf("%s %d", d.Kind, d.Count))
		default:
			s = append(s, fmt.Sprintf("%s %s", d.Kind, d.Block))
		}
	}
	return strings.Join(s, ", ")
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	run := func(id string, started time.Duration, busy bool, idleSince time.Duration) BlockInfo {
		b := BlockInfo{ID: id, State: Running, SubmittedAt: at(started - time.Minute), StartedAt: at(started), Managers: 1, Busy: busy}
		if !busy {
			b.IdleSince = at(idleSince)
		}
		return b
	}
	pend := func(id string, submitted time.Duration) BlockInfo {
		return BlockInfo{ID: id, State: Pending, SubmittedAt: at(submitted)}
	}
	cases := []struct {
		name string
		cfg  func(*Config)
		in   Input
		want string
	}{
		{name: "nothing to do", in: Input{Started: true}, want: ""},
		{name: "init blocks at start", cfg: func(c *Config) { c.InitBlocks = 2 }, in: Input{}, want: "submit 2"},
		{name: "init blocks only once", cfg: func(c *Config) { c.InitBlocks = 2 }, in: Input{Started: true}, want: ""},
		{name: "min blocks kept", cfg: func(c *Config) { c.MinBlocks = 1 }, in: Input{Started: true}, want: "submit 1"},
		{name: "min counts pending blocks", cfg: func(c *Config) { c.MinBlocks = 1 },
			in: Input{Started: true, Blocks: []BlockInfo{pend("p1", -time.Second)}}, want: ""},
		{name: "scale out for the queue", in: Input{Started: true, Queued: 5}, want: "submit 3"},
		{name: "scale out up to max", in: Input{Started: true, Queued: 1000}, want: "submit 4"},
		{name: "free capacity covers the queue", in: Input{Started: true, Queued: 4, Free: 4}, want: ""},
		{name: "pending capacity covers the queue",
			in: Input{Started: true, Queued: 4, Blocks: []BlockInfo{pend("p1", -time.Second), pend("p2", -time.Second)}}, want: ""},
		{name: "only the shortfall is submitted",
			in: Input{Started: true, Queued: 7, Free: 2, Blocks: []BlockInfo{pend("p1", -time.Second)}}, want: "submit 2"},
		{name: "max counts pending and running, not draining", cfg: func(c *Config) { c.MaxBlocks = 2 },
			in: Input{Started: true, Queued: 100, Blocks: []BlockInfo{run("r1", -time.Minute, true, 0),
				{ID: "d1", State: Draining, StartedAt: at(-10 * time.Minute), DrainedAt: at(-time.Second), Managers: 1}}}, want: "submit 1"},
		{name: "at max nothing more", cfg: func(c *Config) { c.MaxBlocks = 1 },
			in: Input{Started: true, Queued: 100, Blocks: []BlockInfo{run("r1", -time.Minute, true, 0)}}, want: ""},
		{name: "scale in after max-idle",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -time.Hour+20*time.Minute, false, -3*time.Minute)}}, want: "drain r1"},
		{name: "no scale in before max-idle",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -10*time.Minute, false, -time.Minute)}}, want: ""},
		{name: "no scale in below min", cfg: func(c *Config) { c.MinBlocks = 1 },
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -10*time.Minute, false, -5*time.Minute),
				run("r2", -10*time.Minute, false, -3*time.Minute)}}, want: "drain r1"},
		{name: "no scale in while tasks are queued",
			in: Input{Started: true, Queued: 1, Free: 4, Blocks: []BlockInfo{run("r1", -10*time.Minute, false, -5*time.Minute)}}, want: ""},
		{name: "busy block is not idle",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -10*time.Minute, true, 0)}}, want: ""},
		{name: "stale pending block cancelled when nothing is queued",
			in: Input{Started: true, Blocks: []BlockInfo{pend("p1", -3*time.Minute)}}, want: "cancel p1"},
		{name: "pending block kept for min", cfg: func(c *Config) { c.MinBlocks = 1 },
			in: Input{Started: true, Blocks: []BlockInfo{pend("p1", -3*time.Minute)}}, want: ""},
		{name: "busy block near walltime is replaced",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -28*time.Minute, true, 0)}}, want: "replace r1"},
		{name: "idle block near walltime is drained, not replaced",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -28*time.Minute, false, -30*time.Second)}}, want: "drain r1"},
		{name: "idle block near walltime replaced for min", cfg: func(c *Config) { c.MinBlocks = 1 },
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -28*time.Minute, false, -30*time.Second)}}, want: "replace r1"},
		{name: "block before the margin is left alone",
			in: Input{Started: true, Blocks: []BlockInfo{run("r1", -26*time.Minute, true, 0)}}, want: ""},
		{name: "replacement counts as pending capacity",
			in: Input{Started: true, Queued: 2, Blocks: []BlockInfo{run("r1", -28*time.Minute, true, 0)}}, want: "replace r1"},
		{name: "draining block without managers is cancelled",
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-time.Hour), DrainedAt: at(-time.Second)}}},
			want: "cancel d1"},
		{name: "draining block past the drain timeout is cancelled",
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-time.Hour), DrainedAt: at(-4 * time.Minute), Managers: 2}}},
			want: "cancel d1"},
		{name: "draining managers with running tasks keep their block until its walltime",
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-29 * time.Minute), DrainedAt: at(-4 * time.Minute), Managers: 2}}},
			want: ""},
		{name: "draining block still draining at its walltime is cancelled",
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-30 * time.Minute), DrainedAt: at(-2 * time.Minute), Managers: 1}}},
			want: "cancel d1"},
		{name: "without a walltime a drain past the timeout is cancelled", cfg: func(c *Config) { c.Walltime = 0 },
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-time.Minute), DrainedAt: at(-4 * time.Minute), Managers: 2}}},
			want: "cancel d1"},
		{name: "draining block within the timeout waits",
			in:   Input{Started: true, Blocks: []BlockInfo{{ID: "d1", State: Draining, StartedAt: at(-10 * time.Minute), DrainedAt: at(-time.Minute), Managers: 2}}},
			want: ""},
		{name: "back-off after a failed start", in: Input{Started: true, Queued: 5, Failures: 1, LastFailure: at(-5 * time.Second)},
			want: "backoff 3"},
		{name: "back-off over", in: Input{Started: true, Queued: 5, Failures: 1, LastFailure: at(-11 * time.Second)},
			want: "submit 3"},
		{name: "back-off doubles", in: Input{Started: true, Queued: 5, Failures: 3, LastFailure: at(-30 * time.Second)},
			want: "backoff 3"},
		{name: "back-off after three failures ends after 40s", in: Input{Started: true, Queued: 5, Failures: 3, LastFailure: at(-41 * time.Second)},
			want: "submit 3"},
		{name: "back-off holds min too", cfg: func(c *Config) { c.MinBlocks = 2 }, in: Input{Started: true, Failures: 1, LastFailure: at(-time.Second)},
			want: "backoff 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			in := tc.in
			in.Now = t0
			in.BlockCapacity = 2
			got := Decide(cfg, in)
			if short(got) != tc.want {
				t.Fatalf("Decide = %q, want %q\n%+v", short(got), tc.want, got)
			}
			for _, d := range got {
				if d.Reason == "" {
					t.Errorf("decision %s has no reason", d.Kind)
				}
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	cfg := testConfig()
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{{0, 0}, {1, 10 * time.Second}, {2, 20 * time.Second}, {3, 40 * time.Second}, {6, 320 * time.Second}, {7, 10 * time.Minute}, {100, 10 * time.Minute}} {
		if got := BackoffDelay(cfg, tc.failures); got != tc.want {
			t.Errorf("BackoffDelay(%d) = %s, want %s", tc.failures, got, tc.want)
		}
	}
}
