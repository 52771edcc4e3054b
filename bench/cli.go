package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-hpc/switchyard/client"
)

// CLIResult is one run of the user's path: `switchyard endpoint up`, then
// `switchyard submit ... | switchyard wait -` as real processes.
type CLIResult struct {
	Tasks int `json:"tasks"`
	// Commands are the three command lines as run (the token is in the
	// clients' environment, not here).
	Commands []string `json:"commands"`
	// Seconds from starting submit until wait exited.
	Seconds     float64 `json:"seconds"`
	TasksPerSec float64 `json:"tasks_per_second"`
	WaitExit    int     `json:"wait_exit_code"`
	SubmitExit  int     `json:"submit_exit_code"`
	// WaitOutput is wait's summary line; Succeeded is the count it gave.
	WaitOutput string `json:"wait_output"`
	Succeeded  int    `json:"succeeded"`
	// TotalCPUSeconds adds every process of Report.Processes (daemons and
	// endpoint up itself over the run, clients over their life); per task
	// in microseconds.
	TotalCPUSeconds     float64 `json:"total_cpu_seconds"`
	TotalCPUMicrosPerTk float64 `json:"total_cpu_us_per_task"`
	// IdleWhileQueuedMax is the interchange's
	// switchyard_interchange_idle_while_queued_max_seconds, nil when it
	// does not export it.
	IdleWhileQueuedMax *float64 `json:"idle_while_queued_max_seconds"`
	// Store commits during the run (the _count of each daemon's
	// store_commit_seconds histogram), and per task; nil when absent.
	InterchangeCommits        *float64 `json:"interchange_store_commits"`
	InterchangeCommitsPerTask *float64 `json:"interchange_store_commits_per_task"`
	ForwarderCommits          *float64 `json:"forwarder_store_commits"`
	ForwarderCommitsPerTask   *float64 `json:"forwarder_store_commits_per_task"`
}

const (
	idleGauge          = "switchyard_interchange_idle_while_queued_max_seconds"
	ixCommitCount      = "switchyard_interchange_store_commit_seconds_count"
	fwdCommitCount     = "switchyard_forwarder_store_commit_seconds_count"
	cliStartTimeout    = time.Minute
	cliStopTimeout     = 30 * time.Second
	cliEndpointID      = "local" // endpoint up's default
	cliBannerUpMarker  = "switchyard: endpoint "
	cliTokenLinePrefix = "export SWITCHYARD_TOKEN="
)

// upProc is a running `switchyard endpoint up`.
type upProc struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func (u *upProc) exited() error {
	select {
	case err := <-u.done:
		u.done <- err
		return fmt.Errorf("endpoint up exited (%v); see %s", err, u.log)
	default:
		return nil
	}
}

// stop sends SIGTERM (endpoint up then stops its children) and, after
// cliStopTimeout, SIGKILLs its process group and each child's (endpoint up
// puts every child in a group of its own).
func (u *upProc) stop(children []int) error {
	_ = u.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(cliStopTimeout)
	defer t.Stop()
	select {
	case err := <-u.done:
		u.done <- err
		return nil
	case <-t.C:
	}
	_ = syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range children {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	err := <-u.done
	u.done <- err
	return fmt.Errorf("endpoint up did not stop within %s of SIGTERM; killed", cliStopTimeout)
}

// banner is what endpoint up prints for its user.
type banner struct {
	api, ixHTTP, token string
	up                 bool
}

// readBanner parses endpoint up's stderr so far. Child log lines are
// prefixed with the child's name, so the banner lines cannot be confused
// with them.
func readBanner(path string) banner {
	var b banner
	raw, err := os.ReadFile(path)
	if err != nil {
		return b
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, cliTokenLinePrefix) && strings.HasPrefix(line, "  "):
			b.token = strings.TrimPrefix(t, cliTokenLinePrefix)
		case strings.HasPrefix(line, "  API:"):
			if f := strings.Fields(t); len(f) >= 2 {
				b.api = f[1]
			}
		case strings.HasPrefix(line, "  interchange:"):
			if f := strings.Fields(t); len(f) >= 2 {
				b.ixHTTP = strings.TrimSuffix(f[1], "/status")
			}
		case strings.HasPrefix(line, cliBannerUpMarker) && strings.HasSuffix(t, " up"):
			b.up = true
		}
	}
	return b
}

// childPIDs lists the processes whose parent is ppid, from /proc/*/stat.
func childPIDs(ppid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// After ')' come state (field 3) and ppid (field 4).
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out, nil
}

// daemonName names a child of endpoint up from its command line:
// forwarder, interchange, manager-N.
func daemonName(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(argv) < 2 {
		return ""
	}
	if argv[1] != "manager" {
		return argv[1]
	}
	for i := 2; i+1 < len(argv); i++ {
		if argv[i] == "--manager-id" {
			return strings.TrimPrefix(argv[i+1], cliEndpointID+"-")
		}
	}
	return "manager"
}

