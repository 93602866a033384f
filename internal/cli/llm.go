package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/llm"
)

func newLLMCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "llm",
		Short: "The foundation-model front door: backends, models with their pools, team limits",
		Long: `Configure the OpenAI-compatible front door: the backends that serve models (OpenAI,
Azure OpenAI, any server that speaks OpenAI's API, or a Plinth endpoint), the model names
callers use with the pool of backends behind each, and the limits and budgets of teams.
See docs/llm.md.`,
	}
	cmd.AddCommand(newLLMBackendCmd(g), newLLMModelCmd(g), newLLMLimitsCmd(g))
	return cmd
}

// backendFlags are the settings of a backend on create and update.
type backendFlags struct {
	style, baseURL, apiVersion, credEnv, credFile, region string
	rpm, tpm                                              int64
	inCost, outCost                                       float64
	timeout                                               time.Duration
	noCredential                                          bool
}

func (f *backendFlags) register(fl *pflag.FlagSet, create bool) {
	fl.StringVar(&f.style, "style", "openai", "API style: openai, azure-openai or endpoint")
	fl.StringVar(&f.baseURL, "base-url", "", "the upstream's URL (https://api.openai.com/v1, https://RES.openai.azure.com), or WORKSPACE/ENDPOINT for style endpoint")
	fl.StringVar(&f.apiVersion, "api-version", "", "Azure OpenAI api-version, such as 2024-06-01 (azure-openai only)")
	fl.StringVar(&f.credEnv, "credential-env", "", "read the upstream API key from this environment variable")
	fl.StringVar(&f.credFile, "credential-file", "", "read the upstream API key from this file (- for stdin)")
	fl.Int64Var(&f.rpm, "rpm", 0, "the backend's own requests-per-minute quota (0: none)")
	fl.Int64Var(&f.tpm, "tpm", 0, "the backend's own tokens-per-minute quota (0: none)")
	fl.Float64Var(&f.inCost, "input-cost-per-1k", 0, "price of 1,000 prompt tokens")
	fl.Float64Var(&f.outCost, "output-cost-per-1k", 0, "price of 1,000 completion tokens")
	fl.StringVar(&f.region, "region", "", "region the backend runs in (see `plinth workspace regions`)")
	fl.DurationVar(&f.timeout, "timeout", 0, "limit of one try, such as 60s (0: the gateway's default, 120s)")
	if !create {
		fl.BoolVar(&f.noCredential, "no-credential", false, "remove the backend's credential")
	}
}

// input builds the request from the flags given (all of them on create).
func (f *backendFlags) input(cmd *cobra.Command, create bool) (llm.BackendInput, error) {
	var in llm.BackendInput
	fl := cmd.Flags()
	given := func(name string) bool { return create || fl.Changed(name) }
	str := func(name string, v string) *string {
		if !given(name) || (create && v == "") {
			return nil
		}
		return &v
	}
	in.Style = str("style", f.style)
	in.BaseURL = str("base-url", f.baseURL)
	in.APIVersion = str("api-version", f.apiVersion)
	in.Region = str("region", f.region)
	if given("rpm") {
		in.RequestsPerMinute = &f.rpm
	}
	if given("tpm") {
		in.TokensPerMinute = &f.tpm
	}
	if given("input-cost-per-1k") {
		in.InputCostPer1K = &f.inCost
	}
	if given("output-cost-per-1k") {
		in.OutputCostPer1K = &f.outCost
	}
	if given("timeout") {
		if f.timeout < 0 {
			return in, fmt.Errorf("--timeout %s is negative", f.timeout)
		}
		ms := f.timeout.Milliseconds()
		in.TimeoutMS = &ms
	}
	cred, err := readCredential(f.credEnv, f.credFile, cmd.InOrStdin())
	if err != nil {
		return in, err
	}
	if f.noCredential {
		if cred != nil {
			return in, errors.New("--no-credential and a credential flag contradict each other")
		}
		empty := ""
		cred = &empty
	}
	in.Credential = cred
	return in, nil
}

