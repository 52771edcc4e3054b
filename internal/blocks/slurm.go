package blocks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Slurm runs each block as a batch job: a job script generated from the
// flags is written to BLOCK_DIR/job.sh (its output to BLOCK_DIR/job.out)
// and submitted with `sbatch --parsable`; `squeue --states=all` reports
// every job in one call, and `scancel` ends one.
//
// Finished jobs stay in squeue for the cluster's MinJobAge (300 s by
// default). A job that has left it is looked up in BLOCK_DIR/exit, which
// the job script writes when srun returns, then with sacct when the
// cluster has accounting (without slurmdbd sacct does not work).
type Slurm struct {
	Partition        string
	Account          string
	SchedulerOptions []string // whole "#SBATCH ..." lines
	// Env is the environment of the Slurm commands (default: the
	// interchange's), e.g. with SLURM_CONF.
	Env []string
	// NoExclusive, MemPerNode, GPUsPerNode: what each node gives a block
	// (the flags of the same names).
	NoExclusive bool
	MemPerNode  string
	GPUsPerNode int
	// KillWait is the cluster's; Submit reads it once when zero. The
	// managers' drain grace is kept below it.
	KillWait time.Duration
	// Cred, when set, submits and cancels as that account (a user's
	// blocks on a multi-user endpoint): her job, charged to her, with its
	// directory written by her (it lies in a directory she owns, where
	// root must not follow what she put there).
	Cred *syscall.Credential

	mu   sync.Mutex
	dirs map[string]string // job id → block dir, for the exit file
	// noSacct: sacct failed once (no accounting); do not try again.
	noSacct bool
}

// NewSlurm makes a slurm provider from the block configuration.
func NewSlurm(cfg *Config) *Slurm {
	return &Slurm{Partition: cfg.Partition, Account: cfg.Account, SchedulerOptions: cfg.SchedulerOptions,
		NoExclusive: cfg.NoExclusive, MemPerNode: cfg.MemPerNode, GPUsPerNode: cfg.GPUsPerNode}
}

// Name is ProviderSlurm.
func (s *Slurm) Name() string { return ProviderSlurm }

// Script is the job script for spec.
func (s *Slurm) Script(spec Spec) (string, error) {
	bin := spec.Manager.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("#!/bin/bash")
	w("# Block %s of a Switchyard interchange, generated at %s from its flags.", spec.BlockID, time.Now().UTC().Format(time.RFC3339))
	w("# One manager per node; kept for inspection, with its output in job.out beside it.")
	w("#SBATCH --job-name=%s", shellQuote("switchyard-"+spec.BlockID))
	w("#SBATCH --nodes=%d", max(spec.Nodes, 1))
	w("#SBATCH --ntasks-per-node=1")
	for _, l := range s.resourceLines(spec.WorkersPerNode) {
		w("%s", l)
	}
	if spec.Walltime > 0 {
		w("#SBATCH --time=%s", slurmDuration(spec.Walltime))
	}
	w("#SBATCH --output=%s", filepath.Join(spec.Dir, "job.out"))
	if s.Partition != "" {
		w("#SBATCH --partition=%s", s.Partition)
	}
	if s.Account != "" {
		w("#SBATCH --account=%s", s.Account)
	}
	for _, o := range s.SchedulerOptions {
		w("%s", o)
	}
	w("")
	w("set -u")
	w("BLOCK_DIR=%s", shellQuote(spec.Dir))
	if spec.WorkerInit != "" {
		w("# --worker-init")
		w("%s", spec.WorkerInit)
	}
	w("# The binary is the interchange's own (SWITCHYARD_BIN, or the absolute path of")
	w("# the running executable); the nodes must see it at the same path.")
	w("BIN=%s", shellQuote(bin))
	w(`if [ ! -x "$BIN" ]; then`)
	w(`	echo "switchyard: $BIN is not an executable file on $(hostname); set SWITCHYARD_BIN for the interchange to the binary's path on the compute nodes" >&2`)
	w(`	echo 127 > "$BLOCK_DIR/exit"`)
	w(`	exit 127`)
	w(`fi`)
	w("# srun starts one manager per node; exec makes the manager the step's")
	w("# process, so the SIGTERM of scancel or of the time limit reaches it and it")
	w("# drains. The manager id names the block and the node.")
	args := spec.Manager.args(spec.BlockID, "", spec.WorkersPerNode, "")
	if a, grace := drainGraceArg(s.KillWait, args); a != "" {
		w("# The cluster's KillWait is %s: the managers' drain grace is %s, so they give", s.KillWait, grace)
		w("# running tasks back before Slurm's SIGKILL.")
		args = append(args, a)
	}
	// Each manager serves /metrics on a free port of its node, which it
	// reports when it registers (unless --manager-arg chose an address).
	listen := ` --listen-http "$(hostname):0"`
	if spec.Manager.setsHTTP() {
		listen = ""
	}
	w(`srun --ntasks-per-node=1 %s --kill-on-bad-exit=0 /bin/bash -c 'exec "$0" "$@" --manager-id "%s-$(hostname -s)"%s' "$BIN" %s`,
		s.srunResources(spec.WorkersPerNode), spec.BlockID, listen, shellJoin(args))
	w(`rc=$?`)
	w(`echo "$rc" > "$BLOCK_DIR/exit"`)
	w(`exit "$rc"`)
	return b.String(), nil
}

