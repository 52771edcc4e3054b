// Package servingstate decides whether a daemon accepts and dispatches work:
// a measured state from pressure with hysteresis, an operator override
// with an optional self-clearing deadline, and the more restrictive of the
// two as the effective state.
package servingstate

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Thresholds of pressure; pause at or above Pause*, resume below Resume*.
type Thresholds struct {
	PauseQueued         int
	ResumeQueued        int
	PauseMemoryPercent  float64
	ResumeMemoryPercent float64
}

// Defaults for an interchange; a manager uses the same numbers.
const (
	DefaultPauseQueued         = 100000
	DefaultResumeQueued        = 80000
	DefaultPauseMemoryPercent  = 85
	DefaultResumeMemoryPercent = 75
)

// Validate fills defaults and refuses resume >= pause.
func (t *Thresholds) Validate() error {
	if t.PauseQueued == 0 {
		t.PauseQueued = DefaultPauseQueued
	}
	if t.ResumeQueued == 0 {
		t.ResumeQueued = t.PauseQueued * 8 / 10
	}
	if t.PauseMemoryPercent == 0 {
		t.PauseMemoryPercent = DefaultPauseMemoryPercent
	}
	if t.ResumeMemoryPercent == 0 {
		t.ResumeMemoryPercent = t.PauseMemoryPercent - 10
	}
	if t.PauseQueued < 1 {
		return fmt.Errorf("--pause-queued-tasks %d must be at least 1", t.PauseQueued)
	}
	if t.ResumeQueued < 0 || t.ResumeQueued >= t.PauseQueued {
		return fmt.Errorf("--resume-queued-tasks %d must be below --pause-queued-tasks %d", t.ResumeQueued, t.PauseQueued)
	}
	if t.PauseMemoryPercent <= 0 || t.PauseMemoryPercent > 100 {
		return fmt.Errorf("--pause-memory-percent %g must be in (0, 100]", t.PauseMemoryPercent)
	}
	if t.ResumeMemoryPercent < 0 || t.ResumeMemoryPercent >= t.PauseMemoryPercent {
		return fmt.Errorf("--resume-memory-percent %g must be below --pause-memory-percent %g", t.ResumeMemoryPercent, t.PauseMemoryPercent)
	}
	return nil
}

// Sample is one reading of pressure.
type Sample struct {
	Queued        int
	MemoryPercent float64
}

// Override is one operator decision, swapped in whole.
type Override struct {
	State    messages.ServingState
	Force    bool
	SetAt    time.Time
	Deadline time.Time // zero: until cleared; carries the monotonic clock
	Who      string
}

// Controller holds the measured state and the override. Safe for
// concurrent use; reading never changes state.
type Controller struct {
	th       Thresholds
	override atomic.Pointer[Override]

	mu          sync.Mutex
	last        Sample
	queuePaused bool
	memPaused   bool
	lastTick    time.Time
	pausedFor   map[string]time.Duration
}

// New returns a controller; th must have been validated.
func New(th Thresholds) *Controller {
	return &Controller{th: th, pausedFor: map[string]time.Duration{}}
}

// Thresholds returns the configured thresholds.
func (c *Controller) Thresholds() Thresholds { return c.th }

// Measure takes a new sample and returns the measured state.
func (c *Controller) Measure(s Sample, now time.Time) messages.ServingState {
	c.expire(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lastTick.IsZero() {
		d := now.Sub(c.lastTick)
		if c.queuePaused {
			c.pausedFor["queue"] += d
		}
		if c.memPaused {
			c.pausedFor["memory"] += d
		}
		if o := c.override.Load(); o != nil && o.State != messages.NonePaused {
			c.pausedFor["override"] += d
		}
	}
	c.lastTick = now
	c.last = s
	c.queuePaused = hysteresis(c.queuePaused, float64(s.Queued), float64(c.th.PauseQueued), float64(c.th.ResumeQueued))
	c.memPaused = hysteresis(c.memPaused, s.MemoryPercent, c.th.PauseMemoryPercent, c.th.ResumeMemoryPercent)
	return c.measuredLocked()
}

// MeasureQueue takes a new queue length between samples (with the last
// memory reading), so a queue that fills between two ticks pauses at once.
func (c *Controller) MeasureQueue(queued int, now time.Time) messages.ServingState {
	c.mu.Lock()
	s := c.last
	c.mu.Unlock()
	s.Queued = queued
	return c.Measure(s, now)
}

func hysteresis(paused bool, v, pause, resume float64) bool {
	if paused {
		return v >= resume
	}
	return v >= pause
}

func (c *Controller) measuredLocked() messages.ServingState {
	if c.queuePaused || c.memPaused {
		return messages.PushPaused
	}
	return messages.NonePaused
}

// Measured is the state pressure alone asks for.
func (c *Controller) Measured() messages.ServingState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.measuredLocked()
}

