package interchange

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sirupsen/logrus"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/messages"
)

// startBlocks makes the block controller when a provider is configured:
// the interchange then starts and stops its own managers.
func (ix *Interchange) startBlocks() error {
	cfg := ix.opts.Blocks
	if cfg == nil || !cfg.Enabled() {
		if ix.opts.Registry != nil {
			blocks.RegisterIdle(ix.opts.Registry)
		}
		return nil
	}
	if ix.dir == nil {
		return fmt.Errorf("--provider %s needs a --state-dir for job scripts and manager logs", cfg.Provider)
	}
	if ix.multi != nil {
		return nil // each account has its own, made with it
	}
	var p blocks.Provider
	switch cfg.Provider {
	case blocks.ProviderLocal:
		p = blocks.NewLocal(cfg.CancelGrace)
	case blocks.ProviderSlurm:
		p = blocks.NewSlurm(cfg)
	default:
		return fmt.Errorf("unknown --provider %q; legal: %s", cfg.Provider, strings.Join(blocks.Providers, ", "))
	}
	// Managers run elsewhere (another directory, another node): absolute paths.
	dir, err := filepath.Abs(ix.dir.Path)
	if err != nil {
		return err
	}
	mc := blocks.ManagerCommand{Interchange: ix.downAddr, AllowRoot: ix.opts.AllowRoot, Binary: ix.opts.ManagerBinary}
	if ix.mgrCreds != nil {
		mc.Credentials = filepath.Join(dir, "manager.credentials")
	}
	b, err := blocks.New(blocks.Options{Config: cfg, Provider: p, StateDir: dir, Manager: mc,
		Drain:    func(id string) { ix.mbox.Post(event{kind: evDrainBlock, block: id}) },
		Wake:     func() { ix.mbox.Post(event{kind: evBlocks}) },
		Registry: ix.opts.Registry, Log: ix.log})
	if err != nil {
		return err
	}
	ix.blocks = b
	ix.closeBlocksAtExit(b, ix.log)
	return nil
}

// tickBlocks runs the block strategy on the loop's view of queue and
// managers, and publishes the blocks for status reports and views.
func (l *loop) tickBlocks(now time.Time) {
	b := l.ix.blocks
	if b == nil {
		return
	}
	if l.multi != nil {
		l.tickUserBlocks(now)
		return
	}
	load := blocks.Load{Queued: l.queued, Managers: make([]blocks.Manager, 0, len(l.mgrs))}
	for _, m := range l.mgrs {
		addLoad(&load, m)
	}
	b.Tick(now, load)
	l.nextBlocks = now.Add(b.Period())
	view := b.View()
	raw, _ := json.Marshal(view)
	if string(raw) != string(l.ix.status.blocks()) {
		l.ix.status.setBlocks(raw)
	}
	l.ix.blocksView.Store(&view)
}

// drainBlock asks every manager of a block to drain.
func (l *loop) drainBlock(id string) {
	for _, m := range l.mgrs {
		if m.reg.BlockID != id || m.draining {
			continue
		}
		l.cmdSeq++
		if err := l.sendManager(m, &messages.Command{ID: l.cmdSeq, Op: messages.OpDrain}); err != nil {
			l.log.WithError(err).WithField("manager", m.ID).Warn("drain of a block's manager not sent")
		}
	}
}

