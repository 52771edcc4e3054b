package forwarder

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// compactAfterPrune rewrites the store once pruning removed tasks, at
// most once per CompactInterval: a delete only appends a record to the
// log, which compacts by itself only once its dead records outweigh twice
// the live ones and store.CompactAfter, so without this a pruned task's
// arguments stay readable in the file. Called by the janitor only.
func (f *Forwarder) compactAfterPrune(now time.Time) {
	c, ok := f.store.(taskstore.Compacter)
	if !ok || now.Sub(f.lastCompact) < f.opts.CompactInterval {
		return
	}
	f.lastCompact = now
	start := time.Now()
	if err := c.Compact(); err != nil {
		f.log.WithError(err).Warn("store compaction after pruning failed; pruned tasks may stay readable in the store file until the next one")
		return
	}
	f.log.WithFields(logrus.Fields{"took": time.Since(start).Round(time.Millisecond).String()}).Info("store compacted after pruning")
}
