package interchange

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/curve"
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
	if ix.opts.Insecure {
		return mux
	}
	return auth.Require(auth.Single(ix.adminToken), mux, nil)
}

// ManagerCredentialsFile is the manager credential in the state dir.
const ManagerCredentialsFile = "manager.credentials"

// setupAccess reads or makes the admin HTTP token (STATE_DIR/admin.token),
// the interchange's CURVE key pair (STATE_DIR/curve.key) and, on first
// start, the credential its managers read with --credentials
// (STATE_DIR/manager.credentials, mode 0600).
func (ix *Interchange) setupAccess() error {
	dir := ""
	if ix.dir != nil {
		dir = ix.dir.Path
	}
	tok, path, created, err := auth.DaemonToken(dir)
	if err != nil {
		return fmt.Errorf("interchange: %w", err)
	}
	ix.adminToken = tok
	if ix.opts.Insecure {
		ix.log.Warn("--insecure: the admin HTTP takes requests without a token")
	}
	if created && path != "" {
		ix.log.WithField("path", path).Info("admin HTTP token created")
	}
	if ix.dir == nil {
		ix.curveKey, err = curve.NewKeyPair()
		return err
	}
	if ix.curveKey, _, err = curve.LoadOrCreate(ix.dir.File("curve.key")); err != nil {
		return fmt.Errorf("interchange: %w", err)
	}
	mc := ix.dir.File(ManagerCredentialsFile)
	if _, err := os.Stat(mc); err == nil {
		if _, err := curve.ReadCredentials(mc, curve.KindManager); err != nil {
			return fmt.Errorf("interchange: %w (delete it to have a new one made)", err)
		}
		return os.Chmod(mc, 0o600)
	}
	kp, err := curve.NewKeyPair()
	if err != nil {
		return err
	}
	c := &curve.Credentials{Kind: curve.KindManager, ServerKey: ix.curveKey.Public, Client: kp, Address: ix.downAddr}
	if err := curve.WriteCredentials(mc, c); err != nil {
		return fmt.Errorf("interchange: %w", err)
	}
	ix.log.WithField("path", mc).Info("manager credentials created; managers read them with --credentials")
	return nil
}

// AdminToken is the token the admin HTTP asks for.
func (ix *Interchange) AdminToken() string { return ix.adminToken }

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
