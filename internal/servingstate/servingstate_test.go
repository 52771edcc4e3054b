package servingstate_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

var (
	none  = messages.NonePaused
	push  = messages.PushPaused
	both  = messages.PushAndDispatchPaused
	epoch = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
)

func st(s messages.ServingState) *messages.ServingState { return &s }

func newController(t *testing.T) *servingstate.Controller {
	t.Helper()
	th := servingstate.Thresholds{PauseQueued: 10, ResumeQueued: 5, PauseMemoryPercent: 80, ResumeMemoryPercent: 70}
	if err := th.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return servingstate.New(th)
}

func TestHysteresis(t *testing.T) {
	type step struct {
		queued int
		mem    float64
		want   messages.ServingState
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"queue: below pause stays running", []step{{0, 0, none}, {9, 0, none}}},
		{"queue: pauses at the threshold", []step{{9, 0, none}, {10, 0, push}}},
		{"queue: pauses above the threshold", []step{{50, 0, push}}},
		{"queue: stays paused between resume and pause", []step{{10, 0, push}, {9, 0, push}, {6, 0, push}}},
		{"queue: stays paused at the resume value", []step{{10, 0, push}, {5, 0, push}}},
		{"queue: resumes below resume", []step{{10, 0, push}, {4, 0, none}}},
		{"queue: pause again needs the pause value", []step{{10, 0, push}, {4, 0, none}, {9, 0, none}, {10, 0, push}}},
		{"memory: pauses at the threshold", []step{{0, 79.9, none}, {0, 80, push}}},
		{"memory: stays paused at the resume value", []step{{0, 85, push}, {0, 75, push}, {0, 70, push}}},
		{"memory: resumes below resume", []step{{0, 85, push}, {0, 69.9, none}}},
		{"either pressure pauses", []step{{10, 0, push}, {4, 90, push}, {4, 60, none}}},
		{"both must clear", []step{{10, 90, push}, {0, 90, push}, {0, 60, none}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newController(t)
			now := epoch
			for i, s := range tc.steps {
				now = now.Add(time.Second)
				got := c.Measure(servingstate.Sample{Queued: s.queued, MemoryPercent: s.mem}, now)
				if got != s.want {
					t.Fatalf("step %d (queued %d, memory %g%%): measured %s, want %s", i, s.queued, s.mem, got, s.want)
				}
				if m := c.Measured(); m != got {
					t.Fatalf("step %d: Measured() = %s, Measure returned %s", i, m, got)
				}
				if e := c.Effective(now); e != got {
					t.Fatalf("step %d: Effective = %s without override, want %s", i, e, got)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		th      servingstate.Thresholds
		wantErr string
		check   func(t *testing.T, th servingstate.Thresholds)
	}{
		{name: "defaults", th: servingstate.Thresholds{}, check: func(t *testing.T, th servingstate.Thresholds) {
			if th.PauseQueued != servingstate.DefaultPauseQueued || th.ResumeQueued != servingstate.DefaultResumeQueued ||
				th.PauseMemoryPercent != servingstate.DefaultPauseMemoryPercent || th.ResumeMemoryPercent != servingstate.DefaultResumeMemoryPercent {
				t.Errorf("defaults filled as %+v", th)
			}
		}},
		{name: "resume derived from pause", th: servingstate.Thresholds{PauseQueued: 100, PauseMemoryPercent: 50},
			check: func(t *testing.T, th servingstate.Thresholds) {
				if th.ResumeQueued != 80 || th.ResumeMemoryPercent != 40 {
					t.Errorf("resume values %d / %g, want 80 / 40", th.ResumeQueued, th.ResumeMemoryPercent)
				}
			}},
		{name: "resume queued equal to pause", th: servingstate.Thresholds{PauseQueued: 10, ResumeQueued: 10},
			wantErr: "--resume-queued-tasks 10 must be below --pause-queued-tasks 10"},
		{name: "resume queued above pause", th: servingstate.Thresholds{PauseQueued: 10, ResumeQueued: 20},
			wantErr: "--resume-queued-tasks 20 must be below"},
		{name: "negative pause queued", th: servingstate.Thresholds{PauseQueued: -1}, wantErr: "--pause-queued-tasks -1"},
		{name: "negative resume queued", th: servingstate.Thresholds{PauseQueued: 10, ResumeQueued: -3}, wantErr: "--resume-queued-tasks -3"},
		{name: "resume memory equal to pause", th: servingstate.Thresholds{PauseMemoryPercent: 80, ResumeMemoryPercent: 80},
			wantErr: "--resume-memory-percent 80 must be below --pause-memory-percent 80"},
		{name: "resume memory above pause", th: servingstate.Thresholds{PauseMemoryPercent: 80, ResumeMemoryPercent: 90},
			wantErr: "--resume-memory-percent 90"},
		{name: "pause memory over 100", th: servingstate.Thresholds{PauseMemoryPercent: 120}, wantErr: "--pause-memory-percent 120"},
		{name: "pause memory negative", th: servingstate.Thresholds{PauseMemoryPercent: -5}, wantErr: "--pause-memory-percent -5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			th := tc.th
			err := th.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if tc.check != nil {
					tc.check(t, th)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate(%+v) = %v, want an error containing %q", tc.th, err, tc.wantErr)
			}
		})
	}
}

func TestEffectiveIsMoreRestrictive(t *testing.T) {
	cases := []struct {
		name     string
		queued   int // 20 means measured PUSH_PAUSED
		override messages.ServingState
		force    bool
		want     messages.ServingState
	}{
		{"override more restrictive than none", 0, push, false, push},
		{"override dispatch pause over none", 0, both, false, both},
		{"override dispatch pause over push", 20, both, false, both},
		{"override equal to measured", 20, push, false, push},
		{"override none under none", 0, none, false, none},
		{"forced none under pressure wins", 20, none, true, none},
		{"forced more restrictive applies", 0, both, true, both},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newController(t)
			c.Measure(servingstate.Sample{Queued: tc.queued}, epoch)
			if _, err := c.Set(st(tc.override), 0, tc.force, "test", epoch); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if got := c.Effective(epoch.Add(time.Hour)); got != tc.want {
				t.Fatalf("Effective = %s, want %s", got, tc.want)
			}
		})
	}

	t.Run("unforced override follows later pressure", func(t *testing.T) {
		c := newController(t)
		c.Measure(servingstate.Sample{}, epoch)
		if _, err := c.Set(st(none), 0, false, "test", epoch); err != nil {
			t.Fatalf("Set: %v", err)
		}
		c.Measure(servingstate.Sample{Queued: 50}, epoch.Add(time.Second))
		if got := c.Effective(epoch.Add(time.Second)); got != push {
			t.Fatalf("Effective = %s under pressure with an unforced NONE_PAUSED override, want PUSH_PAUSED", got)
		}
	})
}

