package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// client talks to the forwarder's HTTP API.
type client struct {
	base string
	hc   *http.Client
}

type clientFlags struct {
	api    string
	asJSON bool
}

func (c *clientFlags) add(fs *pflag.FlagSet) {
	def := os.Getenv("SWITCHYARD_API")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	fs.StringVar(&c.api, "api", def, "forwarder HTTP API base URL (env SWITCHYARD_API)")
	fs.BoolVar(&c.asJSON, "json", false, "print JSON instead of text")
}

func (c *clientFlags) client() *client {
	base := strings.TrimRight(c.api, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &client{base: base, hc: &http.Client{Timeout: 10 * time.Minute}}
}

// apiError is a 4xx/5xx answer.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

func (c *client) do(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the forwarder at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return &apiError{resp.StatusCode, e.Error}
		}
		return &apiError{resp.StatusCode, strings.TrimSpace(string(raw))}
	}
	if out == nil {
		return nil
	}
	if r, ok := out.(*json.RawMessage); ok {
		*r = raw
		return nil
	}
	return json.Unmarshal(raw, out)
}

// taskView mirrors the forwarder's task object.
type taskView struct {
	TaskID      string          `json:"task_id"`
	EndpointID  string          `json:"endpoint_id"`
	Kind        string          `json:"kind"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	Result      json.RawMessage `json:"result"`
	Error       string          `json:"error"`
	CreatedAt   *time.Time      `json:"created_at"`
	CompletedAt *time.Time      `json:"completed_at"`
}

func terminal(s string) bool { return s == "success" || s == "failed" || s == "cancelled" }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *client) statuses(ids []string) ([]taskView, error) {
	var out []taskView
	for i := 0; i < len(ids); i += 10000 {
		j := min(i+10000, len(ids))
		var resp struct {
			Tasks []taskView `json:"tasks"`
		}
		if err := c.do("POST", "/v1/tasks/status", map[string]any{"task_ids": ids[i:j]}, &resp); err != nil {
			return nil, err
		}
		out = append(out, resp.Tasks...)
	}
	return out, nil
}

func newSubmitCmd() *cobra.Command {
	var cf clientFlags
	var endpoint, kind, file, timeout string
	var count int
	cmd := &cobra.Command{
		Use:   "submit --endpoint EP [--kind exec] [-- PROGRAM ARGS...]",
		Short: "Submit tasks to an endpoint and print their ids",
		Long: `Submit tasks through the forwarder. Task kinds:
  noop          does nothing (for measuring the system)
  sleep SECS    sleeps, e.g.  switchyard submit --endpoint demo --kind sleep 0.5
  exec ARGV...  runs a program without a shell; the result holds exit code,
                stdout and stderr (capped). A non-zero exit is 'failed'.

  switchyard submit --endpoint demo -- echo hello
  switchyard submit --endpoint demo --kind noop --count 1000
  switchyard submit --endpoint demo --file tasks.json   # {"tasks":[...]} or one task per line

The ids print one per line (or as JSON with --json) in submission order.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoint == "" {
				return fmt.Errorf("--endpoint is required")
			}
			var tasks []json.RawMessage
			if file != "" {
				var err error
				if tasks, err = readTaskFile(file); err != nil {
					return err
				}
			} else {
				if kind == "" {
					kind = "exec"
					if len(args) == 0 {
						return fmt.Errorf("nothing to submit: give a program after --, or --kind noop, or --file")
					}
				}
				t := map[string]any{"kind": kind}
				if len(args) > 0 {
					t["args"] = args
				}
				if timeout != "" {
					t["timeout"] = timeout
				}
				b, _ := json.Marshal(t)
				for i := 0; i < count; i++ {
					tasks = append(tasks, b)
				}
			}
			c := cf.client()
			var ids []string
			for i := 0; i < len(tasks); i += 10000 {
				j := min(i+10000, len(tasks))
				var resp struct {
					TaskIDs []string `json:"task_ids"`
				}
				if err := c.do("POST", "/v1/endpoints/"+endpoint+"/tasks", map[string]any{"tasks": tasks[i:j]}, &resp); err != nil {
					return err
				}
				ids = append(ids, resp.TaskIDs...)
			}
			if cf.asJSON {
				return printJSON(map[string]any{"task_ids": ids})
			}
			for _, id := range ids {
				fmt.Println(id)
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().StringVarP(&endpoint, "endpoint", "e", "", "endpoint id to submit to")
	cmd.Flags().StringVar(&kind, "kind", "", "task kind: noop, sleep or exec (default exec when a program is given)")
	cmd.Flags().IntVarP(&count, "count", "n", 1, "submit this many copies")
	cmd.Flags().StringVarP(&file, "file", "f", "", "read tasks from a JSON file ('-' for stdin)")
	cmd.Flags().StringVar(&timeout, "timeout", "", "run-time limit per task, e.g. 30s")
	return cmd
}

func readTaskFile(name string) ([]json.RawMessage, error) {
	var raw []byte
	var err error
	if name == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	var body struct {
		Tasks []json.RawMessage `json:"tasks"`
	}
	if err := json.Unmarshal(raw, &body); err == nil && len(body.Tasks) > 0 {
		return body.Tasks, nil
	}
	var out []json.RawMessage
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !json.Valid([]byte(line)) {
			return nil, fmt.Errorf("%s line %d is not JSON", name, i+1)
		}
		out = append(out, json.RawMessage(line))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no tasks", name)
	}
	return out, nil
}

