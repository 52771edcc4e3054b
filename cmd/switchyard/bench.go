package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchyard-hpc/switchyard/bench"
	"github.com/switchyard-hpc/switchyard/client"
)

func newBenchCmd() *cobra.Command {
	var cfg bench.Config
	var asJSON, quiet bool
	var af authFlags
	var ixTokenFile string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure an endpoint with no-op tasks: throughput, round trips, CPU and memory",
		Long: `Measure a Switchyard endpoint with no-op tasks over the real HTTP API.

By default it starts an endpoint itself (forwarder, interchange and
--managers managers as child processes of this command, on free loopback
ports, state in a temp dir, persistence on; --no-persist to compare) and
reports:
  - throughput: --tasks no-op tasks in POSTs of --batch from --submitters
    goroutines, from the first submit until all are terminal;
  - round trip: --rtt sequential single tasks (POST, then GET ?wait=10s),
    median and p99;
  - CPU per task (utime+stime over the throughput run) and peak RSS (VmHWM)
    of each process;
  - a raw ZMQ baseline in the same run: a DEALER -> ROUTER -> DEALER relay
    of one message per task of a packed no-op task's size, and the
    fraction of it the endpoint reaches.

Other scenarios (each on a fresh endpoint):
  --managers-sim K   K simulated managers, idle, heartbeats every
                     --sim-interval, for --duration: interchange CPU% of one
                     core and RSS, messages per second on each link.
  --queued Q         Q tasks queued at an interchange with no managers:
                     interchange and forwarder memory per queued task.

--api and --endpoint target a running endpoint instead (add
--interchange-http and --interchange-managers for the scenarios above).

--cli measures the user's path with real processes of this binary: it runs
'switchyard endpoint up --free-ports' (--managers, --workers and --insecure
passed on, everything else endpoint up's defaults, state in a temp dir) and,
once the endpoint is connected, 'switchyard submit -e local --kind noop -n
TASKS | switchyard wait - --quiet' through a pipe, as a shell would (--tasks
defaults to 100000 here). It reports tasks/s from starting submit until wait
exits; CPU per task and peak RSS of the forwarder, interchange, each
manager and endpoint up itself (over the run, from /proc) and of submit and
wait (from their rusage); CPU per task over all of them; the interchange's longest manager
idle time while tasks were queued; and store commits per task. It combines
with --tasks, --managers, --workers, --insecure, --keep, --json and --quiet.`,
		Example: `  switchyard bench
  switchyard bench --no-persist --json
  switchyard bench --managers-sim 1000 --sim-interval 1s --duration 30s
  switchyard bench --queued 1000000
  switchyard bench --cli --tasks 100000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Tasks < 0 {
				return fmt.Errorf("--tasks %d must be 0 or more", cfg.Tasks)
			}
			if cfg.SimManagers < 0 || cfg.Queued < 0 {
				return fmt.Errorf("--managers-sim and --queued must be 0 or more")
			}
			if cfg.CompareInsecure && (cfg.Insecure || cfg.API != "") {
				return fmt.Errorf("--compare-insecure starts a secure and an insecure endpoint itself; drop --insecure and --api")
			}
			if cmd.Flags().Changed("endpoint") && cfg.API == "" {
				return fmt.Errorf("--endpoint names a running endpoint; give its forwarder with --api too")
			}
			if cfg.CLI {
				if err := checkCLIFlags(cmd.Flags()); err != nil {
					return err
				}
				if !cmd.Flags().Changed("tasks") {
					cfg.Tasks = cliDefaultTasks
				}
				if cfg.Tasks < 1 {
					return fmt.Errorf("--cli needs --tasks of 1 or more, got %d", cfg.Tasks)
				}
			}
			cfg.Version = version
			var err error
			if cfg.Token, err = af.token(); err != nil {
				return err
			}
			if ixTokenFile != "" {
				if cfg.InterchangeToken, err = client.ReadTokenFile(ixTokenFile); err != nil {
					return err
				}
			}
			if !quiet {
				cfg.Progress = os.Stderr
			}
			ctx, stop := signalContext()
			defer stop()
			rep, err := bench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return bench.WriteText(os.Stdout, rep)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Tasks, "tasks", 50000, "no-op tasks in the throughput run")
	f.IntVar(&cfg.Batch, "batch", 5000, "tasks per POST")
	f.IntVar(&cfg.Submitters, "submitters", 4, "concurrent submitting clients")
	f.IntVar(&cfg.RTT, "rtt", 500, "sequential single-task round trips (0 skips)")
	f.IntVar(&cfg.Raw, "raw", 0, "messages in the raw ZMQ relay baseline (default --tasks; -1 skips)")
	f.BoolVar(&cfg.NoPersist, "no-persist", false, "start the forwarder and interchange with --no-persist")
	f.StringVar(&cfg.Store, "store", "", "with --cli, the forwarder's --store (default: the log in its state directory), e.g. postgres://USER@HOST:PORT/DB")
	f.BoolVar(&cfg.Insecure, "insecure", false, "start every daemon with --insecure (no CurveZMQ, no tokens), to measure what security costs")
	f.IntVar(&cfg.Managers, "managers", 1, "managers in a started endpoint")
	f.IntVar(&cfg.Workers, "workers", 8, "workers per manager")
	f.IntVar(&cfg.Prefetch, "prefetch", -1, "tasks a manager holds beyond its workers (-1: not given, the interchange sizes it)")
	f.DurationVar(&cfg.Interval, "heartbeat-interval", time.Second, "heartbeat interval of a started endpoint")
	f.IntVar(&cfg.SimManagers, "managers-sim", 0, "connect this many simulated idle managers and measure the interchange")
	f.DurationVar(&cfg.SimInterval, "sim-interval", time.Second, "heartbeat interval of the simulated managers (and of the endpoint started for them)")
	f.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long to measure the simulated managers")
	f.IntVar(&cfg.Queued, "queued", 0, "queue this many tasks at an interchange without managers and report memory per task")
	f.StringVar(&cfg.API, "api", "", "target a running endpoint: its forwarder HTTP API base URL")
	f.StringVar(&cfg.EndpointID, "endpoint", "bench", "endpoint id of a targeted endpoint")
	f.StringVar(&cfg.InterchangeHTTP, "interchange-http", "", "admin HTTP address of a targeted endpoint's interchange")
	f.StringVar(&cfg.InterchangeManagers, "interchange-managers", "", "manager ROUTER address of a targeted endpoint's interchange")
	f.StringVar(&cfg.ManagerCredentials, "manager-credentials", "", "the targeted interchange's STATE_DIR/manager.credentials, for simulated managers")
	f.StringVar(&cfg.Dir, "state-dir", "", "directory for a started endpoint's state and logs (kept); default a temp dir, removed")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir with the started endpoint's state and logs")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	f.BoolVar(&cfg.CompareInsecure, "compare-insecure", false, "also run the throughput scenario, alternating, on an endpoint started with --insecure and report what security (tokens, CurveZMQ) costs")
	f.BoolVar(&cfg.CLI, "cli", false, "measure the user's path: endpoint up, then submit -n TASKS | wait -, as real processes")
	f.StringVar(&cfg.Exe, "exe", "", "the switchyard binary to start the endpoint (and, with --cli, the clients) from, to compare builds side by side (default: this one)")
	f.StringVar(&ixTokenFile, "interchange-token-file", "", "admin token of a targeted endpoint's interchange (its STATE_DIR/admin.token)")
	af.add(f)
	return cmd
}

// cliDefaultTasks is --tasks for --cli when not given: the 100,000 of
// issue 18's table.
const cliDefaultTasks = 100000

// checkCLIFlags refuses flags --cli would silently ignore.
func checkCLIFlags(fs *pflag.FlagSet) error {
	if fs.Changed("api") {
		return fmt.Errorf("--cli starts its own endpoint with 'switchyard endpoint up'; drop --api")
	}
	ok := map[string]bool{"cli": true, "tasks": true, "managers": true, "workers": true, "insecure": true, "store": true,
		"keep": true, "json": true, "quiet": true, "exe": true}
	var bad []string
	fs.Visit(func(f *pflag.Flag) {
		if !ok[f.Name] {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return fmt.Errorf("--cli does not combine with %s; it takes --tasks, --managers, --workers, --insecure, --store, --exe, --keep, --json and --quiet",
			strings.Join(bad, ", "))
	}
	return nil
}
