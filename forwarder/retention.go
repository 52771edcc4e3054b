package forwarder

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// compactAfterPrune compacts what pruning deleted, at most once per
// CompactInterval: a delete only writes a tombstone, so without this a
// pruned task's arguments stay readable in the store's files until Pebble
// happens to compact them. It runs beside writers. Called by the janitor
// only.
func (f *Forwarder) compactAfterPrune(now time.Time) {
	c, ok := f.store.(taskstore.Compacter)
	if !ok || now.Sub(f.lastCompact) < f.opts.CompactInterval {
		return
	}
	f.lastCompact = now
	start := time.Now()
	if err := c.Compact(); err != nil {
		f.log.WithError(err).Warn("store compaction after pruning failed; pruned tasks may stay readable in the store files until the next one")
		return
	}
	f.log.WithFields(logrus.Fields{"took": time.Since(start).Round(time.Millisecond).String()}).Info("store compacted after pruning")
}
