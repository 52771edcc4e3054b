package slurmtest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/slurmtest"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// sbatch submits a script and returns the job id.
func sbatch(t *testing.T, c *slurmtest.Cluster, args ...string) string {
	t.Helper()
	out, err := c.Output("sbatch", append([]string{"--parsable"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	return id
}

func waitState(t *testing.T, c *slurmtest.Cluster, id string, timeout time.Duration, want ...string) string {
	t.Helper()
	var got string
	testutil.WaitFor(t, timeout, func() error {
		s, err := c.JobState(id)
		if err != nil {
			return err
		}
		got = s
		for _, w := range want {
			if s == w {
				return nil
			}
		}
		return testutil.Errorf("job %s is %q, want one of %v", id, s, want)
	})
	return got
}

func writeScript(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(p, []byte("#!/bin/bash\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// Both cases share one cluster: starting one costs seconds.
func TestCluster(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 3 * time.Second})

	t.Run("job runs and finishes", func(t *testing.T) {
		dir := t.TempDir()
		marker := filepath.Join(dir, "ran")
		script := writeScript(t, dir, "echo \"$SLURM_JOB_ID on $(hostname)\" > "+marker+"\n")
		id := sbatch(t, c, "--output="+filepath.Join(dir, "out"), script)
		waitState(t, c, id, 60*time.Second, "COMPLETED")
		data, err := os.ReadFile(marker)
		if err != nil {
			t.Fatalf("job %s completed but wrote nothing: %v", id, err)
		}
		if !strings.HasPrefix(string(data), id+" on ") {
			t.Fatalf("job wrote %q, want its id %s first", data, id)
		}
	})

	t.Run("scancel sends SIGTERM first", func(t *testing.T) {
		dir := t.TempDir()
		started, termed := filepath.Join(dir, "started"), filepath.Join(dir, "term")
		// The trap runs only if SIGTERM arrives before SIGKILL.
		script := writeScript(t, dir, "trap 'echo term > "+termed+"; exit 0' TERM\n"+
			"touch "+started+"\nsleep 300 & wait\n")
		id := sbatch(t, c, "--output="+filepath.Join(dir, "out"), script)
		testutil.WaitFor(t, 60*time.Second, func() error {
			_, err := os.Stat(started)
			return err
		})
		waitState(t, c, id, 10*time.Second, "RUNNING")
		if _, err := c.Output("scancel", id); err != nil {
			t.Fatal(err)
		}
		waitState(t, c, id, 30*time.Second, "CANCELLED")
		testutil.WaitFor(t, 10*time.Second, func() error {
			data, err := os.ReadFile(termed)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(data)) != "term" {
				return testutil.Errorf("trap wrote %q", data)
			}
			return nil
		})
	})
}

// A job's time limit ends it with SIGTERM, then SIGKILL after KillWait:
// the drain of managers depends on that SIGTERM. Slurm's limits are in
// minutes and checked every 30 s or so, so this takes 60–100 s.
func TestTimeLimitSendsSIGTERM(t *testing.T) {
	c := slurmtest.Start(t, slurmtest.Options{KillWait: 3 * time.Second})
	dir := t.TempDir()
	termed, killed := filepath.Join(dir, "term"), filepath.Join(dir, "survived")
	// The trap keeps running past SIGTERM to show that SIGKILL follows.
	script := writeScript(t, dir, "trap 'date +%s.%N > "+termed+"; sleep 60; touch "+killed+"' TERM\n"+
		"sleep 300 & wait\n")
	submitted := time.Now()
	id := sbatch(t, c, "--time=1", "--output="+filepath.Join(dir, "out"), script)
	waitState(t, c, id, 150*time.Second, "TIMEOUT")
	if _, err := os.Stat(termed); err != nil {
		t.Fatalf("job %s timed out without its SIGTERM trap running: %v", id, err)
	}
	if _, err := os.Stat(killed); err == nil {
		t.Fatalf("job %s outlived KillWait after SIGTERM", id)
	}
	t.Logf("job with --time=1 ended TIMEOUT %s after submission", time.Since(submitted).Round(time.Second))
}
