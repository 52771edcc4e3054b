package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// NewToken is a token just made; Token is shown only this once.
type NewToken struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	Admin     bool      `json:"admin"`
	Groups    []string  `json:"groups,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// TokenInfo is a stored token without its secret.
type TokenInfo struct {
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	Admin     bool      `json:"admin"`
	Groups    []string  `json:"groups,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// CreateToken makes a token for user (an admin call).
func (c *Client) CreateToken(ctx context.Context, user string, admin bool) (NewToken, error) {
	return c.CreateTokenIn(ctx, user, admin, nil)
}

// CreateTokenIn makes a token for user, a member of groups (endpoints
// shared with a group let its members submit).
func (c *Client) CreateTokenIn(ctx context.Context, user string, admin bool, groups []string) (NewToken, error) {
	var out NewToken
	err := c.call(ctx, http.MethodPost, "/v1/tokens", map[string]any{"user": user, "admin": admin, "groups": groups}, &out)
	return out, err
}

// Tokens lists the stored tokens (an admin call).
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out struct {
		Tokens []TokenInfo `json:"tokens"`
	}
	err := c.call(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeTokens revokes the token with id idOrUser, or every token of that
// user (an admin call), and returns what was revoked.
func (c *Client) RevokeTokens(ctx context.Context, idOrUser string) ([]TokenInfo, error) {
	var out struct {
		Revoked []TokenInfo `json:"revoked"`
	}
	err := c.call(ctx, http.MethodDelete, "/v1/tokens/"+esc(idOrUser), nil, &out)
	return out.Revoked, err
}

// CreateEndpoint creates endpoint id, owned by the caller, and returns its
// enrollment credential as JSON: the file the interchange reads with
// --credentials. It holds a secret key; keep it private. replace gives an
// existing endpoint a new key (its old key stops working at once);
// without it an existing endpoint is a 409.
func (c *Client) CreateEndpoint(ctx context.Context, id string, replace bool) (json.RawMessage, error) {
	return c.CreateEndpointWith(ctx, NewEndpoint{ID: id, Replace: replace})
}

// NewEndpoint says what endpoint to create.
type NewEndpoint struct {
	ID      string `json:"endpoint_id"`
	Replace bool   `json:"replace,omitempty"`
	// MultiUser (admins only): its interchange runs each user's tasks as
	// her own account.
	MultiUser bool `json:"multi_user,omitempty"`
}

// CreateEndpointWith creates the endpoint e describes.
func (c *Client) CreateEndpointWith(ctx context.Context, e NewEndpoint) (json.RawMessage, error) {
	var out struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	err := c.call(ctx, http.MethodPost, "/v1/endpoints", e, &out)
	return out.Credentials, err
}

// ShareEndpoint lets users and groups submit to endpoint ep (its owner or
// an admin), or with add false stops letting them; it returns whom ep is
// shared with afterwards.
func (c *Client) ShareEndpoint(ctx context.Context, ep string, add bool, s Shares) (Shares, error) {
	var out struct {
		SharedWith Shares `json:"shared_with"`
	}
	path := "/v1/endpoints/" + esc(ep) + "/share"
	if !add {
		path = "/v1/endpoints/" + esc(ep) + "/unshare"
	}
	err := c.call(ctx, http.MethodPost, path, s, &out)
	return out.SharedWith, err
}

// DeleteEndpoint revokes endpoint id (an admin call); its tasks that had
// not ended fail, and their number is returned.
func (c *Client) DeleteEndpoint(ctx context.Context, id string) (int, error) {
	var out struct {
		Failed int `json:"failed_tasks"`
	}
	err := c.call(ctx, http.MethodDelete, "/v1/endpoints/"+esc(id), nil, &out)
	return out.Failed, err
}

// DrainManager asks manager id of endpoint ep to drain (an admin call):
// take nothing new, give back what it has not started, let running tasks
// finish and exit. grace > 0 stops tasks still running after that long and
// gives them back too. It returns the manager's answer.
func (c *Client) DrainManager(ctx context.Context, ep, id string, grace time.Duration) (string, error) {
	path := "/v1/endpoints/" + esc(ep) + "/managers/" + esc(id) + "/drain"
	if grace > 0 {
		path += "?grace=" + url.QueryEscape(grace.String())
	}
	var out struct {
		Message string `json:"message"`
	}
	err := c.call(ctx, http.MethodPost, path, nil, &out)
	return out.Message, err
}
