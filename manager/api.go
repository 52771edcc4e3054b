package manager

import (
	"fmt"
	"net/http"

	"github.com/switchyard-hpc/switchyard/internal/auth"
	"github.com/switchyard-hpc/switchyard/internal/servingstate"
	"github.com/switchyard-hpc/switchyard/messages"
)

func (mg *Manager) routes() http.Handler {
	return auth.Admin{Kind: "manager", Status: func() any { return mg.Status() },
		Health:   func() map[string]any { return map[string]any{"registered": mg.Status().Registered} },
		Registry: mg.opts.Registry, Serving: servingstate.Handler(mg.serving, mg.log), Pprof: mg.opts.Pprof,
		Token: mg.adminToken, Insecure: mg.opts.Insecure}.Handler()
}

// setupAdmin reads or makes the admin HTTP token.
func (mg *Manager) setupAdmin() error {
	dir := ""
	if mg.dir != nil {
		dir = mg.dir.Path
	}
	tok, err := auth.SetupDaemonToken(dir, mg.opts.Insecure, mg.log)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	mg.adminToken = tok
	return nil
}

// AdminToken is the token the admin HTTP asks for.
func (mg *Manager) AdminToken() string { return mg.adminToken }

func servingCommand(mg *Manager, c *messages.Command) *messages.CommandReply {
	return servingstate.Command(mg.serving, c, "interchange", mg.log)
}
