package manager

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

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
}

func (l *loop) publishView(now time.Time) {
	v := StatusView{ManagerID: l.mg.opts.ManagerID, Interchange: l.mg.opts.Interchange, Registered: l.registered,
		Workers: l.mg.opts.Workers, IdleWorkers: l.mg.idle(), Prefetch: l.mg.opts.Prefetch, Held: len(l.tasks),
		Pending: len(l.pending), HeldResults: len(l.unacked), ServingState: l.mg.serving.Effective(now).String()}
	if !l.lastSeen.IsZero() {
		t := l.lastSeen.UTC()
		v.LastSeen = &t
	}
	if !l.registered && l.backoff > 0 {
		v.ReconnectWait = l.backoff.String()
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

func (mg *Manager) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, mg.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "registered": mg.Status().Registered})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(mg.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/servingState", servingstate.Handler(mg.serving, mg.log))
	if mg.opts.Pprof {
		httpx.MountPprof(mux)
	}
	if mg.opts.Insecure {
		return mux
	}
	return auth.Require(auth.Single(mg.adminToken), mux, nil)
}

// setupAdmin reads or makes the admin HTTP token (STATE_DIR/admin.token).
func (mg *Manager) setupAdmin() error {
	dir := ""
	if mg.dir != nil {
		dir = mg.dir.Path
	}
	tok, path, created, err := auth.DaemonToken(dir)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	mg.adminToken = tok
	if mg.opts.Insecure {
		mg.log.Warn("--insecure: the admin HTTP takes requests without a token")
	}
	switch {
	case path == "":
		mg.log.Info("admin HTTP token kept in memory (no --state-dir): only /healthz and /metrics are reachable from outside")
	case created:
		mg.log.WithField("path", path).Info("admin HTTP token created")
	}
	return nil
}

// AdminToken is the token the admin HTTP asks for.
func (mg *Manager) AdminToken() string { return mg.adminToken }

func servingCommand(mg *Manager, c *messages.Command) *messages.CommandReply {
	now := time.Now()
	if c.Op == messages.OpSetServingState {
		force := "false"
		if c.Force {
			force = "true"
		}
		st, _, f, err := servingstate.ParseRequest(c.State, "", force)
		if err != nil {
			return &messages.CommandReply{ID: c.ID, Message: err.Error()}
		}
		msg, err := mg.serving.Set(st, time.Duration(c.Timeout), f, "interchange", now)
		if err != nil {
			return &messages.CommandReply{ID: c.ID, Message: err.Error()}
		}
		mg.log.WithField("state", c.State).Info("serving state override from interchange: " + msg)
		body, _ := json.Marshal(mg.serving.Snapshot(now))
		return &messages.CommandReply{ID: c.ID, OK: true, Message: msg, Body: body}
	}
	v := mg.serving.Snapshot(now)
	body, _ := json.Marshal(v)
	return &messages.CommandReply{ID: c.ID, OK: true, Message: v.Text(), Body: body}
}
