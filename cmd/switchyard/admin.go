package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/internal/curve"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke API tokens (admin)",
		Long: `Tokens let users call the forwarder's API: each task belongs to the user whose
token submitted it, and other users cannot see it. These commands need an
admin token (the forwarder writes one to STATE_DIR/admin.token on its first
start).`}
	var cf clientFlags
	var admin bool
	create := &cobra.Command{
		Use:   "create USER [--admin]",
		Short: "Make a token for USER and print it (shown only once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), args[0], admin)
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(t)
			}
			fmt.Println(t.Token)
			fmt.Fprintf(os.Stderr, "switchyard: token %s for user %s (admin=%v); give it with: export SWITCHYARD_TOKEN=%s\n", t.TokenID, t.User, t.Admin, t.Token)
			return nil
		},
	}
	cf.add(create.Flags())
	create.Flags().BoolVar(&admin, "admin", false, "the token may administer tokens, endpoints and serving states, and sees every task")

	var lf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if lf.asJSON {
				return printJSON(map[string]any{"tokens": ts})
			}
			fmt.Printf("%-14s %-24s %-6s %s\n", "TOKEN_ID", "USER", "ADMIN", "CREATED")
			for _, t := range ts {
				fmt.Printf("%-14s %-24s %-6v %s\n", t.TokenID, t.User, t.Admin, t.CreatedAt.Format(time.RFC3339))
			}
			return nil
		},
	}
	lf.add(list.Flags())

	var rf clientFlags
	revoke := &cobra.Command{
		Use:   "revoke USER|TOKEN_ID",
		Short: "Revoke one token, or every token of a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			gone, err := c.RevokeTokens(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if rf.asJSON {
				return printJSON(map[string]any{"revoked": gone})
			}
			for _, t := range gone {
				fmt.Printf("revoked %s (user %s)\n", t.TokenID, t.User)
			}
			return nil
		},
	}
	rf.add(revoke.Flags())
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// endpoint create / delete / list (admin), beside 'endpoint up'.
func endpointAdminCmds() []*cobra.Command {
	var cf clientFlags
	var out string
	var replace bool
	create := &cobra.Command{
		Use:   "create ID --out FILE [--replace]",
		Short: "Create endpoint ID and write its enrollment credential (admin)",
		Long: `Create an endpoint and write its enrollment credential to FILE (mode 0600):
the endpoint id, a CURVE key pair for its interchange and the forwarder's
public key. Start the interchange with --credentials FILE. Tasks can be
submitted to an endpoint only once it exists. --replace gives an existing
endpoint a new key (a lost credential): its interchange is disconnected at
once and must restart with the new file; its tasks stay.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required: where to write the credential the interchange reads")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			raw, err := c.CreateEndpoint(cmd.Context(), args[0], replace)
			if err != nil {
				return err
			}
			var cred curve.Credentials
			if err := json.Unmarshal(raw, &cred); err != nil {
				return fmt.Errorf("the forwarder's answer is not a credential: %w", err)
			}
			if err := cred.Check(curve.KindEndpoint); err != nil {
				return fmt.Errorf("the forwarder's credential: %w", err)
			}
			if err := curve.WriteCredentials(out, &cred); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "switchyard: endpoint %s created; start its interchange with --credentials %s\n", cred.ID, out)
			return nil
		},
	}
	cf.add(create.Flags())
	create.Flags().StringVarP(&out, "out", "o", "", "write the enrollment credential here (mode 0600)")
	create.Flags().BoolVar(&replace, "replace", false, "give an existing endpoint a new key instead of refusing")

	var df clientFlags
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete (revoke) endpoint ID; its tasks that have not ended fail (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := df.client()
			if err != nil {
				return err
			}
			n, err := c.DeleteEndpoint(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Printf("endpoint %s deleted; %d unfinished tasks failed\n", args[0], n)
			return nil
		},
	}
	df.add(del.Flags())
	list := newEndpointsCmd()
	list.Use = "list"
	list.Args = cobra.NoArgs
	return []*cobra.Command{create, del, list}
}
