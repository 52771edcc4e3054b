package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Endpoint is the system under test: the forwarder's API plus, when the
// bench started it, the three kinds of process as its children.
type Endpoint struct {
	API             string // forwarder HTTP base URL
	ID              string // endpoint id
	InterchangeHTTP string // interchange admin base URL, or ""
	ManagersAddr    string // interchange ROUTER for managers, or ""
	// ManagerCredentials is the path of the managers' credential ("" when
	// insecure or unknown).
	ManagerCredentials string
	Procs              []*Proc
	Dir                string // state and logs of a spawned endpoint
	// Token is sent to the forwarder, InterchangeToken to the
	// interchange's admin HTTP (both empty with --insecure).
	Token, InterchangeToken string
	spawned                 bool
}

// client is the forwarder's client with the endpoint's token.
func (e *Endpoint) client(hc *http.Client) *api { return newAPI(e.API, e.Token, hc) }

// ixStatus reads the interchange's GET /status.
func (e *Endpoint) ixStatus(ctx context.Context, hc *http.Client) (ixStatus, error) {
	return ixStatusOf(ctx, hc, e.InterchangeHTTP, e.InterchangeToken)
}

// Proc is one child process.
type Proc struct {
	Name string
	PID  int
	Log  string
	cmd  *exec.Cmd
	done chan error
}

// SpawnOptions say how to start an endpoint.
type SpawnOptions struct {
	// Exe is the switchyard binary (usually os.Executable()).
	Exe string
	// Dir holds state dirs and logs; a temp dir is made when empty.
	Dir       string
	NoPersist bool
	Interval  time.Duration
	// Managers real manager processes, each with Workers and Prefetch.
	Managers, Workers, Prefetch int
	// PauseQueued is the interchange's --pause-queued-tasks (0: default).
	PauseQueued int
	// Insecure starts the three with --insecure: no tokens, no CurveZMQ,
	// no enrollment (to measure what security costs).
	Insecure bool
}

