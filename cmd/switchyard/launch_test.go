package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Every flag the launch spec emits exists on the daemon's real command and
// takes the value given, so the spec cannot drift from the CLI.
func TestLaunchSpecMatchesCLI(t *testing.T) {
	common := launch.Common{ListenHTTP: "127.0.0.1:8080", StateDir: "/s", HeartbeatInterval: 2 * time.Second,
		HeartbeatThreshold: 5 * time.Second, LogFormat: "json", LogLevel: "warn", Pprof: true, Insecure: true}
	for _, tc := range []struct {
		cmd  *cobra.Command
		argv []string
	}{
		{newForwarderCmd(), launch.Forwarder{Common: common, ListenZMQ: "tcp://127.0.0.1:55001", NoPersist: true, Fsync: true}.Args()},
		{newInterchangeCmd(), launch.Interchange{Common: common, EndpointID: "ep", Credentials: "/c", Forwarder: "tcp://f:1", ListenManagers: "tcp://m:2",
			NoPersist: true, Fsync: true, MaxRetries: new(0), PauseQueued: 100, ResumeQueued: 50, AllowRoot: true,
			Blocks: &launch.Blocks{Provider: blocks.ProviderLocal, MinBlocks: 1, InitBlocks: 1, MaxBlocks: 3, WorkersPerNode: 4, MaxIdle: time.Minute,
				Period: time.Second, Walltime: new(time.Duration(0)), NoExclusive: true, MemPerNode: "8G", GPUsPerNode: 1, CancelOnExit: true, ManagerArgs: []string{"--python=py"}}}.Args()},
		{newManagerCmd(), launch.Manager{Common: common, ManagerID: "m1", Interchange: "tcp://m:2", BlockID: "b1", Workers: 8, Prefetch: new(0),
			Credentials: "/mc", Python: "python3", DrainGrace: time.Second, AllowRoot: true}.Args()},
		// What an interchange passes on with --manager-arg.
		{newManagerCmd(), append([]string{"manager"}, launch.Manager{Common: common, Workers: 2, Prefetch: new(-1), Python: "py", AllowRoot: true}.Flags()...)},
	} {
		if tc.argv[0] != tc.cmd.Name() {
			t.Errorf("argv %q is not of command %s", tc.argv, tc.cmd.Name())
			continue
		}
		if err := tc.cmd.ParseFlags(tc.argv[1:]); err != nil {
			t.Errorf("%s does not take %q: %v", tc.cmd.Name(), tc.argv, err)
			continue
		}
		fs := tc.cmd.Flags()
		if rest := fs.Args(); len(rest) > 0 {
			t.Errorf("%s: %q left as arguments (a value after a flag that takes none?)", tc.cmd.Name(), rest)
		}
		for i := 1; i < len(tc.argv); i++ {
			a := tc.argv[i]
			if !strings.HasPrefix(a, "--") {
				continue
			}
			name, val, hasVal := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			f := fs.Lookup(name)
			if f == nil || !f.Changed {
				t.Errorf("%s: the spec emits --%s, which the command does not have", tc.cmd.Name(), name)
				continue
			}
			if !hasVal && f.Value.Type() != "bool" {
				val = tc.argv[i+1]
			}
			if got := f.Value.String(); hasVal || f.Value.Type() != "bool" {
				if f.Value.Type() == "stringArray" {
					if !strings.Contains(got, val) {
						t.Errorf("%s --%s: parsed %s, lacks %q", tc.cmd.Name(), name, got, val)
					}
				} else if got != val {
					t.Errorf("%s --%s: parsed %q, the spec gave %q", tc.cmd.Name(), name, got, val)
				}
			}
		}
	}
}
