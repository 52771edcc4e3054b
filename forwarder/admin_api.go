package forwarder

import (
	"errors"
	"net/http"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
)

// user is who made the request (the auth middleware put it there).
func user(r *http.Request) auth.Identity {
	id, _ := auth.From(r)
	return id
}

// visible says whether the requester may see task t: its owner and admins.
func visible(r *http.Request, t *Task) bool {
	id := user(r)
	return id.Admin || (id.User != "" && id.User == t.Owner)
}

// admin lets only admins through; others get 403, and either way the
// request is logged with the user's name.
func (f *Forwarder) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := user(r)
		log := f.log.WithFields(logrus.Fields{"user": id.User, "method": r.Method, "path": r.URL.Path})
		if !id.Admin {
			log.Warn("admin request refused: not an admin")
			f.fail(w, http.StatusForbidden, "%s %s needs an admin token; user %q is not an admin", r.Method, r.URL.Path, id.User)
			return
		}
		log.Info("admin request")
		h(w, r)
	}
}

func knownList(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	const show = 20
	if len(ids) > show {
		return strings.Join(ids[:show], ", ") + ", ..."
	}
	return strings.Join(ids, ", ")
}

func (f *Forwarder) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		User  string `json:"user"`
		Admin bool   `json:"admin"`
	}
	if !f.readJSON(w, r, &req) {
		return
	}
	tok, info, err := f.access.createToken(req.User, req.Admin, user(r).User)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	f.log.WithFields(logrus.Fields{"user": user(r).User, "for": info.User, "admin": info.Admin, "token_id": info.ID}).Info("token created")
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"token": tok, "token_id": info.ID, "user": info.User,
		"admin": info.Admin, "created_at": info.CreatedAt})
}

func (f *Forwarder) handleTokens(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"tokens": f.access.tokens()})
}

func (f *Forwarder) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	what := r.PathValue("id")
	gone, err := f.access.revoke(what, auth.Hash(f.adminToken))
	switch {
	case errors.Is(err, errNothingToRevoke):
		f.fail(w, http.StatusNotFound, "%v; see GET /v1/tokens", err)
		return
	case err != nil:
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	f.log.WithFields(logrus.Fields{"user": user(r).User, "revoked": len(gone), "what": what}).Info("tokens revoked")
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"revoked": gone})
}

func (f *Forwarder) handleCreateEndpoint(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID string `json:"endpoint_id"`
	}
	if !f.readJSON(w, r, &req) {
		return
	}
	cred, err := f.CreateEndpoint(req.ID, user(r).User)
	switch {
	case errors.Is(err, errEndpointExists):
		f.fail(w, http.StatusConflict, "%v", err)
		return
	case err != nil:
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"endpoint_id": cred.ID, "credentials": cred})
}

func (f *Forwarder) handleDeleteEndpoint(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("ep")
	found, failed, err := f.DeleteEndpoint(id, user(r).User)
	if !found {
		f.fail(w, http.StatusNotFound, "unknown endpoint %q; known endpoints: %s", id, knownList(f.access.endpointIDs()))
		return
	}
	if err != nil {
		f.fail(w, http.StatusServiceUnavailable, "endpoint %s deleted but not all of it is stored yet: %v", id, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"endpoint_id": id, "deleted": true, "failed_tasks": failed})
}
