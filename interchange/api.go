package interchange

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (ix *Interchange) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, ix.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s := ix.Status()
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "forwarder_connected": s.ForwarderConnected, "managers": s.Managers})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(ix.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/servingState", servingstate.Handler(ix.serving, ix.log))
	if ix.opts.Pprof {
		httpx.MountPprof(mux)
	}
	mux.HandleFunc("/", httpx.AdminNotFound("interchange"))
	if ix.opts.Insecure {
		return httpx.Identify("interchange", mux)
	}
	return httpx.Identify("interchange", auth.Require(auth.Single(ix.adminToken), mux, nil))
}

// setupAccess reads or makes the admin HTTP token (STATE_DIR/admin.token,
// mode 0600; in memory only without a state dir).
func (ix *Interchange) setupAccess() error {
	dir := ""
	if ix.dir != nil {
		dir = ix.dir.Path
	}
	tok, path, created, err := auth.DaemonToken(dir)
	if err != nil {
		return fmt.Errorf("interchange: %w", err)
	}
	ix.adminToken = tok
	if ix.opts.Insecure {
		ix.log.Warn("--insecure: the admin HTTP takes requests without a token")
	}
	if created && path != "" {
		ix.log.WithField("path", path).Info("admin HTTP token created")
	}
	return nil
}

// AdminToken is the token the admin HTTP asks for.
func (ix *Interchange) AdminToken() string { return ix.adminToken }

// servingCommand applies a serving-state Command from the forwarder.
func (ix *Interchange) servingCommand(c *messages.Command) *messages.CommandReply {
	return servingstate.Command(ix.serving, c, "forwarder", ix.log)
}
