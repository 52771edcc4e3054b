package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/internal/gctune"
	"github.com/switchyard-hpc/switchyard/messages"
)

type clientFlags struct {
	api    string
	asJSON bool
	auth   authFlags
}

func (c *clientFlags) add(fs *pflag.FlagSet) {
	def := os.Getenv(client.EnvAPI)
	if def == "" {
		def = client.DefaultAPI
	}
	fs.StringVar(&c.api, "api", def, "forwarder HTTP API base URL (env SWITCHYARD_API)")
	fs.BoolVar(&c.asJSON, "json", false, "print JSON instead of text")
	c.auth.add(fs)
}

func (c *clientFlags) client() (*client.Client, error) {
	tuneClientGC()
	return c.auth.client(c.api, 10*time.Minute)
}

// tuneClientGC gives a command that talks to the forwarder, or reads many
// task ids, the daemons' GC policy: a wait for a million tasks spent a
// quarter of its CPU in the collector at Go's default.
var tuneClientGC = sync.OnceFunc(func() { gctune.Start(context.Background(), 256<<20) })

// authFlags say which token to send and which CA to trust for https.
type authFlags struct {
	tokenFile string
	caFile    string
}

func (a *authFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&a.tokenFile, "token-file", "", "read the bearer token from this file (default: env SWITCHYARD_TOKEN)")
	fs.StringVar(&a.caFile, "cacert", os.Getenv("SWITCHYARD_CACERT"), "PEM file of the CA that signed an https server's certificate (env SWITCHYARD_CACERT)")
}

// token is the --token-file's token, else SWITCHYARD_TOKEN.
func (a *authFlags) token() (string, error) {
	if a.tokenFile != "" {
		return client.ReadTokenFile(a.tokenFile)
	}
	return strings.TrimSpace(os.Getenv(client.EnvToken)), nil
}

func (a *authFlags) client(base string, timeout time.Duration) (*client.Client, error) {
	tok, err := a.token()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: timeout}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s holds no PEM certificate", a.caFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return client.New(base, client.WithToken(tok), client.WithHTTPClient(hc)), nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
				return exitf(exitUsage, "--endpoint is required: the id of the endpoint to run on (see 'switchyard endpoints')")
			}
			if count < 1 {
				return exitf(exitUsage, "--count (-n) must be at least 1, got %d", count)
			}
			if file != "" && cmd.Flags().Changed("count") {
				return exitf(exitUsage, "--count applies to a task given on the command line, not to --file")
			}
			// With --count, one task stands for count copies: a million
			// copies in a slice cost the submit a quarter of its CPU in
			// copying and the collector.
			var tasks []json.RawMessage
			var one json.RawMessage
			n := count
			if file != "" {
				var err error
				if tasks, err = readTaskFile(file); err != nil {
					return err
				}
				n = len(tasks)
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
				one, _ = json.Marshal(t)
			}
			task := func(i int) json.RawMessage {
				if tasks != nil {
					return tasks[i]
				}
				return one
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			// Ids are printed batch by batch, so a failure part way still
			// names every task that was accepted.
			out := bufio.NewWriterSize(os.Stdout, 64<<10)
			var ids []string
			var body []byte
			for i := 0; i < n; i += 10000 {
				j := min(i+10000, n)
				body = append(body[:0], `{"tasks":[`...)
				for k := i; k < j; k++ {
					if k > i {
						body = append(body, ',')
					}
					body = append(body, task(k)...)
				}
				body = append(body, "]}"...)
				got, err := c.SubmitBody(cmd.Context(), endpoint, body)
				if err == nil && len(got) != j-i {
					err = fmt.Errorf("submit: %d ids for %d tasks", len(got), j-i)
				}
				if cf.asJSON {
					ids = append(ids, got...)
				} else {
					for _, id := range got {
						out.WriteString(id)
						out.WriteByte('\n')
					}
					if ferr := out.Flush(); ferr != nil && err == nil {
						err = ferr
					}
				}
				if err != nil {
					if i > 0 {
						if cf.asJSON {
							_ = printJSON(map[string]any{"task_ids": ids[:i]})
						}
						return fmt.Errorf("%w (the %d tasks before were accepted; their ids are printed)", err, i)
					}
					return err
				}
			}
			if cf.asJSON {
				return printJSON(map[string]any{"task_ids": ids})
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
	return parseTaskFile(name, raw)
}

// parseTaskFile reads {"tasks":[...]} or one task object per line, and
// says what is wrong with anything else.
func parseTaskFile(name string, raw []byte) ([]json.RawMessage, error) {
	const shapes = `give {"tasks":[...]} or one task object per line`
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%s is empty; %s", name, shapes)
	}
	first, _, _ := bytes.Cut(trimmed, []byte("\n"))
	var doc map[string]json.RawMessage
	if json.Unmarshal(trimmed, &doc) == nil {
		if v, ok := doc["tasks"]; ok {
			var tasks []json.RawMessage
			if err := json.Unmarshal(v, &tasks); err != nil || tasks == nil {
				return nil, fmt.Errorf("%s: \"tasks\" must be a list of task objects, like {\"tasks\":[{\"kind\":\"noop\"}]}", name)
			}
			if len(tasks) == 0 {
				return nil, fmt.Errorf("%s: the \"tasks\" list is empty; nothing to submit", name)
			}
			return tasks, nil
		}
	} else if !json.Valid(bytes.TrimSpace(first)) {
		// Not one task per line: read it as one document and say why it
		// is not JSON.
		return nil, fmt.Errorf("%s is not valid JSON: %s; %s", name, jsonReason(trimmed), shapes)
	}
	var out []json.RawMessage
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !json.Valid([]byte(line)) {
			return nil, fmt.Errorf("%s line %d is not JSON: %s; %s", name, i+1, jsonReason([]byte(line)), shapes)
		}
		out = append(out, json.RawMessage(line))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no tasks", name)
	}
	return out, nil
}