type daemonProc struct {
	name   string
	pid    int
	before ProcSample
}

// rank orders the daemons as the other reports do: forwarder,
// interchange, then managers by number.
func rank(name string) string {
	switch {
	case name == "forwarder":
		return "0"
	case name == "interchange":
		return "1"
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(name, "manager-")); err == nil {
		return fmt.Sprintf("2%09d", n)
	}
	return "3" + name
}

// findDaemons returns endpoint up's children once there are want of them.
func findDaemons(up *upProc, want int) ([]daemonProc, error) {
	pids, err := childPIDs(up.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	var ds []daemonProc
	for _, pid := range pids {
		if n := daemonName(pid); n != "" {
			ds = append(ds, daemonProc{name: n, pid: pid})
		}
	}
	if len(ds) != want {
		return nil, fmt.Errorf("endpoint up has %d children, want %d", len(ds), want)
	}
	sort.Slice(ds, func(i, j int) bool { return rank(ds[i].name) < rank(ds[j].name) })
	return ds, nil
}

// scrapeMetrics reads a daemon's /metrics.
func scrapeMetrics(ctx context.Context, c *client.Client) (Metrics, error) {
	raw, err := c.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	return ParseMetrics(bytes.NewReader(raw))
}

var waitSummary = regexp.MustCompile(`(?m)^(\d+) tasks: (\d+) success`)

// succeededIn reads how many tasks wait says succeeded: its summary line
// for many tasks, one "ID  success" line each for a few.
func succeededIn(out string) (int, string) {
	if m := waitSummary.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[2])
		return n, m[0]
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "success" {
			n++
		}
	}
	return n, fmt.Sprintf("%d lines say success", n)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// clientReport is a finished client's CPU and peak RSS from its rusage.
func clientReport(name string, cmd *exec.Cmd, tasks int, secs float64) ProcessReport {
	pr := ProcessReport{Name: name, Source: "rusage"}
	if cmd.ProcessState == nil {
		return pr
	}
	pr.PID = cmd.ProcessState.Pid()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		pr.CPUSeconds = cpu.Seconds()
		pr.PeakRSS = uint64(ru.Maxrss) << 10 // KiB on Linux
		if tasks > 0 {
			pr.CPUMicrosPerTk = float64(cpu.Microseconds()) / float64(tasks)
		}
		if secs > 0 {
			pr.CPUPercent = 100 * cpu.Seconds() / secs
		}
	}
	return pr
}

