package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
)

func newExperimentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "experiment", Aliases: []string{"exp"}, Short: "List and show MLflow experiments"}
	var ws, filter, view string
	var orderBy []string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List experiments, optionally filtered with MLflow's filter language",
		Example: `  plinth experiment list --filter "name LIKE 'fraud%'"
  plinth experiment list --workspace team-a --order-by "creation_time DESC"`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var all []client.Experiment
			token := ""
			for {
				page, next, err := c.SearchExperiments(cmd.Context(), ws, filter, view, orderBy, token, min(1000, limit-len(all)))
				if err != nil {
					return err
				}
				all = append(all, page...)
				if next == "" || len(all) >= limit {
					break
				}
				token = next
			}
			if all == nil {
				all = []client.Experiment{}
			}
			return g.printResult(all, func() [][]string {
				rows := [][]string{{"ID", "NAME", "STAGE", "ARTIFACT LOCATION", "CREATED"}}
				for _, e := range all {
					rows = append(rows, []string{e.ExperimentID, e.Name, e.LifecycleStage, e.ArtifactLocation, fmtMillis(e.CreationTime)})
				}
				return rows
			})
		}),
	}
	list.Flags().StringVar(&filter, "filter", "", "MLflow filter, e.g. \"name LIKE 'fraud%' AND tags.team = 'risk'\"")
	list.Flags().StringVar(&view, "view", "ACTIVE_ONLY", "ACTIVE_ONLY, DELETED_ONLY or ALL")
	list.Flags().StringArrayVar(&orderBy, "order-by", nil, "order, e.g. \"name ASC\" (repeatable)")
	list.Flags().IntVar(&limit, "limit", 1000, "show at most this many")

	var byName bool
	show := &cobra.Command{
		Use:   "show ID|NAME",
		Short: "Show an experiment (by id, or by name with --name)",
		Args:  exactArgs(1, "ID or NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			e, err := c.GetExperiment(cmd.Context(), ws, args[0], byName)
			if err != nil {
				return err
			}
			return g.printResult(e, func() [][]string {
				rows := [][]string{{"ID:", e.ExperimentID}, {"Name:", e.Name}, {"Stage:", e.LifecycleStage},
					{"Artifact location:", e.ArtifactLocation}, {"Created:", fmtMillis(e.CreationTime)}, {"Updated:", fmtMillis(e.LastUpdateTime)}}
				for _, t := range e.Tags {
					rows = append(rows, []string{"Tag:", t.Key + "=" + t.Value})
				}
				return rows
			})
		}),
	}
	show.Flags().BoolVar(&byName, "name", false, "the argument is the experiment's name")
	for _, c := range []*cobra.Command{list, show} {
		c.Flags().StringVar(&ws, "workspace", "", "workspace (default: \"default\")")
	}
	cmd.AddCommand(list, show)
	return cmd
}

func newRunCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "run", Short: "List and show MLflow runs and their metrics"}
	var ws, filter, view string
	var experiments, orderBy, columns []string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List runs of experiments, with MLflow's filter language",
		Example: `  plinth run list --experiment 1 --filter "metrics.rmse < 0.3 AND params.model = 'xgb'" --order-by "metrics.rmse ASC"
  plinth run list --experiment 1 --columns metrics.rmse,params.model`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if len(experiments) == 0 {
				experiments = []string{"0"}
			}
			var all []client.Run
			token := ""
			for {
				page, next, err := c.SearchRuns(cmd.Context(), ws, experiments, filter, view, orderBy, token, min(1000, limit-len(all)))
				if err != nil {
					return err
				}
				all = append(all, page...)
				if next == "" || len(all) >= limit {
					break
				}
				token = next
			}
			if all == nil {
				all = []client.Run{}
			}
			return g.printResult(all, func() [][]string {
				head := []string{"RUN ID", "NAME", "EXPERIMENT", "STATUS", "STARTED", "USER"}
				for _, col := range columns {
					head = append(head, strings.ToUpper(col))
				}
				rows := [][]string{head}
				for _, r := range all {
					row := []string{r.Info.RunID, r.Info.RunName, r.Info.ExperimentID, r.Info.Status, fmtMillis(r.Info.StartTime), orDash(r.Info.UserID)}
					for _, col := range columns {
						row = append(row, runColumn(r, col))
					}
					rows = append(rows, row)
				}
				return rows
			})
		}),
	}
	list.Flags().StringArrayVar(&experiments, "experiment", nil, "experiment id (repeatable; default 0)")
	list.Flags().StringVar(&filter, "filter", "", "MLflow filter, e.g. \"metrics.rmse < 0.3 AND params.model = 'xgb'\"")
	list.Flags().StringVar(&view, "view", "ACTIVE_ONLY", "ACTIVE_ONLY, DELETED_ONLY or ALL")
	list.Flags().StringArrayVar(&orderBy, "order-by", nil, "order, e.g. \"metrics.rmse ASC\" (repeatable)")
	list.Flags().StringSliceVar(&columns, "columns", nil, "extra columns: metrics.X, params.X, tags.X")
	list.Flags().IntVar(&limit, "limit", 100, "show at most this many")

	show := &cobra.Command{
		Use:   "show RUN_ID",
		Short: "Show a run: its info, params, latest metrics and tags",
		Args:  exactArgs(1, "RUN_ID"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			r, err := c.GetRun(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			return g.printResult(r, func() [][]string {
				rows := [][]string{{"Run ID:", r.Info.RunID}, {"Name:", r.Info.RunName}, {"Experiment:", r.Info.ExperimentID},
					{"Status:", r.Info.Status}, {"Stage:", r.Info.LifecycleStage}, {"User:", orDash(r.Info.UserID)},
					{"Started:", fmtMillis(r.Info.StartTime)}, {"Ended:", fmtMillis(r.Info.EndTime)}, {"Artifacts:", r.Info.ArtifactURI}}
				for _, p := range r.Data.Params {
					rows = append(rows, []string{"Param:", p.Key + "=" + p.Value})
				}
				for _, m := range r.Data.Metrics {
					rows = append(rows, []string{"Metric:", fmt.Sprintf("%s=%s (step %d)", m.Key, fmtDouble(m.Value), m.Step)})
				}
				for _, t := range r.Data.Tags {
					rows = append(rows, []string{"Tag:", t.Key + "=" + t.Value})
				}
				return rows
			})
		}),
	}
	metrics := &cobra.Command{
		Use:   "metrics RUN_ID KEY",
		Short: "Print every point of one metric of a run",
		Args:  exactArgs(2, "RUN_ID KEY"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			points, err := c.MetricHistory(cmd.Context(), ws, args[0], args[1])
			if err != nil {
				return err
			}
			if points == nil {
				points = []client.Metric{}
			}
			return g.printResult(points, func() [][]string {
				rows := [][]string{{"STEP", "VALUE", "TIMESTAMP"}}
				for _, p := range points {
					rows = append(rows, []string{strconv.FormatInt(p.Step, 10), fmtDouble(p.Value), fmtMillis(p.Timestamp)})
				}
				return rows
			})
		}),
	}
	for _, c := range []*cobra.Command{list, show, metrics} {
		c.Flags().StringVar(&ws, "workspace", "", "workspace (default: \"default\")")
	}
	cmd.AddCommand(list, show, metrics)
	return cmd
}

// runColumn renders metrics.X, params.X or tags.X of a run.
func runColumn(r client.Run, col string) string {
	kind, key, _ := strings.Cut(col, ".")
	switch kind {
	case "metrics", "metric":
		for _, m := range r.Data.Metrics {
			if m.Key == key {
				return fmtDouble(m.Value)
			}
		}
	case "params", "param":
		for _, p := range r.Data.Params {
			if p.Key == key {
				return p.Value
			}
		}
	case "tags", "tag":
		for _, t := range r.Data.Tags {
			if t.Key == key {
				return t.Value
			}
		}
	}
	return "-"
}

func fmtDouble(d client.Double) string {
	if math.IsNaN(float64(d)) {
		return "NaN"
	}
	return strconv.FormatFloat(float64(d), 'g', -1, 64)
}

func fmtMillis(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return fmtTime(time.UnixMilli(ms))
}
