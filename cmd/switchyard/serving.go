package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
)

func newServingStateCmd() *cobra.Command {
	var api, target, endpoint, manager, timeout string
	var force, asJSON bool
	var af authFlags
	cmd := &cobra.Command{
		Use:   "serving-state get|set STATE|clear",
		Short: "Read or override the serving state of an interchange or manager",
		Long: `Read or override a serving state. States, least to most restrictive:
  NONE_PAUSED               accepts and dispatches tasks
  PUSH_PAUSED               refuses new tasks (they wait upstream), keeps dispatching
  PUSH_AND_DISPATCH_PAUSED  refuses new tasks and stops dispatch (running tasks finish)

Actions:
  get          print the current state, the measured one (with the pressure
               behind it) and any override with when it ends; --json for JSON
  set STATE    set an override, for --timeout or until cleared; prints
               "Serving state forced to STATE; ..."
  clear        remove the override; prints the state that applies now

Target one of:
  --endpoint EP [--manager M]   through the forwarder (--api) to the endpoint's
                                interchange, or to one of its managers; setting
                                a state needs an admin token
  --url http://HOST:PORT        an interchange's or manager's admin HTTP directly,
                                with --token-file STATE_DIR/admin.token of that
                                daemon

An override lasts until cleared, or for --timeout. One less restrictive than
the measured state (real pressure) needs --force.

  switchyard serving-state get --url http://127.0.0.1:8081 --token-file var/interchange/admin.token
  switchyard serving-state get --endpoint demo --manager demo-manager-1 --json
  switchyard serving-state set PUSH_PAUSED --endpoint demo --timeout 1m
  switchyard serving-state set NONE_PAUSED --endpoint demo --force   # lift a pressure pause
  switchyard serving-state clear --endpoint demo`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var base, ep string
			switch {
			case target != "":
				base = target
				if manager != "" {
					return fmt.Errorf("--manager goes with --endpoint; with --url, point at the manager's own admin address")
				}
			case endpoint != "":
				base, ep = api, endpoint
			default:
				return fmt.Errorf("say which daemon: --endpoint EP (through the forwarder) or --url http://HOST:PORT")
			}
			c, err := af.client(base, 30*time.Second)
			if err != nil {
				return err
			}
			var out []byte
			switch args[0] {
			case "get":
				out, err = c.ServingState(cmd.Context(), ep, manager, asJSON)
			case "set":
				if len(args) != 2 {
					return fmt.Errorf("set needs a state: NONE_PAUSED, PUSH_PAUSED or PUSH_AND_DISPATCH_PAUSED")
				}
				out, err = c.SetServingState(cmd.Context(), ep, client.ServingChange{State: args[1], Timeout: timeout, Force: force, Manager: manager}, asJSON)
			case "clear":
				out, err = c.SetServingState(cmd.Context(), ep, client.ServingChange{Manager: manager}, asJSON)
			default:
				return fmt.Errorf("unknown action %q: use get, set or clear", args[0])
			}
			if err != nil {
				return err
			}
			_, _ = os.Stdout.Write(out)
			return nil
		},
	}
	def := os.Getenv(client.EnvAPI)
	if def == "" {
		def = client.DefaultAPI
	}
	cmd.Flags().StringVar(&api, "api", def, "forwarder HTTP API base URL (env SWITCHYARD_API)")
	cmd.Flags().StringVar(&target, "url", "", "admin HTTP base URL of an interchange or manager")
	cmd.Flags().StringVarP(&endpoint, "endpoint", "e", "", "endpoint id (through the forwarder)")
	cmd.Flags().StringVar(&manager, "manager", "", "with --endpoint: one manager of that endpoint")
	cmd.Flags().StringVar(&timeout, "timeout", "", "clear the override after this long, e.g. 30s, 1m")
	cmd.Flags().BoolVar(&force, "force", false, "apply even if less restrictive than the measured state")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	af.add(cmd.Flags())
	return cmd
}
