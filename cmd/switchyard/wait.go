package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
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

// waitAll polls until every id is terminal or the deadline passes.
func waitAll(ctx context.Context, c *client.Client, ids []string, timeout time.Duration, showProgress bool) ([]client.Task, error) {
	var bar *progress
	if showProgress {
		bar = newProgress(len(ids))
	}
	deadline := time.Now().Add(timeout)
	if len(ids) == 1 {
		for {
			left := time.Until(deadline)
			if timeout == 0 {
				left = 5 * time.Minute
			}
			if left <= 0 {
				break
			}
			t, err := c.Wait(ctx, ids[0], min(left, 5*time.Minute))
			if err != nil {
				return nil, err
			}
			if t.Terminal() {
				return []client.Task{t}, nil
			}
		}
		ts, err := c.Status(ctx, ids)
		if err != nil {
			return nil, err
		}
		return ts, fmt.Errorf("timed out after %s; task is %s", timeout, ts[0].State)
	}
	pending := ids
	final := make(map[string]client.Task, len(ids))
	delay := 20 * time.Millisecond
	for {
		ts, err := c.Status(ctx, pending)
		if err != nil {
			return nil, err
		}
		var still []string
		counts := map[string]int{}
		for _, t := range ts {
			if t.Terminal() {
				final[t.TaskID] = t
			} else {
				still = append(still, t.TaskID)
				counts[t.State]++
			}
		}
		for _, t := range final {
			counts[t.State]++
		}
		pending = still
		if bar != nil {
			bar.draw(counts, len(pending) == 0)
		}
		if len(pending) == 0 {
			break
		}
		if timeout > 0 && time.Now().After(deadline) {
			if bar != nil {
				bar.draw(counts, true)
			}
			break
		}
		time.Sleep(delay)
		delay = min(delay*2, 500*time.Millisecond)
	}
	out := make([]client.Task, 0, len(ids))
	for _, id := range ids {
		if t, ok := final[id]; ok {
			out = append(out, t)
		}
	}
	if len(pending) > 0 {
		return out, fmt.Errorf("timed out after %s with %d of %d tasks not finished", timeout, len(pending), len(ids))
	}
	return out, nil
}

func newWaitCmd() *cobra.Command {
	var cf clientFlags
	var timeout time.Duration
	var quiet bool
	cmd := &cobra.Command{
		Use:   "wait TASK_ID... | -",
		Short: "Wait until tasks end; shows a progress bar for many tasks",
		Long: `Wait until every task is success, failed or cancelled, then print each
final state. With many tasks a progress bar on stderr shows states and rate.
Exit status: 0 when all succeeded, 1 when any failed or was cancelled, 2 on
timeout.

  switchyard submit -e demo --kind noop -n 10000 | switchyard wait -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ts, werr := waitAll(cmd.Context(), c, ids, timeout, !quiet && len(ids) > 1)
			if cf.asJSON {
				_ = printJSON(map[string]any{"tasks": ts})
			} else if len(ids) <= 100 {
				for _, t := range ts {
					fmt.Printf("%s  %s\n", t.TaskID, t.State)
				}
			} else {
				counts := map[string]int{}
				for _, t := range ts {
					counts[t.State]++
				}
				fmt.Printf("%d tasks: %d success, %d failed, %d cancelled\n", len(ids), counts["success"], counts["failed"], counts["cancelled"])
			}
			if werr != nil {
				if client.StatusOf(werr) != 0 {
					return werr
				}
				return &exitError{2, werr}
			}
			for _, t := range ts {
				if t.State != "success" {
					return &exitError{1, fmt.Errorf("some tasks did not succeed")}
				}
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: wait forever)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}
