package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/jobs"
)

func newSKUCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sku", Short: "The SKU catalogue: instance types jobs and clusters ask for"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List SKUs with their size and price per hour",
		Args:  exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.SKUs(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string {
				rows := [][]string{{"NAME", "FAMILY", "VCPUS", "MEMORY", "GPUS", "PRICE/H", "SPOT/H", "SOURCE"}}
				for _, s := range list {
					gpus := strconv.Itoa(s.GPUs)
					if s.GPUs > 0 {
						gpus += " × " + s.GPUType
					}
					rows = append(rows, []string{s.Name, s.Family, strconv.Itoa(s.VCPUs), client.FormatBytes(s.MemoryBytes), gpus,
						fmt.Sprintf("%.4f", s.PricePerHour), fmt.Sprintf("%.4f", s.SpotPricePerHour), s.Source})
				}
				return rows
			})
		}),
	})
	return cmd
}

func newComputeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "compute", Short: "Compute clusters: nodes that exist only while jobs need them"}
	var ws string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")

	var size, tier, description, kind, owner, idleShutdown string
	var minN, maxN int
	var idle string
	var apps, schedules []string
	create := &cobra.Command{
		Use:   "create NAME --size SKU",
		Short: "Create a cluster (scales between --min-instances and --max-instances nodes) or an instance (--type instance)",
		Long: `Create a compute cluster, whose nodes come and go with queued jobs, or a compute instance: one
node for interactive work that runs web applications (--app jupyter, jupyterlab, vscode, or
name=command for any command serving HTTP on $PORT), reachable through Plinth's proxy at
/compute/NAME/apps/APP/ by its owner only. An instance has a home directory that survives stops,
the workspace's shared folder at $HOME/shared, MLFLOW_TRACKING_URI and a token preset, and stops
itself after --idle-time-before-shutdown without traffic.`,
		Example: `  plinth compute create cpu --size local-cpu-small --max-instances 2 --idle-time-before-scale-down 60s
  plinth compute create nb --type instance --size local-cpu-small --app jupyter --idle-time-before-shutdown 30m \
      --schedule "stop=0 19 * * 1-5" --schedule "start=0 8 * * 1-5"`,
		Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in := compute.TargetInput{Name: args[0], Type: kind, Size: size, Tier: tier, Owner: owner}
			if kind == compute.KindInstance {
				if cmd.Flags().Changed("min-instances") || cmd.Flags().Changed("max-instances") || idle != "" {
					return fmt.Errorf("an instance is one node: --min-instances, --max-instances and --idle-time-before-scale-down are for clusters")
				}
				if idleShutdown != "" {
					secs, err := compute.ParseDuration(idleShutdown)
					if err != nil {
						return fmt.Errorf("--idle-time-before-shutdown: %v", err)
					}
					d := compute.Duration(secs)
					in.IdleShutdown = &d
				}
				for _, a := range apps {
					name, command, custom := strings.Cut(a, "=")
					if custom {
						in.Applications = append(in.Applications, compute.Application{Name: name, Type: "custom", Command: command})
					} else {
						in.Applications = append(in.Applications, compute.Application{Name: a, Type: a})
					}
				}
				for _, sch := range schedules {
					action, cron, ok := strings.Cut(sch, "=")
					if !ok {
						return fmt.Errorf("--schedule %q: want start=CRON or stop=CRON", sch)
					}
					in.Schedules = append(in.Schedules, compute.Schedule{Action: action, Cron: cron})
				}
			} else {
				in.MinInstances, in.MaxInstances = &minN, &maxN
			}
			if cmd.Flags().Changed("description") {
				in.Description = &description
			}
			if idle != "" {
				secs, err := compute.ParseDuration(idle)
				if err != nil {
					return fmt.Errorf("--idle-time-before-scale-down: %v", err)
				}
				d := compute.Duration(secs)
				in.IdleTime = &d
			}
			t, err := c.CreateCompute(cmd.Context(), ws, in)
			if err != nil {
				return err
			}
			return g.printResult(t, func() [][]string { return computeRows([]compute.Target{t}) })
		}),
	}
	fl := create.Flags()
	fl.StringVar(&size, "size", "", "instance type of its nodes (see `plinth sku list`)")
	fl.IntVar(&minN, "min-instances", 0, "nodes kept up even when idle")
	fl.IntVar(&maxN, "max-instances", 1, "most nodes up at once")
	fl.StringVar(&idle, "idle-time-before-scale-down", "", "how long a node may idle before it goes down (120s by default; 90s, 5m, PT10M)")
	fl.StringVar(&tier, "tier", "dedicated", "dedicated or spot")
	fl.StringVar(&description, "description", "", "description")
	fl.StringVar(&kind, "type", "cluster", "cluster or instance")
	fl.StringVar(&owner, "owner", "", "instance: the principal who may use it (default: you)")
	fl.StringVar(&idleShutdown, "idle-time-before-shutdown", "", "instance: stop after this long without use (30m, PT1H; default never)")
	fl.StringArrayVar(&apps, "app", nil, "instance: an application to run: jupyter, jupyterlab, vscode or name=command (repeatable)")
	fl.StringArrayVar(&schedules, "schedule", nil, "instance: start=CRON or stop=CRON, UTC (repeatable)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List compute targets and their nodes",
		Args:  exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListComputes(cmd.Context(), ws)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return computeRows(list) })
		}),
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a compute target with its nodes",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			t, err := c.GetCompute(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			return g.printResult(t, func() [][]string {
				rows := computeRows([]compute.Target{t})
				if t.Kind == compute.KindInstance {
					rows = instanceRows(t, c.BaseURL)
				}
				rows = append(rows, []string{}, []string{"NODE", "STATE", "JOB", "UP SINCE", "LAST USED"})
				for _, n := range t.Nodes {
					state := "idle"
					if n.JobID != "" {
						state = "busy"
					}
					rows = append(rows, []string{n.ID, state, orDash(n.JobID), fmtTime(n.StartedAt), fmtTime(n.LastUsedAt)})
				}
				return rows
			})
		}),
	}
	var upMin, upMax int
	var upIdle, upDesc string
	update := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a cluster's scale settings or description",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var in compute.TargetInput
			f := cmd.Flags()
			if f.Changed("min-instances") {
				in.MinInstances = &upMin
			}
			if f.Changed("max-instances") {
				in.MaxInstances = &upMax
			}
			if f.Changed("description") {
				in.Description = &upDesc
			}
			if upIdle != "" {
				secs, err := compute.ParseDuration(upIdle)
				if err != nil {
					return fmt.Errorf("--idle-time-before-scale-down: %v", err)
				}
				d := compute.Duration(secs)
				in.IdleTime = &d
			}
			t, err := c.UpdateCompute(cmd.Context(), ws, args[0], in)
			if err != nil {
				return err
			}
			return g.printResult(t, func() [][]string { return computeRows([]compute.Target{t}) })
		}),
	}
	update.Flags().IntVar(&upMin, "min-instances", 0, "nodes kept up even when idle")
	update.Flags().IntVar(&upMax, "max-instances", 1, "most nodes up at once")
	update.Flags().StringVar(&upIdle, "idle-time-before-scale-down", "", "idle time before a node goes down")
	update.Flags().StringVar(&upDesc, "description", "", "description")
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a cluster (its idle nodes go down with it)",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteCompute(cmd.Context(), ws, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted compute %s\n", args[0])
			return nil
		}),
	}
	operate := func(verb, short string, call func(ctx context.Context, c *client.Client, name string) (compute.Target, error)) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " NAME",
			Short: short,
			Args:  exactArgs(1, "NAME"),
			RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
				t, err := call(cmd.Context(), c, args[0])
				if err != nil {
					return err
				}
				return g.printResult(t, func() [][]string { return instanceRows(t, c.BaseURL) })
			}),
		}
	}
	start := operate("start", "Start a compute instance and its applications", func(ctx context.Context, c *client.Client, name string) (compute.Target, error) {
		return c.OperateCompute(ctx, ws, name, "start")
	})
	stop := operate("stop", "Stop a compute instance (its home directory stays)", func(ctx context.Context, c *client.Client, name string) (compute.Target, error) {
		return c.OperateCompute(ctx, ws, name, "stop")
	})
	restart := operate("restart", "Restart a compute instance", func(ctx context.Context, c *client.Client, name string) (compute.Target, error) {
		return c.OperateCompute(ctx, ws, name, "restart")
	})
	cmd.AddCommand(create, list, show, update, del, start, stop, restart)
	return cmd
}