// runCLI measures the user's path with real processes of cfg.Exe.
func runCLI(ctx context.Context, cfg Config, rep *Report, progress func(string, ...any)) (err error) {
	if cfg.API != "" {
		return errors.New("--cli starts its own endpoint with 'switchyard endpoint up'; drop --api")
	}
	if cfg.Tasks <= 0 {
		return fmt.Errorf("--cli needs --tasks of 1 or more, got %d", cfg.Tasks)
	}
	rep.Mode = "cli"
	rep.Persist = true
	rep.Config = map[string]any{"tasks": cfg.Tasks, "managers": cfg.Managers, "workers": cfg.Workers, "insecure": cfg.Insecure}
	if cfg.Store != "" {
		rep.Config["store"] = cfg.Store
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-bench-cli-"); err != nil {
			return err
		}
	}
	defer func() {
		if cfg.Keep || cfg.Dir != "" {
			rep.Dir = dir
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	stateDir := filepath.Join(dir, "var")
	upArgs := []string{"endpoint", "up", "--free-ports", "--state-dir", stateDir,
		"--managers", strconv.Itoa(cfg.Managers), "--workers", strconv.Itoa(cfg.Workers)}
	if cfg.Insecure {
		upArgs = append(upArgs, "--insecure")
	}
	if cfg.Store != "" {
		upArgs = append(upArgs, "--store", cfg.Store)
	}
	if os.Geteuid() == 0 {
		// Managers refuse to run tasks as root without it.
		upArgs = append(upArgs, "--allow-root")
	}
	res := &CLIResult{Tasks: cfg.Tasks}
	res.Commands = append(res.Commands, cfg.Exe+" "+strings.Join(upArgs, " "))

	upLog := filepath.Join(dir, "endpoint-up.log")
	lf, err := os.Create(upLog)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(cfg.Exe, upArgs...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own group, for the SIGKILL fallback; SIGTERM if we die, so it
	// still stops its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	progress("starting %s", res.Commands[0])
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start endpoint up: %w", err)
	}
	up := &upProc{cmd: cmd, done: make(chan error, 1), log: upLog}
	go func() { up.done <- cmd.Wait() }()
	var daemons []daemonProc
	defer func() {
		var pids []int
		for _, d := range daemons {
			if d.pid != up.cmd.Process.Pid {
				pids = append(pids, d.pid)
			}
		}
		if serr := up.stop(pids); serr != nil && err == nil {
			err = serr
		}
	}()

	// The banner: API address, interchange admin address, token.
	var b banner
	if err := pollUntil(ctx, cliStartTimeout, 20*time.Millisecond, func() error {
		if err := up.exited(); err != nil {
			return &fatalError{err}
		}
		if b = readBanner(upLog); !b.up || b.api == "" || b.ixHTTP == "" || (!cfg.Insecure && b.token == "") {
			return fmt.Errorf("no complete banner in %s yet", upLog)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("endpoint up: %w", err)
	}
	hc := newHTTPClient()
	fwd := client.New(b.api, client.WithToken(b.token), client.WithHTTPClient(hc))
	var ixToken string
	if !cfg.Insecure {
		if ixToken, err = client.ReadTokenFile(filepath.Join(stateDir, "interchange", "admin.token")); err != nil {
			return err
		}
	}
	ix := client.New(b.ixHTTP, client.WithToken(ixToken), client.WithHTTPClient(hc))
	want := 2 + cfg.Managers
	if err := pollUntil(ctx, cliStartTimeout, 50*time.Millisecond, func() error {
		if err := up.exited(); err != nil {
			return &fatalError{err}
		}
		v, err := fwd.Endpoint(ctx, cliEndpointID, false)
		if err != nil {
			return err
		}
		if !v.Connected || v.Managers < cfg.Managers {
			return fmt.Errorf("endpoint %s connected=%v with %d of %d managers", cliEndpointID, v.Connected, v.Managers, cfg.Managers)
		}
		daemons, err = findDaemons(up, want)
		return err
	}); err != nil {
		return fmt.Errorf("endpoint up did not come up: %w (log %s)", err, upLog)
	}
	for _, d := range daemons {
		progress("  %-12s pid %d", d.name, d.pid)
	}

	// Baselines: daemon CPU and store commits are counted over the run.
	ixBefore, err := scrapeMetrics(ctx, ix)
	if err != nil {
		return err
	}
	fwdBefore, err := scrapeMetrics(ctx, fwd)
	if err != nil {
		return err
	}
	// endpoint up itself relays its children's logs: part of the path too.
	daemons = append(daemons, daemonProc{name: "endpoint up", pid: up.cmd.Process.Pid})
	for i := range daemons {
		if daemons[i].before, err = ReadProc(daemons[i].pid); err != nil {
			return fmt.Errorf("%s: %w", daemons[i].name, err)
		}
	}

	// submit | wait -, connected by a pipe as a shell would.
	env := append(os.Environ(), client.EnvAPI+"="+b.api, client.EnvToken+"="+b.token)
	subArgs := []string{"submit", "-e", cliEndpointID, "--kind", "noop", "-n", strconv.Itoa(cfg.Tasks)}
	waitArgs := []string{"wait", "-", "--quiet"}
	res.Commands = append(res.Commands, cfg.Exe+" "+strings.Join(subArgs, " ")+" | "+cfg.Exe+" "+strings.Join(waitArgs, " "))
	// Generous: 1 minute plus 10 ms per task, i.e. 100 tasks/s.
	cctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(cfg.Tasks)*10*time.Millisecond)
	defer cancel()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	var subErr, waitErr, waitOut bytes.Buffer
	sub := exec.CommandContext(cctx, cfg.Exe, subArgs...)
	sub.Env, sub.Stdout, sub.Stderr = env, pw, &subErr
	wt := exec.CommandContext(cctx, cfg.Exe, waitArgs...)
	wt.Env, wt.Stdin, wt.Stdout, wt.Stderr = env, pr, &waitOut, &waitErr
	progress("running %s", res.Commands[1])
	start := time.Now()
	if err := sub.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start submit: %w", err)
	}
	werr := wt.Start()
	// Only the children hold the pipe now, so wait sees EOF when submit exits.
	pr.Close()
	pw.Close()
	if werr != nil {
		_ = sub.Process.Kill()
		_ = sub.Wait()
		return fmt.Errorf("start wait: %w", werr)
	}
	serr := sub.Wait()
	werr = wt.Wait()
	secs := time.Since(start).Seconds()
	res.Seconds = secs
	res.SubmitExit, res.WaitExit = exitCode(serr), exitCode(werr)
	res.Succeeded, res.WaitOutput = succeededIn(waitOut.String())
	if secs > 0 {
		res.TasksPerSec = float64(cfg.Tasks) / secs
	}
	if cctx.Err() != nil {
		return fmt.Errorf("submit | wait did not finish within its deadline: %w", cctx.Err())
	}
	if res.SubmitExit != 0 {
		return fmt.Errorf("submit exited %d: %s", res.SubmitExit, strings.TrimSpace(subErr.String()))
	}
	if res.WaitExit != 0 || res.Succeeded != cfg.Tasks {
		return fmt.Errorf("wait exited %d with %d of %d succeeded: %s %s", res.WaitExit, res.Succeeded, cfg.Tasks,
			strings.TrimSpace(waitOut.String()), strings.TrimSpace(waitErr.String()))
	}
	progress("%d tasks in %.2fs: %.0f tasks/s", cfg.Tasks, secs, res.TasksPerSec)

	// The daemons just before they are stopped.
	ixAfter, err := scrapeMetrics(ctx, ix)
	if err != nil {
		return err
	}
	fwdAfter, err := scrapeMetrics(ctx, fwd)
	if err != nil {
		return err
	}
	if ixAfter.Has(idleGauge) {
		v := ixAfter.Sum(idleGauge)
		res.IdleWhileQueuedMax = &v
	}
	perTask := func(name string, before, after Metrics) (*float64, *float64) {
		if !after.Has(name) {
			return nil, nil
		}
		n := after.Sum(name) - before.Sum(name)
		p := n / float64(cfg.Tasks)
		return &n, &p
	}
	res.InterchangeCommits, res.InterchangeCommitsPerTask = perTask(ixCommitCount, ixBefore, ixAfter)
	res.ForwarderCommits, res.ForwarderCommitsPerTask = perTask(fwdCommitCount, fwdBefore, fwdAfter)
	for _, d := range daemons {
		s, err := ReadProc(d.pid)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		cpu := s.CPU - d.before.CPU
		rep.Processes = append(rep.Processes, ProcessReport{Name: d.name, PID: d.pid, Source: "/proc",
			CPUSeconds: cpu.Seconds(), CPUMicrosPerTk: float64(cpu.Microseconds()) / float64(cfg.Tasks),
			CPUPercent: 100 * cpu.Seconds() / secs, PeakRSS: s.HWM, RSS: s.RSS})
	}
	rep.Processes = append(rep.Processes, clientReport("submit", sub, cfg.Tasks, secs), clientReport("wait", wt, cfg.Tasks, secs))
	for _, p := range rep.Processes {
		res.TotalCPUSeconds += p.CPUSeconds
	}
	res.TotalCPUMicrosPerTk = 1e6 * res.TotalCPUSeconds / float64(cfg.Tasks)
	rep.CLI = res
	return nil
}

// cliTargets are the rows of issue 18's table this mode measures.
func cliTargets(c *CLIResult) []Target {
	ts := []Target{
		{Name: "endpoint up + submit | wait -", Goal: ">= 60000 tasks/s", Value: c.TasksPerSec, Unit: "tasks/s", Met: c.TasksPerSec >= 60000},
		{Name: "CPU per task, all daemons + client", Goal: "<= 15 µs", Value: c.TotalCPUMicrosPerTk, Unit: "µs", Met: c.TotalCPUMicrosPerTk <= 15},
	}
	if v := c.IdleWhileQueuedMax; v != nil {
		ts = append(ts, Target{Name: "longest manager idle while queued", Goal: "<= 50 ms", Value: *v * 1000, Unit: "ms", Met: *v <= 0.05})
	}
	return ts
}

// writeCLI prints the user's-path section of a text report.
func writeCLI(b *strings.Builder, c *CLIResult) {
	fmt.Fprintf(b, "\nUser's path (%d no-op tasks)\n", c.Tasks)
	for _, cmd := range c.Commands {
		fmt.Fprintf(b, "  $ %s\n", cmd)
	}
	fmt.Fprintf(b, "  end to end:  %.0f tasks/s  (%.2fs from starting submit until wait exited %d: %q)\n",
		c.TasksPerSec, c.Seconds, c.WaitExit, c.WaitOutput)
	fmt.Fprintf(b, "  CPU per task, all daemons + clients: %.1f µs  (%.2fs CPU in all)\n", c.TotalCPUMicrosPerTk, c.TotalCPUSeconds)
	idle := "n/a (the interchange does not export " + idleGauge + ")"
	if v := c.IdleWhileQueuedMax; v != nil {
		idle = fmt.Sprintf("%.1f ms", *v*1000)
	}
	fmt.Fprintf(b, "  longest manager idle while tasks queued: %s\n", idle)
	commits := func(name string, n, p *float64) string {
		if n == nil {
			return name + " n/a"
		}
		return fmt.Sprintf("%s %.4f (%.0f commits)", name, *p, *n)
	}
	fmt.Fprintf(b, "  store commits per task: %s, %s\n", commits("interchange", c.InterchangeCommits, c.InterchangeCommitsPerTask),
		commits("forwarder", c.ForwarderCommits, c.ForwarderCommitsPerTask))
}
