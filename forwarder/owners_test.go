package forwarder_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/client"
	"github.com/switchyard-hpc/switchyard/e2e/testutil"
	"github.com/switchyard-hpc/switchyard/forwarder"
)

func endpointIDs(t *testing.T, c *testutil.Client) []string {
	t.Helper()
	eps, err := c.Client.Endpoints(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range eps {
		ids = append(ids, e.EndpointID)
	}
	return ids
}

// Any user may create an endpoint and owns it; only she, the users and
// groups she shares it with and admins may submit to it or see it. For
// everyone else it does not exist. Before, every token holder could
// submit to every endpoint, and only admins could create one.
func TestEndpointsUsersOwn(t *testing.T) {
	f, admin := startForwarder(t, forwarder.Options{})
	carol, dave, erin := f.User(t, "carol", false), f.User(t, "dave", false), f.User(t, "erin", false)
	var tok struct {
		Token string `json:"token"`
	}
	admin.Must(t, http.StatusCreated, "POST", "/v1/tokens", map[string]any{"user": "frank", "groups": []string{"lab"}}, &tok)
	frank := testutil.NewClient(f.URL, tok.Token)

	if _, err := carol.Client.CreateEndpoint(t.Context(), "carols", false); err != nil {
		t.Fatalf("carol creates an endpoint: %v", err)
	}
	noop := map[string]any{"kind": "noop"}
	if _, err := carol.Submit("carols", noop); err != nil {
		t.Fatalf("carol submits to her endpoint: %v", err)
	}
	for name, c := range map[string]*testutil.Client{"dave": dave, "erin": erin, "frank": frank} {
		code, body, _ := c.Do("POST", "/v1/endpoints/carols/tasks", map[string]any{"tasks": []any{noop}}, nil)
		if code != http.StatusNotFound || strings.Contains(string(body), "carols;") || strings.Contains(string(body), "ep1") {
			t.Fatalf("%s submits to carol's endpoint before sharing: %d %s; want 404 naming none of it", name, code, body)
		}
		if ids := endpointIDs(t, c); len(ids) != 0 {
			t.Fatalf("%s lists endpoints %v; want none", name, ids)
		}
	}
	// carol does not see the admin's ep1 either.
	if ids := endpointIDs(t, carol); !slices.Equal(ids, []string{"carols"}) {
		t.Fatalf("carol lists %v; want only carols", ids)
	}
	if _, err := carol.Submit("ep1", noop); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("carol submits to the admin's ep1: %v; want 404", err)
	}
	// Only the owner shares.
	if _, err := dave.Client.ShareEndpoint(t.Context(), "carols", true, client.Shares{Users: []string{"dave"}}); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("dave shares carol's endpoint with himself: %v; want 404", err)
	}
	s, err := carol.Client.ShareEndpoint(t.Context(), "carols", true, client.Shares{Users: []string{"dave"}, Groups: []string{"lab"}})
	if err != nil || !slices.Equal(s.Users, []string{"dave"}) || !slices.Equal(s.Groups, []string{"lab"}) {
		t.Fatalf("carol shares with dave and lab: %+v %v", s, err)
	}
	if _, err := dave.Submit("carols", noop); err != nil {
		t.Fatalf("dave submits once shared: %v", err)
	}
	if _, err := frank.Submit("carols", noop); err != nil {
		t.Fatalf("frank (group lab) submits once shared: %v", err)
	}
	if _, err := erin.Submit("carols", noop); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("erin submits: %v; want 404", err)
	}
	// dave sees the endpoint but not whom it is shared with, and may not
	// share, re-key or delete it.
	v, err := dave.Client.Endpoint(t.Context(), "carols", false)
	if err != nil || v.Owner != "carol" || v.SharedWith != nil {
		t.Fatalf("dave's view of carols: %+v %v", v, err)
	}
	if _, err := dave.Client.ShareEndpoint(t.Context(), "carols", true, client.Shares{Users: []string{"erin"}}); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("dave shares carols onward: %v; want 403", err)
	}
	if _, err := dave.Client.DeleteEndpoint(t.Context(), "carols"); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("dave deletes carols: %v; want 403", err)
	}
	if _, err := dave.Client.CreateEndpoint(t.Context(), "carols", true); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("dave re-keys carols: %v; want 403", err)
	}
	if _, err := erin.Client.CreateEndpoint(t.Context(), "carols", false); client.StatusOf(err) != http.StatusConflict {
		t.Fatalf("erin takes the id carols: %v; want 409", err)
	}
	// The owner and admins see the shares.
	if v, err := carol.Client.Endpoint(t.Context(), "carols", false); err != nil || v.SharedWith == nil || !slices.Equal(v.SharedWith.Users, []string{"dave"}) {
		t.Fatalf("carol's view: %+v %v", v, err)
	}
	if v, err := admin.Client.Endpoint(t.Context(), "carols", false); err != nil || v.Owner != "carol" || v.SharedWith == nil {
		t.Fatalf("the admin's view: %+v %v", v, err)
	}
	// Unsharing takes it back.
	if _, err := carol.Client.ShareEndpoint(t.Context(), "carols", false, client.Shares{Users: []string{"dave"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.Submit("carols", noop); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("dave submits after unshare: %v; want 404", err)
	}
	// Only admins make multi-user endpoints; every user may use one.
	if _, err := carol.Client.CreateEndpointWith(t.Context(), client.NewEndpoint{ID: "site", MultiUser: true}); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("carol creates a multi-user endpoint: %v; want 403", err)
	}
	if _, err := admin.Client.CreateEndpointWith(t.Context(), client.NewEndpoint{ID: "site", MultiUser: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := erin.Submit("site", noop); err != nil {
		t.Fatalf("erin submits to the multi-user endpoint: %v", err)
	}
	// The owner deletes her endpoint.
	if _, err := carol.Client.DeleteEndpoint(t.Context(), "carols"); err != nil {
		t.Fatalf("carol deletes carols: %v", err)
	}
	// Ownership survives a restart (it is in the store).
}
