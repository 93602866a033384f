package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"

	"github.com/plinth-dev/plinth/internal/workspace"
)

func newWorkspaceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Aliases: []string{"ws"}, Short: "Create, list, show, update and delete workspaces"}
	cmd.AddCommand(newWorkspaceCreate(g), newWorkspaceList(g), newWorkspaceShow(g), newWorkspaceUpdate(g),
		newWorkspaceDelete(g), newWorkspaceRegions(g))
	return cmd
}

func workspaceRows(list ...workspace.Workspace) [][]string {
	rows := [][]string{{"NAME", "REGION", "ALLOWED REGIONS", "TEAM", "CREATED BY", "CREATED"}}
	for _, w := range list {
		rows = append(rows, []string{w.Name, w.Region, strings.Join(w.AllowedRegions, ","), orDash(w.Team), w.CreatedBy, fmtTime(w.CreatedAt)})
	}
	return rows
}

func workspaceDetail(w workspace.Workspace) [][]string {
	tags := make([]string, 0, len(w.Tags))
	for k, v := range w.Tags {
		tags = append(tags, k+"="+v)
	}
	sort.Strings(tags)
	return [][]string{
		{"Name:", w.Name}, {"Display name:", w.DisplayName}, {"Description:", orDash(w.Description)},
		{"Region:", w.Region}, {"Allowed regions:", strings.Join(w.AllowedRegions, ", ")}, {"Team:", orDash(w.Team)},
		{"Tags:", orDash(strings.Join(tags, ", "))}, {"Created by:", w.CreatedBy}, {"Created:", fmtTime(w.CreatedAt)},
		{"Updated:", fmtTime(w.UpdatedAt)}, {"ID:", w.ID},
	}
}

// parseTags turns k=v flags into a map, refusing malformed ones.
func parseTags(flag string, pairs []string) (map[string]string, error) {
	tags := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", flag, p)
		}
		tags[k] = v
	}
	return tags, nil
}

func newWorkspaceCreate(g *globals) *cobra.Command {
	var in workspace.CreateInput
	var tags []string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a workspace (you become its Owner)",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in.Name = args[0]
			var err error
			if in.Tags, err = parseTags("tag", tags); err != nil {
				return err
			}
			if !cmd.Flags().Changed("allowed-regions") {
				in.AllowedRegions = nil
			}
			w, err := c.CreateWorkspace(cmd.Context(), in)
			if err != nil {
				return err
			}
			return g.printResult(w, func() [][]string { return workspaceRows(w) })
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&in.DisplayName, "display-name", "", "human-friendly name (default: NAME)")
	fl.StringVar(&in.Description, "description", "", "what the workspace is for")
	fl.StringVar(&in.Region, "region", "", "region where its data and compute live (default: local); see `plinth workspace regions`")
	fl.StringSliceVar(&in.AllowedRegions, "allowed-regions", nil, "regions its resources may use, comma-separated (default: its own region)")
	fl.StringVar(&in.Team, "team", "", "team charged for its usage")
	fl.StringArrayVar(&tags, "tag", nil, "tag as key=value (repeatable)")
	return cmd
}

func newWorkspaceList(g *globals) *cobra.Command {
	var team string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the workspaces you can read",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var all []workspace.Workspace
			token := ""
			for {
				page, next, err := c.ListWorkspaces(cmd.Context(), team, token, 0)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if next == "" || (limit > 0 && len(all) >= limit) {
					break
				}
				token = next
			}
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			if all == nil {
				all = []workspace.Workspace{}
			}
			return g.printResult(all, func() [][]string { return workspaceRows(all...) })
		}),
	}
	cmd.Flags().StringVar(&team, "team", "", "only workspaces of this team")
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	return cmd
}

func newWorkspaceShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a workspace",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			w, err := c.GetWorkspace(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printResult(w, func() [][]string { return workspaceDetail(w) })
		}),
	}
}

func newWorkspaceUpdate(g *globals) *cobra.Command {
	var displayName, description, team string
	var regions, tags []string
	var clearTags bool
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a workspace's display name, description, team, tags or allowed regions",
		Long:  "Change a workspace. Only the flags you give are changed. The region itself never changes: it is where the workspace's data lives.",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var in workspace.UpdateInput
			fl := cmd.Flags()
			if fl.Changed("display-name") {
				in.DisplayName = &displayName
			}
			if fl.Changed("description") {
				in.Description = &description
			}
			if fl.Changed("team") {
				in.Team = &team
			}
			if fl.Changed("allowed-regions") {
				in.AllowedRegions = &regions
			}
			if fl.Changed("tag") || clearTags {
				m, err := parseTags("tag", tags)
				if err != nil {
					return err
				}
				if !clearTags {
					// --tag adds to the tags already there.
					cur, err := c.GetWorkspace(cmd.Context(), args[0])
					if err != nil {
						return err
					}
					for k, v := range m {
						cur.Tags[k] = v
					}
					m = cur.Tags
				}
				in.Tags = &m
			}
			w, err := c.UpdateWorkspace(cmd.Context(), args[0], in)
			if err != nil {
				return err
			}
			return g.printResult(w, func() [][]string { return workspaceDetail(w) })
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&displayName, "display-name", "", "new display name")
	fl.StringVar(&description, "description", "", "new description")
	fl.StringVar(&team, "team", "", "new team")
	fl.StringSliceVar(&regions, "allowed-regions", nil, "new allowed regions, comma-separated (must include the workspace's region)")
	fl.StringArrayVar(&tags, "tag", nil, "add or change a tag key=value (repeatable)")
	fl.BoolVar(&clearTags, "clear-tags", false, "replace all tags with those given by --tag (none: remove all)")
	return cmd
}

func newWorkspaceDelete(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a workspace (refused while it holds resources, unless --force)",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteWorkspace(cmd.Context(), args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "workspace %q deleted\n", args[0])
			return nil
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "also delete everything the workspace holds")
	return cmd
}

func newWorkspaceRegions(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "regions",
		Short: "List the region names a workspace may use",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			regions, err := c.Regions(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(regions, func() [][]string {
				rows := [][]string{{"REGION"}}
				for _, r := range regions {
					rows = append(rows, []string{r})
				}
				return rows
			})
		}),
	}
}
