package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/endpoint"
)

// parseSplit reads deployment=percent pairs.
func parseSplit(args []string) (map[string]int, error) {
	out := map[string]int{}
	for _, a := range args {
		name, pct, ok := strings.Cut(a, "=")
		n, err := strconv.Atoi(pct)
		if !ok || err != nil {
			return nil, fmt.Errorf("%q: want deployment=percent, as in blue=90", a)
		}
		out[name] = n
	}
	return out, nil
}

func splitText(m map[string]int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", n, m[n]))
	}
	return orDash(strings.Join(parts, " "))
}

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Online endpoints: a stable scoring URL with keys, traffic split and mirroring"}
	var ws string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")
	rows := func(list []endpoint.Endpoint) [][]string {
		out := [][]string{{"NAME", "AUTH", "TRAFFIC", "MIRROR", "SCORING URI"}}
		for _, e := range list {
			out = append(out, []string{e.Name, e.AuthMode, splitText(e.Traffic), splitText(e.MirrorTraffic), e.ScoringURI})
		}
		return out
	}
	var authMode, file string
	var rate, teamRate int
	create := &cobra.Command{
		Use:   "create [NAME] [-f endpoint.yml]",
		Short: "Create an endpoint; its two keys are shown once",
		Example: `  plinth endpoint create fraud
  plinth endpoint create -f examples/endpoint/endpoint.yml   # Azure ML's managed online endpoint YAML`,
		Args: cobra.MaximumNArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in := endpoint.EndpointInput{AuthMode: "key"}
			if file != "" {
				var err error
				if in, err = readEndpointFile(file); err != nil {
					return err
				}
			}
			// Flags given and the NAME argument win over the file.
			if len(args) == 1 {
				in.Name = args[0]
			}
			if in.Name == "" {
				return fmt.Errorf("name the endpoint: plinth endpoint create NAME, or name: in the -f file")
			}
			fl := cmd.Flags()
			if fl.Changed("auth-mode") {
				in.AuthMode = authMode
			}
			if fl.Changed("rate-limit") || in.RateLimit == nil {
				in.RateLimit = &rate
			}
			if fl.Changed("team-rate-limit") || in.TeamRateLimit == nil {
				in.TeamRateLimit = &teamRate
			}
			e, err := c.CreateEndpoint(cmd.Context(), ws, in)
			if err != nil {
				return err
			}
			return g.printResult(e, func() [][]string {
				r := rows([]endpoint.Endpoint{e.Endpoint})
				if e.Keys.PrimaryKey != "" {
					r = append(r, []string{}, []string{"primary key (shown once)", e.Keys.PrimaryKey}, []string{"secondary key (shown once)", e.Keys.SecondaryKey})
				}
				return r
			})
		}),
	}
	create.Flags().StringVarP(&file, "file", "f", "", "endpoint YAML (Azure ML's managed online endpoint: name, auth_mode, description, tags; and Plinth's rate limits)")
	create.Flags().StringVar(&authMode, "auth-mode", "key", "key (endpoint keys or platform keys) or token (platform keys only)")
	create.Flags().IntVar(&rate, "rate-limit", 0, "requests per minute per caller key (0: none)")
	create.Flags().IntVar(&teamRate, "team-rate-limit", 0, "requests per minute for the workspace's team (0: none)")
	list := &cobra.Command{
		Use: "list", Short: "List endpoints", Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListEndpoints(cmd.Context(), ws)
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return rows(list) })
		}),
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show an endpoint with its deployments", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			e, err := c.GetEndpoint(cmd.Context(), ws, args[0])
			if err != nil {
				return err
			}
			return g.printResult(e, func() [][]string {
				r := rows([]endpoint.Endpoint{e})
				return append(append(r, []string{}), deploymentRows(e.Deployments)...)
			})
		}),
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an endpoint and its deployments", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteEndpoint(cmd.Context(), ws, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted endpoint %s\n", args[0])
			return nil
		}),
	}
	var data, dataFile, key, pin string
	invoke := &cobra.Command{
		Use:   "invoke NAME --data JSON",
		Short: "Call an endpoint through the gateway (with your key, or --key)",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			body := []byte(data)
			if dataFile != "" {
				b, err := os.ReadFile(dataFile)
				if err != nil {
					return err
				}
				body = b
			}
			code, hdr, out, err := c.Invoke(cmd.Context(), ws, args[0], key, pin, bytes.NewReader(body))
			if err != nil {
				return err
			}
			g.stdout.Write(out)
			if len(out) > 0 && out[len(out)-1] != '\n' {
				fmt.Fprintln(g.stdout)
			}
			if code >= 300 {
				return fmt.Errorf("HTTP %d (request id %s)", code, hdr.Get("X-Request-Id"))
			}
			return nil
		}),
	}
	invoke.Flags().StringVar(&data, "data", "{}", "request body")
	invoke.Flags().StringVarP(&dataFile, "file", "f", "", "read the request body from a file")
	invoke.Flags().StringVar(&key, "endpoint-key", "", "an endpoint key instead of your API key")
	invoke.Flags().StringVar(&pin, "deployment", "", "send to this deployment whatever the traffic split")
	split := func(use, short string, mirror bool) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.MinimumNArgs(1),
			RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
				m, err := parseSplit(args[1:])
				if err != nil {
					return err
				}
				in := endpoint.EndpointInput{Traffic: m}
				if mirror {
					in = endpoint.EndpointInput{MirrorTraffic: m}
				}
				e, err := c.UpdateEndpoint(cmd.Context(), ws, args[0], in)
				if err != nil {
					return err
				}
				return g.printResult(e, func() [][]string { return rows([]endpoint.Endpoint{e}) })
			}),
		}
	}
	traffic := &cobra.Command{Use: "traffic", Short: "The split of live traffic between deployments"}
	traffic.AddCommand(split("set NAME DEPLOYMENT=PERCENT...", "Set the traffic split (adds up to 100)", false))
	mirror := &cobra.Command{Use: "mirror", Short: "Copies of live traffic sent to a deployment, responses discarded"}
	mirror.AddCommand(split("set NAME DEPLOYMENT=PERCENT...", "Set the mirrored share (at most 50, never a live deployment)", true))
	var which string
	keys := &cobra.Command{Use: "keys", Short: "Endpoint keys"}
	regen := &cobra.Command{
		Use: "regenerate NAME", Short: "Make a new primary or secondary key (shown once); the old one stops working", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			k, err := c.RegenerateKey(cmd.Context(), ws, args[0], which)
			if err != nil {
				return err
			}
			return g.printResult(k, func() [][]string {
				return [][]string{{"KEY", "VALUE (shown once)"}, {which, k.PrimaryKey + k.SecondaryKey}}
			})
		}),
	}
	regen.Flags().StringVar(&which, "key-type", "primary", "primary or secondary")
	keys.AddCommand(regen)
	var upRate, upTeamRate int
	var upDesc string
	update := &cobra.Command{
		Use: "update NAME", Short: "Change an endpoint's rate limits or description", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var in endpoint.EndpointInput
			f := cmd.Flags()
			if f.Changed("rate-limit") {
				in.RateLimit = &upRate
			}
			if f.Changed("team-rate-limit") {
				in.TeamRateLimit = &upTeamRate
			}
			if f.Changed("description") {
				in.Description = &upDesc
			}
			e, err := c.UpdateEndpoint(cmd.Context(), ws, args[0], in)
			if err != nil {
				return err
			}
			return g.printResult(e, func() [][]string { return rows([]endpoint.Endpoint{e}) })
		}),
	}
	update.Flags().IntVar(&upRate, "rate-limit", 0, "requests per minute per caller key (0: none)")
	update.Flags().IntVar(&upTeamRate, "team-rate-limit", 0, "requests per minute for the team (0: none)")
	update.Flags().StringVar(&upDesc, "description", "", "description")
	cmd.AddCommand(create, list, show, update, del, invoke, traffic, mirror, keys)
	return cmd
}

