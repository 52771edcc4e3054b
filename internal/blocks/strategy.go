package blocks

import (
	"fmt"
	"sort"
	"time"
)

// State is a block's state as users see it.
type State int

const (
	Pending  State = iota // submitted (or being submitted), not started
	Running               // its job runs or one of its managers registered
	Draining              // told to finish its tasks and exit
	Done
	Failed
)

var stateNames = [...]string{"pending", "running", "draining", "done", "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

func (s State) ended() bool { return s == Done || s == Failed }

// BlockInfo is what the strategy knows of one live block.
type BlockInfo struct {
	ID          string
	State       State // Pending, Running or Draining
	SubmittedAt time.Time
	StartedAt   time.Time // zero until it runs
	DrainedAt   time.Time // zero unless Draining
	Managers    int       // registered managers of the block
	// Busy: some manager of the block holds a task.
	Busy bool
	// IdleSince: when the block last became idle (no task held); for a
	// running block without managers, when it started.
	IdleSince time.Time
}

// Input is everything Decide looks at.
type Input struct {
	Now    time.Time
	Queued int // tasks waiting for a manager
	// Free is the free capacity of the registered managers (all of them,
	// in blocks or not).
	Free int
	// BlockCapacity is what one block adds: nodes × workers.
	BlockCapacity int
	Blocks        []BlockInfo
	// Started: the init blocks were submitted already.
	Started bool
	// Failures in a row (blocks that failed to start) and the last one.
	Failures    int
	LastFailure time.Time
}

// Kind of a decision.
type Kind int

const (
	Submit  Kind = iota // start Count new blocks
	Drain               // tell Block's managers to finish and exit
	Cancel              // cancel Block's job
	Replace             // drain Block (near its walltime) and start one in its place
	Backoff             // blocks are needed but starts failed: wait
)

var kindNames = [...]string{"submit", "drain", "cancel", "replace", "backoff"}

func (k Kind) String() string { return kindNames[k] }

// Decision is one action, with the reason the strategy took it.
type Decision struct {
	Kind   Kind
	Count  int    // Submit
	Block  string // Drain, Cancel, Replace
	Reason string
}

// BackoffDelay is the wait after failures block starts failed in a row.
func BackoffDelay(cfg *Config, failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := cfg.BackoffBase
	for i := 1; i < failures && d < cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, cfg.BackoffMax)
}