// activeOverride returns the override in force. It only reads: an expired
// override is ignored here and cleared by the next Measure.
func (c *Controller) activeOverride(now time.Time) *Override {
	o := c.override.Load()
	if o == nil || (!o.Deadline.IsZero() && !now.Before(o.Deadline)) {
		return nil
	}
	return o
}

// expire clears an expired override, only if it is still the same record,
// so an expiry never wipes a newer override.
func (c *Controller) expire(now time.Time) {
	o := c.override.Load()
	if o != nil && !o.Deadline.IsZero() && !now.Before(o.Deadline) && c.override.CompareAndSwap(o, nil) {
		c.resetHysteresis()
	}
}

// resetHysteresis restarts the flags from the last measurement.
func (c *Controller) resetHysteresis() {
	c.mu.Lock()
	c.queuePaused = float64(c.last.Queued) >= float64(c.th.PauseQueued)
	c.memPaused = c.last.MemoryPercent >= c.th.PauseMemoryPercent
	c.mu.Unlock()
}

// Effective is the more restrictive of measured and override; a forced
// override wins outright.
func (c *Controller) Effective(now time.Time) messages.ServingState {
	m := c.Measured()
	o := c.activeOverride(now)
	if o == nil {
		return m
	}
	if o.Force || o.State > m {
		return o.State
	}
	return m
}

// ErrHidesPressure refuses an unforced override less restrictive than the
// measured state.
type ErrHidesPressure struct{ Measured, Asked messages.ServingState }

func (e *ErrHidesPressure) Error() string {
	return fmt.Sprintf("measured state is %s; an override to %s would hide real pressure. Send force=true to apply it anyway", e.Measured, e.Asked)
}

// Set installs an override (state nil clears it) and says what it did.
func (c *Controller) Set(state *messages.ServingState, timeout time.Duration, force bool, who string, now time.Time) (string, error) {
	if timeout < 0 {
		//lint:ignore ST1005 the operator-facing wording of docs/contract.md, Serving states
		return "", fmt.Errorf("Invalid timeout '%s'. Use a positive Go duration like 30s, 1m or 500ms", timeout)
	}
	if state == nil {
		old := c.override.Swap(nil)
		if old != nil {
			c.resetHysteresis()
		}
		return fmt.Sprintf("Override cleared. Current state: %s", c.Effective(now)), nil
	}
	m := c.Measured()
	if *state < m && !force {
		return "", &ErrHidesPressure{Measured: m, Asked: *state}
	}
	o := &Override{State: *state, Force: force, SetAt: now, Who: who}
	if timeout > 0 {
		o.Deadline = now.Add(timeout)
	}
	c.override.Store(o)
	msg := fmt.Sprintf("Serving state forced to %s", *state)
	if timeout > 0 {
		msg += fmt.Sprintf("; the override clears itself after %s.", ShortDuration(timeout))
	} else {
		msg += "; the override stays until cleared with an empty state."
	}
	if force && *state < m {
		msg += fmt.Sprintf(" Forced below the measured %s.", m)
	}
	return msg, nil
}

