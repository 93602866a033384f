package cli

import (
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
)

func newLineageCmd(g *globals) *cobra.Command {
	var ws, direction string
	var depth int
	cmd := &cobra.Command{
		Use:   "lineage NODE",
		Short: "Print the lineage around a model version, run or data version as a tree",
		Long: `Print what a node came from (--direction up) or what was made from it (down), or both.
NODE is data:<name>:<version>, model:<name>:<version>, run:<run_id> or dataset:<name>:<digest>
(an MLflow-logged dataset that names no data asset).`,
		Example: `  plinth lineage model:fraud:3
  plinth lineage data:transactions:2 --direction down`,
		Args: exactArgs(1, "NODE"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			l, err := c.Lineage(cmd.Context(), ws, args[0], direction, depth)
			if err != nil {
				return err
			}
			if g.output != "table" && g.output != "" {
				return g.printResult(l, nil)
			}
			printLineage(g.stdout, l)
			return nil
		}),
	}
	cmd.Flags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.Flags().StringVar(&direction, "direction", "both", "up, down or both")
	cmd.Flags().IntVar(&depth, "depth", 5, "steps to walk (1-20)")
	return cmd
}

// printLineage draws the graph as trees hanging off the root: upstream
// (what it came from) and downstream (what came from it).
func printLineage(w io.Writer, l client.Lineage) {
	nodes := map[string]client.LineageNode{}
	for _, n := range l.Nodes {
		nodes[n.ID] = n
	}
	up, down := map[string][]client.LineageEdge{}, map[string][]client.LineageEdge{}
	for _, e := range l.Edges {
		up[e.To] = append(up[e.To], e)
		down[e.From] = append(down[e.From], e)
	}
	label := func(id string) string {
		n := nodes[id]
		return fmt.Sprintf("%s  (%s)", id, n.Label)
	}
	fmt.Fprintln(w, label(l.Root))
	var walk func(id, prefix string, edges map[string][]client.LineageEdge, other func(client.LineageEdge) string, arrow string, seen map[string]bool)
	walk = func(id, prefix string, edges map[string][]client.LineageEdge, other func(client.LineageEdge) string, arrow string, seen map[string]bool) {
		list := edges[id]
		sort.Slice(list, func(i, j int) bool { return other(list[i]) < other(list[j]) })
		for i, e := range list {
			branch, indent := "├── ", "│   "
			if i == len(list)-1 {
				branch, indent = "└── ", "    "
			}
			next := other(e)
			fmt.Fprintf(w, "%s%s%s %s: %s\n", prefix, branch, arrow, e.Kind, label(next))
			if !seen[next] {
				seen[next] = true
				walk(next, prefix+indent, edges, other, arrow, seen)
			}
		}
	}
	if l.Direction != "down" {
		walk(l.Root, "", up, func(e client.LineageEdge) string { return e.From }, "<-", map[string]bool{l.Root: true})
	}
	if l.Direction != "up" {
		walk(l.Root, "", down, func(e client.LineageEdge) string { return e.To }, "->", map[string]bool{l.Root: true})
	}
}

func newModelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Register, list and trace models (the MLflow Model Registry)"}
	var ws string
	cmd.AddCommand(newModelRegisterCmd(g), newModelListCmd(g), newModelShowCmd(g), newModelAliasCmd(g))
	trace := &cobra.Command{
		Use:   "trace NAME VERSION",
		Short: "Show a model version's traceability record: who registered it, from which run, code version and data",
		Args:  exactArgs(2, "NAME VERSION"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			t, err := c.TraceVersion(cmd.Context(), ws, args[0], args[1])
			if err != nil {
				return err
			}
			return g.printResult(t, func() [][]string {
				str := func(m map[string]any, k string) string {
					if v, ok := m[k]; ok && v != nil {
						return fmt.Sprint(v)
					}
					return "-"
				}
				rows := [][]string{{"Model:", str(t, "model") + " v" + str(t, "version")}, {"Stage:", str(t, "stage")},
					{"Source:", str(t, "source")}, {"Registered by:", str(t, "registered_by")}, {"Key:", str(t, "key_id")}}
				if run, ok := t["run"].(map[string]any); ok {
					rows = append(rows, []string{"Run:", str(run, "run_id") + " (" + str(run, "run_name") + ")"},
						[]string{"Run by:", str(run, "principal") + " as " + str(run, "user_id")},
						[]string{"Git commit:", str(run, "git_commit")}, []string{"Code:", str(run, "source")})
				}
				if ds, ok := t["datasets"].([]any); ok {
					for _, d := range ds {
						dm := d.(map[string]any)
						rows = append(rows, []string{"Data:", str(dm, "name") + "@" + str(dm, "digest") + " (" + str(dm, "context") + ") " + str(dm, "source")})
					}
				}
				return rows
			})
		}),
	}
	trace.Flags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.AddCommand(trace)
	return cmd
}
