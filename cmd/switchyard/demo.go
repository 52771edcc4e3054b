package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
)

type demoTask struct {
	body      map[string]any
	wantState string
	wantOut   string
}

func demoWorkload(n int) []demoTask {
	out := make([]demoTask, n)
	for i := range out {
		switch r := i % 20; {
		case r < 10:
			out[i] = demoTask{body: map[string]any{"kind": "noop"}, wantState: "success"}
		case r < 15:
			msg := fmt.Sprintf("hello-%d", i)
			out[i] = demoTask{body: map[string]any{"kind": "exec", "args": []string{"echo", msg}}, wantState: "success", wantOut: msg + "\n"}
		case r < 19:
			out[i] = demoTask{body: map[string]any{"kind": "exec", "args": []string{"sh", "-c", "echo boom >&2; exit 3"}}, wantState: "failed"}
		default:
			out[i] = demoTask{body: map[string]any{"kind": "sleep", "args": []string{"0.01"}}, wantState: "success"}
		}
	}
	return out
}

// runDemo submits a mixed workload, follows it and checks every result.
func runDemo(ctx context.Context, c *client.Client, ep string, n int, w io.Writer) error {
	if err := waitConnected(ctx, c, ep, 60*time.Second); err != nil {
		return err
	}
	work := demoWorkload(n)
	fmt.Fprintf(w, "demo: submitting %d tasks to %q (50%% noop, 25%% echo, 20%% failing exec, 5%% sleep 10ms)\n", n, ep)
	start := time.Now()
	var ids []string
	for i := 0; i < n; i += 1000 {
		j := min(i+1000, n)
		tasks := make([]any, 0, j-i)
		for _, t := range work[i:j] {
			tasks = append(tasks, t.body)
		}
		got, err := c.Submit(ctx, ep, tasks...)
		if err != nil {
			return err
		}
		ids = append(ids, got...)
	}
	submitted := time.Since(start)
	wt, err := waitAll(ctx, c, ids, 10*time.Minute, true)
	var ts []client.Task
	if err == nil {
		ts, err = fullTasks(ctx, c, wt.tasks())
	}
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	byID := make(map[string]client.Task, len(ts))
	for _, t := range ts {
		byID[t.TaskID] = t
	}
	counts := map[string]int{}
	wrong := 0
	for i, id := range ids {
		t := byID[id]
		counts[t.State]++
		if t.State != work[i].wantState {
			wrong++
			continue
		}
		if work[i].wantOut != "" {
			r, _ := t.Exec()
			if r.Stdout != work[i].wantOut {
				wrong++
			}
		}
	}
	fmt.Fprintf(w, "demo: states: success=%d failed=%d cancelled=%d\n", counts["success"], counts["failed"], counts["cancelled"])
	for i, id := range ids {
		if i >= 20 {
			break
		}
		if i%5 == 0 || i%20 == 15 {
			t := byID[id]
			res := strings.TrimSpace(string(t.Result))
			if res == "" {
				res = "null"
			}
			fmt.Fprintf(w, "demo:   %s %-5s %-8s result=%s %s\n", id, t.Kind, t.State, res, t.Error)
		}
	}
	fmt.Fprintf(w, "demo: %d tasks submitted in %s, all finished in %s: %.0f tasks/s end to end\n",
		n, submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	if wrong > 0 {
		return fmt.Errorf("%d of %d tasks ended differently from what the demo expected", wrong, n)
	}
	fmt.Fprintf(w, "demo: every state and result is as expected\n")
	return nil
}

func newDemoCmd() *cobra.Command {
	var cf clientFlags
	var ep string
	var n int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Submit a demo workload of mixed tasks to a running endpoint and check it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext()
			defer stop()
			c, err := cf.auth.client(cf.api, time.Minute)
			if err != nil {
				return err
			}
			return runDemo(ctx, c, ep, n, os.Stdout)
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().StringVarP(&ep, "endpoint", "e", "local", "endpoint id")
	cmd.Flags().IntVarP(&n, "count", "n", 5000, "number of tasks")
	return cmd
}