// View is the full picture for GET /servingState and metrics.
type View struct {
	Current          string    `json:"current_state"`
	Measured         string    `json:"measured_state"`
	Queued           int       `json:"queued"`
	PauseQueued      int       `json:"pause_queued_tasks"`
	ResumeQueued     int       `json:"resume_queued_tasks"`
	MemoryPercent    float64   `json:"memory_percent"`
	PauseMemory      float64   `json:"pause_memory_percent"`
	ResumeMemory     float64   `json:"resume_memory_percent"`
	OverrideActive   bool      `json:"override_active"`
	Override         string    `json:"override,omitempty"`
	OverrideForced   bool      `json:"override_forced,omitempty"`
	OverrideSetAt    time.Time `json:"override_set_at,omitzero"`
	OverrideClearsAt time.Time `json:"override_clears_at,omitzero"`
	OverrideClearsIn string    `json:"override_clears_in,omitempty"`

	PausedSeconds map[string]float64 `json:"paused_seconds"`
}

// Snapshot reads everything at once.
func (c *Controller) Snapshot(now time.Time) View {
	o := c.activeOverride(now)
	v := View{Current: c.Effective(now).String()}
	c.mu.Lock()
	v.Measured = c.measuredLocked().String()
	v.Queued, v.MemoryPercent = c.last.Queued, c.last.MemoryPercent
	v.PausedSeconds = make(map[string]float64, len(c.pausedFor))
	for k, d := range c.pausedFor {
		v.PausedSeconds[k] = d.Seconds()
	}
	c.mu.Unlock()
	v.PauseQueued, v.ResumeQueued = c.th.PauseQueued, c.th.ResumeQueued
	v.PauseMemory, v.ResumeMemory = c.th.PauseMemoryPercent, c.th.ResumeMemoryPercent
	if o != nil {
		v.OverrideActive = true
		v.Override = o.State.String()
		v.OverrideForced = o.Force
		v.OverrideSetAt = o.SetAt.UTC().Round(time.Second)
		if !o.Deadline.IsZero() {
			v.OverrideClearsAt = o.Deadline.UTC().Round(time.Millisecond)
			v.OverrideClearsIn = ShortDuration(o.Deadline.Sub(now).Round(time.Second))
		}
	}
	return v
}

// Text renders a view the way an operator reads it.
func (v View) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Current state: %s\n", v.Current)
	fmt.Fprintf(&b, "Measured state: %s (queued %d / pause at %d; memory %.0f%% / pause at %.0f%%)\n",
		v.Measured, v.Queued, v.PauseQueued, v.MemoryPercent, v.PauseMemory)
	if !v.OverrideActive {
		b.WriteString("Override: none\n")
		return b.String()
	}
	fmt.Fprintf(&b, "Override: %s, set %s", v.Override, v.OverrideSetAt.Format(time.RFC3339))
	if v.OverrideForced {
		b.WriteString(", forced")
	}
	if v.OverrideClearsIn != "" {
		fmt.Fprintf(&b, ", clears in %s", v.OverrideClearsIn)
	} else {
		b.WriteString(", until cleared")
	}
	b.WriteString("\n")
	return b.String()
}

// ParseRequest reads the state/timeout/force fields of a POST.
func ParseRequest(state, timeout, force string) (*messages.ServingState, time.Duration, bool, error) {
	var st *messages.ServingState
	if strings.TrimSpace(state) != "" {
		s, err := messages.ParseServingState(state)
		if err != nil {
			return nil, 0, false, err
		}
		st = &s
	}
	var d time.Duration
	if timeout != "" {
		var err error
		d, err = time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			//lint:ignore ST1005 the operator-facing wording of docs/contract.md, Serving states
			return nil, 0, false, fmt.Errorf("Invalid timeout '%s'. Use a positive Go duration like 30s, 1m or 500ms", timeout)
		}
	}
	f := false
	switch strings.ToLower(force) {
	case "", "false", "0", "no":
	case "true", "1", "yes":
		f = true
	default:
		//lint:ignore ST1005 the operator-facing wording of docs/contract.md, Serving states
		return nil, 0, false, fmt.Errorf("Invalid force '%s'. Use true or false", force)
	}
	return st, d, f, nil
}

func parseQuiet(s string) (messages.ServingState, error) { return messages.ParseServingState(s) }

// ShortDuration prints 1m rather than 1m0s.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
