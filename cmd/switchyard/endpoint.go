package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/internal/curve"
)

func newEndpointCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Create, delete and list endpoints; run a whole endpoint on this machine"}
	cmd.AddCommand(newEndpointUpCmd())
	cmd.AddCommand(endpointAdminCmds()...)
	return cmd
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

func newEndpointUpCmd() *cobra.Command {
	var endpointID, httpAddr, zmqAddr, mgrAddr, ixHTTP, stateDir, interval, logFormat string
	var workers, managers, demo int
	var allowRoot bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start forwarder, interchange and managers here; Ctrl-C stops all",
		Long: `Start a forwarder, an interchange and --managers managers as child processes
of this command, with state under --state-dir (./var). Their logs are
forwarded with a prefix. Ctrl-C (or SIGTERM) stops all of them; if one dies,
the others are stopped too. The endpoint is enrolled with the forwarder
(STATE_DIR/endpoint.credentials) and the managers with the interchange, and
the export SWITCHYARD_TOKEN=... line to use the API is printed.

With --demo N, once the endpoint is connected a demo workload of N mixed
tasks (noop, echo, failing exec, short sleep) is submitted and followed to the
end; the endpoint keeps serving afterwards until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("cannot find own binary: %w", err)
			}
			ctx, stop := signalContext()
			defer stop()
			common := []string{"--heartbeat-interval", interval, "--log-format", logFormat}
			fwdDir, ixDir := filepath.Join(stateDir, "forwarder"), filepath.Join(stateDir, "interchange")
			api := "http://" + httpAddr
			var mu sync.Mutex
			var children []*child
			start := func(name string, argv ...string) error {
				c, err := startChild(self, name, append(argv, common...), &mu)
				if err != nil {
					stopChildren(children)
					return err
				}
				children = append(children, c)
				return nil
			}
			if err := start("forwarder", "forwarder", "--listen-http", httpAddr, "--listen-zmq", zmqAddr, "--state-dir", fwdDir); err != nil {
				return err
			}
			// Enroll the endpoint with the forwarder's admin token, as an
			// admin would with 'switchyard endpoint create'.
			token, creds, err := enrollLocal(ctx, api, fwdDir, endpointID, filepath.Join(stateDir, "endpoint.credentials"), children[0])
			if err != nil {
				stopChildren(children)
				return err
			}
			if err := start("interchange", "interchange", "--credentials", creds, "--forwarder", zmqAddr,
				"--listen-managers", mgrAddr, "--listen-http", ixHTTP, "--state-dir", ixDir); err != nil {
				return err
			}
			mgrCreds := filepath.Join(ixDir, "manager.credentials")
			if err := waitFile(ctx, mgrCreds, 30*time.Second, children[1]); err != nil {
				stopChildren(children)
				return err
			}
			for i := 1; i <= managers; i++ {
				id := fmt.Sprintf("%s-manager-%d", endpointID, i)
				argv := []string{"manager", "--interchange", mgrAddr, "--workers", strconv.Itoa(workers),
					"--manager-id", id, "--state-dir", filepath.Join(stateDir, id), "--credentials", mgrCreds}
				if allowRoot {
					argv = append(argv, "--allow-root")
				}
				if err := start(fmt.Sprintf("manager-%d", i), argv...); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "switchyard: admin token in %s\n  export SWITCHYARD_TOKEN=%s\n", filepath.Join(fwdDir, "admin.token"), token)
			fmt.Fprintf(os.Stderr, "switchyard: endpoint %q up\n  API:         %s   (export SWITCHYARD_API=%s)\n  interchange: http://%s/status\n  try:         switchyard submit -e %s -- echo hello | switchyard wait -\n  Ctrl-C stops all %d processes\n",
				endpointID, api, api, ixHTTP, endpointID, len(children))
			died := make(chan string, len(children))
			for _, c := range children {
				go func(c *child) {
					err := <-c.done
					c.done <- err
					died <- fmt.Sprintf("%s exited: %v", c.name, err)
				}(c)
			}
			if demo > 0 {
				go func() {
					if err := runDemo(ctx, client.New(api, client.WithToken(token), client.WithHTTPClient(&http.Client{Timeout: time.Minute})), endpointID, demo, os.Stdout); err != nil {
						fmt.Fprintln(os.Stderr, "switchyard: demo:", err)
					}
					fmt.Fprintln(os.Stderr, "switchyard: demo done; the endpoint keeps serving until Ctrl-C")
				}()
			}
			var reason string
			select {
			case <-ctx.Done():
				reason = "interrupted"
			case reason = <-died:
			}
			fmt.Fprintf(os.Stderr, "switchyard: stopping endpoint (%s)\n", reason)
			stopChildren(children)
			if reason != "interrupted" {
				return fmt.Errorf("%s", reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpointID, "endpoint-id", "local", "endpoint id")
	f.StringVar(&httpAddr, "listen-http", "127.0.0.1:8080", "forwarder HTTP API address")
	f.StringVar(&zmqAddr, "listen-zmq", "tcp://127.0.0.1:55001", "forwarder ZMQ address")
	f.StringVar(&mgrAddr, "listen-managers", "tcp://127.0.0.1:55002", "interchange address for managers")
	f.StringVar(&ixHTTP, "interchange-http", "127.0.0.1:8081", "interchange admin HTTP address")
	f.StringVar(&stateDir, "state-dir", "var", "state directory for all three")
	f.StringVar(&interval, "heartbeat-interval", "2s", "heartbeat interval for all links")
	f.StringVar(&logFormat, "log-format", "text", "log format of the children: text or json")
	f.IntVar(&workers, "workers", 4, "workers per manager")
	f.IntVar(&managers, "managers", 1, "managers to start")
	f.IntVar(&demo, "demo", 0, "submit a demo workload of this many tasks once up")
	f.BoolVar(&allowRoot, "allow-root", false, "let the managers run as root (every task then runs as root)")
	return cmd
}

func startChild(self, name string, argv []string, mu *sync.Mutex) (*child, error) {
	cmd := exec.Command(self, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan error, 1)}
	go prefixLines(out, fmt.Sprintf("%-12s| ", name), mu)
	go func() { c.done <- cmd.Wait() }()
	return c, nil
}

func prefixLines(r io.Reader, prefix string, mu *sync.Mutex) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mu.Lock()
		fmt.Fprintln(os.Stderr, prefix+sc.Text())
		mu.Unlock()
	}
}

// stopChildren sends SIGTERM in reverse start order, then SIGKILL.
func stopChildren(cs []*child) {
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].cmd.Process != nil {
			_ = cs[i].cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(10 * time.Second)
	for _, c := range cs {
		select {
		case <-c.done:
		case <-deadline:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
}

// waitConnected polls until the endpoint reports a manager.
func waitConnected(ctx context.Context, c *client.Client, ep string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v, err := c.Endpoint(ctx, ep, false)
		if err == nil && v.Connected && v.Managers > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("endpoint %s not connected after %s: %v", ep, timeout, err)
			}
			return fmt.Errorf("endpoint %s not connected after %s", ep, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// enrollLocal waits for the forwarder's admin token and creates the
// endpoint unless its credential was written by an earlier run.
func enrollLocal(ctx context.Context, api, fwdDir, ep, credsPath string, fwd *child) (token, creds string, err error) {
	tokPath := filepath.Join(fwdDir, "admin.token")
	if err := waitFile(ctx, tokPath, 30*time.Second, fwd); err != nil {
		return "", "", err
	}
	if token, err = client.ReadTokenFile(tokPath); err != nil {
		return "", "", err
	}
	if c, err := curve.ReadCredentials(credsPath, curve.KindEndpoint); err == nil && c.ID == ep {
		return token, credsPath, nil
	}
	c := client.New(api, client.WithToken(token), client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	var raw json.RawMessage
	err = pollCtx(ctx, 30*time.Second, func() error {
		var e error
		raw, e = c.CreateEndpoint(ctx, ep)
		if st := client.StatusOf(e); st != 0 && st != http.StatusServiceUnavailable {
			return &fatal{e}
		}
		return e
	})
	if err != nil {
		return "", "", fmt.Errorf("create endpoint %s: %w", ep, err)
	}
	var cred curve.Credentials
	if err := json.Unmarshal(raw, &cred); err != nil {
		return "", "", fmt.Errorf("create endpoint %s: %w", ep, err)
	}
	return token, credsPath, curve.WriteCredentials(credsPath, &cred)
}

type fatal struct{ error }

// pollCtx calls fn until it succeeds, returns a *fatal, ctx ends or
// timeout passes.
func pollCtx(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if f, ok := err.(*fatal); ok {
			return f.error
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitFile waits until path exists and is not empty, or the child that
// should write it exits.
func waitFile(ctx context.Context, path string, timeout time.Duration, writer *child) error {
	return pollCtx(ctx, timeout, func() error {
		select {
		case err := <-writer.done:
			writer.done <- err
			return &fatal{fmt.Errorf("%s exited before writing %s: %v", writer.name, path, err)}
		default:
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			return fmt.Errorf("%s not written yet", path)
		}
		return nil
	})
}
