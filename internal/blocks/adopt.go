package blocks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// The controller keeps its live blocks in STATE_DIR/blocks/blocks.json,
// apart from the task store, so a restarted interchange knows the jobs it
// left running: it adopts them, asks the provider where each stands, and
// scales out only once that answer came.

const savedName = "blocks.json"

type savedBlock struct {
	ID          string    `json:"block_id"`
	JobID       string    `json:"job_id"`
	State       string    `json:"state"`
	SubmittedAt time.Time `json:"submitted_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	DrainedAt   time.Time `json:"drained_at,omitzero"`
	// Pids are a local block's managers (each its own process group).
	Pids []int `json:"pids,omitempty"`
}

type savedBlocks struct {
	Provider string       `json:"provider"`
	Blocks   []savedBlock `json:"blocks"`
}

// adopter is a provider that can take over a job it did not submit in
// this process (the slurm provider: it needs the block's directory for
// the exit file).
type adopter interface {
	Adopt(jobID, dir string)
}

func (b *Blocks) savedPath() string {
	if b.opts.SavedFile != "" {
		return b.opts.SavedFile
	}
	return filepath.Join(b.opts.StateDir, "blocks", savedName)
}

// load adopts the live blocks a previous run of this interchange saved.
func (b *Blocks) load(now time.Time) error {
	data, err := os.ReadFile(b.savedPath())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read saved blocks: %w", err)
	}
	var sv savedBlocks
	if err := json.Unmarshal(data, &sv); err != nil {
		return fmt.Errorf("saved blocks %s: %w", b.savedPath(), err)
	}
	b.saved = data
	for _, s := range sv.Blocks {
		st := stateOf(s.State)
		bl := &block{id: s.ID, jobID: s.JobID, state: st, submittedAt: s.SubmittedAt, startedAt: s.StartedAt,
			drainedAt: s.DrainedAt, dir: filepath.Join(b.opts.StateDir, "blocks", s.ID), adopted: true}
		b.blocks[s.ID] = bl
		b.order = append(b.order, s.ID)
		log := b.log.WithFields(logrus.Fields{"block": s.ID, "job": s.JobID, "state": s.State})
		switch {
		case sv.Provider != b.opts.Provider.Name():
			b.end(bl, now, Failed, fmt.Sprintf("started by provider %s, this interchange runs %s: not adopted", sv.Provider, b.opts.Provider.Name()))
		case s.JobID == "":
			b.end(bl, now, Failed, "the interchange stopped while submitting it; its job, if any, is not adopted")
		case b.opts.Provider.Name() == ProviderLocal && !b.adoptLocal(s):
			// Local managers stop with the interchange that started them,
			// unless it died without a word.
			b.end(bl, now, Done, "local managers end with their interchange; none of this block is still running")
		default:
			if a, ok := b.opts.Provider.(adopter); ok {
				a.Adopt(s.JobID, bl.dir)
			}
			b.recovering = true
			b.started = true // init blocks were started by the previous run
			log.Info("adopting a block of the previous run; scale-out waits for its job's state")
			continue
		}
		log.WithField("reason", bl.reason).Warn("block of the previous run not adopted")
	}
	b.recoverFrom = now
	return nil
}

func stateOf(s string) State {
	for i, n := range stateNames {
		if n == s {
			return State(i)
		}
	}
	return Pending
}

// save writes the live blocks when they changed: a new file, then
// rename, so a crash leaves the old or the new list.
func (b *Blocks) save() {
	sv := savedBlocks{Provider: b.opts.Provider.Name(), Blocks: []savedBlock{}}
	for _, id := range b.order {
		bl := b.blocks[id]
		if bl.state.ended() {
			continue
		}
		s := savedBlock{ID: id, JobID: bl.jobID, State: bl.state.String(), SubmittedAt: bl.submittedAt,
			StartedAt: bl.startedAt, DrainedAt: bl.drainedAt}
		if l, ok := b.opts.Provider.(*Local); ok {
			s.Pids = l.pidsOf(bl.jobID)
		}
		sv.Blocks = append(sv.Blocks, s)
	}
	data, err := json.MarshalIndent(sv, "", "  ")
	if err != nil || bytes.Equal(data, b.saved) {
		return
	}
	path := b.savedPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		b.log.WithError(err).Error("saving blocks")
		return
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		b.log.WithError(err).Error("saving blocks")
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		b.log.WithError(err).Error("saving blocks")
		return
	}
	b.saved = data
}

// recovered ends the recovery once the provider answered about the
// adopted jobs (or after a few periods without an answer).
func (b *Blocks) recovered(now time.Time, answered bool) {
	if !b.recovering || (!answered && now.Sub(b.recoverFrom) < 3*b.cfg.Period) {
		return
	}
	b.recovering = false
	n := 0
	for _, bl := range b.blocks {
		if bl.adopted && !bl.state.ended() {
			n++
		}
	}
	e := b.log.WithFields(logrus.Fields{"adopted": n, "took": now.Sub(b.recoverFrom).Round(time.Millisecond)})
	if answered {
		e.Info("blocks of the previous run recovered; scaling resumes")
	} else {
		e.Warn("the provider did not answer about the blocks of the previous run; scaling resumes without it")
	}
}

// Recovering reports whether adopted blocks still wait for their jobs'
// state; no block is started meanwhile.
func (b *Blocks) Recovering() bool { return b.recovering }

// cancelAll cancels every live block and waits, until ctx ends, for the
// provider to report their jobs ended: the end of an interchange stopped
// for good (--cancel-blocks-on-exit). The managers get SIGTERM and drain.
func (b *Blocks) cancelAll(ctx context.Context) error {
	var ids []string
	for _, id := range b.order {
		bl := b.blocks[id]
		if bl.state.ended() || bl.jobID == "" {
			continue
		}
		b.log.WithFields(logrus.Fields{"block": id, "job": bl.jobID}).Info("cancelling block: the interchange stops for good")
		if err := b.opts.Provider.Cancel(ctx, bl.jobID); err != nil {
			b.log.WithError(err).WithField("block", id).Warn("cancel failed")
		}
		ids = append(ids, bl.jobID)
	}
	for len(ids) > 0 {
		st, err := b.opts.Provider.Status(ctx, ids)
		if err == nil {
			live := ids[:0]
			for _, id := range ids {
				if s, ok := st[id]; ok && (s.State == JobRunning || s.State == JobPending) {
					live = append(live, id)
				}
			}
			ids = live
			b.statuses(time.Now(), st)
		}
		if len(ids) == 0 {
			break
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("blocks still running after cancel: jobs %v", ids)
		case <-t.C:
		}
	}
	// Whatever the provider said, none of them is ours any more.
	for _, bl := range b.blocks {
		if !bl.state.ended() {
			b.end(bl, time.Now(), Done, "cancelled: the interchange stopped for good")
		}
	}
	b.save()
	return nil
}