// readCredential reads a backend's API key from an environment variable
// or a file (- for stdin); never from a flag's own value, which would
// land in shell history and ps.
func readCredential(env, file string, stdin io.Reader) (*string, error) {
	var v string
	switch {
	case env != "" && file != "":
		return nil, errors.New("give --credential-env or --credential-file, not both")
	case env != "":
		val, ok := os.LookupEnv(env)
		if !ok || strings.TrimSpace(val) == "" {
			return nil, fmt.Errorf("--credential-env: the environment variable %s is not set or is empty", env)
		}
		v = val
	case file == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
		if err != nil {
			return nil, fmt.Errorf("reading the credential from stdin: %w", err)
		}
		v = string(b)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--credential-file: %w", err)
		}
		v = string(b)
	default:
		return nil, nil
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, errors.New("the credential read is empty")
	}
	return &v, nil
}

func credentialText(b llm.Backend) string {
	switch {
	case !b.CredentialSet:
		return "-"
	case b.CredentialHint != "":
		return "set " + b.CredentialHint
	}
	return "set"
}

func num(n int64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

func money(x float64) string {
	if x == 0 {
		return "-"
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

func backendRows(list []llm.Backend) [][]string {
	out := [][]string{{"NAME", "STYLE", "BASE URL", "CREDENTIAL", "RPM", "TPM", "IN/1K", "OUT/1K", "REGION", "MODELS"}}
	for _, b := range list {
		out = append(out, []string{b.Name, b.Style, b.BaseURL, credentialText(b), num(b.RequestsPerMinute), num(b.TokensPerMinute),
			money(b.InputCostPer1K), money(b.OutputCostPer1K), orDash(b.Region), orDash(strings.Join(b.Models, ","))})
	}
	return out
}

func backendDetail(b llm.Backend) [][]string {
	timeout := "default"
	if b.TimeoutMS > 0 {
		timeout = (time.Duration(b.TimeoutMS) * time.Millisecond).String()
	}
	return [][]string{
		{"name", b.Name}, {"style", b.Style}, {"base url", b.BaseURL}, {"api version", orDash(b.APIVersion)},
		{"credential", credentialText(b)}, {"requests/minute", num(b.RequestsPerMinute)}, {"tokens/minute", num(b.TokensPerMinute)},
		{"input cost/1k", money(b.InputCostPer1K)}, {"output cost/1k", money(b.OutputCostPer1K)}, {"region", orDash(b.Region)},
		{"timeout", timeout}, {"models", orDash(strings.Join(b.Models, ", "))},
		{"updated", fmtTime(b.UpdatedAt) + " by " + orDash(b.UpdatedBy)},
	}
}

func newLLMBackendCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backend", Short: "Upstreams that serve models, with their credentials, quotas and prices"}
	cf := &backendFlags{}
	create := &cobra.Command{
		Use:   "create NAME --base-url URL",
		Short: "Create a backend; its credential is sealed and never shown again",
		Example: `  OPENAI_KEY=sk-... plinth llm backend create openai --base-url https://api.openai.com/v1 --credential-env OPENAI_KEY
  plinth llm backend create aoai-east --style azure-openai --base-url https://east.openai.azure.com \
      --api-version 2024-06-01 --credential-file key.txt --tpm 300000 --input-cost-per-1k 0.0025 --output-cost-per-1k 0.01
  plinth llm backend create llama --style endpoint --base-url default/llama`,
		Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if cf.baseURL == "" {
				return errors.New("--base-url is required")
			}
			in, err := cf.input(cmd, true)
			if err != nil {
				return err
			}
			in.Name = args[0]
			b, err := c.CreateLLMBackend(cmd.Context(), in)
			if err != nil {
				return err
			}
			return g.printResult(b, func() [][]string { return backendRows([]llm.Backend{b}) })
		}),
	}
	cf.register(create.Flags(), true)
	uf := &backendFlags{}
	update := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a backend; flags not given keep their values",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in, err := uf.input(cmd, false)
			if err != nil {
				return err
			}
			b, err := c.UpdateLLMBackend(cmd.Context(), args[0], in)
			if err != nil {
				return err
			}
			return g.printResult(b, func() [][]string { return backendRows([]llm.Backend{b}) })
		}),
	}
	uf.register(update.Flags(), false)
	list := &cobra.Command{
		Use: "list", Short: "List backends (never their credentials)", Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListLLMBackends(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return backendRows(list) })
		}),
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a backend (never its credential)", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			b, err := c.GetLLMBackend(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printResult(b, func() [][]string { return backendDetail(b) })
		}),
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a backend that no model uses", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteLLMBackend(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted LLM backend %s\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, list, show, update, del)
	return cmd
}

