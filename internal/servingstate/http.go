package servingstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/messages"
)

// Request is the JSON form of a POST /servingState.
type Request struct {
	State   string `json:"-"`
	Timeout string `json:"timeout"`
	Force   any    `json:"force"`
	Manager string `json:"manager"`
}

type jsonRequest struct {
	Request
	State *string `json:"state"`
}

// ReadRequest reads form or JSON fields from a POST.
func ReadRequest(r *http.Request) (Request, error) {
	var req Request
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(nil, r.Body, 1<<16)
	if ct == "application/json" {
		b, err := io.ReadAll(body)
		if err != nil {
			return req, fmt.Errorf("cannot read body: %v", err)
		}
		var jr jsonRequest
		if err := json.Unmarshal(b, &jr); err != nil {
			return req, fmt.Errorf("malformed JSON: %v", err)
		}
		if jr.State == nil {
			return req, errors.New(`missing field 'state'. Send {"state": "<` + strings.ReplaceAll(messages.LegalServingStates, ", ", "|") + `>"} or {"state": ""} to clear`)
		}
		req = jr.Request
		req.State = *jr.State
		return req, nil
	}
	r.Body = body
	if err := r.ParseForm(); err != nil {
		return req, fmt.Errorf("malformed form: %v", err)
	}
	if _, ok := r.Form["state"]; !ok {
		return req, errors.New("missing field 'state'. Send state=<" + strings.ReplaceAll(messages.LegalServingStates, ", ", "|") + "> or state= to clear")
	}
	req.State = r.Form.Get("state")
	req.Timeout = r.Form.Get("timeout")
	req.Force = r.Form.Get("force")
	req.Manager = r.Form.Get("manager")
	return req, nil
}

// ForceString normalises the force field of JSON or form input.
func (q Request) ForceString() string {
	switch v := q.Force.(type) {
	case nil:
		return ""
	case bool:
		if v {
			return "true"
		}
		return "false"
	case string:
		return v
	}
	return fmt.Sprint(q.Force)
}

// WantsJSON reports whether the client asked for JSON.
func WantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func reply(w http.ResponseWriter, r *http.Request, status int, text string, v any) {
	if WantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	_, _ = io.WriteString(w, text)
}

// Handler serves GET and POST /servingState for a daemon's own controller.
func Handler(c *Controller, log *logrus.Entry) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		switch r.Method {
		case http.MethodGet:
			v := c.Snapshot(now)
			reply(w, r, http.StatusOK, v.Text(), v)
		case http.MethodPost:
			req, err := ReadRequest(r)
			if err != nil {
				reply(w, r, http.StatusBadRequest, err.Error(), map[string]string{"error": err.Error()})
				return
			}
			st, d, force, err := ParseRequest(req.State, req.Timeout, req.ForceString())
			if err != nil {
				reply(w, r, http.StatusBadRequest, err.Error(), map[string]string{"error": err.Error()})
				return
			}
			msg, err := c.Set(st, d, force, "http "+r.RemoteAddr, now)
			if err != nil {
				var hp *ErrHidesPressure
				code := http.StatusBadRequest
				if errors.As(err, &hp) {
					code = http.StatusConflict
				}
				reply(w, r, code, err.Error(), map[string]string{"error": err.Error()})
				return
			}
			log.WithFields(logrus.Fields{"state": req.State, "timeout": req.Timeout, "force": force, "from": r.RemoteAddr}).Info("serving state override: " + msg)
			reply(w, r, http.StatusOK, msg, map[string]any{"message": msg, "serving_state": c.Snapshot(now)})
		default:
			w.Header().Set("Allow", "GET, POST")
			reply(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET or POST",
				map[string]string{"error": "method " + r.Method + " not allowed; use GET or POST"})
		}
	}
}