// jsonReason is the decoder's reason why b is not JSON, with the byte
// offset where it went wrong.
func jsonReason(b []byte) string {
	var v any
	err := json.Unmarshal(b, &v)
	var se *json.SyntaxError
	switch {
	case err == nil:
		return "valid"
	case errors.As(err, &se) && se.Offset >= int64(len(b)):
		return fmt.Sprintf("%s: it ends after %d bytes in the middle of a value (truncated?)", se.Error(), len(b))
	case errors.As(err, &se):
		return fmt.Sprintf("%s at byte %d of %d", se.Error(), se.Offset, len(b))
	}
	return err.Error()
}

func idsFromArgs(args []string) ([]string, error) {
	if len(args) == 1 && args[0] == "-" {
		tuneClientGC()
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
		Long: `Show each task's state, attempts, runs and error, one line per task in the order
given ('-' reads the ids from stdin). It does not wait: see 'switchyard wait'.
An id the forwarder does not know (never submitted, another user's, or
forgotten after the retention time) reads "unknown" and makes the exit
status 1.

  switchyard status 5f0c1e2a-0b1c-4d2e-8f90-123456789abc
  switchyard submit -e demo --kind noop -n 3 | switchyard status -
  switchyard status --json ID   # the whole task objects`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ts, err := c.Status(cmd.Context(), ids)
			if err != nil {
				return err
			}
			var unknown []string
			for _, t := range ts {
				if t.State == string(messages.StateNotFound) {
					unknown = append(unknown, t.TaskID)
				}
			}
			if cf.asJSON {
				if err := printJSON(map[string]any{"tasks": ts}); err != nil {
					return err
				}
			} else {
				for _, t := range ts {
					line := fmt.Sprintf("%s  %-20s attempts=%d runs=%d", t.TaskID, t.State, t.Attempts, t.Runs)
					if t.Error != "" {
						line += "  error=" + t.Error
					}
					fmt.Println(line)
				}
			}
			return unknownIDs(unknown)
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

// unknownIDs is the exit-1 error for ids the forwarder does not know.
func unknownIDs(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return exitf(exitUsage, "%d unknown task id(s): %s (never submitted, another user's, or forgotten after the retention time; 'switchyard tasks' lists yours)",
		len(ids), strings.Join(ids, " "))
}

func newResultCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "result TASK_ID",
		Short: "Print a task's result (stdout of an exec task, a python call's value; JSON with --json)",
		Long: `Print a task's result. For an exec task, its stdout goes to stdout and its
stderr to stderr. For a python task, the readable form of its value (its
repr()) goes to stdout, or for a call that raised, the traceback's end to
stderr; the serialized value itself is in --json's "payload". With --json
the whole task object is printed.

Exit status: 0 success, 3 when the task failed or was cancelled (its error,
such as "exit status 7", goes to stderr), 2 when it has not ended yet (see
'switchyard wait'), 1 for an unknown id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			t, err := c.Task(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(t)
			}
			if !t.Terminal() {
				return exitf(exitTimeout, "task %s is %s; no result yet (try 'switchyard wait %s')", t.TaskID, t.State, t.TaskID)
			}
			if t.Kind == "python" {
				printPython(t)
			} else {
				r, _ := t.Exec()
				fmt.Print(r.Stdout)
				fmt.Fprint(os.Stderr, r.Stderr)
			}
			if t.Runs > 1 {
				// stdout is the task's own; this goes with its stderr.
				fmt.Fprintf(os.Stderr, "switchyard: task %s ran %d times (a node was lost or drained while it ran)\n", t.TaskID, t.Runs)
			}
			if t.State != "success" {
				return exitf(exitTaskFailed, "task %s %s: %s", t.TaskID, t.State, t.Error)
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

// printPython shows a python task's readable result: the value on stdout,
// a traceback on stderr. Without a text (a manager that predates it) it
// says where the value is.
func printPython(t client.Task) {
	r, err := t.Python()
	switch {
	case err != nil || len(r.Payload) == 0:
	case r.Text == "":
		fmt.Fprintf(os.Stderr, "(a %d-byte serialized result without a readable form; --json shows it as base64 in \"payload\")\n", len(r.Payload))
	case t.State == "success":
		fmt.Println(r.Text)
	default:
		fmt.Fprintln(os.Stderr, r.Text)
	}
}

func newCancelCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "cancel TASK_ID... | -",
		Short: "Cancel tasks; a task that already ended is left as it is",
		Long: `Cancel tasks that have not ended: they read "cancelled" at once and their
endpoint stops them. A task that already ended is left as it is and the
line says so. An unknown id (never submitted, another user's, or forgotten)
is reported and makes the exit status 1; the others are still cancelled.

  switchyard cancel 5f0c1e2a-0b1c-4d2e-8f90-123456789abc
  switchyard tasks --state waiting-for-nodes --ids | switchyard cancel -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idsFromArgs(args)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.CancelMany(cmd.Context(), ids)
			if err != nil {
				return err
			}
			var unknown []string
			for _, t := range res {
				if t.State == string(messages.StateNotFound) {
					unknown = append(unknown, t.TaskID)
				}
			}
			if cf.asJSON {
				if err := printJSON(map[string]any{"tasks": res}); err != nil {
					return err
				}
			} else {
				for _, t := range res {
					fmt.Printf("%s  %s\n", t.TaskID, t.Message)
				}
			}
			return unknownIDs(unknown)
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
		Long: `List the endpoints the forwarder knows, or show one. --probe ID sends a
synchronous HeartbeatReq to that endpoint and reports the round trip.

  switchyard endpoints
  switchyard endpoints demo --probe`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if probe && len(args) == 0 {
				return exitf(exitUsage, "--probe needs an endpoint id: switchyard endpoints ID --probe")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var eps []client.Endpoint
			if len(args) == 1 {
				one, err := c.Endpoint(cmd.Context(), args[0], probe)
				if err != nil {
					return err
				}
				eps = append(eps, one)
			} else {
				if eps, err = c.Endpoints(cmd.Context()); err != nil {
					return err
				}
			}
			if cf.asJSON {
				if len(args) == 1 {
					return printJSON(eps[0])
				}
				return printJSON(map[string]any{"endpoints": eps})
			}
			fmt.Printf("%-20s %-9s %8s %8s %6s %8s %11s %6s  %-24s %s\n", "ENDPOINT", "CONNECTED", "MANAGERS", "WORKERS", "IDLE", "QUEUED", "OUTSTANDING", "HELD", "SERVING", "LOST_REASON")
			for _, e := range eps {
				fmt.Printf("%-20s %-9v %8d %8d %6d %8d %11d %6d  %-24s %s\n", e.EndpointID, e.Connected, e.Managers, e.Workers,
					e.IdleWorkers, e.Queued, e.Outstanding, e.Held, e.ServingState, orDash(e.LostReason))
				if len(e.Probe) > 0 {
					fmt.Println(probeLine(e.EndpointID, e.Probe))
				}
			}
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().BoolVar(&probe, "probe", false, "send a synchronous probe to the endpoint")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// probeLine renders a probe's outcome for people.
func probeLine(ep string, raw json.RawMessage) string {
	var p struct {
		OK    bool    `json:"ok"`
		RTTms float64 `json:"rtt_ms"`
		Error string  `json:"error"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Sprintf("probe of %s: unreadable answer %s", ep, raw)
	}
	if p.OK {
		return fmt.Sprintf("probe of %s: answered in %.1f ms", ep, p.RTTms)
	}
	return fmt.Sprintf("probe of %s: no answer (%s)", ep, p.Error)
}