func idsFromArgs(args []string) ([]string, error) {
	if len(args) == 1 && args[0] == "-" {
		raw, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, err
		}
		return strings.Fields(string(raw)), nil
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("give task ids as arguments, or '-' to read them from stdin")
	}
	return args, nil
}

func newStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status TASK_ID... | -",
		Short: "Show the state of tasks",
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			ts, err := cf.client().statuses(ids)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(map[string]any{"tasks": ts})
			}
			for _, t := range ts {
				line := fmt.Sprintf("%s  %-20s attempts=%d", t.TaskID, t.State, t.Attempts)
				if t.Error != "" {
					line += "  error=" + t.Error
				}
				fmt.Println(line)
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

func newResultCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "result TASK_ID",
		Short: "Print a task's result (stdout of an exec task; JSON with --json)",
		Long: `Print a task's result. For an exec task, its stdout goes to stdout and its
stderr to stderr, and switchyard exits with the task's exit code. With --json
the whole task object is printed. A task that has not ended is an error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t taskView
			if err := cf.client().do("GET", "/v1/tasks/"+args[0], nil, &t); err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(t)
			}
			if !terminal(t.State) {
				return &exitError{3, fmt.Errorf("task %s is %s; no result yet (try 'switchyard wait')", t.TaskID, t.State)}
			}
			var r struct {
				ExitCode *int   `json:"exit_code"`
				Stdout   string `json:"stdout"`
				Stderr   string `json:"stderr"`
			}
			if len(t.Result) > 0 {
				_ = json.Unmarshal(t.Result, &r)
			}
			fmt.Print(r.Stdout)
			fmt.Fprint(os.Stderr, r.Stderr)
			if t.State != "success" {
				code := 1
				if r.ExitCode != nil && *r.ExitCode > 0 {
					code = *r.ExitCode
				}
				return &exitError{code, fmt.Errorf("task %s %s: %s", t.TaskID, t.State, t.Error)}
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

func newCancelCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "cancel TASK_ID... | -",
		Short: "Cancel tasks; a task that already ended is left as it is",
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			var resp struct {
				Tasks []struct {
					TaskID    string `json:"task_id"`
					State     string `json:"state"`
					Cancelled bool   `json:"cancelled"`
					Message   string `json:"message"`
				} `json:"tasks"`
			}
			if err := cf.client().do("POST", "/v1/tasks/cancel", map[string]any{"task_ids": ids}, &resp); err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(resp)
			}
			for _, t := range resp.Tasks {
				fmt.Printf("%s  %s\n", t.TaskID, t.Message)
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

func newEndpointsCmd() *cobra.Command {
	var cf clientFlags
	var probe bool
	cmd := &cobra.Command{
		Use:   "endpoints [ENDPOINT_ID]",
		Short: "List endpoints with their managers, workers and queues",
		Long: `List the endpoints the forwarder knows, or show one. --probe sends a
synchronous HeartbeatReq to the endpoint and reports the round trip.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := cf.client()
			type ep struct {
				EndpointID    string          `json:"endpoint_id"`
				Connected     bool            `json:"connected"`
				LastHeartbeat *time.Time      `json:"last_heartbeat"`
				Managers      int             `json:"managers"`
				Workers       int             `json:"workers"`
				IdleWorkers   int             `json:"idle_workers"`
				Queued        int             `json:"queued"`
				Outstanding   int             `json:"outstanding"`
				ServingState  string          `json:"serving_state"`
				Held          int             `json:"held_by_forwarder"`
				Probe         json.RawMessage `json:"probe,omitempty"`
			}
			var eps []ep
			if len(args) == 1 {
				var one ep
				path := "/v1/endpoints/" + args[0]
				if probe {
					path += "?probe=1"
				}
				if err := c.do("GET", path, nil, &one); err != nil {
					return err
				}
				eps = append(eps, one)
			} else {
				var resp struct {
					Endpoints []ep `json:"endpoints"`
				}
				if err := c.do("GET", "/v1/endpoints", nil, &resp); err != nil {
					return err
				}
				eps = resp.Endpoints
			}
			if cf.asJSON {
				if len(args) == 1 {
					return printJSON(eps[0])
				}
				return printJSON(map[string]any{"endpoints": eps})
			}
			fmt.Printf("%-20s %-9s %8s %8s %6s %8s %11s %6s  %s\n", "ENDPOINT", "CONNECTED", "MANAGERS", "WORKERS", "IDLE", "QUEUED", "OUTSTANDING", "HELD", "SERVING")
			for _, e := range eps {
				fmt.Printf("%-20s %-9v %8d %8d %6d %8d %11d %6d  %s\n", e.EndpointID, e.Connected, e.Managers, e.Workers,
					e.IdleWorkers, e.Queued, e.Outstanding, e.Held, e.ServingState)
				if len(e.Probe) > 0 {
					fmt.Printf("  probe: %s\n", e.Probe)
				}
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().BoolVar(&probe, "probe", false, "send a synchronous probe to the endpoint")
	return cmd
}
