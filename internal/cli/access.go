package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/client"
)

func newLoginCmd(g *globals) *cobra.Command {
	var profile string
	cmd := &cobra.Command{
		Use:   "login --url URL --key KEY",
		Short: "Check a server URL and API key, and save them for later commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.url == "" || g.key == "" {
				return fmt.Errorf("login needs --url and --key (the key can also come from $PLINTH_API_KEY)")
			}
			c := client.New(g.url, g.key)
			me, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			if profile == "" {
				profile = "default"
			}
			path, err := client.SaveProfile(profile, client.Profile{URL: c.BaseURL, Key: g.key}, true)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Logged in to %s as %s (profile %q saved in %s)\n", c.BaseURL, me.Principal, profile, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "name", "", "profile name to save as (default: \"default\")")
	return cmd
}

func newWhoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the configured key authenticates as, and its roles",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			me, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(me, func() [][]string {
				roles := []string{}
				for _, gr := range me.Grants {
					roles = append(roles, gr.Role+"@"+gr.Scope)
				}
				return [][]string{{"PRINCIPAL", "KIND", "KEY", "KEY LIMITED TO", "ROLES"},
					{me.Principal, me.Kind, me.KeyID, orDash(me.KeyWorkspace), orDash(strings.Join(roles, ", "))}}
			})
		}),
	}
}

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Create, list and revoke API keys"}

	var in client.KeyInput
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API key; its secret is printed once",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			k, err := c.CreateKey(cmd.Context(), in)
			if err != nil {
				return err
			}
			if g.output == "table" || g.output == "" {
				fmt.Fprintf(g.stdout, "Created key %s (%s) for %s. Its secret, shown only this once:\n\n    %s\n\n", k.Key.Name, k.Key.ID, k.Key.Principal, k.Secret)
				return nil
			}
			return g.printResult(k, nil)
		}),
	}
	create.Flags().StringVar(&in.Name, "name", "", "key name, unique among the owner's live keys (required)")
	create.Flags().StringVar(&in.Principal, "principal", "", "owner of the key (default: you; others need keys.manage)")
	create.Flags().StringVar(&in.Workspace, "workspace", "", "limit the key to one workspace")
	create.Flags().StringVar(&in.ExpiresIn, "expires-in", "", "lifetime such as 720h (default: never expires)")
	_ = create.MarkFlagRequired("name")

	var principal string
	var all bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (yours, or --principal's)",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			keys, err := c.ListKeys(cmd.Context(), principal, all)
			if err != nil {
				return err
			}
			if keys == nil {
				keys = []auth.APIKey{}
			}
			return g.printResult(keys, func() [][]string {
				rows := [][]string{{"ID", "NAME", "PREFIX", "PRINCIPAL", "WORKSPACE", "CREATED", "EXPIRES", "LAST USED", "REVOKED"}}
				for _, k := range keys {
					rows = append(rows, []string{k.ID, k.Name, k.Prefix, k.Principal, orDash(k.Workspace), fmtTime(k.CreatedAt),
						fmtTimePtr(k.ExpiresAt), fmtTimePtr(k.LastUsedAt), fmtTimePtr(k.RevokedAt)})
				}
				return rows
			})
		}),
	}
	list.Flags().StringVar(&principal, "principal", "", "whose keys (default: yours)")
	list.Flags().BoolVar(&all, "all", false, "include revoked keys")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key; it stops working at once",
		Args:  exactArgs(1, "ID"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			k, err := c.RevokeKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.output == "table" || g.output == "" {
				fmt.Fprintf(g.stdout, "key %s (%s) revoked\n", k.ID, k.Name)
				return nil
			}
			return g.printResult(k, nil)
		}),
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newRoleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Assign, list and remove roles (platform-wide or in a workspace)"}
	var ws, principal, role string

	assign := &cobra.Command{
		Use:   "assign --principal NAME --role ROLE [--workspace WS]",
		Short: "Grant a role to a principal, in a workspace or (without --workspace) platform-wide",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ra, err := c.AssignRole(cmd.Context(), ws, principal, role)
			if err != nil {
				return err
			}
			return g.printResult(ra, func() [][]string { return roleRows(ra) })
		}),
	}
	assign.Flags().StringVar(&principal, "principal", "", "who gets the role (required)")
	assign.Flags().StringVar(&role, "role", "", "Owner, Contributor, DataScientist, Reader or EndpointInvoker (required)")
	assign.Flags().StringVar(&ws, "workspace", "", "workspace (default: platform-wide)")
	_ = assign.MarkFlagRequired("principal")
	_ = assign.MarkFlagRequired("role")
	_ = assign.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names := make([]string, len(auth.Roles))
		for i, r := range auth.Roles {
			names[i] = string(r)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})

	var listWS, listPrincipal string
	list := &cobra.Command{
		Use:   "list [--workspace WS]",
		Short: "List role assignments in a workspace or platform-wide",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListRoles(cmd.Context(), listWS, listPrincipal)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return roleRows(list...) })
		}),
	}
	list.Flags().StringVar(&listWS, "workspace", "", "workspace (default: platform-wide)")
	list.Flags().StringVar(&listPrincipal, "principal", "", "only this principal's")

	var removeWS string
	remove := &cobra.Command{
		Use:   "remove ID [--workspace WS]",
		Short: "Remove a role assignment",
		Args:  exactArgs(1, "ID"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.RemoveRole(cmd.Context(), removeWS, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "role assignment %s removed\n", args[0])
			return nil
		}),
	}
	remove.Flags().StringVar(&removeWS, "workspace", "", "workspace the assignment is in (default: platform-wide)")

	defs := &cobra.Command{
		Use:   "definitions",
		Short: "List the built-in roles and their permissions",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			roles, err := c.RoleDefinitions(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(roles, func() [][]string {
				rows := [][]string{{"ROLE", "PERMISSIONS"}}
				for _, r := range roles {
					rows = append(rows, []string{r.Name, strings.Join(r.Permissions, ",")})
				}
				return rows
			})
		}),
	}
	cmd.AddCommand(assign, list, remove, defs)
	return cmd
}

