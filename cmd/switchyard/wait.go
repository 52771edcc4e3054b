package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/messages"
)

// progress draws one line of states and rate on stderr.
type progress struct {
	w     io.Writer
	total int
	start time.Time
	tty   bool
	last  time.Time
}

func newProgress(total int) *progress {
	fi, err := os.Stderr.Stat()
	tty := err == nil && fi.Mode()&os.ModeCharDevice != 0
	return &progress{w: os.Stderr, total: total, start: time.Now(), tty: tty}
}

func (p *progress) draw(counts map[string]int, final bool) {
	now := time.Now()
	if !final && !p.tty && now.Sub(p.last) < 2*time.Second {
		return
	}
	p.last = now
	done := counts["success"] + counts["failed"] + counts["cancelled"]
	const width = 30
	fill := 0
	if p.total > 0 {
		fill = done * width / p.total
	}
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	line := fmt.Sprintf("[%s%s] %d/%d %.0f tasks/s  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		done, p.total, rate, strings.Join(parts, " "))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		if final {
			fmt.Fprintln(p.w)
		}
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// errUnfinished says a wait ended (timeout, Ctrl-C) with tasks not ended;
// pending holds their ids in the order given.
type errUnfinished struct {
	pending []string
	total   int
	cause   error
}

func (e *errUnfinished) Error() string {
	return fmt.Sprintf("%d of %d tasks not finished: %v", len(e.pending), e.total, e.cause)
}
func (e *errUnfinished) Unwrap() error { return e.cause }

// spinner shows one task's state on a terminal while a wait runs.
type spinner struct {
	w     io.Writer
	id    string
	state atomic.Value // string
	stop  chan struct{}
	done  chan struct{}
}

func startSpinner(w io.Writer, id string) *spinner {
	s := &spinner{w: w, id: id, stop: make(chan struct{}), done: make(chan struct{})}
	s.state.Store("...")
	go func() {
		defer close(s.done)
		frames := `|/-\`
		start := time.Now()
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(s.w, "\r\033[K%c %s  %s  %s", frames[i%len(frames)], s.id, s.state.Load(), time.Since(start).Round(time.Second))
			select {
			case <-s.stop:
				fmt.Fprint(s.w, "\r\033[K")
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *spinner) set(state string) { s.state.Store(state) }

func (s *spinner) end() {
	close(s.stop)
	<-s.done
}

func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// waitAll follows ids until every one is terminal, the timeout passes or
// ctx ends. It reads every task once, then only the ends the forwarder
// reports after a cursor (GET /v1/tasks/ended), so waiting on a million
// tasks costs about one small record per task. Unfinished tasks come back
// as an *errUnfinished. The waiter knows ids and states only; fullTasks
// reads the rest.
func waitAll(ctx context.Context, c *client.Client, ids []string, timeout time.Duration, showProgress bool) (*waiter, error) {
	deadline := time.Now().Add(timeout)
	if timeout == 0 {
		deadline = time.Now().Add(100 * 365 * 24 * time.Hour)
	}
	if len(ids) == 1 {
		t, err := waitOne(ctx, c, ids[0], deadline, timeout, showProgress && stderrIsTerminal())
		w := newWaiter(c, ids)
		if t != nil {
			w.ended(t.TaskID, t.State)
		}
		return w, err
	}
	var bar *progress
	if showProgress {
		bar = newProgress(len(ids))
	}
	w := newWaiter(c, ids)
	var cause error
	// The cursor comes first: a task that ends after it is in the
	// journal, one that ended before reads as ended below.
	page, err := c.Ended(ctx, "", 0, 0)
	if err == nil {
		err = w.census(ctx, ids)
	}
	cursor := page.Cursor
	for err == nil && w.pending > 0 {
		if bar != nil {
			bar.draw(w.counts(), false)
		}
		left := time.Until(deadline)
		if left <= 0 {
			cause = fmt.Errorf("timed out after %s", timeout)
			break
		}
		page, err = c.Ended(ctx, cursor, min(left, 5*time.Second), forwarderMaxEnded)
		if err != nil {
			break
		}
		if page.Reset {
			// Too far behind, or the forwarder restarted: read the
			// rest once more, then follow from the new cursor.
			err = w.census(ctx, w.left())
		}
		for _, e := range page.Tasks {
			w.ended(e.TaskID, e.State)
		}
		cursor = page.Cursor
	}
	if ctx.Err() != nil {
		cause, err = ctx.Err(), nil
	}
	if err != nil {
		return nil, err
	}
	if bar != nil {
		bar.draw(w.counts(), true)
	}
	if w.pending > 0 {
		if cause == nil {
			cause = errors.New("stopped")
		}
		return w, &errUnfinished{pending: w.left(), total: len(ids), cause: cause}
	}
	return w, nil
}

// forwarderMaxEnded is the most ends one GET /v1/tasks/ended returns.
const forwarderMaxEnded = 100000

// waiter is what waitAll knows: the final state of each id, by position,
// in a byte; a million ids cost their strings and one map entry each.
type waiter struct {
	c       *client.Client
	ids     []string
	at      map[string]int32
	state   []uint8 // 0 pending, else index+1 in states
	states  []string
	pending int
}

func newWaiter(c *client.Client, ids []string) *waiter {
	w := &waiter{c: c, ids: ids, at: make(map[string]int32, len(ids)), state: make([]uint8, len(ids))}
	for i, id := range ids {
		if _, dup := w.at[id]; !dup {
			w.at[id] = int32(i)
			w.pending++
		}
	}
	return w
}

// ended notes that id ended in state st (ids not waited for are ignored).
func (w *waiter) ended(id, st string) {
	i, ok := w.at[id]
	if !ok || w.state[i] != 0 {
		return
	}
	k := slices.Index(w.states, st)
	if k < 0 {
		if len(w.states) == 255 {
			return
		}
		w.states = append(w.states, st)
		k = len(w.states) - 1
	}
	w.state[i] = uint8(k + 1)
	w.pending--
}

// final is the state id ended in ("" while pending).
func (w *waiter) final(i int) string {
	i = int(w.at[w.ids[i]])
	if w.state[i] == 0 {
		return ""
	}
	return w.states[w.state[i]-1]
}

// tasks is every ended task (id and state), in the order given.
func (w *waiter) tasks() []client.Task {
	out := make([]client.Task, 0, len(w.ids)-w.pending)
	for i, id := range w.ids {
		if st := w.final(i); st != "" {
			out = append(out, client.Task{TaskID: id, State: st})
		}
	}
	return out
}

// census reads which of ids ended; an unknown id is an error.
func (w *waiter) census(ctx context.Context, ids []string) error {
	cs, err := w.c.Census(ctx, ids)
	if err != nil {
		return err
	}
	for _, e := range cs.Ended {
		w.ended(e.TaskID, e.State)
	}
	if unknown := cs.Unknown; len(unknown) > 0 {
		if len(unknown) > 20 {
			unknown = append(unknown[:20], fmt.Sprintf("... (%d in all)", len(unknown)))
		}
		return exitf(exitUsage, "unknown task ids (never submitted, someone else's, or forgotten after the retention time): %s", strings.Join(unknown, " "))
	}
	return nil
}

// left is the pending ids in the order given.
func (w *waiter) left() []string {
	out := make([]string, 0, w.pending)
	for i, id := range w.ids {
		if w.final(i) == "" {
			out = append(out, id)
		}
	}
	return out
}

// counts is how many tasks are in each state, pending included.
func (w *waiter) counts() map[string]int {
	n := make([]int, len(w.states)+1)
	for _, x := range w.state {
		n[x]++
	}
	counts := map[string]int{"pending": w.pending}
	for k, st := range w.states {
		counts[st] += n[k+1]
	}
	return counts
}

// fullTasks reads the whole record of tasks that waitAll returned.
func fullTasks(ctx context.Context, c *client.Client, ts []client.Task) ([]client.Task, error) {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.TaskID
	}
	return c.Status(ctx, ids)
}

// waitOne long-polls one task; on a terminal it shows a spinner with the
// task's state.
func waitOne(ctx context.Context, c *client.Client, id string, deadline time.Time, timeout time.Duration, spin bool) (*client.Task, error) {
	var sp *spinner
	if spin {
		sp = startSpinner(os.Stderr, id)
		defer sp.end()
	}
	// Short polls while a spinner shows the state; long ones otherwise.
	window := 5 * time.Minute
	if spin {
		window = time.Second
	}
	state := string(messages.StateNotFound)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, &errUnfinished{pending: []string{id}, total: 1, cause: fmt.Errorf("timed out after %s; task is %s", timeout, state)}
		}
		t, err := c.Wait(ctx, id, min(left, window))
		if ctx.Err() != nil {
			return nil, &errUnfinished{pending: []string{id}, total: 1, cause: ctx.Err()}
		}
		if err != nil {
			return nil, err
		}
		if t.Terminal() {
			return &t, nil
		}
		state = t.State
		if sp != nil {
			sp.set(state)
		}
	}
}

func newWaitCmd() *cobra.Command {
	var cf clientFlags
	var timeout time.Duration
	var quiet bool
	cmd := &cobra.Command{
		Use:   "wait TASK_ID... | -",
		Short: "Wait until tasks end; shows a progress bar for many tasks",
		Long: `Wait until every task is success, failed or cancelled, then print each
final state. With many tasks a progress bar on stderr shows states and rate;
for one task a spinner shows its state (both only on a terminal, or every
few seconds for the bar when stderr is a file).

Ctrl-C stops waiting (the tasks go on) and prints the ids of the tasks that
had not finished on stdout, so they can be waited for again:

  switchyard submit -e demo --kind noop -n 10000 | switchyard wait -
  ^C ... | switchyard wait -      # or: switchyard tasks --state running --ids

Exit status: 0 when all succeeded, 3 when any failed or was cancelled, 2 on
timeout, 1 for an unknown id, 130 on Ctrl-C.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return exitf(exitUsage, "--timeout must be 0 (wait forever) or more, got %s", timeout)
			}
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w, werr := waitAll(ctx, c, ids, timeout, !quiet)
			var unf *errUnfinished
			if errors.As(werr, &unf) && errors.Is(werr, context.Canceled) {
				fmt.Fprintf(os.Stderr, "interrupted: %d of %d tasks not finished (they go on running); their ids follow on stdout\n",
					len(unf.pending), unf.total)
				for _, id := range unf.pending {
					fmt.Println(id)
				}
				return &exitError{exitInterrupted, fmt.Errorf("interrupted; wait again with: switchyard wait ID... (or pipe the ids above to 'switchyard wait -')")}
			}
			if werr != nil && unf == nil {
				return werr
			}
			counts := w.counts()
			if cf.asJSON {
				ts, err := fullTasks(ctx, c, w.tasks())
				if err != nil {
					return err
				}
				_ = printJSON(map[string]any{"tasks": ts})
			} else if len(ids) <= 100 {
				for _, t := range w.tasks() {
					fmt.Printf("%s  %s\n", t.TaskID, t.State)
				}
			} else {
				fmt.Printf("%d tasks: %d success, %d failed, %d cancelled\n", len(ids), counts["success"], counts["failed"], counts["cancelled"])
			}
			if unf != nil {
				if len(ids) <= 100 {
					for _, id := range unf.pending {
						fmt.Printf("%s  not finished\n", id)
					}
				}
				return &exitError{exitTimeout, werr}
			}
			if counts["success"] != len(w.at) {
				return exitf(exitTaskFailed, "some tasks did not succeed")
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: wait forever)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar or spinner")
	return cmd
}
