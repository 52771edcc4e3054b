package forwarder

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

// handleServingState relays a serving-state GET or POST to the endpoint's
// interchange (or one of its managers) as a Command and returns its reply.
func (f *Forwarder) handleServingState(w http.ResponseWriter, r *http.Request) {
	ep := r.PathValue("ep")
	if who := user(r); !f.canUseNow(who, ep) && f.endpointKnown(ep) {
		f.unknownEndpoint(w, who, ep)
		return
	}
	cmd := &messages.Command{Op: messages.OpGetServingState, Manager: r.URL.Query().Get("manager")}
	if r.Method == http.MethodPost {
		req, err := servingstate.ReadRequest(r)
		if err != nil {
			f.servingFail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		st, d, force, err := servingstate.ParseRequest(req.State, req.Timeout, req.ForceString())
		if err != nil {
			f.servingFail(w, r, http.StatusBadRequest, err.Error())
			return
		}
		cmd.Op = messages.OpSetServingState
		if st != nil {
			cmd.State = *st
		} else {
			cmd.Clear = true
		}
		cmd.Timeout = int64(d)
		cmd.Force = force
		if req.Manager != "" {
			cmd.Manager = req.Manager
		}
	}
	res := f.roundTrip(r.Context(), event{kind: evCommand, ep: ep, cmd: cmd}, 15*time.Second)
	if res.err != nil {
		f.servingFail(w, r, http.StatusServiceUnavailable, "endpoint "+ep+": "+res.err.Error())
		return
	}
	rep := res.reply
	if !rep.OK() {
		f.servingFail(w, r, replyStatus(rep.Code), rep.Message)
		return
	}
	if servingstate.WantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		var body any = json.RawMessage(rep.Body)
		if len(rep.Body) == 0 {
			body = map[string]string{"message": rep.Message}
		} else if cmd.Op == messages.OpSetServingState {
			body = map[string]any{"message": rep.Message, "serving_state": json.RawMessage(rep.Body)}
		}
		_ = json.NewEncoder(w).Encode(body)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	msg := rep.Message
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	_, _ = w.Write([]byte(msg))
}

func (f *Forwarder) servingFail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if servingstate.WantsJSON(r) {
		f.fail(w, code, "%s", msg)
		return
	}
	f.m.httpErrors.WithLabelValues(strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// handleDrain asks one manager of an endpoint to drain: finish what it
// runs, take nothing new, give back what it has not started, and exit.
func (f *Forwarder) handleDrain(w http.ResponseWriter, r *http.Request) {
	ep, id := r.PathValue("ep"), r.PathValue("id")
	cmd := &messages.Command{Op: messages.OpDrain, Manager: id}
	if v := r.URL.Query().Get("grace"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			f.fail(w, http.StatusBadRequest, "invalid grace %q: use a Go duration like 30s or 5m (empty: wait for running tasks however long)", v)
			return
		}
		cmd.Timeout = int64(d)
	}
	res := f.roundTrip(r.Context(), event{kind: evCommand, ep: ep, cmd: cmd}, 15*time.Second)
	if res.err != nil {
		f.fail(w, http.StatusServiceUnavailable, "endpoint %s: %v", ep, res.err)
		return
	}
	if !res.reply.OK() {
		f.fail(w, replyStatus(res.reply.Code), "%s", res.reply.Message)
		return
	}
	f.log.WithFields(logrus.Fields{"endpoint": ep, "manager": id}).Info("manager drain requested")
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"endpoint_id": ep, "manager_id": id, "message": res.reply.Message})
}

// replyStatus maps a command's reply code to an HTTP status.
func replyStatus(c messages.ReplyCode) int {
	switch c {
	case messages.ReplyOK:
		return http.StatusOK
	case messages.ReplyConflict:
		return http.StatusConflict
	case messages.ReplyNotFound:
		return http.StatusNotFound
	case messages.ReplyUnavailable:
		return http.StatusServiceUnavailable
	case messages.ReplyUnsupported:
		return http.StatusNotImplemented
	}
	return http.StatusBadRequest
}
