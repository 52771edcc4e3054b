package forwarder

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
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
		User   string   `json:"user"`
		Admin  bool     `json:"admin"`
		Groups []string `json:"groups"`
	}
	if !f.readJSON(w, r, &req) {
		return
	}
	tok, info, err := f.access.createToken(req.User, req.Admin, req.Groups, user(r).User)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	f.log.WithFields(logrus.Fields{"user": user(r).User, "for": info.User, "admin": info.Admin, "token_id": info.ID}).Info("token created")
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"token": tok, "token_id": info.ID, "user": info.User,
		"admin": info.Admin, "groups": info.Groups, "created_at": info.CreatedAt})
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
		// Replace gives an existing endpoint a new key; its old key stops
		// working at once and its tasks stay.
		Replace bool `json:"replace"`
		// MultiUser: an endpoint whose interchange runs each user's tasks
		// as that user's own account (admins only).
		MultiUser bool `json:"multi_user"`
	}
	if !f.readJSON(w, r, &req) {
		return
	}
	who := user(r)
	if req.MultiUser && !who.Admin {
		f.fail(w, http.StatusForbidden, "only admins create multi-user endpoints (their interchange runs as root); leave out multi_user to create one of your own")
		return
	}
	if rec, ok := f.enrolled.get(req.ID); ok && req.Replace && !mayManage(who, &rec) {
		if !mayUse(who, &rec) {
			f.unknownEndpoint(w, who, req.ID)
		} else {
			f.fail(w, http.StatusForbidden, "only the owner of endpoint %s (%s) or an admin may give it a new key", req.ID, rec.Owner)
		}
		return
	}
	cred, err := f.createEndpoint(taskstore.Endpoint{ID: req.ID, Owner: who.User, MultiUser: req.MultiUser}, req.Replace)
	switch {
	case errors.Is(err, ErrEndpointExists):
		f.fail(w, http.StatusConflict, "%v; create it with replace (switchyard endpoint create --replace) to give it a new key, or delete it", err)
		return
	case err != nil:
		f.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	f.log.WithFields(logrus.Fields{"endpoint": req.ID, "user": who.User, "replace": req.Replace, "multi_user": req.MultiUser}).Info("endpoint created")
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"endpoint_id": cred.ID, "credentials": cred})
}

func (f *Forwarder) handleDeleteEndpoint(w http.ResponseWriter, r *http.Request) {
	id, who := r.PathValue("ep"), user(r)
	if rec, ok := f.enrolled.get(id); ok && !mayManage(who, &rec) {
		if !mayUse(who, &rec) {
			f.unknownEndpoint(w, who, id)
		} else {
			f.fail(w, http.StatusForbidden, "only the owner of endpoint %s (%s) or an admin may delete it", id, rec.Owner)
		}
		return
	}
	failed, err := f.deleteEndpoint(id, who.User)
	switch {
	case errors.Is(err, ErrNoEndpoint):
		f.unknownEndpoint(w, who, id)
		return
	case err != nil && failed < 0:
		f.fail(w, http.StatusServiceUnavailable, "endpoint %s not deleted: %v", id, err)
		return
	case err != nil:
		f.fail(w, http.StatusServiceUnavailable, "endpoint %s deleted but its failed tasks are not all stored yet: %v", id, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"endpoint_id": id, "deleted": true, "failed_tasks": failed})
}

// deleteEndpoint revokes endpoint id (enroll.go), fails its tasks that
// have not ended and has the loop forget it. failed is -1 when the
// endpoint was not deleted; by is who asked, for the tasks' error.
func (f *Forwarder) deleteEndpoint(id, by string) (failed int, err error) {
	key, err := f.enrolled.remove(id)
	if err != nil {
		return -1, err
	}
	reason := "endpoint " + id + " was deleted"
	if by != "" {
		reason += " by " + by
	}
	failed, err = f.tasks.failEndpoint(id, reason)
	if err == nil && f.shared != nil {
		// Those no forwarder holds, or another does (it fails its own
		// when it hears of the deletion).
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var n int
		n, err = f.shared.st.FailEndpoint(ctx, id, reason, time.Now().UnixNano())
		cancel()
		failed += n
	}
	f.mbox.Post(event{kind: evDeleted, ep: id, key: key})
	f.log.WithFields(logrus.Fields{"endpoint": id, "user": by, "failed_tasks": failed}).Info("endpoint deleted")
	return failed, err
}

// endpointKnown says whether endpoint id was created, or, on an
// --insecure forwarder, an interchange has registered as it.
func (f *Forwarder) endpointKnown(id string) bool {
	return f.enrolled.has(id) || (f.opts.Insecure && f.endpointSeen(id))
}

// endpointSeen says whether an interchange has registered as id.
func (f *Forwarder) endpointSeen(id string) bool {
	f.viewMu.RLock()
	defer f.viewMu.RUnlock()
	_, ok := f.views[id]
	return ok
}

// knownEndpoints lists the endpoints tasks may be submitted to.
func (f *Forwarder) knownEndpoints() []string {
	ids := f.enrolled.ids()
	if f.opts.Insecure {
		f.viewMu.RLock()
		for id := range f.views {
			ids = append(ids, id)
		}
		f.viewMu.RUnlock()
		sort.Strings(ids)
		ids = slices.Compact(ids)
	}
	return ids
}

// forget drops a deleted endpoint's loop state and view, so it leaves no
// metric series behind; commands and probes waiting on it fail.
func (l *loop) forget(id string) {
	if ep, ok := l.eps[id]; ok {
		for n, ch := range ep.probes {
			ch <- commandResult{err: errors.New("endpoint was deleted")}
			delete(ep.probes, n)
		}
	}
	for n, pc := range l.commands {
		if pc.ep == id {
			pc.reply <- commandResult{err: errors.New("endpoint was deleted")}
			delete(l.commands, n)
		}
	}
	delete(l.eps, id)
	l.f.viewMu.Lock()
	delete(l.f.views, id)
	l.f.viewMu.Unlock()
}
