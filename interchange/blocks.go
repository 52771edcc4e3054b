package interchange

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
	"github.com/switchyard-hpc/switchyard/messages"
)

// startBlocks makes the block controller when a provider is configured:
// the interchange then starts and stops its own managers.
func (ix *Interchange) startBlocks() error {
	cfg := ix.opts.Blocks
	if cfg == nil || !cfg.Enabled() {
		return nil
	}
	if ix.dir == nil {
		return fmt.Errorf("--provider %s needs a --state-dir for job scripts and manager logs", cfg.Provider)
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
	ix.res.Add(func() {
		wait := 30 * time.Second
		if cfg.CancelOnExit {
			wait = 3 * time.Minute // drains up to the cluster's KillWait
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			ix.log.WithError(err).Warn("stopping blocks")
		}
	})
	return nil
}

// tickBlocks runs the block strategy on the loop's view of queue and
// managers, and publishes the blocks for status reports and views.
func (l *loop) tickBlocks(now time.Time) {
	b := l.ix.blocks
	if b == nil {
		return
	}
	load := blocks.Load{Queued: l.queued, Managers: make([]blocks.Manager, 0, len(l.mgrs))}
	for _, m := range l.mgrs {
		// Draining managers count for their block until they exit, so it
		// is not cancelled under their running tasks.
		load.Managers = append(load.Managers, blocks.Manager{BlockID: m.reg.BlockID,
			Capacity: int(m.reg.Workers + m.reg.Prefetch), Held: len(m.outstanding), Draining: m.draining})
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
