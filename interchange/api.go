package interchange

import (
	"fmt"
	"net/http"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (ix *Interchange) routes() http.Handler {
	return auth.Admin{Kind: "interchange", Status: func() any { return ix.Status() },
		Health: func() map[string]any {
			s := ix.Status()
			return map[string]any{"forwarder_connected": s.ForwarderConnected, "managers": s.Managers}
		},
		Registry: ix.opts.Registry, Serving: servingstate.Handler(ix.serving, ix.log), Pprof: ix.opts.Pprof,
		Token: ix.adminToken, Insecure: ix.opts.Insecure, SD: func() any { return ix.scrapeTargets() }}.Handler()
}

// setupAccess reads or makes the admin HTTP token.
func (ix *Interchange) setupAccess() error {
	dir := ""
	if ix.dir != nil {
		dir = ix.dir.Path
	}
	tok, err := auth.SetupDaemonToken(dir, ix.opts.Insecure, ix.log)
	if err != nil {
		return fmt.Errorf("interchange: %w", err)
	}
	ix.adminToken = tok
	return nil
}

// AdminToken is the token the admin HTTP asks for.
func (ix *Interchange) AdminToken() string { return ix.adminToken }

// servingCommand applies a serving-state Command from the forwarder.
func (ix *Interchange) servingCommand(c *messages.Command) *messages.CommandReply {
	return servingstate.Command(ix.serving, c, "forwarder", ix.log)
}
