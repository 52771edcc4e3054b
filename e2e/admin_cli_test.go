package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-hpc/switchyard/internal/curve"
)

// cliAs runs `switchyard ARGS...` against the cluster's forwarder with
// token (SWITCHYARD_API and SWITCHYARD_TOKEN, as a user sets them).
func (c *cluster) cliAs(token string, args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), "SWITCHYARD_API="+c.api(), "SWITCHYARD_TOKEN="+token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		c.t.Fatalf("switchyard %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// The admin commands of the CLI against real processes: tokens, endpoint
// create/list/delete (--replace re-keys) and manager drain; a user's token
// gets 403 for each, and the admin token does them.
func TestAdminCommandsCLI(t *testing.T) {
	c := newCluster(t, clusterOpts{endpoint: "admincli"})
	c.addManager("admincli-m1", 1, -1)
	admin := c.token
	refused := func(r cliResult, want string) bool { return r.code != 0 && strings.Contains(r.stderr, want) }

	r := c.cliAs(admin, "token", "create", "alice")
	alice := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(alice, "syt_") {
		t.Fatalf("token create alice: %s", r)
	}
	creds := filepath.Join(c.dir, "ep2.credentials")
	for _, args := range [][]string{
		{"endpoint", "create", "ep2", "--multi-user", "--out", creds},
		{"manager", "drain", "admincli-m1", "-e", c.ep},
		{"token", "list"},
	} {
		if r := c.cliAs(alice, args...); !refused(r, "HTTP 403") {
			t.Errorf("alice: switchyard %s: %s; want a 403", strings.Join(args, " "), r)
		}
	}
	if _, err := os.Stat(creds); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused endpoint create wrote %s: %v", creds, err)
	}
	// The admin's endpoint does not exist for alice until it is shared.
	if r := c.cliAs(alice, "endpoint", "delete", c.ep); !refused(r, "HTTP 404") {
		t.Errorf("alice deletes the admin's endpoint: %s; want a 404", r)
	}
	// alice creates an endpoint of her own, shares it, lists it.
	aliceCreds := filepath.Join(c.dir, "alices.credentials")
	if r := c.cliAs(alice, "endpoint", "create", "alices", "--out", aliceCreds); r.code != 0 {
		t.Fatalf("alice creates her endpoint: %s", r)
	}
	if r := c.cliAs(alice, "endpoint", "share", "alices", "--user", "bob", "--group", "lab"); r.code != 0 || !strings.Contains(r.stdout, "users [bob] and groups [lab]") {
		t.Fatalf("alice shares her endpoint: %s", r)
	}
	if r := c.cliAs(alice, "endpoint", "list"); r.code != 0 || !strings.Contains(r.stdout, "alices") || strings.Contains(r.stdout, c.ep) {
		t.Fatalf("alice's endpoint list: %s; want alices and not %s", r, c.ep)
	}
	if r := c.cliAs(alice, "endpoint", "unshare", "alices", "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "users [] and groups [lab]") {
		t.Fatalf("alice unshares bob: %s", r)
	}

	if r := c.cliAs(admin, "endpoint", "create", "ep2", "--out", creds); r.code != 0 {
		t.Fatalf("endpoint create ep2: %s", r)
	}
	first, err := curve.ReadCredentials(creds, curve.KindEndpoint)
	if fi, serr := os.Stat(creds); err != nil || serr != nil || fi.Mode().Perm() != 0o600 || first.ID != "ep2" {
		t.Fatalf("ep2's credential: %+v %v %v", first, err, serr)
	}
	if r := c.cliAs(admin, "endpoint", "create", "ep2", "--out", creds); !refused(r, "--replace") {
		t.Fatalf("endpoint create ep2 again: %s; want a refusal naming --replace", r)
	}
	if r := c.cliAs(admin, "endpoint", "create", "ep2", "--out", creds, "--replace"); r.code != 0 {
		t.Fatalf("endpoint create ep2 --replace: %s", r)
	}
	if again, err := curve.ReadCredentials(creds, curve.KindEndpoint); err != nil || again.Client.Public == first.Client.Public {
		t.Fatalf("replaced credential: %+v %v; want a new key", again, err)
	}
	if r := c.cliAs(admin, "endpoint", "list"); r.code != 0 || !strings.Contains(r.stdout, "ep2") || !strings.Contains(r.stdout, c.ep) {
		t.Fatalf("endpoint list: %s", r)
	}

	// A task waiting for ep2 fails when ep2 is deleted.
	if r := c.cliAs(admin, "endpoint", "share", "ep2", "--user", "alice"); r.code != 0 {
		t.Fatalf("endpoint share ep2 with alice: %s", r)
	}
	r = c.cliAs(alice, "submit", "-e", "ep2", "--kind", "noop")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" {
		t.Fatalf("alice submits to ep2: %s", r)
	}
	if r := c.cliAs(admin, "endpoint", "delete", "ep2"); r.code != 0 || !strings.Contains(r.stdout, "1 unfinished tasks failed") {
		t.Fatalf("endpoint delete ep2: %s", r)
	}
	if r := c.cliAs(alice, "wait", id); r.code != 3 || !strings.Contains(r.stdout, "failed") {
		t.Fatalf("alice's task of the deleted endpoint: %s; want failed", r)
	}
	if r := c.cliAs(alice, "submit", "-e", "ep2", "--kind", "noop"); !refused(r, "HTTP 404") {
		t.Fatalf("submit to the deleted ep2: %s; want 404", r)
	}

	r = c.cliAs(admin, "token", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "alice") || strings.Contains(r.stdout, alice) {
		t.Fatalf("token list: %s; want alice listed without her secret", r)
	}
	if r := c.cliAs(admin, "token", "revoke", "alice"); r.code != 0 {
		t.Fatalf("token revoke alice: %s", r)
	}
	if r := c.cliAs(alice, "endpoints"); !refused(r, "HTTP 401") {
		t.Fatalf("a revoked token: %s; want 401", r)
	}

	if r := c.cliAs(admin, "manager", "drain", "admincli-m1", "-e", c.ep, "--grace", "5s"); r.code != 0 || !strings.Contains(r.stdout, "draining") {
		t.Fatalf("manager drain: %s", r)
	}
	waitFor(t, 30*time.Second, func() error {
		st, err := c.ixStatus()
		if err != nil {
			return err
		}
		if st.lists("admincli-m1") {
			return fmt.Errorf("admincli-m1 still registered")
		}
		return nil
	})
}