// parseTarget reads NAME[:priority[:weight[:upstream-model]]].
func parseTarget(spec string) (llm.Target, error) {
	parts := strings.SplitN(spec, ":", 4)
	t := llm.Target{Backend: parts[0], Weight: 1}
	bad := func(what string) error {
		return fmt.Errorf("--backend %q: %s; want NAME[:PRIORITY[:WEIGHT[:UPSTREAM-MODEL]]], as in aoai-east:0:3:gpt-4o-prod", spec, what)
	}
	if t.Backend == "" {
		return t, bad("no backend name")
	}
	if len(parts) > 1 && parts[1] != "" {
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return t, bad("the priority is not a number")
		}
		t.Priority = n
	}
	if len(parts) > 2 && parts[2] != "" {
		n, err := strconv.Atoi(parts[2])
		if err != nil {
			return t, bad("the weight is not a number")
		}
		t.Weight = n
	}
	if len(parts) > 3 {
		t.Model = parts[3]
	}
	return t, nil
}

// poolText shows a pool by priority group: "0:east(3),west 1:openai".
func poolText(pool []llm.Target) string {
	groups := map[int][]string{}
	for _, t := range pool {
		s := t.Backend
		if t.Weight != 1 {
			s += fmt.Sprintf("(%d)", t.Weight)
		}
		groups[t.Priority] = append(groups[t.Priority], s)
	}
	prios := make([]int, 0, len(groups))
	for p := range groups {
		prios = append(prios, p)
	}
	sort.Ints(prios)
	parts := make([]string, 0, len(prios))
	for _, p := range prios {
		parts = append(parts, fmt.Sprintf("%d:%s", p, strings.Join(groups[p], ",")))
	}
	return orDash(strings.Join(parts, " "))
}

func mirrorText(m llm.Model) string {
	if m.MirrorModel == "" {
		return "-"
	}
	return fmt.Sprintf("%s=%d", m.MirrorModel, m.MirrorPercent)
}

func cacheText(m llm.Model) string {
	if m.CacheTTLMS == 0 {
		return "-"
	}
	s := (time.Duration(m.CacheTTLMS) * time.Millisecond).String()
	if m.CacheNonZeroTemperature {
		s += " (any temperature)"
	}
	return s
}

func modelRows(list []llm.Model) [][]string {
	out := [][]string{{"NAME", "POOL (PRIORITY:BACKENDS)", "MIRROR", "RPM/KEY", "TPM/KEY", "CACHE"}}
	for _, m := range list {
		out = append(out, []string{m.Name, poolText(m.Pool), mirrorText(m), num(m.RequestsPerMinutePerKey), num(m.TokensPerMinutePerKey), cacheText(m)})
	}
	return out
}

func modelDetail(m llm.Model) [][]string {
	r := append(modelRows([]llm.Model{m}), []string{}, []string{"PRIORITY", "BACKEND", "WEIGHT", "UPSTREAM MODEL"})
	for _, t := range m.Pool {
		r = append(r, []string{strconv.Itoa(t.Priority), t.Backend, strconv.Itoa(t.Weight), orDash(t.Model)})
	}
	return r
}

// modelFlags are the settings of a model on create and update.
type modelFlags struct {
	backends             []string
	rpm, tpm             int64
	mirror, description  string
	noMirror, nonzeroTmp bool
	cacheTTL             time.Duration
}

func (f *modelFlags) register(fl *pflag.FlagSet, create bool) {
	fl.StringArrayVar(&f.backends, "backend", nil, "a backend of the pool: NAME[:PRIORITY[:WEIGHT[:UPSTREAM-MODEL]]] (repeat for each; lower priorities are tried first)")
	fl.Int64Var(&f.rpm, "rpm-per-key", 0, "requests per minute per caller key (0: none)")
	fl.Int64Var(&f.tpm, "tpm-per-key", 0, "tokens per minute per caller key (0: none)")
	fl.StringVar(&f.mirror, "mirror", "", "copy PCT% of calls (at most 50) to another model, answers discarded: MODEL=PCT")
	fl.DurationVar(&f.cacheTTL, "cache-ttl", 0, "answer repeated identical calls from a cache for this long, such as 5m (0: off)")
	fl.BoolVar(&f.nonzeroTmp, "cache-nonzero-temperature", false, "cache calls with a temperature above 0 too")
	fl.StringVar(&f.description, "description", "", "description")
	if !create {
		fl.BoolVar(&f.noMirror, "no-mirror", false, "stop mirroring")
	}
}