// startUserBlocks makes an account's own block controller on a multi-user
// endpoint with a provider: her blocks, started as her.
func (ix *Interchange) startUserBlocks(a *account) error {
	cfg := ix.opts.Blocks
	if cfg == nil || !cfg.Enabled() {
		return nil // startBlocks registered the metrics at zero
	}
	dir, err := filepath.Abs(ix.dir.Path)
	if err != nil {
		return err
	}
	ucfg := *cfg
	if n := ix.opts.MaxBlocksPerUser; n > 0 && n < ucfg.MaxBlocks {
		ucfg.MaxBlocks = n
		ucfg.MinBlocks = min(ucfg.MinBlocks, n)
		ucfg.InitBlocks = min(ucfg.InitBlocks, n)
	}
	cred := &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups}
	env := userEnv(a.posixAccount)
	var p blocks.Provider
	blockRoot := dir
	switch cfg.Provider {
	case blocks.ProviderLocal:
		lp := blocks.NewLocal(cfg.CancelGrace)
		lp.Cred, lp.Env, lp.Dir = cred, env, a.Home
		if fi, err := os.Stat(a.Home); err != nil || !fi.IsDir() {
			lp.Dir = "/"
		}
		p = lp
	case blocks.ProviderSlurm:
		sp := blocks.NewSlurm(&ucfg)
		sp.Cred = cred
		sp.Env = env
		if v, ok := os.LookupEnv("SLURM_CONF"); ok {
			sp.Env = append(sp.Env, "SLURM_CONF="+v)
		}
		if a.Slurm != "" {
			sp.Account = a.Slurm
		}
		p = sp
		// Her job script and output live in her own directory.
		blockRoot = filepath.Join(dir, "users", a.Name)
	default:
		return fmt.Errorf("unknown --provider %q; legal: %s", cfg.Provider, strings.Join(blocks.Providers, ", "))
	}
	mc := blocks.ManagerCommand{Interchange: ix.downAddr, Binary: ix.opts.ManagerBinary, Credentials: a.credPath}
	// Her blocks file is root's, beside the others, never in her directory.
	saved := filepath.Join(dir, "blocks", "user-"+a.Name+".json")
	b, err := blocks.New(blocks.Options{Config: &ucfg, Provider: p, StateDir: blockRoot, Manager: mc, SavedFile: saved,
		Drain:    func(id string) { ix.mbox.Post(event{kind: evDrainBlock, block: id}) },
		Wake:     func() { ix.mbox.Post(event{kind: evBlocks}) },
		Registry: prometheus.WrapRegistererWith(prometheus.Labels{"user": a.Name}, ix.opts.Registry),
		Log:      ix.log.WithField("posix_user", a.Name)})
	if err != nil {
		return fmt.Errorf("interchange: blocks of %s: %w", a.Name, err)
	}
	a.blocks = b
	if ix.blocks == nil {
		// Marks blocks as on for the loop; ticks go to the accounts.
		ix.blocks = b
	}
	ix.closeBlocksAtExit(b, ix.log.WithField("posix_user", a.Name))
	return nil
}

// userEnv is the clean environment of a user's managers and Slurm commands.
func userEnv(a posixAccount) []string {
	env := []string{"HOME=" + a.Home, "USER=" + a.Name, "LOGNAME=" + a.Name, "SHELL=/bin/sh",
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"}
	if v, ok := os.LookupEnv("LANG"); ok {
		env = append(env, "LANG="+v)
	}
	return env
}

// tickUserBlocks runs each account's block strategy on her queue and her
// managers, within what --max-blocks leaves for her; accounts take turns
// at going first.
func (l *loop) tickUserBlocks(now time.Time) {
	mu := l.multi
	total := l.ix.opts.Blocks.MaxBlocks
	used := 0
	for _, a := range mu.list {
		if a.blocks != nil {
			used += a.blocks.Live()
		}
	}
	n := len(mu.list)
	start := mu.brr
	mu.brr = (mu.brr + 1) % max(n, 1)
	var views []blocks.View
	for j := range n {
		a := mu.list[(start+j)%n]
		if a.blocks == nil {
			continue
		}
		own := a.blocks.Live()
		load := blocks.Load{Queued: a.q.n, Capped: true, MaxBlocks: max(own+total-used, 0), Managers: make([]blocks.Manager, 0, len(a.mgrs))}
		for _, m := range a.mgrs {
			addLoad(&load, m)
		}
		a.blocks.Tick(now, load)
		used += a.blocks.Live() - own
		for _, v := range a.blocks.View() {
			v.User = a.Name
			views = append(views, v)
		}
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].SubmittedAt.Before(views[j].SubmittedAt) })
	l.nextBlocks = now.Add(l.ix.blocks.Period())
	raw, _ := json.Marshal(views)
	if string(raw) != string(l.ix.status.blocks()) {
		l.ix.status.setBlocks(raw)
	}
	l.ix.blocksView.Store(&views)
}

// closeBlocksAtExit stops b's controller as the interchange stops: with
// --cancel-blocks-on-exit that drains and cancels its blocks, which may
// take up to the cluster's KillWait.
func (ix *Interchange) closeBlocksAtExit(b *blocks.Blocks, log *logrus.Entry) {
	ix.res.Add(func() {
		wait := 30 * time.Second
		if ix.opts.Blocks.CancelOnExit {
			wait = 3 * time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			log.WithError(err).Warn("stopping blocks")
		}
	})
}
