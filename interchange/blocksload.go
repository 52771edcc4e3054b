package interchange

import "github.com/switchyard-hpc/switchyard/internal/blocks"

// addLoad adds m to the blocks strategy's input: its capacity is its
// workers, and tasks it holds beyond them (prefetched, not started) are
// demand like queued ones, so a block is started for them. A draining
// manager counts for its block until it exits, so the block is not
// cancelled under its running tasks; what it holds unstarted comes back.
func addLoad(load *blocks.Load, m *manager) {
	w := int(m.reg.Workers)
	held := len(m.outstanding)
	load.Managers = append(load.Managers, blocks.Manager{BlockID: m.reg.BlockID, Capacity: w, Held: min(held, w), Draining: m.draining})
	if !m.draining {
		load.Queued += max(0, held-w)
	}
}