func (f *modelFlags) input(cmd *cobra.Command, create bool) (llm.ModelInput, error) {
	var in llm.ModelInput
	fl := cmd.Flags()
	given := func(name string) bool { return fl.Changed(name) }
	for _, spec := range f.backends {
		t, err := parseTarget(spec)
		if err != nil {
			return in, err
		}
		in.Pool = append(in.Pool, t)
	}
	if create && len(in.Pool) == 0 {
		return in, errors.New("--backend is required: at least one backend serves the model")
	}
	if given("rpm-per-key") {
		in.RequestsPerMinutePerKey = &f.rpm
	}
	if given("tpm-per-key") {
		in.TokensPerMinutePerKey = &f.tpm
	}
	if given("mirror") {
		if f.noMirror {
			return in, errors.New("--mirror and --no-mirror contradict each other")
		}
		name, pct, ok := strings.Cut(f.mirror, "=")
		n, err := strconv.Atoi(pct)
		if !ok || err != nil || name == "" {
			return in, fmt.Errorf("--mirror %q: want MODEL=PERCENT, as in gpt-4o-next=10", f.mirror)
		}
		in.MirrorModel, in.MirrorPercent = &name, &n
	}
	if f.noMirror {
		empty, zero := "", 0
		in.MirrorModel, in.MirrorPercent = &empty, &zero
	}
	if given("cache-ttl") {
		if f.cacheTTL < 0 {
			return in, fmt.Errorf("--cache-ttl %s is negative", f.cacheTTL)
		}
		ms := f.cacheTTL.Milliseconds()
		in.CacheTTLMS = &ms
	}
	if given("cache-nonzero-temperature") {
		in.CacheNonZeroTemperature = &f.nonzeroTmp
	}
	if given("description") {
		in.Description = &f.description
	}
	return in, nil
}

func newLLMModelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Model names callers use and the pools of backends that serve them"}
	cf := &modelFlags{}
	create := &cobra.Command{
		Use:   "create NAME --backend BACKEND[:PRIORITY[:WEIGHT[:UPSTREAM-MODEL]]]...",
		Short: "Create a model served by a pool of backends",
		Example: `  # provisioned capacity first (two deployments, 3:1), pay-as-you-go OpenAI when they are full
  plinth llm model create gpt-4o --backend aoai-east:0:3:gpt-4o-ptu --backend aoai-west:0:1:gpt-4o-ptu \
      --backend openai:1 --tpm-per-key 50000 --cache-ttl 5m`,
		Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in, err := cf.input(cmd, true)
			if err != nil {
				return err
			}
			in.Name = args[0]
			m, err := c.CreateLLMModel(cmd.Context(), in)
			if err != nil {
				return err
			}
			return g.printResult(m, func() [][]string { return modelRows([]llm.Model{m}) })
		}),
	}
	cf.register(create.Flags(), true)
	uf := &modelFlags{}
	update := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a model; --backend replaces the whole pool, other flags not given keep their values",
		Args:  exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			in, err := uf.input(cmd, false)
			if err != nil {
				return err
			}
			m, err := c.UpdateLLMModel(cmd.Context(), args[0], in)
			if err != nil {
				return err
			}
			return g.printResult(m, func() [][]string { return modelRows([]llm.Model{m}) })
		}),
	}
	uf.register(update.Flags(), false)
	list := &cobra.Command{
		Use: "list", Short: "List models with their pools", Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListLLMModels(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return modelRows(list) })
		}),
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a model with its pool", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			m, err := c.GetLLMModel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printResult(m, func() [][]string { return modelDetail(m) })
		}),
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a model", Args: exactArgs(1, "NAME"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteLLMModel(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "deleted LLM model %s\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, list, show, update, del)
	return cmd
}