func TestOverrideHidingPressure(t *testing.T) {
	c := newController(t)
	c.Measure(servingstate.Sample{Queued: 50}, epoch)

	_, err := c.Set(st(none), 0, false, "test", epoch)
	var hp *servingstate.ErrHidesPressure
	if !errors.As(err, &hp) {
		t.Fatalf("unforced NONE_PAUSED under pressure: %v, want *ErrHidesPressure", err)
	}
	if hp.Measured != push || hp.Asked != none {
		t.Errorf("ErrHidesPressure = %+v", hp)
	}
	for _, w := range []string{"PUSH_PAUSED", "NONE_PAUSED", "force=true"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not mention %s", err, w)
		}
	}
	if v := c.Snapshot(epoch); v.OverrideActive {
		t.Fatalf("a refused override was installed: %+v", v)
	}
	if got := c.Effective(epoch); got != push {
		t.Fatalf("Effective = %s after a refused override, want PUSH_PAUSED", got)
	}

	msg, err := c.Set(st(none), 0, true, "test", epoch)
	if err != nil {
		t.Fatalf("forced override: %v", err)
	}
	if !strings.Contains(msg, "Forced below the measured PUSH_PAUSED") {
		t.Errorf("forced message %q does not say it is below the measured state", msg)
	}
	if got := c.Effective(epoch); got != none {
		t.Fatalf("Effective = %s with forced NONE_PAUSED, want NONE_PAUSED", got)
	}
	v := c.Snapshot(epoch)
	if !v.OverrideActive || !v.OverrideForced || v.Override != "NONE_PAUSED" || v.Measured != "PUSH_PAUSED" {
		t.Fatalf("snapshot %+v", v)
	}
	if !strings.Contains(v.Text(), ", forced") {
		t.Errorf("Text() does not show the override is forced:\n%s", v.Text())
	}
}