func deploymentRows(list []endpoint.Deployment) [][]string {
	out := [][]string{{"DEPLOYMENT", "STATE", "MODEL", "INSTANCE TYPE", "REPLICAS (READY/DESIRED)", "GENERATION", "REASON"}}
	for _, d := range list {
		ready := 0
		for _, r := range d.Replicas {
			if r.State == endpoint.ReplicaReady && r.Generation == d.Generation {
				ready++
			}
		}
		out = append(out, []string{d.Name, d.State, orDash(d.Spec.Model), d.Spec.InstanceType, fmt.Sprintf("%d/%d", ready, d.Desired),
			strconv.FormatInt(d.Generation, 10), clipReason(d.Reason)})
	}
	return out
}

// deploymentFile is a deployment YAML file, as Azure ML writes one: the
// spec plus its name and endpoint.
type deploymentFile struct {
	endpoint.DeploymentSpec
	Name         string `json:"name"`
	EndpointName string `json:"endpoint_name"`
	Schema       string `json:"$schema,omitempty"`
}

// endpointFile is an endpoint YAML: Azure ML's managed online endpoint
// fields, with Plinth's rate limits.
type endpointFile struct {
	endpoint.EndpointInput
	Schema string `json:"$schema,omitempty"`
	// Kind is Azure's ("Managed"); every Plinth endpoint is managed.
	Kind string `json:"kind,omitempty"`
}

