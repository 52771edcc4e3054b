package interchange

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	return mux
}

// servingCommand applies a serving-state Command from the forwarder.
func (ix *Interchange) servingCommand(c *messages.Command) *messages.CommandReply {
	return servingstate.Command(ix.serving, c, "forwarder", ix.log)
}