// Decide is the scaling strategy. It is a pure function of its input.
//
//   - At start, init blocks (at least min).
//   - Fewer than min blocks: submit up to min.
//   - Queued tasks beyond the free and pending capacity: submit enough
//     blocks for them, up to max (draining blocks do not count).
//   - A running block within the walltime margin of its end: replaced
//     (drained, and a new one submitted when it is busy or min needs it)
//     before the scheduler kills it.
//   - Blocks idle for max-idle with nothing queued: drained, longest idle
//     first, down to min. Pending blocks not needed for that long are
//     cancelled.
//   - A draining block is cancelled once its managers (draining ones
//     included) have exited, or at its walltime; without a walltime,
//     after the drain timeout.
//   - After a block failed to start, no submission until the back-off
//     (doubling per failure in a row) has passed.
func Decide(cfg *Config, in Input) []Decision {
	var out []Decision
	var pending, running []BlockInfo
	for _, b := range in.Blocks {
		switch b.State {
		case Pending:
			pending = append(pending, b)
		case Running:
			running = append(running, b)
		case Draining:
			// Draining managers still count: the block ends when they have
			// exited, or when its running tasks can no longer finish.
			switch {
			case b.Managers == 0 && !b.StartedAt.IsZero():
				out = append(out, Decision{Kind: Cancel, Block: b.ID, Reason: "draining block has no managers left"})
			case cfg.Walltime > 0 && !b.StartedAt.IsZero():
				if !in.Now.Before(b.StartedAt.Add(cfg.Walltime)) {
					out = append(out, Decision{Kind: Cancel, Block: b.ID, Reason: fmt.Sprintf("walltime reached with %d managers still draining", b.Managers)})
				}
			case in.Now.Sub(b.DrainedAt) >= cfg.DrainTimeout:
				out = append(out, Decision{Kind: Cancel, Block: b.ID, Reason: fmt.Sprintf("drain not finished after %s", cfg.DrainTimeout)})
			}
		}
	}
	active := len(pending) + len(running)

	// Walltime: replace blocks about to be killed.
	var replaced []string
	if cfg.Walltime > 0 {
		for _, b := range running {
			if b.StartedAt.IsZero() || in.Now.Before(b.StartedAt.Add(cfg.Walltime-cfg.WalltimeMargin)) {
				continue
			}
			replaced = append(replaced, b.ID)
			left := b.StartedAt.Add(cfg.Walltime).Sub(in.Now).Round(time.Second)
			if b.Busy || in.Queued > 0 || active-len(replaced) < cfg.MinBlocks {
				out = append(out, Decision{Kind: Replace, Block: b.ID, Reason: fmt.Sprintf("walltime ends in %s", left)})
			} else {
				out = append(out, Decision{Kind: Drain, Block: b.ID, Reason: fmt.Sprintf("walltime ends in %s; idle, not replaced", left)})
			}
		}
	}
	isReplaced := func(id string) bool {
		for _, r := range replaced {
			if r == id {
				return true
			}
		}
		return false
	}
	// Replacements count as pending blocks from here on.
	pendingCap := (len(pending) + countReplace(out)) * in.BlockCapacity
	slots := cfg.MaxBlocks - active // a replaced block is still active, its replacement too
	if slots < 0 {
		slots = 0
	}

	backedOff := in.Failures > 0 && in.Now.Before(in.LastFailure.Add(BackoffDelay(cfg, in.Failures)))
	want := 0
	why := ""
	if !in.Started && cfg.InitBlocks > 0 {
		want, why = cfg.InitBlocks, fmt.Sprintf("init-blocks %d", cfg.InitBlocks)
	}
	if n := cfg.MinBlocks - active; n > want {
		want, why = n, fmt.Sprintf("%d blocks, min-blocks %d", active, cfg.MinBlocks)
	}
	if short := in.Queued - in.Free - pendingCap; short > 0 && in.BlockCapacity > 0 {
		n := (short + in.BlockCapacity - 1) / in.BlockCapacity
		if n > want {
			want, why = n, fmt.Sprintf("%d tasks queued, %d free and %d pending capacity", in.Queued, in.Free, pendingCap)
		}
	}
	if want > slots {
		want = slots
	}
	if want > 0 {
		if backedOff {
			wait := in.LastFailure.Add(BackoffDelay(cfg, in.Failures)).Sub(in.Now).Round(time.Second)
			out = append(out, Decision{Kind: Backoff, Count: want, Reason: fmt.Sprintf("%s, but %d block starts failed in a row: next try in %s", why, in.Failures, wait)})
		} else {
			out = append(out, Decision{Kind: Submit, Count: want, Reason: why})
		}
	}

	// Scale in: only with nothing queued.
	if in.Queued == 0 && cfg.MaxIdle >= 0 {
		keep := active - len(replaced)
		idle := make([]BlockInfo, 0, len(running))
		for _, b := range running {
			if !isReplaced(b.ID) && !b.Busy && !b.IdleSince.IsZero() && in.Now.Sub(b.IdleSince) >= cfg.MaxIdle {
				idle = append(idle, b)
			}
		}
		sort.Slice(idle, func(i, j int) bool { return idle[i].IdleSince.Before(idle[j].IdleSince) })
		// Pending blocks go first: nothing runs on them yet.
		sort.Slice(pending, func(i, j int) bool { return pending[i].SubmittedAt.After(pending[j].SubmittedAt) })
		for _, b := range pending {
			if keep <= cfg.MinBlocks {
				break
			}
			if in.Now.Sub(b.SubmittedAt) >= cfg.MaxIdle {
				out = append(out, Decision{Kind: Cancel, Block: b.ID, Reason: fmt.Sprintf("pending %s with nothing queued", in.Now.Sub(b.SubmittedAt).Round(time.Second))})
				keep--
			}
		}
		for _, b := range idle {
			if keep <= cfg.MinBlocks {
				break
			}
			out = append(out, Decision{Kind: Drain, Block: b.ID, Reason: fmt.Sprintf("idle for %s (max-idle %s)", in.Now.Sub(b.IdleSince).Round(time.Second), cfg.MaxIdle)})
			keep--
		}
	}
	return out
}

func countReplace(ds []Decision) int {
	n := 0
	for _, d := range ds {
		if d.Kind == Replace {
			n++
		}
	}
	return n
}
