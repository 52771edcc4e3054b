package manager

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	return mux
}

func servingCommand(mg *Manager, c *messages.Command) *messages.CommandReply {
	return servingstate.Command(mg.serving, c, "interchange", mg.log)
}