// instanceRows shows an instance's state and where its applications are.
func instanceRows(t compute.Target, base string) [][]string {
	rows := [][]string{{"FIELD", "VALUE"}, {"name", t.Name}, {"type", t.Kind}, {"state", t.State}, {"size", t.Size}, {"owner", orDash(t.Owner)}}
	if t.IdleShutdown > 0 {
		rows = append(rows, []string{"idle before shutdown", (time.Duration(t.IdleShutdown) * time.Second).String()})
	}
	for _, s := range t.Schedules {
		rows = append(rows, []string{"schedule", s.Action + " at " + s.Cron + " (UTC)"})
	}
	for _, a := range t.Applications {
		rows = append(rows, []string{"app " + a.Name, strings.TrimRight(base, "/") + a.URL + "?plinth_token=<your key>"})
	}
	return rows
}

func computeRows(list []compute.Target) [][]string {
	rows := [][]string{{"NAME", "TYPE", "SIZE", "MIN", "MAX", "IDLE BEFORE SCALE-DOWN", "TIER", "NODES (BUSY)"}}
	for _, t := range list {
		busy := 0
		for _, n := range t.Nodes {
			if n.JobID != "" {
				busy++
			}
		}
		size, minN, maxN, idle := t.Size, strconv.Itoa(t.MinInstances), strconv.Itoa(t.MaxInstances), (time.Duration(t.IdleSeconds) * time.Second).String()
		switch t.Kind {
		case compute.KindServerless:
			size, minN, maxN, idle = "(per job)", "-", "-", "-"
		case compute.KindInstance:
			minN, maxN, idle = "-", "1", t.State
		}
		rows = append(rows, []string{t.Name, t.Kind, size, minN, maxN, idle, orDash(t.Tier), fmt.Sprintf("%d (%d)", len(t.Nodes), busy)})
	}
	return rows
}

func newJobCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Command jobs: run a script on compute, logged to its own MLflow run"}
	var ws string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")

	var file string
	var stream bool
	var name string
	create := &cobra.Command{
		Use:   "create -f JOB.yml",
		Short: "Submit a command job (Azure ML CLI v2 job file); --stream follows its output until it ends",
		Long: `Submit a command job. The job file is Azure ML's commandJob YAML: command, code, inputs,
outputs, environment, compute or resources.instance_type, limits.timeout, and Plinth's retries
and priority. The code folder is snapshotted and uploaded; local input paths are uploaded as data
assets. The job is an MLflow run (run id = job id) and gets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID,
MLFLOW_EXPERIMENT_ID and a token for that run, so an unmodified MLflow script logs into it.`,
		Example: "  plinth job create -f examples/train/job.yml --stream",
		Args:    exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if file == "" {
				return fmt.Errorf("-f JOB.yml is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o := client.SubmitOptions{Name: name}
			if dir, err := client.ConfigDir(); err == nil {
				o.StateDir = filepath.Join(dir, "uploads")
			}
			bar := newProgressBar(g.stderr, "inputs")
			o.Progress = func(_ string, p client.UploadProgress) { bar.update(p) }
			j, err := c.SubmitJob(ctx, ws, file, o)
			bar.finish()
			if err != nil {
				return err
			}
			if !stream {
				return g.printResult(j, func() [][]string { return jobRows([]jobs.Job{j}) })
			}
			fmt.Fprintf(g.stderr, "job %s (%s) queued; streaming its output (Ctrl-C stops streaming, not the job)\n", j.Name, j.ID)
			return g.streamJob(ctx, c, ws, j.ID)
		}),
	}
	create.Flags().StringVarP(&file, "file", "f", "", "job file (YAML or JSON)")
	create.Flags().BoolVar(&stream, "stream", false, "follow the job's output until it ends; exit non-zero if it fails")
	create.Flags().StringVarP(&name, "name", "n", "", "the job's name, replacing the file's (names are unique in a workspace)")

	var status string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first",
		Args:  exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListJobs(cmd.Context(), ws, status, limit)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return jobRows(list) })
		}),
	}
	list.Flags().StringVar(&status, "status", "", "only jobs with this status (Queued, Running, Completed, Failed, Canceled...)")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many")

	show := &cobra.Command{
		Use:   "show JOB",
		Short: "Show a job (by name or id)",
		Args:  exactArgs(1, "JOB"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			j, err := c.GetJob(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			return g.printResult(j, func() [][]string {
				rows := [][]string{{"FIELD", "VALUE"}, {"name", j.Name}, {"id (MLflow run)", j.ID}, {"status", j.Status}, {"reason", orDash(j.Reason)},
					{"compute", j.Compute}, {"instance type", fmt.Sprintf("%s × %d", j.InstanceType, j.InstanceCount)}, {"experiment", j.ExperimentID},
					{"attempt", fmt.Sprintf("%d (retries allowed: %d)", j.Attempt, j.MaxRetries)}, {"submitted", fmtTime(j.SubmittedAt) + " by " + j.SubmittedBy}}
				if j.ExitCode != nil {
					rows = append(rows, []string{"exit code", strconv.Itoa(*j.ExitCode)})
				}
				rows = append(rows, []string{"cpu seconds", fmt.Sprintf("%.2f", j.Usage.CPUSeconds)},
					[]string{"peak memory", client.FormatBytes(j.Usage.PeakMemoryBytes)},
					[]string{"node seconds", fmt.Sprintf("%.1f", j.Usage.NodeSeconds)}, []string{"cost", fmt.Sprintf("%.6f", j.Cost)})
				if j.CodeDigest != "" {
					rows = append(rows, []string{"code", j.CodeDigest})
				}
				return rows
			})
		}),
	}
	cancel := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a job: a running one gets SIGTERM, then SIGKILL, on its whole process tree",
		Args:  exactArgs(1, "JOB"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			j, err := c.CancelJob(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "cancel requested for %s (now %s)\n", j.Name, j.Status)
			return nil
		}),
	}
	var follow bool
	logs := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print a job's output; -f follows it until the job ends",
		Args:  exactArgs(1, "JOB"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if follow {
				return g.streamJob(ctx, c, ws, args[0])
			}
			return c.JobLogs(ctx, ws, args[0], false, g.stdout)
		}),
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output until the job ends")
	cmd.AddCommand(create, list, show, cancel, logs)
	return cmd
}