func limitRows(list []llm.TeamLimits) [][]string {
	out := [][]string{{"TEAM", "RPM", "TPM", "TOKENS/DAY", "TOKENS/MONTH", "BUDGET/DAY", "BUDGET/MONTH"}}
	for _, l := range list {
		out = append(out, []string{l.Team, num(l.RequestsPerMinute), num(l.TokensPerMinute), num(l.TokensPerDay), num(l.TokensPerMonth),
			money(l.BudgetPerDay), money(l.BudgetPerMonth)})
	}
	return out
}

func newLLMLimitsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "limits", Short: "Teams' limits and budgets across their keys and models"}
	var in llm.TeamLimitsInput
	set := &cobra.Command{
		Use:   "set TEAM",
		Short: "Set a team's limits; flags not given keep their values (0 removes a limit)",
		Example: `  plinth llm limits set research --tpm 200000 --tokens-per-month 50000000 --budget-per-month 500
  plinth llm limits set research --budget-per-day 0      # no daily budget any more`,
		Args: exactArgs(1, "TEAM"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			fl := cmd.Flags()
			if fl.NFlag() == 0 || !(fl.Changed("rpm") || fl.Changed("tpm") || fl.Changed("tokens-per-day") || fl.Changed("tokens-per-month") ||
				fl.Changed("budget-per-day") || fl.Changed("budget-per-month")) {
				return errors.New("give at least one of --rpm, --tpm, --tokens-per-day, --tokens-per-month, --budget-per-day, --budget-per-month")
			}
			cur, err := c.GetLLMTeamLimits(cmd.Context(), args[0])
			var apiErr *client.Error
			if err != nil && !(errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound) {
				return err
			}
			next := cur.TeamLimitsInput
			for name, pair := range map[string][2]*int64{
				"rpm": {&next.RequestsPerMinute, &in.RequestsPerMinute}, "tpm": {&next.TokensPerMinute, &in.TokensPerMinute},
				"tokens-per-day": {&next.TokensPerDay, &in.TokensPerDay}, "tokens-per-month": {&next.TokensPerMonth, &in.TokensPerMonth},
			} {
				if fl.Changed(name) {
					*pair[0] = *pair[1]
				}
			}
			if fl.Changed("budget-per-day") {
				next.BudgetPerDay = in.BudgetPerDay
			}
			if fl.Changed("budget-per-month") {
				next.BudgetPerMonth = in.BudgetPerMonth
			}
			l, err := c.PutLLMTeamLimits(cmd.Context(), args[0], next)
			if err != nil {
				return err
			}
			return g.printResult(l, func() [][]string { return limitRows([]llm.TeamLimits{l}) })
		}),
	}
	f := set.Flags()
	f.Int64Var(&in.RequestsPerMinute, "rpm", 0, "requests per minute across the team's keys")
	f.Int64Var(&in.TokensPerMinute, "tpm", 0, "tokens per minute across the team's keys")
	f.Int64Var(&in.TokensPerDay, "tokens-per-day", 0, "tokens per UTC day")
	f.Int64Var(&in.TokensPerMonth, "tokens-per-month", 0, "tokens per UTC calendar month")
	f.Float64Var(&in.BudgetPerDay, "budget-per-day", 0, "spending cap per UTC day, in the platform's currency")
	f.Float64Var(&in.BudgetPerMonth, "budget-per-month", 0, "spending cap per UTC calendar month")
	show := &cobra.Command{
		Use: "show TEAM", Short: "Show a team's limits", Args: exactArgs(1, "TEAM"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			l, err := c.GetLLMTeamLimits(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printResult(l, func() [][]string { return limitRows([]llm.TeamLimits{l}) })
		}),
	}
	list := &cobra.Command{
		Use: "list", Short: "List every team's limits", Args: exactArgs(0, "(none)"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListLLMTeamLimits(cmd.Context())
			if err != nil {
				return err
			}
			return g.printResult(list, func() [][]string { return limitRows(list) })
		}),
	}
	del := &cobra.Command{
		Use: "delete TEAM", Short: "Remove a team's limits and budgets", Args: exactArgs(1, "TEAM"),
		RunE: g.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := c.DeleteLLMTeamLimits(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed the LLM limits of team %s\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(set, show, list, del)
	return cmd
}
