package interchange

import (
	"encoding/json"
	"net/http"
	"time"

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
	now := time.Now()
	if c.Op == messages.OpSetServingState {
		st, _, force, err := servingstate.ParseRequest(c.State, "", boolStr(c.Force))
		if err != nil {
			return &messages.CommandReply{ID: c.ID, Message: err.Error()}
		}
		msg, err := ix.serving.Set(st, time.Duration(c.Timeout), force, "forwarder", now)
		if err != nil {
			return &messages.CommandReply{ID: c.ID, Message: err.Error()}
		}
		ix.log.WithField("state", c.State).WithField("force", force).Info("serving state override from forwarder: " + msg)
		body, _ := json.Marshal(ix.serving.Snapshot(now))
		return &messages.CommandReply{ID: c.ID, OK: true, Message: msg, Body: body}
	}
	v := ix.serving.Snapshot(now)
	body, _ := json.Marshal(v)
	return &messages.CommandReply{ID: c.ID, OK: true, Message: v.Text(), Body: body}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
