package forwarder

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/httpx"
	"github.com/switchyard-hpc/switchyard/internal/taskstore"
)

// Who may use an endpoint: its owner (who created it), the users and
// groups she shared it with, and admins. A multi-user endpoint runs each
// user's tasks as that user's own account, so every user may submit to it
// (its interchange's user map decides who runs). For everyone else an
// endpoint does not exist: 404, absent from lists.

// get returns a copy of endpoint id's record.
func (e *enrollment) get(id string) (taskstore.Endpoint, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	rec, ok := e.byID[id]
	if !ok {
		return taskstore.Endpoint{}, false
	}
	c := *rec
	c.Users, c.Groups = slices.Clone(rec.Users), slices.Clone(rec.Groups)
	return c, true
}

// update changes endpoint id's record with fn and stores it.
func (e *enrollment) update(id string, fn func(*taskstore.Endpoint)) (taskstore.Endpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.byID[id]
	if !ok {
		return taskstore.Endpoint{}, fmt.Errorf("%w: %q", ErrNoEndpoint, id)
	}
	c := *rec
	c.Users, c.Groups = slices.Clone(rec.Users), slices.Clone(rec.Groups)
	fn(&c)
	if err := e.st.PutEndpoint(c); err != nil {
		return taskstore.Endpoint{}, fmt.Errorf("save endpoint: %w", err)
	}
	e.byID[id] = &c
	return c, nil
}

// mayUse says whether who may submit to and see rec.
func mayUse(who auth.Identity, rec *taskstore.Endpoint) bool {
	if who.Admin || rec.MultiUser {
		return true
	}
	if who.User == "" {
		return false
	}
	if rec.Owner == who.User || slices.Contains(rec.Users, who.User) {
		return true
	}
	for _, g := range who.Groups {
		if slices.Contains(rec.Groups, g) {
			return true
		}
	}
	return false
}

// mayManage says whether who may share, unshare, re-key or delete rec.
func mayManage(who auth.Identity, rec *taskstore.Endpoint) bool {
	return who.Admin || (who.User != "" && rec.Owner == who.User)
}

// canUse says whether who may submit to endpoint id: it was created and
// who may use it, or, on an --insecure forwarder (whose interchanges
// connect without enrollment and whose callers are all admins), an
// interchange has registered as it.
func (f *Forwarder) canUse(who auth.Identity, id string) bool {
	if rec, ok := f.enrolled.get(id); ok {
		return mayUse(who, &rec)
	}
	return f.opts.Insecure && f.endpointSeen(id)
}

// canUseNow is canUse for a request: with a shared database, a refusal
// first reads the endpoints again, since one created or shared through
// another forwarder may not have reached this one yet.
func (f *Forwarder) canUseNow(who auth.Identity, id string) bool {
	if f.canUse(who, id) {
		return true
	}
	if f.shared == nil {
		return false
	}
	f.shared.endpointsNow()
	return f.canUse(who, id)
}

// usableEndpoints lists the endpoints who may use, for error messages.
func (f *Forwarder) usableEndpoints(who auth.Identity) []string {
	var out []string
	for _, id := range f.knownEndpoints() {
		if f.canUse(who, id) {
			out = append(out, id)
		}
	}
	return out
}

// unknownEndpoint answers 404 for an endpoint who may not use, naming
// only those she may.
func (f *Forwarder) unknownEndpoint(w http.ResponseWriter, who auth.Identity, id string) {
	f.fail(w, http.StatusNotFound, "unknown endpoint %q; endpoints you may use: %s", id, knownList(f.usableEndpoints(who)))
}

// ShareRequest is the body of POST /v1/endpoints/{ep}/share and /unshare.
type ShareRequest struct {
	Users  []string `json:"users"`
	Groups []string `json:"groups"`
}

// handleShare answers POST /v1/endpoints/{ep}/share and .../unshare: the
// owner (or an admin) lets users and groups submit to her endpoint, or
// stops letting them. Sharing is trust: their tasks run as the account
// that runs the endpoint's managers.
func (f *Forwarder) handleShare(add bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, id := user(r), r.PathValue("ep")
		rec, ok := f.enrolled.get(id)
		if !ok || !mayUse(who, &rec) {
			f.unknownEndpoint(w, who, id)
			return
		}
		if !mayManage(who, &rec) {
			f.fail(w, http.StatusForbidden, "only the owner of endpoint %s (%s) or an admin may change whom it is shared with", id, rec.Owner)
			return
		}
		var req ShareRequest
		if !f.readJSON(w, r, &req) {
			return
		}
		if len(req.Users)+len(req.Groups) == 0 {
			f.fail(w, http.StatusBadRequest, "name at least one user or group: {\"users\": [...], \"groups\": [...]}")
			return
		}
		for _, n := range append(slices.Clone(req.Users), req.Groups...) {
			if err := ValidUser(n); err != nil {
				f.fail(w, http.StatusBadRequest, "%v", err)
				return
			}
		}
		rec, err := f.enrolled.update(id, func(e *taskstore.Endpoint) {
			e.Users, e.Groups = edit(e.Users, req.Users, add), edit(e.Groups, req.Groups, add)
		})
		if errors.Is(err, ErrNoEndpoint) {
			f.unknownEndpoint(w, who, id)
			return
		}
		if err != nil {
			f.fail(w, http.StatusServiceUnavailable, "endpoint %s: %v", id, err)
			return
		}
		verb := "shared"
		if !add {
			verb = "unshared"
		}
		f.log.WithFields(logrus.Fields{"endpoint": id, "user": who.User, "users": req.Users, "groups": req.Groups}).Info("endpoint " + verb)
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"endpoint_id": id, "owner": rec.Owner,
			"shared_with": ShareRequest{Users: orEmpty(rec.Users), Groups: orEmpty(rec.Groups)}})
	}
}

// edit adds names to (or removes them from) list, sorted and unique.
func edit(list, names []string, add bool) []string {
	if add {
		list = append(list, names...)
	} else {
		list = slices.DeleteFunc(list, func(s string) bool { return slices.Contains(names, s) })
	}
	sort.Strings(list)
	return slices.Compact(list)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// withAccess adds the endpoint's owner and shares to a view for who.
func withAccess(v EndpointView, rec *taskstore.Endpoint, who auth.Identity) EndpointView {
	v.Owner, v.MultiUser = rec.Owner, rec.MultiUser
	if mayManage(who, rec) {
		v.SharedWith = &ShareRequest{Users: orEmpty(rec.Users), Groups: orEmpty(rec.Groups)}
	} else if len(v.QueuedByOwner) > 0 {
		// Other users' names and loads are not hers to see.
		own := map[string]uint32{}
		if n, ok := v.QueuedByOwner[who.User]; ok {
			own[who.User] = n
		}
		v.QueuedByOwner = own
	}
	return v
}