func TestOverrideTimeout(t *testing.T) {
	c := newController(t)
	c.Measure(servingstate.Sample{}, epoch)
	msg, err := c.Set(st(both), time.Minute, false, "test", epoch)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if !strings.Contains(msg, "PUSH_AND_DISPATCH_PAUSED") {
		t.Errorf("message %q", msg)
	}
	steps := []struct {
		at     time.Duration
		want   messages.ServingState
		active bool
	}{
		{0, both, true},
		{59 * time.Second, both, true},
		{time.Minute - time.Nanosecond, both, true},
		{time.Minute, none, false},
		{2 * time.Minute, none, false},
	}
	for _, s := range steps {
		now := epoch.Add(s.at)
		if got := c.Effective(now); got != s.want {
			t.Fatalf("at +%s: Effective = %s, want %s", s.at, got, s.want)
		}
		v := c.Snapshot(now)
		if v.OverrideActive != s.active {
			t.Fatalf("at +%s: override active = %v, want %v", s.at, v.OverrideActive, s.active)
		}
		if s.active && v.OverrideClearsAt.IsZero() {
			t.Fatalf("at +%s: snapshot has no clearing time", s.at)
		}
	}
	// Once a tick has cleared it, it stays cleared, even read at an earlier time.
	c.Measure(servingstate.Sample{}, epoch.Add(2*time.Minute))
	if got := c.Effective(epoch); got != none {
		t.Fatalf("expired override came back: %s", got)
	}
}

func TestOverrideWithoutTimeoutStays(t *testing.T) {
	c := newController(t)
	msg, err := c.Set(st(push), 0, false, "test", epoch)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if !strings.Contains(msg, "stays until cleared") {
		t.Errorf("message %q does not say the override stays", msg)
	}
	if got := c.Effective(epoch.Add(1000 * time.Hour)); got != push {
		t.Fatalf("override without timeout gone after 1000h: %s", got)
	}
	if !strings.Contains(c.Snapshot(epoch).Text(), "until cleared") {
		t.Errorf("Text() does not say until cleared:\n%s", c.Snapshot(epoch).Text())
	}
}

func TestClearWithNil(t *testing.T) {
	c := newController(t)
	if _, err := c.Set(st(both), 0, false, "test", epoch); err != nil {
		t.Fatalf("Set: %v", err)
	}
	msg, err := c.Set(nil, 0, false, "test", epoch)
	if err != nil {
		t.Fatalf("clear: %v", err)
	}
	if msg != "Override cleared. Current state: NONE_PAUSED" {
		t.Errorf("clear message %q, want the contract's %q", msg, "Override cleared. Current state: NONE_PAUSED")
	}
	if v := c.Snapshot(epoch); v.OverrideActive || v.Current != "NONE_PAUSED" {
		t.Fatalf("after clear: %+v", v)
	}
	// Clearing when nothing is set is fine too.
	if _, err := c.Set(nil, 0, false, "test", epoch); err != nil {
		t.Fatalf("second clear: %v", err)
	}
	// A negative timeout is refused.
	if _, err := c.Set(st(push), -time.Second, false, "test", epoch); err == nil {
		t.Fatal("negative timeout accepted")
	}
}

// Clearing an override re-derives the hysteresis flags from the last
// sample, so a queue between resume and pause does not stay paused only
// because it was paused before the override.
func TestClearResetsHysteresisFromMeasurement(t *testing.T) {
	c := newController(t)
	c.Measure(servingstate.Sample{Queued: 50}, epoch) // paused
	if _, err := c.Set(st(none), 0, true, "test", epoch); err != nil {
		t.Fatalf("Set: %v", err)
	}
	c.Measure(servingstate.Sample{Queued: 7}, epoch.Add(time.Second)) // between resume and pause: still paused
	if c.Measured() != push {
		t.Fatalf("measured %s, want PUSH_PAUSED by hysteresis", c.Measured())
	}
	if _, err := c.Set(nil, 0, false, "test", epoch.Add(2*time.Second)); err != nil {
		t.Fatalf("clear: %v", err)
	}
	if got := c.Measured(); got != none {
		t.Fatalf("after clear, measured %s with queued 7 < pause 10; want NONE_PAUSED", got)
	}
}

