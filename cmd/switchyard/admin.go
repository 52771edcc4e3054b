package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard-hpc/switchyard/client"
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
	var groups []string
	create := &cobra.Command{
		Use:   "create USER [--admin] [--group G]...",
		Short: "Make a token for USER and print it (shown only once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			t, err := c.CreateTokenIn(cmd.Context(), args[0], admin, groups)
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
	create.Flags().StringSliceVar(&groups, "group", nil, "USER is in this group (repeatable): endpoints shared with the group (endpoint share --group) take USER's tasks")

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

// endpoint create / delete / share / unshare / list, beside 'endpoint up'.
func endpointAdminCmds() []*cobra.Command {
	var cf clientFlags
	var out string
	var replace, multiUser bool
	create := &cobra.Command{
		Use:   "create ID --out FILE [--replace] [--multi-user]",
		Short: "Create endpoint ID, owned by you, and write its enrollment credential",
		Long: `Create an endpoint and write its enrollment credential to FILE (mode 0600):
the endpoint id, a CURVE key pair for its interchange and the forwarder's
public key. Start the interchange with --credentials FILE. Tasks can be
submitted to an endpoint only once it exists.

Any user may create an endpoint; she owns it, and only she, the users and
groups she shares it with (endpoint share) and admins may submit to it or
see it. Its tasks run as the account that runs its managers: share it
only with people you trust with that account.

--multi-user (admins only) creates an endpoint whose interchange runs as
root with --user-map FILE and runs each user's tasks on managers of her own
POSIX account; every user may submit to it, and the map decides who runs.

--replace gives an existing endpoint a new key (a lost credential): its
interchange is disconnected at once and must restart with the new file; its
tasks, owner and shares stay.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required: where to write the credential the interchange reads")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			raw, err := c.CreateEndpointWith(cmd.Context(), client.NewEndpoint{ID: args[0], Replace: replace, MultiUser: multiUser})
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
	create.Flags().BoolVar(&multiUser, "multi-user", false, "an endpoint whose interchange runs each user's tasks as her own POSIX account (admins only)")

	share, unshare := shareCmd(true), shareCmd(false)

	var df clientFlags
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete (revoke) endpoint ID; its tasks that have not ended fail (its owner or an admin)",
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
	return []*cobra.Command{create, del, share, unshare, list}
}

// shareCmd is endpoint share (add) or endpoint unshare.
func shareCmd(add bool) *cobra.Command {
	var cf clientFlags
	var users, groups []string
	verb, short := "share", "Let users and groups submit to endpoint EP (its owner or an admin)"
	long := `Let the named users, and every user whose token is in one of the named groups
(token create --group), submit tasks to endpoint EP and see it. Only EP's
owner or an admin may do this.

Sharing is trust: their tasks run as the account that runs EP's managers,
so they can read what that account can read, including the endpoint's
keys and other users' tasks on it. Share a single-user endpoint only with
people you would give that account to; for users who must be kept apart,
use a multi-user endpoint (endpoint create --multi-user).`
	if !add {
		verb, short = "unshare", "Stop letting users and groups submit to endpoint EP"
		long = `Stop letting the named users and groups submit to endpoint EP; their tasks
already accepted still run. Only EP's owner or an admin may do this.`
	}
	cmd := &cobra.Command{
		Use:   verb + " EP [--user U]... [--group G]...",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(users)+len(groups) == 0 {
				return fmt.Errorf("name at least one --user or --group")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			s, err := c.ShareEndpoint(cmd.Context(), args[0], add, client.Shares{Users: users, Groups: groups})
			if err != nil {
				return err
			}
			if cf.asJSON {
				return printJSON(s)
			}
			fmt.Printf("endpoint %s is shared with users [%s] and groups [%s]\n", args[0], strings.Join(s.Users, " "), strings.Join(s.Groups, " "))
			return nil
		},
	}
	cf.add(cmd.Flags())
	cmd.Flags().StringSliceVar(&users, "user", nil, "a user (repeatable)")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "a group of tokens (repeatable)")
	return cmd
}
