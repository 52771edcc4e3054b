package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/launch"
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
	var endpointID, httpAddr, zmqAddr, mgrAddr, ixHTTP, stateDir, interval, logFormat, python, storeURL string
	var workers, managers, maxManagers, demo int
	var insecure, allowRoot, freePorts bool
	var managerArgs []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start forwarder, interchange and managers here; Ctrl-C stops all",
		Long: `Start a forwarder, an interchange and --managers managers as child processes
of this command, with state under --state-dir (./var). Their logs are
forwarded with a prefix. Ctrl-C (or SIGTERM) stops all of them; if one dies,
the others are stopped too. The endpoint is enrolled in the forwarder's state
dir before it starts (STATE_DIR/endpoint.credentials) and the managers with
the interchange, and the export SWITCHYARD_TOKEN=... line to use the API is
printed.

With --max-managers M (more than --managers), the interchange starts and
stops the managers itself, in blocks of the local provider: --managers at
first, up to M while tasks queue, back down after a minute idle; their logs
are in STATE_DIR/interchange/blocks/.

Any address with port 0 gets a free port picked at start, and --free-ports
does that for all four (forwarder HTTP and ZMQ, interchange managers and
admin HTTP); the banner prints the ones chosen. On a busy host:

  switchyard endpoint up --free-ports
  make run ARGS='--free-ports'

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
			picked, err := pickPorts(freePorts, &httpAddr, &zmqAddr, &mgrAddr, &ixHTTP)
			if err != nil {
				return err
			}
			iv, err := time.ParseDuration(interval)
			if err == nil && iv <= 0 {
				err = fmt.Errorf("must be positive")
			}
			if err != nil {
				return fmt.Errorf("--heartbeat-interval %q: %v", interval, err)
			}
			common := launch.Common{HeartbeatInterval: iv, LogFormat: logFormat, Insecure: insecure}
			ixState := filepath.Join(stateDir, "interchange")
			fwd := launch.Forwarder{Common: common, ListenZMQ: zmqAddr, Store: storeURL}
			fwd.ListenHTTP, fwd.StateDir = httpAddr, filepath.Join(stateDir, "forwarder")
			ix := launch.Interchange{Common: common, EndpointID: endpointID, Forwarder: zmqAddr, ListenManagers: mgrAddr}
			ix.ListenHTTP, ix.StateDir = ixHTTP, ixState
			if !insecure {
				// Enroll our own endpoint before the forwarder starts, in its
				// state dir, so nothing else needs doing by hand.
				if err := os.MkdirAll(stateDir, 0o700); err != nil {
					return err
				}
				creds, err := forwarder.EnrollOfflineIn(filepath.Join(stateDir, "forwarder"), cmp.Or(storeURL, "pebble"), endpointID, zmqAddr)
				if err != nil {
					return fmt.Errorf("enroll endpoint %s: %w", endpointID, err)
				}
				credPath := filepath.Join(stateDir, "endpoint.credentials")
				if err := curve.WriteCredentials(credPath, creds); err != nil {
					return err
				}
				ix.Credentials = credPath
			}
			if maxManagers > 0 {
				if maxManagers < managers {
					return fmt.Errorf("--max-managers %d is below --managers %d", maxManagers, managers)
				}
				// The interchange scales its own managers in local blocks.
				mgr := launch.Manager{Common: common, Python: python}
				ix.AllowRoot = allowRoot
				ix.Blocks = &launch.Blocks{Provider: blocks.ProviderLocal, MinBlocks: managers, InitBlocks: managers,
					MaxBlocks: maxManagers, WorkersPerNode: workers, MaxIdle: time.Minute, Period: time.Second,
					Walltime: new(time.Duration(0)), ManagerArgs: append(mgr.Flags(), managerArgs...)}
				managers = 0
			}
			specs := [][]string{fwd.Args(), ix.Args()}
			names := []string{"forwarder", "interchange"}
			for i := 1; i <= managers; i++ {
				id := fmt.Sprintf("%s-manager-%d", endpointID, i)
				// The interchange sizes their prefetch; --manager-arg=--prefetch=N
				// overrides it.
				m := launch.Manager{Common: common, ManagerID: id, Interchange: mgrAddr, Workers: workers,
					Python: python, AllowRoot: allowRoot, Extra: managerArgs}
				m.StateDir = filepath.Join(stateDir, id)
				if !insecure {
					m.Credentials = filepath.Join(ixState, "manager.credentials")
				}
				specs = append(specs, m.Args())
				names = append(names, fmt.Sprintf("manager-%d", i))
			}
			var mu sync.Mutex
			var children []*child
			for i, argv := range specs {
				if names[i] == "manager-1" && !insecure {
					// Managers need the credential the interchange writes on start.
					if err := waitFile(ctx, filepath.Join(ixState, "manager.credentials"), children[1], 30*time.Second); err != nil {
						stopChildren(children)
						return err
					}
				}
				c, err := startChild(self, names[i], argv, &mu)
				if err != nil {
					stopChildren(children)
					return err
				}
				children = append(children, c)
			}
			api := "http://" + httpAddr
			token := ""
			if !insecure {
				// The forwarder writes its admin token on start; the API needs it.
				tokPath := filepath.Join(stateDir, "forwarder", "admin.token")
				if err := waitFile(ctx, tokPath, children[0], 30*time.Second); err != nil {
					stopChildren(children)
					return err
				}
				if token, err = client.ReadTokenFile(tokPath); err != nil {
					stopChildren(children)
					return err
				}
				fmt.Fprintf(os.Stderr, "switchyard: admin token in %s\n  export SWITCHYARD_TOKEN=%s\n", tokPath, token)
			}
			if picked {
				fmt.Fprintf(os.Stderr, "switchyard: free ports chosen: --listen-http %s --listen-zmq %s --listen-managers %s --interchange-http %s\n",
					httpAddr, zmqAddr, mgrAddr, ixHTTP)
			}
			// Name the binary as it was invoked (bin/switchyard, ./switchyard, ...).
			me := os.Args[0]
			fmt.Fprintf(os.Stderr, "switchyard: endpoint %q up\n  API:         %s   (export SWITCHYARD_API=%s)\n  interchange: http://%s/status\n  try:         %s submit -e %s -- echo hello | %s wait -\n  Ctrl-C stops all %d processes\n",
				endpointID, api, api, ixHTTP, me, endpointID, me, len(children))
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
	f.StringVar(&storeURL, "store", "", "the forwarder's --store (default: the Pebble store in its state directory), e.g. postgres://USER@HOST:PORT/DB")
	f.StringVar(&interval, "heartbeat-interval", "2s", "heartbeat interval for all links")
	f.StringVar(&logFormat, "log-format", "text", "log format of the children: text or json")
	f.StringVar(&python, "python", "python3", "Python interpreter of the managers' Python workers; it needs cloudpickle")
	f.IntVar(&workers, "workers", 4, "workers per manager")
	f.StringArrayVar(&managerArgs, "manager-arg", nil, "pass this argument to every manager too, e.g. --manager-arg=--prefetch=1000 (repeatable)")
	f.IntVar(&managers, "managers", 1, "managers to start")
	f.IntVar(&maxManagers, "max-managers", 0, "let the interchange scale managers (local blocks) between --managers and this many")
	f.IntVar(&demo, "demo", 0, "submit a demo workload of this many tasks once up")
	f.BoolVar(&insecure, "insecure", false, "run without CurveZMQ and API tokens (benchmarks); every daemon logs a warning")
	f.BoolVar(&freePorts, "free-ports", false, "pick free ports for all four addresses (keeping their hosts) and print them")
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

// waitFile waits until path exists, the child dies, or the timeout passes.
func waitFile(ctx context.Context, path string, c *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() > 0 {
			return nil
		}
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("%s exited before writing %s: %v", c.name, path, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not write %s within %s", c.name, path, timeout)
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

// pickPorts gives each address with port 0 (all of them with all) a free
// port of its host, and reports whether it changed any. The port is free
// when picked; another process could take it before the child binds, and
// the child's bind error then names it.
func pickPorts(all bool, addrs ...*string) (bool, error) {
	changed := false
	for _, a := range addrs {
		scheme, hostport, zmq := strings.Cut(*a, "://")
		if !zmq {
			hostport, scheme = *a, ""
		}
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return false, fmt.Errorf("address %q: %v; use HOST:PORT or tcp://HOST:PORT", *a, err)
		}
		if !all && port != "0" {
			continue
		}
		p, err := launch.FreePort(host)
		if err != nil {
			return false, fmt.Errorf("%q: %w", *a, err)
		}
		hostport = net.JoinHostPort(host, strconv.Itoa(p))
		if zmq {
			*a = scheme + "://" + hostport
		} else {
			*a = hostport
		}
		changed = true
	}
	return changed, nil
}
