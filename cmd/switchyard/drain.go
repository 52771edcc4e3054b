package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newManagerDrainCmd() *cobra.Command {
	var cf clientFlags
	var endpoint string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "drain MANAGER_ID --endpoint EP",
		Short: "Ask one manager to finish what it runs, take nothing new, and exit (admin)",
		Long: `Drain a manager through the forwarder: the manager gives back the tasks it
has not started (they go to other managers with the same attempt), lets its
running tasks finish, and exits. With --grace it stops tasks still running
after that long and gives them back too. The manager ids of an endpoint are
listed by GET /v1/endpoints/EP and the interchange's /status. Needs an admin
token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				return fmt.Errorf("--endpoint is required: the endpoint whose manager to drain")
			}
			if grace < 0 {
				return fmt.Errorf("--grace %s must not be negative", grace)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			msg, err := c.DrainManager(cmd.Context(), endpoint, args[0], grace)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "manager %s: %s\n", args[0], msg)
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().StringVarP(&endpoint, "endpoint", "e", "", "endpoint the manager belongs to (required)")
	cmd.Flags().DurationVar(&grace, "grace", 0, "stop tasks still running after this long and give them back (default: wait for them)")
	return cmd
}