// streamJob follows a job's output, then reports how it ended; a job
// that did not complete makes the command fail.
func (g *globals) streamJob(ctx context.Context, c *client.Client, ws, id string) error {
	if err := c.JobLogs(ctx, ws, id, true, g.stdout); err != nil {
		return err
	}
	j, err := c.WaitJob(ctx, ws, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "job %s %s", j.Name, strings.ToLower(j.Status))
	if j.Reason != "" {
		fmt.Fprintf(g.stderr, ": %s", j.Reason)
	}
	fmt.Fprintln(g.stderr)
	if j.Status != jobs.StatusCompleted {
		return exitError{code: 1}
	}
	return nil
}

func jobRows(list []jobs.Job) [][]string {
	rows := [][]string{{"NAME", "STATUS", "COMPUTE", "INSTANCE TYPE", "SUBMITTED", "BY", "COST", "REASON"}}
	for _, j := range list {
		rows = append(rows, []string{j.Name, j.Status, j.Compute, fmt.Sprintf("%s×%d", j.InstanceType, j.InstanceCount), fmtTime(j.SubmittedAt),
			j.SubmittedBy, fmt.Sprintf("%.4f", j.Cost), clipReason(j.Reason)})
	}
	return rows
}

func clipReason(s string) string {
	if len(s) > 70 {
		return s[:67] + "..."
	}
	return orDash(s)
}

func newQuotaCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Quotas per workspace and SKU family (vCPUs, GPUs)"}
	var ws string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")
	print := func(list []compute.QuotaView) error {
		return g.printResult(list, func() [][]string {
			rows := [][]string{{"FAMILY", "VCPUS USED / QUOTA", "GPUS USED / QUOTA"}}
			for _, q := range list {
				v, gp := "unlimited", "unlimited"
				if q.Limited {
					v, gp = strconv.Itoa(q.VCPUs), strconv.Itoa(q.GPUs)
				}
				rows = append(rows, []string{q.Family, fmt.Sprintf("%d / %s", q.UsedVCPUs, v), fmt.Sprintf("%d / %s", q.UsedGPUs, gp)})
			}
			return rows
		})
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the workspace's quotas and what its nodes use",
		Args:  exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.Quotas(cmd.Context(), ws)
			if err != nil {
				return err
			}
			return print(list)
		}),
	}
	var vcpus, gpus int
	var remove bool
	set := &cobra.Command{
		Use:     "set FAMILY --vcpus N [--gpus N]",
		Short:   "Set (or --remove) the workspace's quota for a SKU family",
		Example: "  plinth quota set local-cpu --vcpus 2 --workspace fraud",
		Args:    exactArgs(1, "FAMILY"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var v, gp *int
			if !remove {
				v, gp = &vcpus, &gpus
			}
			list, err := c.SetQuota(cmd.Context(), ws, args[0], v, gp)
			if err != nil {
				return err
			}
			return print(list)
		}),
	}
	set.Flags().IntVar(&vcpus, "vcpus", 0, "vCPUs the workspace's nodes of this family may hold at once")
	set.Flags().IntVar(&gpus, "gpus", 0, "GPUs they may hold")
	set.Flags().BoolVar(&remove, "remove", false, "remove the quota (no limit)")
	cmd.AddCommand(show, set)
	return cmd
}

func newCostCmd(g *globals) *cobra.Command {
	var by, since string
	cmd := &cobra.Command{
		Use:   "cost",
		Short: "What compute cost, by team, workspace, compute, sku (node up-time) or user, experiment, job (job time)",
		Example: `  plinth cost --by team --since 7d
  plinth cost --by user --since 24h`,
		Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			r, err := c.Cost(cmd.Context(), by, since)
			if err != nil {
				return err
			}
			return g.printResult(r, func() [][]string {
				rows := [][]string{{strings.ToUpper(by), "NODE HOURS", "COST"}}
				for _, row := range r.Rows {
					rows = append(rows, []string{row.Key, fmt.Sprintf("%.3f", row.NodeSeconds/3600), fmt.Sprintf("%.4f", row.Cost)})
				}
				rows = append(rows, []string{"total", "", fmt.Sprintf("%.4f", r.Total)})
				return rows
			})
		}),
	}
	cmd.Flags().StringVar(&by, "by", "team", "team, workspace, compute, sku, user, experiment or job")
	cmd.Flags().StringVar(&since, "since", "7d", "how far back: 7d, 24h, 90m")
	return cmd
}