// slurmDuration is d as Slurm's D-HH:MM:SS, rounded up to a minute (the
// granularity Slurm enforces).
func slurmDuration(d time.Duration) string {
	m := int((d + time.Minute - 1) / time.Minute)
	return fmt.Sprintf("%d-%02d:%02d:00", m/(24*60), m/60%24, m%60)
}

// Submit writes the script and runs sbatch.
func (s *Slurm) Submit(ctx context.Context, spec Spec) (string, error) {
	if strings.ContainsAny(spec.BlockID, "'\"\\$` \n") {
		return "", fmt.Errorf("block id %q has shell characters", spec.BlockID)
	}
	if s.KillWait == 0 {
		// Submit runs on the controller's one goroutine. Unknown (scontrol
		// failed): -1, and the drain grace stays as set.
		s.KillWait = -1
		if kw, err := s.readKillWait(ctx); err == nil {
			s.KillWait = kw
		}
	}
	script, err := s.Script(spec)
	if err != nil {
		return "", err
	}
	path := filepath.Join(spec.Dir, "job.sh")
	if s.Cred != nil {
		if _, err := s.runIn(ctx, "", strings.NewReader(script), "/bin/sh", "-c",
			`umask 077 && mkdir -p "$1" && cat > "$1/job.sh" && chmod 700 "$1/job.sh"`, "sh", spec.Dir); err != nil {
			return "", fmt.Errorf("write job script as uid %d: %w", s.Cred.Uid, err)
		}
	} else {
		if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
			return "", fmt.Errorf("block dir: %w", err)
		}
		if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
			return "", fmt.Errorf("write job script: %w", err)
		}
	}
	out, err := s.run(ctx, spec.Dir, "sbatch", "--parsable", path)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";") // "ID;cluster" on federations
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("sbatch printed %q, not a job id", out)
	}
	s.mu.Lock()
	if s.dirs == nil {
		s.dirs = map[string]string{}
	}
	s.dirs[id] = spec.Dir
	s.mu.Unlock()
	return id, nil
}

// hopeless are pending reasons no wait cures: the job asks for more than
// the partition, account or QOS allows. Such a block has failed to start.
var hopeless = map[string]bool{
	"PartitionNodeLimit": true, "PartitionTimeLimit": true, "PartitionConfig": true,
	"BadConstraints": true, "InvalidAccount": true, "InvalidQOS": true,
	"AccountNotAllowed": true, "QOSMaxNodePerJobLimit": true, "QOSMaxWallDurationPerJobLimit": true,
	"AssocMaxNodesPerJobLimit": true, "AssocMaxWallDurationPerJobLimit": true,
}

// Status asks squeue about all jobs at once.
func (s *Slurm) Status(ctx context.Context, ids []string) (map[string]JobStatus, error) {
	out := make(map[string]JobStatus, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	text, err := s.run(ctx, "", "squeue", "--noheader", "--states=all", "--jobs="+strings.Join(ids, ","),
		"--Format=JobID:|,State:|,Reason:|,StartTime:|,exit_code:|")
	if err != nil && !strings.Contains(err.Error(), "Invalid job id") {
		return nil, err // squeue says this when it knows none of them
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) < 5 {
			continue
		}
		out[strings.TrimSpace(f[0])] = squeueStatus(strings.TrimSpace(f[1]), strings.TrimSpace(f[2]), strings.TrimSpace(f[3]), strings.TrimSpace(f[4]))
	}
	var gone []string
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		s.lookupGone(ctx, gone, out)
	}
	s.explainFailures(out)
	return out, nil
}

