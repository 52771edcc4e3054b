package launch_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Every field set: the argv is the contract's flag names in a fixed order.
// cmd/switchyard's TestLaunchSpecMatchesCLI parses these with the real
// commands.
func TestArgs(t *testing.T) {
	common := launch.Common{ListenHTTP: "127.0.0.1:8080", StateDir: "/s", HeartbeatInterval: 2 * time.Second,
		HeartbeatThreshold: 5 * time.Second, LogFormat: "json", LogLevel: "warn", Pprof: true, Insecure: true}
	for _, tc := range []struct {
		name string
		got  []string
		want string
	}{
		{"forwarder", launch.Forwarder{Common: common, ListenZMQ: "tcp://127.0.0.1:55001", NoPersist: true, Fsync: true, Extra: []string{"--retention=1h"}}.Args(),
			"forwarder --listen-zmq tcp://127.0.0.1:55001 --listen-http 127.0.0.1:8080 --state-dir /s --heartbeat-interval 2s --heartbeat-threshold 5s --log-format json --log-level warn --pprof --insecure --no-persist --fsync --retention=1h"},
		{"interchange", launch.Interchange{Common: common, EndpointID: "ep", Credentials: "/c", Forwarder: "tcp://f:1", ListenManagers: "tcp://m:2",
			NoPersist: true, Fsync: true, MaxRetries: new(0), PauseQueued: 100, ResumeQueued: 50, AllowRoot: true,
			Blocks: &launch.Blocks{Provider: "local", MinBlocks: 1, InitBlocks: 1, MaxBlocks: 3, WorkersPerNode: 4, MaxIdle: time.Minute,
				Period: time.Second, Walltime: new(time.Duration(0)), ManagerArgs: []string{"--python=py", "--prefetch=0"}},
			Extra: []string{"--max-result-bytes=10"}}.Args(),
			"interchange --endpoint-id ep --credentials /c --forwarder tcp://f:1 --listen-managers tcp://m:2 --listen-http 127.0.0.1:8080 --state-dir /s --heartbeat-interval 2s --heartbeat-threshold 5s --log-format json --log-level warn --pprof --insecure --no-persist --fsync --max-retries 0 --pause-queued-tasks 100 --resume-queued-tasks 50 --allow-root --provider local --min-blocks 1 --init-blocks 1 --max-blocks 3 --workers-per-node 4 --max-idle 1m0s --block-period 1s --walltime 0s --manager-arg=--python=py --manager-arg=--prefetch=0 --max-result-bytes=10"},
		{"manager", launch.Manager{Common: common, ManagerID: "m1", Interchange: "tcp://m:2", BlockID: "b1", Workers: 8, Prefetch: new(0),
			Credentials: "/mc", Python: "python3", DrainGrace: time.Second, AllowRoot: true, Extra: []string{"--task-env=X"}}.Args(),
			"manager --manager-id m1 --interchange tcp://m:2 --block-id b1 --workers 8 --prefetch 0 --credentials /mc --listen-http 127.0.0.1:8080 --state-dir /s --heartbeat-interval 2s --heartbeat-threshold 5s --log-format json --log-level warn --pprof --insecure --python python3 --drain-grace 1s --allow-root --task-env=X"},
	} {
		if got := strings.Join(tc.got, " "); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// Zero fields leave their flags out: the daemon's defaults apply.
func TestZeroIsDefault(t *testing.T) {
	for _, got := range [][]string{launch.Forwarder{}.Args(), launch.Interchange{}.Args(), launch.Manager{}.Args()} {
		if len(got) != 1 {
			t.Errorf("zero spec gives %q, want the subcommand alone", got)
		}
	}
	if got := (launch.Interchange{Blocks: &launch.Blocks{Provider: "slurm"}}).Args(); !slices.Equal(got, []string{"interchange", "--provider", "slurm"}) {
		t.Errorf("blocks with defaults: %q", got)
	}
}

// Flags is the --manager-arg form: one argument per flag.
func TestManagerFlags(t *testing.T) {
	got := launch.Manager{Common: launch.Common{HeartbeatInterval: time.Second, Insecure: true}, Python: "py", Extra: []string{"--prefetch=0"}}.Flags()
	if want := []string{"--heartbeat-interval=1s", "--insecure", "--python=py", "--prefetch=0"}; !slices.Equal(got, want) {
		t.Errorf("Flags: %q, want %q", got, want)
	}
}

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := launch.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p <= 0 || seen[p] {
			t.Fatalf("FreePort gave %d again (or not a port)", p)
		}
		seen[p] = true
	}
	if _, err := launch.FreePort("256.0.0.1"); err == nil {
		t.Error("FreePort on a host that is not an address: no error")
	}
}
