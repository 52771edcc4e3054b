package interchange

import (
	"sort"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/blocks"
)

// ManagerView is one manager in GET /status.
type ManagerView struct {
	ID          string `json:"manager_id"`
	Hostname    string `json:"hostname"`
	BlockID     string `json:"block_id,omitempty"`
	Workers     uint32 `json:"workers"`
	IdleWorkers uint32 `json:"idle_workers"`
	// Prefetch is what it may hold beyond its workers now: its own
	// --prefetch, or with PrefetchAdaptive what the interchange sized
	// from TaskSeconds (mean run time) and RTTMillis (batch to ack).
	Prefetch         uint32    `json:"prefetch"`
	PrefetchAdaptive bool      `json:"prefetch_adaptive"`
	TaskSeconds      float64   `json:"task_seconds,omitempty"`
	RTTMillis        float64   `json:"rtt_ms,omitempty"`
	Outstanding      int       `json:"outstanding"`
	ServingState     string    `json:"serving_state"`
	LastSeen         time.Time `json:"last_seen"`
	Registered       time.Time `json:"registered_at"`
	Draining         bool      `json:"draining"`
	// HTTPAddr is where it serves /metrics, as it reported.
	HTTPAddr string `json:"http_addr,omitempty"`
}

// StatusView is GET /status.
type StatusView struct {
	EndpointID         string         `json:"endpoint_id"`
	ForwarderConnected bool           `json:"forwarder_connected"`
	ForwarderLastSeen  *time.Time     `json:"forwarder_last_seen"`
	Managers           int            `json:"managers"`
	Workers            uint32         `json:"workers"`
	IdleWorkers        uint32         `json:"idle_workers"`
	Queued             int            `json:"queued"`
	QueuedByOwner      map[string]int `json:"queued_by_owner"`
	Outstanding        int            `json:"outstanding"`
	ResultsUndelivered int            `json:"results_undelivered"`
	// ResultsUnstored of them are kept by their managers (not acked yet)
	// instead of in the store, until the forwarder has them.
	ResultsUnstored     int           `json:"results_unstored"`
	ServingState        string        `json:"serving_state"`
	ManagerList         []ManagerView `json:"manager_list"`
	HeartbeatInterval   string        `json:"heartbeat_interval"`
	HeartbeatThreshold  string        `json:"heartbeat_threshold"`
	ForwarderReconnects int           `json:"forwarder_connects"`
	Blocks              []blocks.View `json:"blocks,omitempty"`
}

func (l *loop) publishView(now time.Time) {
	v := StatusView{EndpointID: l.ix.opts.EndpointID, ForwarderConnected: l.up.Registered(),
		Managers: len(l.mgrs), Queued: l.queued, Outstanding: l.outstanding(), ResultsUndelivered: l.nheld, ResultsUnstored: l.nunstored,
		ServingState: l.ix.pushState(now).String(), ManagerList: make([]ManagerView, 0, len(l.mgrs)),
		HeartbeatInterval: l.ix.opts.HeartbeatInterval.String(), HeartbeatThreshold: l.ix.opts.HeartbeatThreshold.String(),
		ForwarderReconnects: l.up.Connects(), QueuedByOwner: l.queuedByOwner()}
	if seen := l.up.LastSeen(); !seen.IsZero() {
		t := seen.UTC()
		v.ForwarderLastSeen = &t
	}
	for _, m := range l.mgrs {
		v.Workers += m.reg.Workers
		v.IdleWorkers += m.idle
		v.ManagerList = append(v.ManagerList, ManagerView{ID: m.ID, Hostname: m.reg.Hostname, BlockID: m.reg.BlockID,
			Workers: m.reg.Workers, IdleWorkers: m.idle, Prefetch: uint32(m.prefetch()), PrefetchAdaptive: m.pf.adaptive,
			TaskSeconds: m.pf.dur, RTTMillis: m.pf.rtt * 1000, Outstanding: len(m.outstanding),
			ServingState: m.serving.String(), LastSeen: m.LastSeen.UTC(), Registered: m.Registered.UTC(), Draining: m.draining,
			HTTPAddr: m.reg.HTTPAddr})
	}
	if bv := l.ix.blocksView.Load(); bv != nil {
		v.Blocks = *bv
	}
	sort.Slice(v.ManagerList, func(i, j int) bool { return v.ManagerList[i].ID < v.ManagerList[j].ID })
	l.ix.viewMu.Lock()
	l.ix.view = v
	l.ix.viewMu.Unlock()
}

// Status is the latest snapshot the loop published.
func (ix *Interchange) Status() StatusView {
	ix.viewMu.RLock()
	defer ix.viewMu.RUnlock()
	return ix.view
}

// queuedByOwner counts queued tasks per owner, over every queue.
func (l *loop) queuedByOwner() map[string]int {
	counts := map[string]int{}
	if l.queued == 0 {
		return counts
	}
	l.q.byOwner(counts)
	if l.multi != nil {
		for _, a := range l.multi.list {
			a.q.byOwner(counts)
		}
	}
	return counts
}