func roleRows(list ...auth.RoleAssignment) [][]string {
	rows := [][]string{{"ID", "PRINCIPAL", "ROLE", "SCOPE", "CREATED BY", "CREATED"}}
	for _, ra := range list {
		rows = append(rows, []string{ra.ID, ra.Principal, string(ra.Role), ra.Scope, ra.CreatedBy, fmtTime(ra.CreatedAt)})
	}
	return rows
}

func newPrincipalCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "principal", Short: "Create, list, show and delete users and service principals"}
	var in auth.CreatePrincipalInput
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user (or, with --kind service, a service principal)",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in.Name = args[0]
			p, err := c.CreatePrincipal(cmd.Context(), in)
			if err != nil {
				return err
			}
			return g.printResult(p, func() [][]string { return principalRows(p) })
		}),
	}
	create.Flags().StringVar(&in.Kind, "kind", "user", "user or service")
	create.Flags().StringVar(&in.DisplayName, "display-name", "", "human-friendly name")

	list := &cobra.Command{
		Use:   "list",
		Short: "List principals",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var all []auth.Principal
			token := ""
			for {
				page, next, err := c.ListPrincipals(cmd.Context(), token, 0)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if next == "" {
					break
				}
				token = next
			}
			if all == nil {
				all = []auth.Principal{}
			}
			return g.printResult(all, func() [][]string { return principalRows(all...) })
		}),
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a principal",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := c.GetPrincipal(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printResult(p, func() [][]string { return principalRows(p) })
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a principal with its keys and role assignments",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeletePrincipal(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "principal %q deleted\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func principalRows(list ...auth.Principal) [][]string {
	rows := [][]string{{"NAME", "KIND", "DISPLAY NAME", "CREATED BY", "CREATED"}}
	for _, p := range list {
		rows = append(rows, []string{p.Name, p.Kind, orDash(p.DisplayName), p.CreatedBy, fmtTime(p.CreatedAt)})
	}
	return rows
}
