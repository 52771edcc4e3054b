package manager

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

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
	mux.HandleFunc("/", httpx.AdminNotFound("manager"))
	if mg.opts.Insecure {
		return httpx.Identify("manager", mux)
	}
	return httpx.Identify("manager", auth.Require(auth.Single(mg.adminToken), mux, nil))
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
	return servingstate.Command(mg.serving, c, "interchange", mg.log)
}
