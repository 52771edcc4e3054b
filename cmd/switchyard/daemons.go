package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/switchyard-hpc/switchyard/forwarder"
	"github.com/switchyard-hpc/switchyard/interchange"
	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/internal/curve"
	"github.com/switchyard-hpc/switchyard/internal/gctune"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/logx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
	"github.com/switchyard-hpc/switchyard/manager"
)

// daemonFlags are shared by the three daemons; their names are part of
// the public contract.
type daemonFlags struct {
	listenHTTP string
	stateDir   string
	interval   time.Duration
	threshold  time.Duration
	logFormat  string
	logLevel   string
	pprof      bool
	insecure   bool
	// http: TLS and connection caps of the daemon's HTTP listener.
	http httpx.Config
}

func (d *daemonFlags) add(fs *pflag.FlagSet, httpDefault, stateDefault string) {
	fs.StringVar(&d.listenHTTP, "listen-http", httpDefault, "address for the HTTP API (host:port; port 0 picks a free one)")
	fs.StringVar(&d.stateDir, "state-dir", stateDefault, "directory for this daemon's state and lock file")
	fs.DurationVar(&d.interval, "heartbeat-interval", 10*time.Second, "send a heartbeat when nothing else was sent for this long")
	fs.DurationVar(&d.threshold, "heartbeat-threshold", 0, "declare a peer lost after this long without a message (default 3 intervals)")
	fs.StringVar(&d.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&d.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&d.pprof, "pprof", false, "serve the Go profiler at /debug/pprof/ on the HTTP listener (admin token needed)")
	fs.BoolVar(&d.insecure, "insecure", false, "turn security off: no CurveZMQ on the ZMQ links, no tokens on the HTTP API (benchmark comparisons, debugging); logs a warning at every start")
	fs.StringVar(&d.http.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key)")
	fs.StringVar(&d.http.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.IntVar(&d.http.MaxConns, "max-connections", httpx.DefaultMaxConns, "cap on open HTTP connections; at the cap a new one takes the place of the one idle longest, and waits only while all are busy")
	fs.IntVar(&d.http.MaxConnsPerClient, "max-connections-per-client", 0, fmt.Sprintf("cap on one client address's HTTP connections; past it, when all of them are busy, its new ones are refused (default %d, or none when --max-connections is not larger)", httpx.DefaultMaxConnsPerClient))
}

// credentials reads --credentials of the given kind, unless --insecure.
func (d *daemonFlags) credentials(path, kind string) (*curve.Credentials, error) {
	if d.insecure {
		return nil, nil
	}
	if path == "" {
		return nil, nil // the daemon's Options say what is missing
	}
	return curve.ReadCredentials(path, kind)
}

func (d *daemonFlags) logger() (*logrus.Entry, error) {
	l, err := logx.New(d.logFormat, d.logLevel, nil)
	if err != nil {
		return nil, err
	}
	return logrus.NewEntry(l), nil
}

func (d *daemonFlags) thresholdOrDefault() time.Duration {
	if d.threshold == 0 {
		return 3 * d.interval
	}
	return d.threshold
}

type pressureFlags struct{ th servingstate.Thresholds }

func (p *pressureFlags) add(fs *pflag.FlagSet) {
	fs.IntVar(&p.th.PauseQueued, "pause-queued-tasks", servingstate.DefaultPauseQueued, "pause pushes when this many tasks are queued")
	fs.IntVar(&p.th.ResumeQueued, "resume-queued-tasks", 0, "resume pushes when the queue falls below this (default 80% of the pause value)")
	fs.Float64Var(&p.th.PauseMemoryPercent, "pause-memory-percent", servingstate.DefaultPauseMemoryPercent, "pause pushes when memory in use reaches this percent of the limit")
	fs.Float64Var(&p.th.ResumeMemoryPercent, "resume-memory-percent", 0, "resume pushes when memory falls below this percent (default pause minus 10)")
}

func newMigrateStoreCmd() *cobra.Command {
	var from, fromStore, to string
	cmd := &cobra.Command{
		Use:   "migrate-store",
		Short: "Copy a stopped forwarder's embedded store into another store (PostgreSQL)",
		Long: `Copy everything a stopped forwarder keeps in its state directory (tasks with
their results, API tokens, created endpoints with their keys, owners and
shares) into the store --to names, which must hold no task yet; then start
the forwarder with --store set to the same value. The state directory stays
as it was (keep curve.key: it is the forwarder's CURVE key that endpoints'
credentials name). A running forwarder holds the state directory's lock, and
this command then refuses.

  switchyard forwarder migrate-store --from var/forwarder --to postgres://switchyard@db:5432/switchyard`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return fmt.Errorf("migrate-store needs --from STATE_DIR and --to STORE")
			}
			log := logrus.New()
			start := time.Now()
			n, err := forwarder.MigrateStore(from, fromStore, to, logrus.NewEntry(log))
			if err != nil {
				return err
			}
			fmt.Printf("copied %d tasks (%d not ended), %d tokens and %d endpoints in %s\n", n.Tasks, n.Unfinished, n.Tokens, n.Endpoints, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the stopped forwarder's state directory")
	cmd.Flags().StringVar(&fromStore, "from-store", "pebble", "the store in --from to read (an older log or bbolt file there is read into it first)")
	cmd.Flags().StringVar(&to, "to", "", "the store to copy into, e.g. postgres://USER@HOST:PORT/DB")
	return cmd
}

func newForwarderCmd() *cobra.Command {
	var df daemonFlags
	var listenZMQ, storeURL string
	var noPersist, fsync, noUI bool
	var retention, uiSession time.Duration
	var maxPerUser, maxInflight, maxUnacked int
	var maxBytesPerUser int64
	cmd := &cobra.Command{
		Use:   "forwarder",
		Short: "Run the service side: HTTP API, task store, ROUTER for interchanges",
		Long: `Run the forwarder. Users submit tasks over its HTTP API; interchanges connect
to its ZMQ ROUTER over CurveZMQ; only endpoints created with
` + "`switchyard endpoint create`" + ` may connect, each only as itself. One forwarder
serves many endpoints. Its web UI is at /ui/ on the same listener (sign in
with a token; --no-ui turns it off). Stop it with Ctrl-C or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := df.logger()
			if err != nil {
				return err
			}
			f, err := forwarder.New(forwarder.Options{ListenHTTP: df.listenHTTP, ListenZMQ: listenZMQ, StateDir: df.stateDir,
				Store: storeURL, NoPersist: noPersist, Fsync: fsync, Retention: retention, HeartbeatInterval: df.interval, HeartbeatThreshold: df.thresholdOrDefault(), Pprof: df.pprof, Log: log,
				HTTP: df.http, MaxTasksPerUser: maxPerUser, MaxPendingBytesPerUser: maxBytesPerUser, MaxInflight: maxInflight, MaxUnacked: maxUnacked, Insecure: df.insecure,
				NoUI: noUI, UISessionTTL: uiSession})
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			tuneGC(ctx, log, 256<<20)
			return f.Run(ctx)
		},
	}
	df.add(cmd.Flags(), forwarder.DefaultListenHTTP, "var/forwarder")
	cmd.Flags().StringVar(&listenZMQ, "listen-zmq", forwarder.DefaultListenZMQ, "ZMQ ROUTER address interchanges connect to")
	cmd.Flags().StringVar(&storeURL, "store", "", "where tasks, tokens and endpoints are kept: pebble (the default: a Pebble store in --state-dir), memory (nothing survives a restart) or postgres://USER@HOST:PORT/DB (PostgreSQL, which several forwarders can share); one of: "+strings.Join(taskstore.Schemes(), ", "))
	cmd.Flags().BoolVar(&noPersist, "no-persist", false, "keep tasks, tokens and endpoints in memory only (benchmarks; endpoints enrolled offline in --state-dir are read at start); a restart loses them; the same as --store memory")
	cmd.Flags().BoolVar(&fsync, "fsync", false, "fsync every store commit so accepted tasks survive a host crash, not only a process crash")
	cmd.Flags().DurationVar(&retention, "retention", forwarder.DefaultRetention, "keep finished tasks and results this long, then forget them (negative: forever)")
	cmd.Flags().IntVar(&maxPerUser, "max-tasks-per-user", forwarder.DefaultMaxTasksPerUser, "refuse (429) a submission that would give one user more tasks than this not yet ended (0: no cap)")
	cmd.Flags().Int64Var(&maxBytesPerUser, "max-pending-bytes-per-user", forwarder.DefaultMaxPendingBytesPerUser, "refuse (429) a submission that would give one user more bytes of task specs than this not yet ended: they are held in memory (0: no cap)")
	cmd.Flags().BoolVar(&noUI, "no-ui", false, "do not serve the web UI at /ui/ (the status pages and forms that sign in with a token)")
	cmd.Flags().DurationVar(&uiSession, "ui-session", forwarder.DefaultUISessionTTL, "how long a web UI sign-in lasts before it must sign in again")
	cmd.AddCommand(newMigrateStoreCmd())
	cmd.Flags().IntVar(&maxInflight, "max-inflight", forwarder.DefaultMaxInflight, "tasks handed to one endpoint and not yet ended; more wait here until some end (keep it near the endpoint's --pause-queued-tasks: more is pushed and given back)")
	cmd.Flags().IntVar(&maxUnacked, "max-unacked", forwarder.DefaultMaxUnacked, "tasks sent to one endpoint that it has not yet acknowledged; more wait here, so another user's tasks do not queue in the link behind them (over a link with a round trip of R, at most this many per R: raise it for a distant endpoint)")
	return cmd
}

func newInterchangeCmd() *cobra.Command {
	var df daemonFlags
	var pf pressureFlags
	var endpointID, listenManagers, credPath string
	var fwds []string
	var maxRetries, maxResult, maxBlocksPerUser int
	var noPersist, fsync, ixAllowRoot bool
	var userMap string
	var shareArgs []string
	var bcfg *blocks.Config
	cmd := &cobra.Command{
		Use:   "interchange --credentials FILE | --insecure --endpoint-id ID",
		Short: "Run an endpoint's broker: connects out to the forwarder, serves managers",
		Long: `Run the interchange of one endpoint, usually on a login node. It connects out
to the forwarder (sites allow outbound connections), binds a ROUTER for the
managers of this endpoint, queues tasks and hands them to managers with free
capacity. Admin HTTP: GET /status, GET/POST /servingState, /metrics, /healthz.

Queued tasks wait per owner (the submitting user) and dispatch takes from
the owners in turn, equal shares unless --share USER=WEIGHT says otherwise.
A manager started without --prefetch holds as many tasks beyond its workers
as keep them busy over a round trip, from measured run times; a manager
with idle workers gets tasks another holds and has not started.

With --provider it starts and stops its own managers in blocks: local
(child processes) or slurm (batch jobs from a script it writes into
STATE_DIR/blocks/ID/job.sh). It scales out while tasks queue beyond free
and pending capacity, up to --max-blocks, drains blocks idle for
--max-idle down to --min-blocks, and replaces a block before its walltime.
Managers of a block get this interchange's manager credential and address.

With --user-map FILE the endpoint is multi-user (created with 'switchyard
endpoint create ID --multi-user'): the interchange runs as root and each
user's tasks run only on managers running as the POSIX account the map
names for her. Map lines: 'SWITCHYARD_USER POSIX_USER [SLURM_ACCOUNT]',
'# comments', and '* = [SLURM_ACCOUNT]' for "the account of the same
name". Root and accounts with uid below 1000 are refused. Each account gets
a manager key of its own in STATE_DIR/users/POSIX_USER/manager.credentials
(hers, mode 0600); the plain manager key is not made. Blocks are per user:
her queued tasks against her managers' capacity, at most
--max-blocks-per-user each and --max-blocks in all, her managers started
as her (local) or her jobs submitted as her (slurm, --account from the map).

It keeps its live blocks in STATE_DIR/blocks/blocks.json. A plain SIGTERM
leaves slurm jobs running (local managers stop with it): started again, the
interchange adopts them, matched with squeue, before it starts any block.
To stop it for good, give it --cancel-blocks-on-exit: at SIGTERM it then
cancels its blocks (their managers drain) and waits for the jobs to end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := df.logger()
			if err != nil {
				return err
			}
			if maxRetries == 0 {
				maxRetries = -1 // Options reads 0 as the default
			}
			if err := bcfg.Validate(); err != nil {
				return err
			}
			shares, err := parseShares(shareArgs)
			if err != nil {
				return err
			}
			creds, err := df.credentials(credPath, curve.KindEndpoint)
			if err != nil {
				return err
			}
			fwd := strings.Join(fwds, ",")
			if !cmd.Flags().Changed("forwarder") && creds != nil && creds.Address != "" {
				fwd = "" // the address(es) the credential names
			}
			ix, err := interchange.New(interchange.Options{HTTP: df.http, EndpointID: endpointID, Forwarder: fwd, ListenManagers: listenManagers,
				ListenHTTP: df.listenHTTP, StateDir: df.stateDir, NoPersist: noPersist, Fsync: fsync, HeartbeatInterval: df.interval,
				HeartbeatThreshold: df.thresholdOrDefault(), MaxRetries: maxRetries, Pressure: pf.th,
				Pprof: df.pprof, Log: log, Version: version,
				Credentials: creds, Insecure: df.insecure, MaxResultBytes: maxResult, Blocks: bcfg, AllowRoot: ixAllowRoot,
				UserMap: userMap, MaxBlocksPerUser: maxBlocksPerUser, Shares: shares})
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			tuneGC(ctx, log, 192<<20)
			return ix.Run(ctx)
		},
	}
	df.add(cmd.Flags(), interchange.DefaultListenHTTP, "")
	cmd.Flags().Lookup("state-dir").Usage = "directory for this daemon's state and lock file (default var/interchange-ENDPOINT_ID)"
	pf.add(cmd.Flags())
	cmd.Flags().StringVar(&endpointID, "endpoint-id", "", "endpoint id users submit tasks to (default: the id in --credentials)")
	cmd.Flags().StringVar(&credPath, "credentials", "", "the endpoint's `FILE` written by 'switchyard endpoint create ID --out FILE' (required unless --insecure)")
	cmd.Flags().IntVar(&maxResult, "max-result-bytes", interchange.DefaultMaxResultBytes, "refuse results larger than this from managers")
	cmd.Flags().BoolVar(&ixAllowRoot, "allow-root", false, "pass --allow-root to the managers of blocks")
	cmd.Flags().StringVar(&userMap, "user-map", "", "make this a multi-user endpoint: `FILE` maps Switchyard users to POSIX accounts (lines 'SWITCHYARD_USER POSIX_USER [SLURM_ACCOUNT]' or '* = [SLURM_ACCOUNT]'); run as root; re-read on SIGHUP")
	cmd.Flags().IntVar(&maxBlocksPerUser, "max-blocks-per-user", 0, "with --user-map: start at most this many blocks for one user (0: only --max-blocks caps them)")
	cmd.Flags().StringArrayVar(&shareArgs, "share", nil, "weigh a task owner in dispatch, `USER=WEIGHT` (a positive number; others weigh 1), e.g. --share alice=2 (repeatable)")
	bcfg = blocks.AddFlags(cmd.Flags())
	cmd.Flags().StringArrayVar(&fwds, "forwarder", []string{interchange.DefaultForwarder}, "forwarder ZMQ address to connect to; repeat it (or separate with commas) for forwarders that share one database: a lost one makes the interchange try the next")
	cmd.Flags().StringVar(&listenManagers, "listen-managers", interchange.DefaultListenManagers, "ZMQ ROUTER address managers connect to")
	cmd.Flags().BoolVar(&noPersist, "no-persist", false, "keep state in memory only (benchmarks); a restart loses it")
	cmd.Flags().BoolVar(&fsync, "fsync", false, "fsync every store commit so state survives a host crash, not only a process crash")
	cmd.Flags().IntVar(&maxRetries, "max-retries", interchange.DefaultMaxRetries, "re-queue a task this many times after its manager is lost, then fail it")
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if df.stateDir == "" {
			id := endpointID
			if id == "" && credPath != "" {
				if c, err := curve.ReadCredentials(credPath, curve.KindEndpoint); err == nil {
					id = c.ID
				}
			}
			if id == "" {
				return fmt.Errorf("--endpoint-id or --credentials is required: the endpoint users submit tasks to")
			}
			df.stateDir = "var/interchange-" + id
		}
		return nil
	}
	return cmd
}

func newManagerCmd() *cobra.Command {
	var df daemonFlags
	var pf pressureFlags
	var ixAddr, id, block, credPath, python string
	var workers, prefetch, pyWorkers int
	var drainGrace, pyIdle time.Duration
	var allowRoot bool
	var taskEnv []string
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run a compute node's manager and its workers",
		Long: `Run a manager on a compute node (often inside a batch job, one per node). It
connects to the interchange, registers its capacity (--workers; without
--prefetch the interchange decides how many more it holds, from measured
task durations and round trips), runs tasks on its worker pool and reports results. If the
interchange goes away it keeps running tasks, keeps their results, and
reconnects with backoff.

SIGTERM or SIGINT (scancel, a batch job's time limit, Ctrl-C) drains it: it
takes nothing new, tells the interchange at once, gives back the tasks it has
not started, lets running tasks go on for --drain-grace, then stops them and
gives them back too. Tasks given back run elsewhere with the same attempt
number; none fails because its node went away.

Without --heartbeat-interval and --heartbeat-threshold it takes both from the
interchange when it registers, so it reports as often as that interchange
expects.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := df.logger()
			if err != nil {
				return err
			}
			creds, err := df.credentials(credPath, curve.KindManager)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("interchange") && creds != nil && creds.Address != "" {
				ixAddr = creds.Address
			}
			mg, err := manager.New(manager.Options{HTTP: df.http, DrainGrace: drainGrace, Credentials: creds, Insecure: df.insecure, Interchange: ixAddr, ManagerID: id, Workers: workers, Prefetch: prefetch,
				ListenHTTP: df.listenHTTP, StateDir: df.stateDir, BlockID: block, HeartbeatInterval: df.interval,
				HeartbeatThreshold: df.thresholdOrDefault(), Pressure: pf.th, Pprof: df.pprof, Log: log, Version: version,
				AllowRoot: allowRoot, TaskEnv: taskEnv, PythonWorkers: pyWorkers, PythonIdle: pyIdle, Python: python,
				InheritHeartbeat: !cmd.Flags().Changed("heartbeat-interval") && !cmd.Flags().Changed("heartbeat-threshold")})
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			tuneGC(ctx, log, 64<<20)
			return mg.Run(ctx)
		},
	}
	df.add(cmd.Flags(), "", "")
	cmd.Flags().Lookup("state-dir").Usage = "directory for this manager's state and lock file (default: none; results wait in memory)"
	pf.add(cmd.Flags())
	cmd.Flags().StringVar(&ixAddr, "interchange", manager.DefaultInterchange, "interchange ZMQ address to connect to (default: the address in --credentials, else this)")
	cmd.Flags().StringVar(&credPath, "credentials", "", "the interchange's STATE_DIR/manager.credentials (required unless --insecure)")
	cmd.Flags().StringVar(&id, "manager-id", "", "manager id, unique per endpoint (default host-pid-random)")
	cmd.Flags().StringVar(&block, "block-id", "", "batch job or block this manager belongs to (shown in status)")
	cmd.Flags().IntVar(&workers, "workers", 0, "worker count (default: number of CPUs)")
	cmd.Flags().DurationVar(&drainGrace, "drain-grace", manager.DefaultDrainGrace, "on SIGTERM, let running tasks go on this long before stopping them and giving them back")
	cmd.Flags().IntVar(&prefetch, "prefetch", -1, "extra tasks to hold beyond --workers so workers never wait; -1 (the default): the interchange sizes it, deep for short tasks, none for long ones")
	cmd.Flags().IntVar(&pyWorkers, "python-workers", 0, "long-lived Python worker processes for python tasks (default: as many as --workers); none start before the first python task. "+
		"A process serves one owner (the submitting user) for its life and is reused only for that owner's calls; an owner may use them all. "+
		"An idle one is stopped after --python-idle, or at once when another owner needs its slot (the one idle longest goes)")
	cmd.Flags().DurationVar(&pyIdle, "python-idle", manager.DefaultPythonIdle, "how long an idle Python worker is kept for its owner's next call")
	cmd.Flags().StringVar(&python, "python", "python3", "Python interpreter of the Python workers; it needs cloudpickle")
	cmd.Flags().BoolVar(&allowRoot, "allow-root", false, "run even as root (every task then runs as root)")
	cmd.Flags().StringArrayVar(&taskEnv, "task-env", nil, "pass this variable of the manager's environment on to tasks (repeatable); tasks otherwise get only PATH, HOME, USER, LANG, TMPDIR and their own \"env\"")
	cmd.AddCommand(newManagerDrainCmd())
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if workers < 0 {
			return fmt.Errorf("--workers %d must be at least 1", workers)
		}
		return nil
	}
	return cmd
}

// tuneGC applies the daemon's GC policy (see internal/gctune) and logs it.
func tuneGC(ctx context.Context, log *logrus.Entry, base int64) {
	p := gctune.Start(ctx, base)
	log.WithFields(logrus.Fields{"gc_percent": p.Percent, "memory_limit_mib": p.Base >> 20}).
		Debug("GC policy: high target, soft memory limit that follows the live heap (GOGC and GOMEMLIMIT override)")
}

// parseShares reads --share USER=WEIGHT flags.
func parseShares(args []string) (map[string]float64, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]float64, len(args))
	for _, a := range args {
		u, w, ok := strings.Cut(a, "=")
		f, err := strconv.ParseFloat(w, 64)
		if !ok || u == "" || err != nil || !(f > 0) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("--share %q: want USER=WEIGHT with a positive number, e.g. --share alice=2", a)
		}
		if _, dup := out[u]; dup {
			return nil, fmt.Errorf("--share: user %q given twice", u)
		}
		out[u] = f
	}
	return out, nil
}