func readEndpointFile(file string) (endpoint.EndpointInput, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return endpoint.EndpointInput{}, err
	}
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return endpoint.EndpointInput{}, fmt.Errorf("%s: %v", file, err)
	}
	var f endpointFile
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return endpoint.EndpointInput{}, fmt.Errorf("%s: %v", file, err)
	}
	if f.Kind != "" && !strings.EqualFold(f.Kind, "managed") {
		return endpoint.EndpointInput{}, fmt.Errorf("%s: kind %q: Plinth's endpoints are managed (leave kind out or write Managed)", file, f.Kind)
	}
	// Azure's token mode is Plinth's: platform keys and tokens only.
	if f.AuthMode == "aml_token" || f.AuthMode == "aad_token" {
		f.AuthMode = "token"
	}
	if f.AuthMode == "" {
		f.AuthMode = "key"
	}
	return f.EndpointInput, nil
}

func newDeploymentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "deployment", Short: "Deployments: model servers behind an endpoint, scaled and rolled by Plinth"}
	var ws, ep string
	cmd.PersistentFlags().StringVar(&ws, "workspace", "default", "workspace")
	cmd.PersistentFlags().StringVar(&ep, "endpoint", "", "endpoint (default: endpoint_name in the file)")
	var file string
	put := func(use, short string) *cobra.Command {
		c := &cobra.Command{
			Use: use, Short: short, Args: exactArgs(0, "(none)"),
			Example: "  plinth deployment create -f blue.yml   # name, endpoint_name, model, command, instance_type, ...",
			RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
				raw, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				j, err := yaml.YAMLToJSON(raw)
				if err != nil {
					return fmt.Errorf("%s: %v", file, err)
				}
				var f deploymentFile
				dec := json.NewDecoder(bytes.NewReader(j))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&f); err != nil {
					return fmt.Errorf("%s: %v", file, err)
				}
				endpointName := ep
				if endpointName == "" {
					endpointName = f.EndpointName
				}
				if f.Name == "" || endpointName == "" {
					return fmt.Errorf("%s: name and endpoint_name (or --endpoint) are required", file)
				}
				d, err := c.PutDeployment(cmd.Context(), ws, endpointName, f.Name, f.DeploymentSpec)
				if err != nil {
					return err
				}
				return g.printResult(d, func() [][]string { return deploymentRows([]endpoint.Deployment{d}) })
			}),
		}
		c.Flags().StringVarP(&file, "file", "f", "", "deployment YAML")
		return c
	}
	show := &cobra.Command{
		Use: "show NAME --endpoint E", Short: "Show a deployment with its replicas", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			d, err := c.GetDeployment(cmd.Context(), ws, ep, args[0])
			if err != nil {
				return err
			}
			return g.printResult(d, func() [][]string {
				r := append(deploymentRows([]endpoint.Deployment{d}), []string{}, []string{"REPLICA", "STATE", "GENERATION", "ADDRESS", "STARTED"})
				for _, rep := range d.Replicas {
					r = append(r, []string{rep.ID, rep.State, strconv.FormatInt(rep.Generation, 10), rep.Addr, fmtTime(rep.StartedAt)})
				}
				return r
			})
		}),
	}
	list := &cobra.Command{
		Use: "list --endpoint E", Short: "List an endpoint's deployments", Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			e, err := c.GetEndpoint(cmd.Context(), ws, ep)
			if err != nil {
				return err
			}
			return g.printResult(e.Deployments, func() [][]string { return deploymentRows(e.Deployments) })
		}),
	}
	del := &cobra.Command{
		Use: "delete NAME --endpoint E", Short: "Delete a deployment that takes no traffic", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteDeployment(cmd.Context(), ws, ep, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted deployment %s\n", args[0])
			return nil
		}),
	}
	history := &cobra.Command{
		Use: "history NAME --endpoint E", Short: "Who deployed which model version, when", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			h, err := c.DeploymentHistory(cmd.Context(), ws, ep, args[0])
			if err != nil {
				return err
			}
			return g.printResult(h, func() [][]string {
				r := [][]string{{"GENERATION", "CHANGE", "MODEL", "VERSION", "BY", "AT"}}
				for _, x := range h {
					r = append(r, []string{strconv.FormatInt(x.Generation, 10), x.Change, orDash(x.ModelName), orDash(x.ModelVersion), x.ChangedBy, fmtTime(x.ChangedAt)})
				}
				return r
			})
		}),
	}
	var follow bool
	var replica string
	logs := &cobra.Command{
		Use: "logs NAME --endpoint E", Short: "Print a replica's output; -f follows it", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.DeploymentLogs(cmd.Context(), ws, ep, args[0], replica, follow, g.stdout)
		}),
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output")
	logs.Flags().StringVar(&replica, "replica", "", "which replica (default: the newest ready one)")
	cmd.AddCommand(put("create -f FILE", "Create a deployment from a YAML file"), put("update -f FILE", "Change a deployment (rolled out with surge)"), show, list, del, history, logs)
	return cmd
}

