package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
)

func newModelRegisterCmd(g *globals) *cobra.Command {
	var ws, source, job, output, description string
	cmd := &cobra.Command{
		Use:   "register NAME",
		Short: "Register a new version of a model from a run's artifacts or a job's output (creates the model on its first version)",
		Example: `  plinth model register fraud --job train-fraud-1 --output model
  plinth model register fraud --source runs:/0f6c.../model`,
		Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			switch {
			case (source == "") == (job == ""):
				return fmt.Errorf("give exactly one of --source (runs:/RUN/PATH, mlflow-artifacts:/...) and --job (a job whose output to register)")
			case job != "":
				j, err := c.GetJob(cmd.Context(), ws, job)
				if err != nil {
					return err
				}
				if _, ok := j.Spec.Outputs[output]; !ok {
					names := make([]string, 0, len(j.Spec.Outputs))
					for n := range j.Spec.Outputs {
						names = append(names, n)
					}
					return fmt.Errorf("job %s has no output %q (its outputs: %s)", j.Name, output, orDash(strings.Join(names, ", ")))
				}
				// A job's run is the job: its outputs are that run's
				// artifacts under outputs/<name>.
				source = "runs:/" + j.ID + "/outputs/" + output
			}
			v, err := c.RegisterModelVersion(cmd.Context(), ws, args[0], source, description)
			if err != nil {
				return err
			}
			return g.printResult(v, func() [][]string {
				return [][]string{{"Model:", v.Name}, {"Version:", v.Version}, {"Source:", v.Source}, {"Run:", orDash(v.RunID)}, {"Status:", v.Status}}
			})
		}),
	}
	cmd.Flags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.Flags().StringVar(&source, "source", "", "where the model's files are: runs:/RUN_ID/PATH or an mlflow-artifacts:/ URI")
	cmd.Flags().StringVar(&job, "job", "", "register an output of this job (name or id)")
	cmd.Flags().StringVar(&output, "output", "model", "with --job: which of its outputs")
	cmd.Flags().StringVar(&description, "description", "", "the version's description")
	return cmd
}

func newModelListCmd(g *globals) *cobra.Command {
	var ws, filter string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List registered models with their latest versions and aliases",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			models, _, err := c.ListRegisteredModels(cmd.Context(), ws, filter, "", limit)
			if err != nil {
				return err
			}
			return g.printResult(models, func() [][]string {
				rows := [][]string{{"NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"}}
				for _, m := range models {
					latest := "-"
					for _, v := range m.LatestVersions {
						if latest == "-" || len(v.Version) > len(latest) || len(v.Version) == len(latest) && v.Version > latest {
							latest = v.Version
						}
					}
					var aliases []string
					for _, a := range m.Aliases {
						aliases = append(aliases, a.Alias+"=v"+a.Version)
					}
					rows = append(rows, []string{m.Name, latest, orDash(strings.Join(aliases, ",")), fmtMillis(m.LastUpdatedTimestamp), orDash(m.Description)})
				}
				return rows
			})
		}),
	}
	cmd.Flags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.Flags().StringVar(&filter, "filter", "", "MLflow filter, e.g. \"name LIKE 'fraud%'\"")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many models")
	return cmd
}

func newModelShowCmd(g *globals) *cobra.Command {
	var ws string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a model's versions: stage, aliases, source run",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			m, versions, err := c.GetRegisteredModel(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			return g.printResult(map[string]any{"model": m, "versions": versions}, func() [][]string {
				rows := [][]string{{"VERSION", "STAGE", "ALIASES", "RUN", "SOURCE", "REGISTERED"}}
				for _, v := range versions {
					rows = append(rows, []string{v.Version, v.CurrentStage, orDash(strings.Join(v.Aliases, ",")), orDash(v.RunID), v.Source, fmtMillis(v.CreationTimestamp)})
				}
				return rows
			})
		}),
	}
	cmd.Flags().StringVar(&ws, "workspace", "default", "workspace")
	return cmd
}

func newModelAliasCmd(g *globals) *cobra.Command {
	var ws string
	cmd := &cobra.Command{
		Use:     "alias NAME ALIAS VERSION",
		Short:   "Point an alias (champion, challenger, ...) at a version; models:/NAME@ALIAS then resolves to it",
		Example: "  plinth model alias fraud champion 2",
		Args:    exactArgs(3, "NAME ALIAS VERSION"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.SetModelAlias(cmd.Context(), ws, args[0], args[1], args[2]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "models:/%s@%s -> version %s\n", args[0], args[1], args[2])
			return nil
		}),
	}
	cmd.Flags().StringVar(&ws, "workspace", "default", "workspace")
	return cmd
}