func squeueStatus(state, reason, start, exit string) JobStatus {
	st := JobStatus{}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05", start, time.Local); err == nil {
		st.Since = t
	}
	code, _ := strconv.Atoi(exit) // wait status: exit code << 8 | signal
	switch state {
	case "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED":
		st.State = JobPending
		st.Since = time.Time{}
		st.Reason = reason
		if hopeless[reason] {
			st.State = JobFailed
			st.Reason = fmt.Sprintf("the job can never start: pending with reason %s (more nodes or time than the partition, account or QOS allows?)", reason)
		}
	case "RUNNING", "COMPLETING", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING":
		st.State = JobRunning
	case "COMPLETED":
		st.State = JobDone
	case "CANCELLED":
		st.State, st.Reason = JobDone, "cancelled"
	case "TIMEOUT":
		st.State, st.Reason = JobDone, "time limit reached"
	case "PREEMPTED":
		st.State, st.Reason = JobDone, "preempted"
	default: // FAILED, NODE_FAIL, BOOT_FAIL, OUT_OF_MEMORY, DEADLINE, ...
		st.State = JobFailed
		st.Reason = fmt.Sprintf("job %s (%s), exit code %d", strings.ToLower(state), reason, code>>8)
		if sig := code & 0x7f; sig != 0 {
			st.Reason += fmt.Sprintf(", signal %d", sig)
		}
	}
	return st
}

// lookupGone finds jobs squeue forgot: the exit file first, then sacct.
func (s *Slurm) lookupGone(ctx context.Context, ids []string, out map[string]JobStatus) {
	var ask []string
	for _, id := range ids {
		s.mu.Lock()
		dir := s.dirs[id]
		s.mu.Unlock()
		if dir != "" {
			if data, err := s.readExit(filepath.Join(dir, "exit")); err == nil {
				if rc := strings.TrimSpace(string(data)); rc == "0" {
					out[id] = JobStatus{State: JobDone}
				} else {
					out[id] = JobStatus{State: JobFailed, Reason: "srun of the managers exited " + rc}
				}
				continue
			}
		}
		ask = append(ask, id)
	}
	s.mu.Lock()
	noSacct := s.noSacct
	s.mu.Unlock()
	if len(ask) == 0 || noSacct {
		return
	}
	text, err := s.run(ctx, "", "sacct", "--noheader", "--parsable2", "--allocations", "--jobs="+strings.Join(ask, ","), "--format=JobID,State,ExitCode")
	if err != nil {
		s.mu.Lock()
		s.noSacct = true
		s.mu.Unlock()
		return
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) < 3 {
			continue
		}
		state, _, _ := strings.Cut(f[1], " ") // "CANCELLED by 0"
		rc, _, _ := strings.Cut(f[2], ":")
		code, _ := strconv.Atoi(rc)
		out[f[0]] = squeueStatus(state, "", "", strconv.Itoa(code<<8))
	}
}

// Adopt follows a job a previous run of the interchange submitted.
func (s *Slurm) Adopt(jobID, dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirs == nil {
		s.dirs = map[string]string{}
	}
	s.dirs[jobID] = dir
}

// Cancel runs scancel: Slurm sends SIGTERM to the job's processes, then
// SIGKILL after its KillWait.
func (s *Slurm) Cancel(ctx context.Context, id string) error {
	_, err := s.run(ctx, "", "scancel", id)
	return err
}

// Close leaves the jobs running: their managers reconnect to a restarted
// interchange.
func (s *Slurm) Close(ctx context.Context) error { return nil }

// readExit reads a job's exit file. In a user's directory it must be a
// plain file of hers: root follows no link she may have put there.
func (s *Slurm) readExit(path string) ([]byte, error) {
	if s.Cred == nil {
		return os.ReadFile(path)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.Mode().IsRegular() || st.Uid != s.Cred.Uid || st.Nlink != 1 {
		return nil, fmt.Errorf("%s is not a plain file of uid %d", path, s.Cred.Uid)
	}
	b := make([]byte, 32)
	n, err := f.Read(b)
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}

func (s *Slurm) run(ctx context.Context, dir, name string, args ...string) (string, error) {
	return s.runIn(ctx, dir, nil, name, args...)
}

func (s *Slurm) runIn(ctx context.Context, dir string, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = s.Env
	cmd.Dir = dir
	cmd.Stdin = stdin
	if s.Cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.Cred}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		var ee *exec.Error
		if errors.As(err, &ee) {
			msg = "is Slurm installed and on PATH?"
		}
		return string(out), fmt.Errorf("%s: %v: %s", name, err, msg)
	}
	return string(out), nil
}
