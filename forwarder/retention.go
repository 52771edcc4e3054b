package forwarder

import (
	"time"

	"github.com/sirupsen/logrus"
)

// compactAfterPrune rewrites the store once pruning removed tasks, at
// most once per CompactInterval: bbolt leaves deleted records in free
// pages, so without it a pruned task's arguments stay readable in the file.
// Called by the janitor only.
func (f *Forwarder) compactAfterPrune(now time.Time) {
	if f.store == nil || now.Sub(f.lastCompact) < f.opts.CompactInterval {
		return
	}
	f.lastCompact = now
	start := time.Now()
	if err := f.store.Compact(); err != nil {
		f.log.WithError(err).Warn("store compaction after pruning failed; pruned tasks may stay readable in free pages until the next one")
		return
	}
	f.log.WithFields(logrus.Fields{"took": time.Since(start).Round(time.Millisecond).String()}).Info("store compacted after pruning")
}
