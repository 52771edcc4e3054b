package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/manager"
)

// childEnv makes the test binary act as the switchyard binary: Spawn runs
// it with "forwarder ...", "interchange ..." or "manager ..." and the same
// flags, and TestMain runs that daemon instead of the tests. This tests
// Spawn without building cmd/switchyard.
const childEnv = "SWITCHYARD_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" && len(os.Args) > 1 {
		if err := runChild(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Every test must leave no goroutine behind.
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of the bench's HTTP clients.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// runChild parses the flags Spawn passes; it is not the real CLI.
func runChild(kind string, args []string) error {
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--no-persist", "--insecure", "--allow-root":
			flags[args[i]] = "true"
		default:
			if i+1 >= len(args) {
				return fmt.Errorf("flag %s without a value", args[i])
			}
			flags[args[i]] = args[i+1]
			i++
		}
	}
	iv, err := time.ParseDuration(flags["--heartbeat-interval"])
	if err != nil {
		return err
	}
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	log := logrus.NewEntry(l)
	noPersist := flags["--no-persist"] == "true"
	insecure := flags["--insecure"] == "true"
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch kind {
	case "forwarder":
		f, err := forwarder.New(forwarder.Options{ListenHTTP: flags["--listen-http"], ListenZMQ: flags["--listen-zmq"],
			StateDir: flags["--state-dir"], NoPersist: noPersist, HeartbeatInterval: iv, Log: log, Insecure: insecure})
		if err != nil {
			return err
		}
		return f.Run(ctx)
	case "interchange":
		var th servingstate.Thresholds
		if v := flags["--pause-queued-tasks"]; v != "" {
			if th.PauseQueued, err = strconv.Atoi(v); err != nil {
				return err
			}
		}
		var creds *curve.Credentials
		if flags["--credentials"] != "" {
			if creds, err = curve.ReadCredentials(flags["--credentials"], curve.KindEndpoint); err != nil {
				return err
			}
		}
		ix, err := interchange.New(interchange.Options{Credentials: creds, Insecure: insecure, EndpointID: flags["--endpoint-id"], Forwarder: flags["--forwarder"],
			ListenManagers: flags["--listen-managers"], ListenHTTP: flags["--listen-http"], StateDir: flags["--state-dir"],
			NoPersist: noPersist, HeartbeatInterval: iv, Pressure: th, Log: log})
		if err != nil {
			return err
		}
		return ix.Run(ctx)
	case "manager":
		w, _ := strconv.Atoi(flags["--workers"])
		p := -1 // the manager's own default: the interchange sizes it
		if v, ok := flags["--prefetch"]; ok {
			p, _ = strconv.Atoi(v)
		}
		var creds *curve.Credentials
		if flags["--credentials"] != "" {
			if creds, err = curve.ReadCredentials(flags["--credentials"], curve.KindManager); err != nil {
				return err
			}
		}
		mg, err := manager.New(manager.Options{Credentials: creds, Insecure: insecure, Interchange: flags["--interchange"], ManagerID: flags["--manager-id"],
			Workers: w, Prefetch: p, StateDir: flags["--state-dir"], HeartbeatInterval: iv, Log: log, AllowRoot: flags["--allow-root"] == "true"})
		if err != nil {
			return err
		}
		return mg.Run(ctx)
	}
	return fmt.Errorf("unknown daemon %q", kind)
}
