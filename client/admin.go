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
	CreatedAt time.Time `json:"created_at"`
}

// TokenInfo is a stored token without its secret.
type TokenInfo struct {
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// CreateToken makes a token for user (an admin call).
func (c *Client) CreateToken(ctx context.Context, user string, admin bool) (NewToken, error) {
	var out NewToken
	err := c.call(ctx, http.MethodPost, "/v1/tokens", map[string]any{"user": user, "admin": admin}, &out)
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

// CreateEndpoint enrolls endpoint id (an admin call) and returns its
// enrollment credential as JSON: the file the interchange reads with
// --credentials. It holds a secret key; keep it private. replace gives an
// existing endpoint a new key (its old key stops working at once);
// without it an existing endpoint is a 409.
func (c *Client) CreateEndpoint(ctx context.Context, id string, replace bool) (json.RawMessage, error) {
	var out struct {
		Credentials json.RawMessage `json:"credentials"`
	}
	err := c.call(ctx, http.MethodPost, "/v1/endpoints", map[string]any{"endpoint_id": id, "replace": replace}, &out)
	return out.Credentials, err
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
