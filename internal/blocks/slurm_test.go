package blocks_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

func TestSlurmScript(t *testing.T) {
	cfg := &blocks.Config{Provider: "slurm", MaxBlocks: 2, NodesPerBlock: 3, WorkersPerNode: 8, Walltime: 90*time.Minute + time.Second,
		Partition: "debug", Account: "proj1", SchedulerOptions: []string{"#SBATCH --qos=low", "--exclusive"},
		WorkerInit: "module load x"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := blocks.NewSlurm(cfg)
	script, err := s.Script(blocks.Spec{BlockID: "b1", Dir: "/state/blocks/b1", Nodes: 3, WorkersPerNode: 8, Walltime: cfg.Walltime,
		WorkerInit: cfg.WorkerInit, Manager: blocks.ManagerCommand{Binary: "/opt/sy bin/switchyard", Interchange: "tcp://login1:55002",
			Credentials: "/state/manager.credentials", AllowRoot: true, Args: []string{"--prefetch=0", "--heartbeat-interval", "1s"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/bash\n",
		"#SBATCH --nodes=3\n",
		"#SBATCH --ntasks-per-node=1\n",
		"#SBATCH --time=0-01:31:00\n", // rounded up to whole minutes
		"#SBATCH --output=/state/blocks/b1/job.out\n",
		"#SBATCH --partition=debug\n",
		"#SBATCH --account=proj1\n",
		"#SBATCH --qos=low\n",
		"#SBATCH --exclusive\n",
		"module load x\n",
		"BIN='/opt/sy bin/switchyard'\n",
		`srun --ntasks-per-node=1 --whole --kill-on-bad-exit=0 /bin/bash -c 'exec "$0" "$@" --manager-id "b1-$(hostname -s)" --listen-http "$(hostname):0"' "$BIN" manager --interchange tcp://login1:55002 --block-id b1 --workers 8 --credentials /state/manager.credentials --allow-root --prefetch=0 --heartbeat-interval 1s` + "\n",
		`echo "$rc" > "$BLOCK_DIR/exit"`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if strings.Index(script, "#SBATCH --exclusive") > strings.Index(script, "set -u") {
		t.Error("#SBATCH lines must come before the first command")
	}
	if t.Failed() {
		t.Log(script)
	}
}

// slurmProvider is a provider for the fixture; its jobs run the test
// binary as a fake manager in mode.
func slurmProvider(c *slurmtest.Cluster, mode string) *blocks.Slurm {
	s := blocks.NewSlurm(&blocks.Config{})
	s.Env = append(c.Env(), "BLOCKS_FAKE_MANAGER="+mode, "GORACE=atexit_sleep_ms=0")
	return s
}

// TestSlurmProvider goes through a block's life on a real cluster: pending
// (behind a job that holds every CPU), running, cancelled with SIGTERM
// reaching the manager, and done; then a block whose managers exit 0, a
// rejected sbatch and a job that can never start.
func TestSlurmProvider(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 3 * time.Second})
	ctx := context.Background()

	t.Run("pending running cancelled", func(t *testing.T) {
		s := slurmProvider(c, "drain")
		blocker, err := c.Output("sbatch", "--parsable", "--exclusive", "--output=/dev/null", "--wrap", "sleep 300")
		if err != nil {
			t.Fatal(err)
		}
		blocker = strings.TrimSpace(blocker)
		testutil.WaitFor(t, 30*time.Second, func() error {
			if st, err := c.JobState(blocker); err != nil || st != "RUNNING" {
				return fmt.Errorf("blocker %s is %q (%v)", blocker, st, err)
			}
			return nil
		})
		spec := fakeSpec(t, "bs1", 1)
		t0 := time.Now()
		id, err := s.Submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		submitted := time.Since(t0)
		st := waitJob(t, s, id, blocks.JobPending, 30*time.Second)
		if _, err := os.Stat(filepath.Join(spec.Dir, "job.sh")); err != nil {
			t.Fatalf("job script not kept in the block dir: %v", err)
		}
		if _, err := c.Output("scancel", blocker); err != nil {
			t.Fatal(err)
		}
		released := time.Now()
		running := waitJob(t, s, id, blocks.JobRunning, 60*time.Second)
		startedIn := time.Since(released)
		waitFile(t, filepath.Join(spec.Dir, "up-bs1-"+c.Node))
		managerUp := time.Since(released)
		args, _ := os.ReadFile(filepath.Join(spec.Dir, "args-bs1-"+c.Node))
		if !strings.Contains(string(args), "--block-id\nbs1") || !strings.Contains(string(args), "--credentials\n/x/manager.credentials") {
			t.Fatalf("manager args:\n%s", args)
		}
		if running.Since.IsZero() {
			t.Error("a running job has no start time")
		}
		t1 := time.Now()
		if err := s.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
		done := waitJob(t, s, id, blocks.JobDone, 30*time.Second)
		if done.Reason != "cancelled" {
			t.Errorf("reason %q, want cancelled", done.Reason)
		}
		waitFile(t, filepath.Join(spec.Dir, "term-bs1-"+c.Node))
		t.Logf("timeline: sbatch %s; pending (%s) until the blocker ended; running %s later, manager up %s; scancel → done %s",
			submitted.Round(time.Millisecond), st.Reason, startedIn.Round(time.Millisecond), managerUp.Round(time.Millisecond),
			time.Since(t1).Round(time.Millisecond))
	})

	t.Run("managers exit 0 then done", func(t *testing.T) {
		s := slurmProvider(c, "exit0")
		spec := fakeSpec(t, "bs2", 1)
		id, err := s.Submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, s, id, blocks.JobDone, 60*time.Second)
		data, err := os.ReadFile(filepath.Join(spec.Dir, "exit"))
		if err != nil || strings.TrimSpace(string(data)) != "0" {
			t.Fatalf("exit file: %q, %v", data, err)
		}
	})

	t.Run("failing managers fail the job", func(t *testing.T) {
		s := slurmProvider(c, "fail")
		spec := fakeSpec(t, "bs3", 1)
		id, err := s.Submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		st := waitJob(t, s, id, blocks.JobFailed, 60*time.Second)
		if !strings.Contains(st.Reason, "exit code 3") {
			t.Fatalf("reason %q, want the exit code", st.Reason)
		}
	})

	t.Run("rejected by sbatch", func(t *testing.T) {
		s := slurmProvider(c, "drain")
		s.Partition = "nosuchpartition"
		_, err := s.Submit(ctx, fakeSpec(t, "bs4", 1))
		if err == nil || !strings.Contains(err.Error(), "invalid partition") {
			t.Fatalf("Submit to a missing partition: %v, want sbatch's refusal", err)
		}
	})

	t.Run("more nodes than the partition has", func(t *testing.T) {
		s := slurmProvider(c, "drain")
		id, err := s.Submit(ctx, fakeSpec(t, "bs5", 2))
		if err != nil {
			t.Fatal(err)
		}
		st := waitJob(t, s, id, blocks.JobFailed, 30*time.Second)
		// Slurm says PartitionConfig first, PartitionNodeLimit later.
		if !strings.Contains(st.Reason, "can never start") || !strings.Contains(st.Reason, "Partition") {
			t.Fatalf("reason %q, want the pending reason", st.Reason)
		}
		if err := s.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("status of no jobs and of unknown jobs", func(t *testing.T) {
		s := slurmProvider(c, "drain")
		m, err := s.Status(ctx, []string{"999999"})
		if err != nil || len(m) != 0 {
			t.Fatalf("Status(unknown) = %v, %v; want nothing", m, err)
		}
	})
}
