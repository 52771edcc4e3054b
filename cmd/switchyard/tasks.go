package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
)

func newTasksCmd() *cobra.Command {
	var cf clientFlags
	var q client.TaskQuery
	var since string
	var limit int
	var idsOnly bool
	cmd := &cobra.Command{
		Use:   "tasks [--endpoint EP] [--state S,...] [--since TIME] [--limit N]",
		Short: "List your tasks (an admin's: everyone's), newest submissions last",
		Long: `List tasks in the order they were submitted. You see your own tasks; an
admin sees every task, or one user's with --owner.

  switchyard tasks                                  # your first 100 tasks
  switchyard tasks --state running,waiting-for-nodes
  switchyard tasks --since 10m --ids | switchyard wait -
  switchyard tasks --endpoint demo --state failed --limit 0 --json

--since takes an RFC 3339 time (2026-11-22T12:00:00Z) or a duration that
means "this long ago" (90s, 10m, 2h). States: received, waiting-for-endpoint,
waiting-for-nodes, waiting-for-launch, running, success, failed, cancelled.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return exitf(exitUsage, "--limit must be 0 (no limit) or more, got %d", limit)
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return &exitError{exitUsage, err}
				}
				q.Since = t
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			q.Limit = client.MaxListPage
			if limit > 0 {
				q.Limit = min(limit, client.MaxListPage)
			}
			ts, err := c.AllTasks(cmd.Context(), q, limit)
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []client.ListedTask{}
			}
			switch {
			case cf.asJSON:
				return printJSON(map[string]any{"tasks": ts})
			case idsOnly:
				for _, t := range ts {
					fmt.Println(t.TaskID)
				}
				return nil
			}
			if len(ts) == 0 {
				fmt.Fprintln(os.Stderr, "no tasks match")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TASK_ID\tENDPOINT\tKIND\tSTATE\tATTEMPTS\tRUNS\tCREATED\tOWNER\tERROR")
			for _, t := range ts {
				created := ""
				if t.CreatedAt != nil {
					created = t.CreatedAt.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", t.TaskID, t.EndpointID, t.Kind, t.State, t.Attempts, t.Runs,
					created, t.Owner, oneLine(t.Error, 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if limit > 0 && len(ts) == limit {
				fmt.Fprintf(os.Stderr, "showing the first %d; --limit 0 shows all\n", limit)
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVarP(&q.Endpoint, "endpoint", "e", "", "only tasks of this endpoint")
	fs.StringSliceVar(&q.States, "state", nil, "only tasks in these states (comma-separated or repeated)")
	fs.StringVar(&q.Owner, "owner", "", "only this user's tasks (admins)")
	fs.StringVar(&since, "since", "", "only tasks submitted since this RFC 3339 time, or this long ago (e.g. 10m)")
	fs.IntVar(&limit, "limit", 100, "show at most this many tasks (0: all)")
	fs.BoolVar(&idsOnly, "ids", false, "print only the task ids, one per line (for 'wait -' or 'cancel -')")
	return cmd
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: use an RFC 3339 time such as 2026-11-22T12:00:00Z, or a duration ago such as 10m", s)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
