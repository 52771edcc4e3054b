package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Daemons is an endpoint of real processes started from the switchyard
// binary: a forwarder, an interchange and managers, each on its own
// loopback ports and with its own state dir under Dir (state-forwarder,
// state-interchange, state-MANAGER_ID), secure as `endpoint up` runs them.
type Daemons struct {
	Bin, Dir, Endpoint string
	// Ports of the forwarder (HTTP, ZMQ) and the interchange (admin HTTP,
	// managers' ROUTER).
	FwdHTTP, FwdZMQ, IxHTTP, IxManagers int
	Forwarder, Interchange              *Proc
	// Token is the forwarder's admin token, Creds the endpoint's
	// credential file.
	Token, Creds string
	common       launch.Common
}

// DaemonsOptions shape Daemons. Zero durations leave the daemons' defaults.
type DaemonsOptions struct {
	Endpoint            string // default "e2e"
	Interval, Threshold time.Duration
	// Interchange holds more interchange flags; the kit sets its
	// endpoint, addresses, state dir, credential and heartbeats.
	Interchange launch.Interchange
}

// ManagerProc is a manager process and the port of its admin HTTP.
type ManagerProc struct {
	*Proc
	ID   string
	Port int
}

// URL is the manager's admin HTTP base URL.
func (m *ManagerProc) URL() string { return "http://" + Addr(m.Port) }

// Addr is the loopback host:port of port.
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// ZMQ is the loopback ZMQ address of port.
func ZMQ(port int) string { return fmt.Sprintf("tcp://127.0.0.1:%d", port) }

// Port is a free loopback port (launch.FreePort) or the test fails.
func Port(t testing.TB) int {
	t.Helper()
	p, err := launch.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartDaemons enrolls the endpoint, starts the forwarder and the
// interchange from bin, and waits until the forwarder sees the endpoint
// connected. Add managers with StartManager.
func StartDaemons(t testing.TB, bin string, o DaemonsOptions) *Daemons {
	t.Helper()
	if o.Endpoint == "" {
		o.Endpoint = "e2e"
	}
	d := &Daemons{Bin: bin, Dir: t.TempDir(), Endpoint: o.Endpoint,
		FwdHTTP: Port(t), FwdZMQ: Port(t), IxHTTP: Port(t), IxManagers: Port(t),
		common: launch.Common{HeartbeatInterval: o.Interval, HeartbeatThreshold: o.Threshold}}
	// Enrolled in the forwarder's state dir before it starts, as
	// `endpoint up` does.
	d.Creds = EnrollOffline(t, d.StateDir("forwarder"), d.Endpoint, ZMQ(d.FwdZMQ))
	fwd := launch.Forwarder{Common: d.common, ListenZMQ: ZMQ(d.FwdZMQ)}
	fwd.ListenHTTP, fwd.StateDir = Addr(d.FwdHTTP), d.StateDir("forwarder")
	d.Forwarder = StartProc(t, d.Dir, "forwarder", bin, fwd.Args()...)
	d.Token = d.Forwarder.WaitFile(t, filepath.Join(d.StateDir("forwarder"), "admin.token"), 30*time.Second)
	ix := o.Interchange
	ix.Common.HeartbeatInterval, ix.Common.HeartbeatThreshold = o.Interval, o.Threshold
	ix.ListenHTTP, ix.StateDir = Addr(d.IxHTTP), d.StateDir("interchange")
	ix.EndpointID, ix.Credentials, ix.Forwarder, ix.ListenManagers = d.Endpoint, d.Creds, ZMQ(d.FwdZMQ), ZMQ(d.IxManagers)
	d.Interchange = StartProc(t, d.Dir, "interchange", bin, ix.Args()...)
	d.Interchange.WaitFile(t, d.ManagerCreds(), 30*time.Second)
	api := client.New(d.API(), client.WithToken(d.Token))
	WaitFor(t, 30*time.Second, func() error {
		v, err := api.Endpoint(context.Background(), d.Endpoint, false)
		if err != nil {
			return err
		}
		if !v.Connected {
			return errors.New("endpoint not connected yet")
		}
		return nil
	})
	return d
}

// StateDir is the state dir of the daemon called name.
func (d *Daemons) StateDir(name string) string { return filepath.Join(d.Dir, "state-"+name) }

// ManagerCreds is the credential the interchange writes for its managers.
func (d *Daemons) ManagerCreds() string {
	return filepath.Join(d.StateDir("interchange"), "manager.credentials")
}

// API is the forwarder's base URL, IxAPI the interchange's admin one.
func (d *Daemons) API() string   { return "http://" + Addr(d.FwdHTTP) }
func (d *Daemons) IxAPI() string { return "http://" + Addr(d.IxHTTP) }

// StartManager starts a manager with its own admin HTTP port and state
// dir, connected to the interchange with its credential and the
// heartbeats of the others (root is allowed when the test runs as root).
// It does not wait: the manager's admin token is in
// StateDir(id)/admin.token once it is up.
func (d *Daemons) StartManager(t testing.TB, m launch.Manager) *ManagerProc {
	t.Helper()
	port := Port(t)
	m.Common = d.common
	m.ListenHTTP, m.StateDir = Addr(port), d.StateDir(m.ManagerID)
	m.Interchange, m.Credentials = ZMQ(d.IxManagers), d.ManagerCreds()
	m.AllowRoot = m.AllowRoot || os.Geteuid() == 0
	return &ManagerProc{Proc: StartProc(t, d.Dir, m.ManagerID, d.Bin, m.Args()...), ID: m.ManagerID, Port: port}
}