// Spawn starts a forwarder, an interchange and opts.Managers managers on
// free loopback ports and waits until the endpoint is connected with all
// its managers registered.
func Spawn(ctx context.Context, opts SpawnOptions) (*Endpoint, error) {
	if opts.Exe == "" {
		return nil, errors.New("bench: no switchyard binary to start")
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "switchyard-bench-"); err != nil {
			return nil, err
		}
	}
	var ports [4]int
	for i := range ports {
		p, err := launch.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	e := &Endpoint{ID: "bench", Dir: dir, spawned: true,
		API:             fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		InterchangeHTTP: fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		ManagersAddr:    fmt.Sprintf("tcp://127.0.0.1:%d", ports[3])}
	fwdZMQ := fmt.Sprintf("tcp://127.0.0.1:%d", ports[1])
	common := launch.Common{HeartbeatInterval: opts.Interval, LogFormat: "json", LogLevel: "warn", Insecure: opts.Insecure}
	fwdDir, ixDir := filepath.Join(dir, "forwarder"), filepath.Join(dir, "interchange")
	fwd := launch.Forwarder{Common: common, ListenZMQ: fwdZMQ, NoPersist: opts.NoPersist}
	fwd.ListenHTTP, fwd.StateDir = fmt.Sprintf("127.0.0.1:%d", ports[0]), fwdDir
	ix := launch.Interchange{Common: common, EndpointID: e.ID, Forwarder: fwdZMQ, ListenManagers: e.ManagersAddr,
		NoPersist: opts.NoPersist, PauseQueued: max(opts.PauseQueued, 0)}
	ix.ListenHTTP, ix.StateDir = fmt.Sprintf("127.0.0.1:%d", ports[2]), ixDir
	hc := &http.Client{Timeout: 5 * time.Second}
	start := func(name string, argv []string) (*Proc, error) {
		p, err := startProc(opts.Exe, dir, name, argv)
		if err != nil {
			e.Stop()
			return nil, err
		}
		e.Procs = append(e.Procs, p)
		return p, nil
	}
	mgrCreds := ""
	if !opts.Insecure {
		// Enrolled in the forwarder's state dir before it starts, as
		// `endpoint up` does.
		creds, err := forwarder.EnrollOffline(fwdDir, e.ID, fwdZMQ)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "endpoint.credentials")
		if err := curve.WriteCredentials(path, creds); err != nil {
			return nil, err
		}
		ix.Credentials = path
		mgrCreds = filepath.Join(ixDir, "manager.credentials")
		e.ManagerCredentials = mgrCreds
	}
	fp, err := start("forwarder", fwd.Args())
	if err != nil {
		return nil, err
	}
	if !opts.Insecure {
		if e.Token, err = waitToken(ctx, filepath.Join(fwdDir, "admin.token"), fp); err != nil {
			e.Stop()
			return nil, err
		}
	}
	ip, err := start("interchange", ix.Args())
	if err != nil {
		return nil, err
	}
	if !opts.Insecure {
		if e.InterchangeToken, err = waitToken(ctx, filepath.Join(ixDir, "admin.token"), ip); err != nil {
			e.Stop()
			return nil, err
		}
		if _, err := waitToken(ctx, mgrCreds, ip); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for i := 1; i <= opts.Managers; i++ {
		id := fmt.Sprintf("bench-manager-%d", i)
		m := launch.Manager{Common: common, ManagerID: id, Interchange: e.ManagersAddr, Workers: opts.Workers,
			Credentials: mgrCreds, AllowRoot: os.Geteuid() == 0}
		if opts.Prefetch >= 0 {
			m.Prefetch = new(opts.Prefetch)
		}
		m.StateDir = filepath.Join(dir, id)
		argv := m.Args()
		if _, err := start(fmt.Sprintf("manager-%d", i), argv); err != nil {
			return nil, err
		}
	}
	a := e.client(hc)
	err = pollUntil(ctx, 30*time.Second+3*opts.Interval, 20*time.Millisecond, func() error {
		for _, p := range e.Procs {
			select {
			case err := <-p.done:
				p.done <- err
				return &fatalError{fmt.Errorf("%s exited during start-up (%v); see %s", p.Name, err, p.Log)}
			default:
			}
		}
		v, err := a.Endpoint(ctx, e.ID, false)
		if err != nil {
			return err
		}
		st, err := e.ixStatus(ctx, hc)
		if err != nil {
			return err
		}
		if !v.Connected || st.Managers < opts.Managers || v.Managers < opts.Managers {
			return fmt.Errorf("endpoint connected=%v, interchange has %d managers, forwarder sees %d; want %d",
				v.Connected, st.Managers, v.Managers, opts.Managers)
		}
		return nil
	})
	if err != nil {
		e.Stop()
		return nil, fmt.Errorf("endpoint did not come up: %w (logs in %s)", err, dir)
	}
	return e, nil
}

type fatalError struct{ error }

// waitToken waits until the file at path is written by proc and returns
// its content.
func waitToken(ctx context.Context, path string, p *Proc) (string, error) {
	var tok string
	err := pollUntil(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			return &fatalError{fmt.Errorf("%s exited during start-up (%v); see %s", p.Name, err, p.Log)}
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return fmt.Errorf("%s not written yet", path)
		}
		tok = strings.TrimSpace(string(b))
		return nil
	})
	return tok, err
}

func startProc(exe, dir, name string, argv []string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, argv...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Children die with the bench even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.done <- err
	}()
	return p, nil
}

// Proc finds a child by name.
func (e *Endpoint) Proc(name string) *Proc {
	for _, p := range e.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Alive returns an error naming a child that has exited.
func (e *Endpoint) Alive() error {
	for _, p := range e.Procs {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited (%v); see %s", p.Name, err, p.Log)
		default:
		}
	}
	return nil
}

// Stop ends the children (SIGTERM, then SIGKILL after 10s), managers
// first.
func (e *Endpoint) Stop() {
	for i := len(e.Procs) - 1; i >= 0; i-- {
		_ = e.Procs[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range e.Procs {
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(time.Until(deadline)):
			_ = p.cmd.Process.Kill()
			err := <-p.done
			p.done <- err
		}
	}
}

// Remove deletes the state dir of a spawned endpoint.
func (e *Endpoint) Remove() {
	if e.spawned && e.Dir != "" {
		_ = os.RemoveAll(e.Dir)
	}
}
