package manager

import "time"

// StatusView is GET /status.
type StatusView struct {
	ManagerID     string     `json:"manager_id"`
	Interchange   string     `json:"interchange"`
	Registered    bool       `json:"registered"`
	LastSeen      *time.Time `json:"interchange_last_seen"`
	Workers       int        `json:"workers"`
	IdleWorkers   int        `json:"idle_workers"`
	Prefetch      int        `json:"prefetch"`
	Held          int        `json:"tasks_held"`
	Pending       int        `json:"tasks_pending"`
	HeldResults   int        `json:"results_unacked"`
	ServingState  string     `json:"serving_state"`
	ReconnectWait string     `json:"reconnect_backoff,omitempty"`
	Draining      bool       `json:"draining"`
}

func (l *loop) publishView(now time.Time) {
	v := StatusView{ManagerID: l.mg.opts.ManagerID, Interchange: l.mg.opts.Interchange, Registered: l.up.Registered(),
		Workers: l.mg.opts.Workers, IdleWorkers: l.mg.idle(), Prefetch: l.mg.opts.Prefetch, Held: l.nTasks,
		Pending: len(l.pending), HeldResults: l.results.len(), ServingState: l.mg.serving.Effective(now).String(),
		Draining: l.drain != nil}
	if seen := l.up.LastSeen(); !seen.IsZero() {
		t := seen.UTC()
		v.LastSeen = &t
	}
	if !l.up.Registered() && l.up.Backoff() > 0 {
		v.ReconnectWait = l.up.Backoff().String()
	}
	l.mg.viewMu.Lock()
	l.mg.view = v
	l.mg.viewMu.Unlock()
}

// Status is the latest snapshot.
func (mg *Manager) Status() StatusView {
	mg.viewMu.RLock()
	defer mg.viewMu.RUnlock()
	return mg.view
}