// An expired override is cleared (by the measuring tick, and perhaps by
// readers); that must never wipe a newer override set at the same moment
// (compare-and-swap, not a blind store of nil).
func TestExpiryRacingNewSet(t *testing.T) {
	for i := 0; i < 1000; i++ {
		c := newController(t)
		t0 := epoch.Add(time.Duration(i) * time.Hour)
		if _, err := c.Set(st(push), time.Second, false, "old", t0); err != nil {
			t.Fatalf("Set old: %v", err)
		}
		later := t0.Add(2 * time.Second) // past the old deadline
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for k := 0; k < 5; k++ {
					c.Effective(later)
					c.Snapshot(later)
					c.Measure(servingstate.Sample{}, later)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := c.Set(st(both), time.Hour, false, "new", later); err != nil {
				t.Errorf("Set new: %v", err)
			}
		}()
		close(start)
		wg.Wait()
		v := c.Snapshot(later)
		if !v.OverrideActive || v.Override != "PUSH_AND_DISPATCH_PAUSED" {
			t.Fatalf("iteration %d: the newer override was wiped by the expiry of the old one: %+v", i, v)
		}
		if got := c.Effective(later); got != both {
			t.Fatalf("iteration %d: Effective = %s, want PUSH_AND_DISPATCH_PAUSED", i, got)
		}
	}
}

func TestTextMatchesContractTranscript(t *testing.T) {
	th := servingstate.Thresholds{PauseQueued: 10000}
	if err := th.Validate(); err != nil {
		t.Fatal(err)
	}
	c := servingstate.New(th)
	set := epoch
	c.Measure(servingstate.Sample{Queued: 12, MemoryPercent: 31}, set)
	if _, err := c.Set(st(push), time.Minute, false, "test", set); err != nil {
		t.Fatalf("Set: %v", err)
	}
	got := c.Snapshot(set.Add(19 * time.Second)).Text()
	want := "Current state: PUSH_PAUSED\n" +
		"Measured state: NONE_PAUSED (queued 12 / pause at 10000; memory 31% / pause at 85%)\n" +
		"Override: PUSH_PAUSED, set 2026-11-22T12:00:00Z, clears in 41s\n"
	if got != want {
		t.Fatalf("Text():\n%s\nwant (docs/contract.md, Serving states):\n%s", got, want)
	}

	c2 := servingstate.New(th)
	c2.Measure(servingstate.Sample{Queued: 3, MemoryPercent: 12.4}, set)
	got = c2.Snapshot(set).Text()
	want = "Current state: NONE_PAUSED\n" +
		"Measured state: NONE_PAUSED (queued 3 / pause at 10000; memory 12% / pause at 85%)\n" +
		"Override: none\n"
	if got != want {
		t.Fatalf("Text() without override:\n%s\nwant:\n%s", got, want)
	}
}

// The POST answers of the transcript in docs/contract.md, Serving states.
func TestSetMessagesMatchContractTranscript(t *testing.T) {
	c := newController(t)
	msg, err := c.Set(st(push), time.Minute, false, "test", epoch)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if want := "Serving state forced to PUSH_PAUSED; the override clears itself after 1m."; msg != want {
		t.Errorf("Set message %q, want the contract's %q", msg, want)
	}
	msg, err = c.Set(st(push), 30*time.Second, false, "test", epoch)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if want := "Serving state forced to PUSH_PAUSED; the override clears itself after 30s."; msg != want {
		t.Errorf("Set message %q, want %q", msg, want)
	}
}

