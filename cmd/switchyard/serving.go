package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newServingStateCmd() *cobra.Command {
	var api, target, endpoint, manager, timeout string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "serving-state get|set STATE|clear",
		Short: "Read or override the serving state of an interchange or manager",
		Long: `Read or override a serving state. States, least to most restrictive:
  NONE_PAUSED               accepts and dispatches tasks
  PUSH_PAUSED               refuses new tasks (they wait upstream), keeps dispatching
  PUSH_AND_DISPATCH_PAUSED  refuses new tasks and stops dispatch (running tasks finish)

Target one of:
  --endpoint EP [--manager M]   through the forwarder (--api) to the endpoint's
                                interchange, or to one of its managers
  --url http://HOST:PORT        an interchange's or manager's admin HTTP directly

An override lasts until cleared, or for --timeout. One less restrictive than
the measured state (real pressure) needs --force.

  switchyard serving-state get --url http://127.0.0.1:8081
  switchyard serving-state set PUSH_PAUSED --endpoint demo --timeout 1m
  switchyard serving-state clear --endpoint demo`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var base string
			switch {
			case target != "":
				base = strings.TrimRight(target, "/") + "/servingState"
				if manager != "" {
					return fmt.Errorf("--manager goes with --endpoint; with --url, point at the manager's own admin address")
				}
			case endpoint != "":
				base = strings.TrimRight(api, "/") + "/v1/endpoints/" + url.PathEscape(endpoint) + "/servingState"
			default:
				return fmt.Errorf("say which daemon: --endpoint EP (through the forwarder) or --url http://HOST:PORT")
			}
			if !strings.Contains(base, "://") {
				base = "http://" + base
			}
			form := url.Values{}
			method := "POST"
			switch args[0] {
			case "get":
				method = "GET"
				if manager != "" {
					base += "?manager=" + url.QueryEscape(manager)
				}
			case "set":
				if len(args) != 2 {
					return fmt.Errorf("set needs a state: NONE_PAUSED, PUSH_PAUSED or PUSH_AND_DISPATCH_PAUSED")
				}
				form.Set("state", args[1])
				if timeout != "" {
					form.Set("timeout", timeout)
				}
				if force {
					form.Set("force", "true")
				}
			case "clear":
				form.Set("state", "")
			default:
				return fmt.Errorf("unknown action %q: use get, set or clear", args[0])
			}
			if manager != "" && method == "POST" {
				form.Set("manager", manager)
			}
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader(form.Encode())
			}
			req, err := http.NewRequest(method, base, body)
			if err != nil {
				return err
			}
			if method == "POST" {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if asJSON {
				req.Header.Set("Accept", "application/json")
			} else {
				req.Header.Set("Accept", "text/plain")
			}
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				return fmt.Errorf("cannot reach %s: %w", base, err)
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			if resp.StatusCode >= 400 {
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(out)))
			}
			_, _ = os.Stdout.Write(out)
			return nil
		},
	}
	def := os.Getenv("SWITCHYARD_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	cmd.Flags().StringVar(&api, "api", def, "forwarder HTTP API base URL (env SWITCHYARD_API)")
	cmd.Flags().StringVar(&target, "url", "", "admin HTTP base URL of an interchange or manager")
	cmd.Flags().StringVarP(&endpoint, "endpoint", "e", "", "endpoint id (through the forwarder)")
	cmd.Flags().StringVar(&manager, "manager", "", "with --endpoint: one manager of that endpoint")
	cmd.Flags().StringVar(&timeout, "timeout", "", "clear the override after this long, e.g. 30s, 1m")
	cmd.Flags().BoolVar(&force, "force", false, "apply even if less restrictive than the measured state")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