func newUsageCmd(g *globals) *cobra.Command {
	var by, since, model string
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Endpoint calls with replica cost, and LLM calls with tokens and cost, grouped",
		Long: `Usage over the workspaces you may read usage of. Endpoint calls group by team, workspace,
endpoint or deployment and cost replica up-time; LLM calls (the foundation-model front door)
group by team, workspace, model, backend or key and cost their tokens at the backends' prices.
By team or workspace shows both.`,
		Example: "  plinth usage --by deployment --since 7d\n  plinth usage --by team\n  plinth usage --by backend --model gpt-4o",
		Args:    exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if model != "" && !cmd.Flags().Changed("by") {
				by = "model"
			}
			u, err := c.Usage(cmd.Context(), by, since, model)
			if err != nil {
				return err
			}
			return g.printResult(u, func() [][]string { return usageRows(by, u) })
		}),
	}
	cmd.Flags().StringVar(&by, "by", "endpoint", "team, workspace, endpoint, deployment, model, backend or key")
	cmd.Flags().StringVar(&since, "since", "24h", "how far back: 24h, 7d")
	cmd.Flags().StringVar(&model, "model", "", "only LLM calls to this model")
	return cmd
}

// usageRows prints endpoint rows, then LLM rows, each kind with its own
// columns.
func usageRows(by string, u map[string]any) [][]string {
	list, _ := u["rows"].([]any)
	var endpoints, llms []map[string]any
	for _, x := range list {
		m, _ := x.(map[string]any)
		if m["kind"] == "llm" {
			llms = append(llms, m)
		} else {
			endpoints = append(endpoints, m)
		}
	}
	llmBy := by == "model" || by == "backend" || by == "key"
	var r [][]string
	if len(endpoints) > 0 || (len(llms) == 0 && !llmBy) {
		r = append(r, []string{strings.ToUpper(by), "REQUESTS", "ERRORS", "MEAN MS", "REPLICA HOURS", "COST"})
		for _, m := range endpoints {
			num := func(k string) float64 { f, _ := m[k].(float64); return f }
			r = append(r, []string{fmt.Sprint(m["key"]), fmt.Sprintf("%.0f", num("requests")), fmt.Sprintf("%.0f", num("errors")),
				fmt.Sprintf("%.2f", num("mean_latency_ms")), fmt.Sprintf("%.3f", num("replica_seconds")/3600), fmt.Sprintf("%.4f", num("cost"))})
		}
	}
	if len(llms) > 0 || (len(endpoints) == 0 && llmBy) {
		head := strings.ToUpper(by)
		if len(r) > 0 {
			r = append(r, []string{})
			head += " (LLM)"
		}
		r = append(r, []string{head, "REQUESTS", "ERRORS", "PROMPT TOKENS", "COMPLETION TOKENS", "COST", "SPILLOVERS"})
		for _, m := range llms {
			num := func(k string) float64 { f, _ := m[k].(float64); return f }
			r = append(r, []string{orDash(fmt.Sprint(m["key"])), fmt.Sprintf("%.0f", num("requests")), fmt.Sprintf("%.0f", num("errors")),
				fmt.Sprintf("%.0f", num("prompt_tokens")), fmt.Sprintf("%.0f", num("completion_tokens")), fmt.Sprintf("%.4f", num("cost")),
				fmt.Sprintf("%.0f", num("spillovers"))})
		}
	}
	return r
}
