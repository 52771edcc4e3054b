package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
)

func newManagerDrainCmd() *cobra.Command {
	var cf clientFlags
	var endpoint, grace string
	cmd := &cobra.Command{
		Use:   "drain MANAGER_ID --endpoint EP",
		Short: "Ask one manager to finish what it runs, take nothing new, and exit",
		Long: `Drain a manager through the forwarder: the manager gives back the tasks it
has not started (they go to other managers with the same attempt), lets its
running tasks finish, and exits. With --grace it stops tasks still running
after that long and gives them back too. The manager ids of an endpoint are
listed by GET /v1/endpoints/EP and the interchange's /status.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				return fmt.Errorf("--endpoint is required: the endpoint whose manager to drain")
			}
			path := "/v1/endpoints/" + url.PathEscape(endpoint) + "/managers/" + url.PathEscape(args[0]) + "/drain"
			if grace != "" {
				path += "?grace=" + url.QueryEscape(grace)
			}
			var out struct {
				Message string `json:"message"`
			}
			if err := cf.client().do("POST", path, nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "manager %s: %s\n", args[0], out.Message)
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().StringVarP(&endpoint, "endpoint", "e", "", "endpoint the manager belongs to (required)")
	cmd.Flags().StringVar(&grace, "grace", "", "stop tasks still running after this long and give them back (default: wait for them)")
	return cmd
}
