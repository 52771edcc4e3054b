// Package slurmtest starts a real single-node Slurm cluster for tests:
// munged, slurmctld and slurmd from Debian's slurm-wlm and munge packages,
// run as root with a configuration, key, spool, state and logs in a
// temporary directory and ports chosen free, so a second cluster or a
// system Slurm on the same host does not collide. Tests talk to it with
// the ordinary commands (sbatch, squeue, scancel, scontrol) through
// Cluster.Env or Cluster.Command.
//
// Accounting: there is no slurmdbd, so sacct does not work here. Finished
// jobs stay visible to `squeue --states=all` for MinJobAge (300 s), which
// is what the blocks provider reads.
package slurmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/internal/launch"
)

// Options tune a cluster. The zero value is what most tests want.
type Options struct {
	// KillWait is the time between SIGTERM and SIGKILL when a job is
	// cancelled or reaches its time limit (Slurm's KillWait; default 5s).
	KillWait time.Duration
	// StartTimeout bounds the wait for the node to show idle (default 60s).
	StartTimeout time.Duration
	// CPUs the node offers (default: this host's); more than the host has
	// lets jobs that share the node ask for a CPU per worker.
	CPUs int
}

// Cluster is a running single-node Slurm cluster.
type Cluster struct {
	Dir       string // everything of this cluster lives here
	Conf      string // path of slurm.conf
	Node      string // the node's name (this host's short name)
	Partition string // the only partition; it is the default
	CPUs      int
	// StartupTime is how long it took from the first daemon start to an
	// idle node.
	StartupTime time.Duration

	env   []string
	procs []*daemon
}

type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Partition name of every cluster.
const Partition = "debug"

// installOnce serialises apt-get between tests of one binary.
var installOnce sync.Mutex