func TestParseRequest(t *testing.T) {
	cases := []struct {
		name, state, timeout, force string
		wantState                   *messages.ServingState
		wantTimeout                 time.Duration
		wantForce                   bool
		wantErr                     string
	}{
		{name: "state only", state: "PUSH_PAUSED", wantState: st(push)},
		{name: "lower case", state: "push_and_dispatch_paused", wantState: st(both)},
		{name: "celeborn name", state: "PUSH_AND_REPLICATE_PAUSED", wantState: st(both)},
		{name: "empty clears", state: ""},
		{name: "blank clears", state: "  "},
		{name: "timeout", state: "NONE_PAUSED", timeout: "1m", wantState: st(none), wantTimeout: time.Minute},
		{name: "millis", state: "PUSH_PAUSED", timeout: "500ms", wantState: st(push), wantTimeout: 500 * time.Millisecond},
		{name: "force true", state: "NONE_PAUSED", force: "true", wantState: st(none), wantForce: true},
		{name: "force 1", state: "NONE_PAUSED", force: "1", wantState: st(none), wantForce: true},
		{name: "force yes", state: "NONE_PAUSED", force: "YES", wantState: st(none), wantForce: true},
		{name: "force false", state: "NONE_PAUSED", force: "false", wantState: st(none)},

		{name: "invalid state", state: "INVALID",
			wantErr: "Invalid state 'INVALID'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED"},
		{name: "invalid state X", state: "X",
			wantErr: "Invalid state 'X'. Legal values: PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED"},
		{name: "timeout 1k", state: "PUSH_PAUSED", timeout: "1k",
			wantErr: "Invalid timeout '1k'. Use a positive Go duration like 30s, 1m or 500ms"},
		{name: "timeout unitless", state: "PUSH_PAUSED", timeout: "30", wantErr: "Invalid timeout '30'"},
		{name: "timeout negative", state: "PUSH_PAUSED", timeout: "-5s", wantErr: "Invalid timeout '-5s'"},
		{name: "timeout zero", state: "PUSH_PAUSED", timeout: "0s", wantErr: "Invalid timeout '0s'"},
		{name: "bad force", state: "PUSH_PAUSED", force: "maybe", wantErr: "Invalid force 'maybe'. Use true or false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, d, f, err := servingstate.ParseRequest(tc.state, tc.timeout, tc.force)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRequest(%q, %q, %q) error = %v, want %q", tc.state, tc.timeout, tc.force, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if (s == nil) != (tc.wantState == nil) || (s != nil && *s != *tc.wantState) {
				t.Errorf("state = %v, want %v", s, tc.wantState)
			}
			if d != tc.wantTimeout || f != tc.wantForce {
				t.Errorf("timeout, force = %s, %v; want %s, %v", d, f, tc.wantTimeout, tc.wantForce)
			}
		})
	}
}

func TestPausedSecondsByCause(t *testing.T) {
	c := newController(t)
	c.Measure(servingstate.Sample{Queued: 50}, epoch)                  // queue paused from here
	c.Measure(servingstate.Sample{Queued: 50}, epoch.Add(time.Second)) // +1s queue
	if _, err := c.Set(st(both), 0, false, "test", epoch.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	c.Measure(servingstate.Sample{Queued: 0, MemoryPercent: 95}, epoch.Add(3*time.Second)) // +2s queue, +2s override
	c.Measure(servingstate.Sample{}, epoch.Add(4*time.Second))                             // +1s memory, +1s override
	v := c.Snapshot(epoch.Add(4 * time.Second))
	want := map[string]float64{"queue": 3, "memory": 1, "override": 3}
	for k, w := range want {
		if v.PausedSeconds[k] != w {
			t.Errorf("paused_seconds[%s] = %g, want %g (all: %v)", k, v.PausedSeconds[k], w, v.PausedSeconds)
		}
	}
}

// Reading (Effective, Snapshot, a metrics scrape) never changes state: an
// override read past its deadline is ignored, not removed; the measuring
// tick removes it.
func TestReadsNeverClearAnOverride(t *testing.T) {
	c := newController(t)
	if _, err := c.Set(st(push), time.Second, false, "test", epoch); err != nil {
		t.Fatal(err)
	}
	late := epoch.Add(time.Minute)
	if got := c.Effective(late); got != none {
		t.Fatalf("Effective past the deadline = %s, want NONE_PAUSED", got)
	}
	if v := c.Snapshot(late); v.OverrideActive {
		t.Fatalf("Snapshot past the deadline shows the override active")
	}
	// Read at an earlier time, the override is still there: nothing was
	// cleared by the reads.
	if got := c.Effective(epoch); got != push {
		t.Fatalf("reads past the deadline cleared the override: Effective at set time = %s", got)
	}
	c.Measure(servingstate.Sample{}, late)
	if got := c.Effective(epoch); got != none {
		t.Fatalf("Measure past the deadline did not clear the override")
	}
}