// Install makes sure slurm-wlm and munge are installed, with apt-get when
// they are missing. It needs root and Debian or Ubuntu.
func Install() error {
	installOnce.Lock()
	defer installOnce.Unlock()
	missing := false
	for _, p := range []string{"/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"} {
		if _, err := os.Stat(p); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("slurm-wlm and munge are missing and this test is not root; run scripts/install-deps.sh as root (it installs them with apt-get)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("slurm-wlm and munge are missing and there is no apt-get; install Slurm (slurmctld, slurmd, sbatch) and munge")
	}
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "slurm-wlm", "munge"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Start installs Slurm when needed, starts a cluster and stops it when the
// test ends. It fails the test when the cluster does not come up.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := New(t.TempDir(), opts)
	if c != nil {
		t.Cleanup(func() {
			if err := c.Stop(); err != nil {
				t.Errorf("stop slurm: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start slurm: %v", err)
	}
	t.Logf("slurm cluster in %s up in %s (node %s, %d CPUs)", c.Dir, c.StartupTime.Round(time.Millisecond), c.Node, c.CPUs)
	return c
}

// New starts a cluster in dir (which must exist and be empty). On error
// the returned cluster, when not nil, must still be stopped.
func New(dir string, opts Options) (*Cluster, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a Slurm test cluster runs slurmd as root; run the tests as root (CI does)")
	}
	if err := Install(); err != nil {
		return nil, err
	}
	if opts.KillWait <= 0 {
		opts.KillWait = 5 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	// t.TempDir() is 0700; munged wants the path to its socket searchable
	// by every user that may run a job, and writable by root only.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	host, _, _ = strings.Cut(host, ".")
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), Node: host, Partition: Partition, CPUs: runtime.NumCPU()}
	overrides := ""
	if opts.CPUs > 0 && opts.CPUs != c.CPUs {
		// slurmd would drain a node that claims more CPUs than it has.
		c.CPUs, overrides = opts.CPUs, "SlurmdParameters=config_overrides\n"
	}
	// Jobs (root here, but any user on a real node) reach munged's socket,
	// so its directory is searchable by all.
	for _, d := range []string{"munge", "state", "spool/slurmd-" + host, "log", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	key := make([]byte, 1024)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "munge", "munge.key")
	if err := os.WriteFile(keyFile, key, 0o400); err != nil {
		return nil, err
	}
	// Slurm binds every interface; launch.FreePort never gives the same
	// port twice, so the two differ.
	var ports [2]int
	for i := range ports {
		if ports[i], err = launch.FreePort("0.0.0.0"); err != nil {
			return nil, err
		}
	}
	memMB, err := memoryMB()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "munge", "munge.socket")
	conf := c.config(sock, ports[0], ports[1], memMB, opts.KillWait) + overrides
	if err := os.WriteFile(c.Conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// slurmd loads a cgroup plugin even with proctrack/linuxproc and
	// task/none; on a cgroup v2 host without systemd it must not ask
	// systemd for a scope.
	if err := os.WriteFile(filepath.Join(dir, "cgroup.conf"), []byte("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n"), 0o644); err != nil {
		return nil, err
	}
	c.env = append(withoutSlurmEnv(os.Environ()), "SLURM_CONF="+c.Conf)

	start := time.Now()
	if err := c.run("munged", "/usr/sbin/munged", "--foreground", "--force",
		"--socket="+sock, "--key-file="+keyFile,
		"--pid-file="+filepath.Join(dir, "run", "munged.pid"),
		"--log-file="+filepath.Join(dir, "log", "munged.log"),
		"--seed-file="+filepath.Join(dir, "munge", "munged.seed")); err != nil {
		return c, err
	}
	if err := c.waitFor(10*time.Second, "munged socket", func() error {
		_, err := os.Stat(sock)
		return err
	}); err != nil {
		return c, err
	}
	if err := c.run("slurmctld", "/usr/sbin/slurmctld", "-D", "-i", "-f", c.Conf); err != nil {
		return c, err
	}
	if err := c.run("slurmd", "/usr/sbin/slurmd", "-D", "-f", c.Conf, "-N", c.Node); err != nil {
		return c, err
	}
	if err := c.waitFor(opts.StartTimeout, "node idle in sinfo", func() error {
		out, err := c.Output("sinfo", "--noheader", "--nodes="+c.Node, "--format=%T")
		if err != nil {
			return err
		}
		if s := strings.TrimSpace(out); s != "idle" {
			return fmt.Errorf("node %s is %q", c.Node, s)
		}
		return nil
	}); err != nil {
		return c, err
	}
	c.StartupTime = time.Since(start)
	return c, nil
}

func (c *Cluster) config(mungeSock string, ctldPort, dPort, memMB int, killWait time.Duration) string {
	d := c.Dir
	mem := memMB * 9 / 10 // leave room for the OS; slurmd refuses a node with less than configured
	return fmt.Sprintf(`# Written by e2e/slurmtest for one test; everything lives under %[1]s.
ClusterName=switchyardtest
SlurmctldHost=%[2]s(127.0.0.1)
SlurmctldPort=%[3]d
SlurmdPort=%[4]d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=%[5]s
CredType=cred/munge
StateSaveLocation=%[1]s/state
SlurmdSpoolDir=%[1]s/spool/slurmd-%%n
SlurmctldPidFile=%[1]s/run/slurmctld.pid
SlurmdPidFile=%[1]s/run/slurmd.pid
SlurmctldLogFile=%[1]s/log/slurmctld.log
SlurmdLogFile=%[1]s/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=%[6]d
MinJobAge=300
InactiveLimit=0
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
SchedulerParameters=sched_interval=1
NodeName=%[2]s NodeAddr=127.0.0.1 CPUs=%[7]d RealMemory=%[8]d State=UNKNOWN
PartitionName=%[9]s Nodes=%[2]s Default=YES MaxTime=INFINITE State=UP
`, d, c.Node, ctldPort, dPort, mungeSock, int(killWait.Seconds()+0.5), c.CPUs, mem, c.Partition)
}

// run starts one daemon in the foreground, in its own process group, with
// its output in log/NAME.stderr.
func (c *Cluster) run(name, path string, args ...string) error {
	out, err := os.Create(filepath.Join(c.Dir, "log", name+".stderr"))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	out.Close()
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	c.procs = append(c.procs, d)
	return nil
}

// waitFor polls cond; it gives up early when one of the daemons died and
// says which, with the end of its log.
func (c *Cluster) waitFor(timeout time.Duration, what string, cond func() error) error {
	err := testutil.Poll(timeout, func() error {
		for _, d := range c.procs {
			select {
			case <-d.done:
				return &deadError{d.name, d.err}
			default:
			}
		}
		return cond()
	})
	if err == nil {
		return nil
	}
	return fmt.Errorf("waiting for %s: %w\n%s", what, err, c.Logs())
}

type deadError struct {
	name string
	err  error
}

func (e *deadError) Error() string { return fmt.Sprintf("%s exited: %v", e.name, e.err) }

// Logs returns the last lines of every daemon's log, for failure messages.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, f := range []string{"munged.stderr", "munged.log", "slurmctld.stderr", "slurmctld.log", "slurmd.stderr", "slurmd.log"} {
		data, err := os.ReadFile(filepath.Join(c.Dir, "log", f))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// Env is the environment for Slurm commands against this cluster: the
// test's own without SLURM_* variables, plus SLURM_CONF.
func (c *Cluster) Env() []string { return append([]string(nil), c.env...) }

// Command is a Slurm command (sbatch, squeue, ...) set up for this cluster.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env()
	return cmd
}

// Output runs a Slurm command and returns its standard output; the error
// holds its standard error.
func (c *Cluster) Output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := c.Command(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// JobState is the job's state as squeue shows it (PENDING, RUNNING,
// COMPLETED, CANCELLED, TIMEOUT, FAILED, ...), "" when squeue no longer
// knows the job.
func (c *Cluster) JobState(id string) (string, error) {
	out, err := c.Output("squeue", "--noheader", "--states=all", "--jobs="+id, "--format=%T")
	if err != nil {
		if strings.Contains(err.Error(), "Invalid job id") {
			return "", nil
		}
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Stop cancels every job, waits for them to end, and stops the daemons
// by PID: SIGTERM, then SIGKILL after a few seconds.
func (c *Cluster) Stop() error {
	var errs []error
	if c.alive("slurmctld") {
		if _, err := c.Output("scancel", "--full", "--partition="+c.Partition); err != nil {
			errs = append(errs, err)
		}
		// Jobs' processes belong to slurmstepd, not to us: let Slurm end
		// them before its daemons go.
		if err := testutil.Poll(30*time.Second, func() error {
			out, err := c.Output("squeue", "--noheader", "--format=%i %T")
			if err != nil {
				return err
			}
			if s := strings.TrimSpace(out); s != "" {
				return fmt.Errorf("jobs still active: %s", s)
			}
			return nil
		}); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		d := c.procs[i]
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			errs = append(errs, fmt.Errorf("%s did not stop within 10s of SIGTERM; killed", d.name))
		}
	}
	c.procs = nil
	return errors.Join(errs...)
}

func (c *Cluster) alive(name string) bool {
	for _, d := range c.procs {
		if d.name == name {
			select {
			case <-d.done:
				return false
			default:
				return true
			}
		}
	}
	return false
}

// memoryMB is this host's memory as slurmd measures it.
func memoryMB() (int, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("parse /proc/meminfo: %w", err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}

// withoutSlurmEnv drops SLURM_* variables, so a test run inside a Slurm
// job talks to its own cluster, not the outer one.
func withoutSlurmEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SLURM_") {
			out = append(out, kv)
		}
	}
	return out
}
