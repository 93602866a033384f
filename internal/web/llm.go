package web

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/llm"
)

// The foundation-model front door (I8): backends, models and their pools,
// teams' limits and budgets, and each model's tokens and cost over time.
// Everything here is platform-wide (llm.read, llm.write), as in the API.
// Credentials go in through the backend form and never come out: pages
// show only whether one is set, not even the API's last-four hint.

func (u *UI) llmHome(w http.ResponseWriter, r *http.Request, q *req) error {
	http.Redirect(w, r, "/ui/llm/models", http.StatusFound)
	return nil
}

// recordRefusal audits a change the service refused when the page shows
// the refusal next to its form instead of failing: the API audits every
// refused change, and so must the UI.
func (u *UI) recordRefusal(r *http.Request, action string, err error) {
	rec := audit.Record{Action: action, Resource: "ui" + strings.TrimPrefix(r.URL.Path, "/ui"), Workspace: r.PathValue("ws"), Result: string(fault.KindOf(err))}
	if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
		rec.Details = map[string]any{"error": fe.Message}
	}
	if aerr := u.d.Audit.Record(r.Context(), rec); aerr != nil {
		u.d.Log.Error("recording a refused UI action in the audit log", "error", aerr)
	}
}

// formRefusal reports whether err is one to show next to the form (the
// caller's input was refused) rather than as an error page.
func formRefusal(err error) (*fault.Error, bool) {
	fe, ok := fault.As(err)
	if !ok {
		return nil, false
	}
	switch fe.Kind {
	case fault.Invalid, fault.AlreadyExists, fault.FailedPrecondition:
		return fe, true
	}
	return nil, false
}

// ---- models

func (u *UI) llmModelsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	list, err := u.d.LLM.ListModels(r.Context())
	if err != nil {
		return err
	}
	for i := range list {
		sortPool(list[i].Pool)
	}
	u.render(w, r, q, http.StatusOK, "llm_models", map[string]any{"Models": list})
	return nil
}

// sortPool orders a pool as the gateway tries it: priority groups first.
func sortPool(p []llm.Target) {
	sort.SliceStable(p, func(i, j int) bool { return p[i].Priority < p[j].Priority })
}

var llmUsageBy = []string{"backend", "team", "workspace", "key"}

func (u *UI) llmModelView(r *http.Request, q *req, name string) (map[string]any, error) {
	m, err := u.d.LLM.GetModel(r.Context(), name)
	if err != nil {
		return nil, err
	}
	data := map[string]any{"Model": m, "CanWrite": q.ID.Can(auth.LLMWrite, ""), "UpdatedAt": m.UpdatedAt.UnixMilli(),
		"Periods": usagePeriods, "Groupings": llmUsageBy}
	// The same report as /ui/usage, for this model only, over the
	// workspaces whose usage the caller may read.
	uq, err := u.llmUsageQuery(r, q, name)
	if err != nil {
		return nil, err
	}
	rows, err := u.d.Endpoints.Usage(r.Context(), uq.Query)
	if err != nil {
		return nil, err
	}
	data["Usage"], data["By"], data["Since"] = rows, uq.By, uq.Since
	data["Query"] = "by=" + url.QueryEscape(uq.By) + "&since=" + url.QueryEscape(uq.Since)
	return data, nil
}

// llmUsageQuery is usageQuery narrowed to one model's LLM calls, grouped
// by what a model's calls have (backend by default).
func (u *UI) llmUsageQuery(r *http.Request, q *req, model string) (usageQuery, error) {
	qs := r.URL.Query()
	by := qs.Get("by")
	if by == "" {
		by = "backend"
		// usageQuery reads the grouping from the URL.
		r2 := r.Clone(r.Context())
		v := r2.URL.Query()
		v.Set("by", by)
		r2.URL.RawQuery = v.Encode()
		r = r2
	}
	found := false
	for _, g := range llmUsageBy {
		found = found || g == by
	}
	if !found {
		return usageQuery{}, fault.InvalidField("by", "%q: a model's usage groups by backend, team, workspace or key", by)
	}
	uq, err := u.usageQuery(r, q)
	if err != nil {
		return uq, err
	}
	uq.Query.Model = model
	return uq, nil
}

func (u *UI) llmModelPage(w http.ResponseWriter, r *http.Request, q *req) error {
	data, err := u.llmModelView(r, q, r.PathValue("name"))
	if err != nil {
		return err
	}
	if r.URL.Query().Get("saved") == "pool" {
		data["Flash"] = "Pool saved; gateways route by it within a second."
	}
	u.render(w, r, q, http.StatusOK, "llm_model", data)
	return nil
}

// llmModelPool changes the weights and priorities of a model's pool
// members. The pool is replaced whole (as the API's PATCH does), so the
// form carries the model's version: a pool changed by someone else since
// the page was loaded is not overwritten.
func (u *UI) llmModelPool(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	if err := r.ParseForm(); err != nil {
		return fault.New(fault.Invalid, "unreadable form")
	}
	m, err := u.d.LLM.GetModel(r.Context(), name)
	if err != nil {
		return err
	}
	refuse := func(err error) error {
		fe, ok := formRefusal(err)
		if !ok {
			return err
		}
		u.recordRefusal(r, "llm.model.update", err)
		data, verr := u.llmModelView(r, q, name)
		if verr != nil {
			return verr
		}
		data["Error"] = fe.Message
		u.render(w, r, q, http.StatusBadRequest, "llm_model", data)
		return nil
	}
	if r.PostForm.Get("version") != strconv.FormatInt(m.UpdatedAt.UnixMilli(), 10) {
		return refuse(fault.New(fault.FailedPrecondition, "model %s changed since this page was loaded (by %s at %s); reload and try again",
			name, m.UpdatedBy, m.UpdatedAt.Format(time.RFC3339)))
	}
	pool := append([]llm.Target(nil), m.Pool...)
	for i := range pool {
		for _, f := range []struct {
			field string
			dst   *int
		}{{"weight", &pool[i].Weight}, {"priority", &pool[i].Priority}} {
			key := f.field + "." + strconv.Itoa(i)
			v := strings.TrimSpace(r.PostForm.Get(key))
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return refuse(fault.InvalidField(key, "%q is not a whole number", clip(v)))
			}
			*f.dst = n
		}
		if b := r.PostForm.Get("backend." + strconv.Itoa(i)); b != pool[i].Backend {
			return refuse(fault.New(fault.FailedPrecondition, "model %s's pool changed since this page was loaded; reload and try again", name))
		}
	}
	if _, err := u.d.LLM.UpdateModel(r.Context(), name, llm.ModelInput{Pool: pool}); err != nil {
		return refuse(err)
	}
	http.Redirect(w, r, "/ui/llm/models/"+url.PathEscape(name)+"?saved=pool", http.StatusSeeOther)
	return nil
}

// llmModelUsageJSON charts one model's tokens or cost per hour, by
// backend (or team, workspace, key): the usage page's series with a model
// filter.
func (u *UI) llmModelUsageJSON(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	if _, err := u.d.LLM.GetModel(r.Context(), name); err != nil {
		return err
	}
	uq, err := u.llmUsageQuery(r, q, name)
	if err != nil {
		return err
	}
	points, err := u.d.Endpoints.UsageSeries(r.Context(), uq.Query)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, llmChart(points, r.URL.Query().Get("metric")))
	return nil
}

// llmChart charts a model's usage per hour by the chosen grouping:
// tokens unless the metric asks for cost or requests.
func llmChart(points []endpoint.UsagePoint, metric string) chartDoc {
	value := func(p endpoint.UsagePoint) float64 {
		switch metric {
		case "cost":
			return p.Cost
		case "requests":
			return float64(p.Requests)
		}
		return float64(p.Tokens)
	}
	doc := chartDoc{XLabel: "time", YLabel: map[string]string{"cost": "cost per hour", "requests": "requests per hour"}[metric], Empty: "No calls to this model in this period."}
	if doc.YLabel == "" {
		doc.YLabel = "tokens per hour"
	}
	return hourlyChart(points, func(p endpoint.UsagePoint) string { return p.Key }, value, doc)
}

// hourlyChart draws usage points as one line per group (the 8 largest by
// value), per hour, into doc.
func hourlyChart(points []endpoint.UsagePoint, group func(endpoint.UsagePoint) string, value func(endpoint.UsagePoint) float64, doc chartDoc) chartDoc {
	totals := map[string]float64{}
	hours := map[int64]bool{}
	for _, p := range points {
		totals[group(p)] += value(p)
		hours[p.Hour.Unix()] = true
	}
	keys := make([]string, 0, len(totals))
	for k, v := range totals {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		return totals[keys[i]] > totals[keys[j]] || totals[keys[i]] == totals[keys[j]] && keys[i] < keys[j]
	})
	if len(keys) > 8 {
		keys = keys[:8]
	}
	xs := make([]float64, 0, len(hours))
	for h := range hours {
		xs = append(xs, float64(h))
	}
	sort.Float64s(xs)
	pos := make(map[int64]int, len(xs))
	for i, x := range xs {
		pos[int64(x)] = i
	}
	idx := make(map[string]int, len(keys))
	for i, k := range keys {
		idx[k] = i
		label := k
		if label == "" {
			label = "(none)"
		}
		s := series{Label: label, X: xs, T: xs, Y: make([]any, len(xs))}
		for j := range s.Y {
			s.Y[j] = 0.0
		}
		doc.Series = append(doc.Series, s)
	}
	for _, p := range points {
		if i, ok := idx[group(p)]; ok {
			j := pos[p.Hour.Unix()]
			doc.Series[i].Y[j] = doc.Series[i].Y[j].(float64) + value(p)
		}
	}
	return doc
}

// ---- backends

// backendView is what a page may show of a backend: never its
// credential, nor the last-four hint the API gives.
type backendView struct {
	Name, Style, BaseURL, APIVersion, Region string
	CredentialSet                            bool
	RequestsPerMinute, TokensPerMinute       int64
	InputCostPer1K, OutputCostPer1K          float64
	TimeoutMS                                int64
	Models                                   []string
	// Breaker is the in-process gateway's circuit breaker: "open",
	// "closed", or "" when this gateway does not route to the backend.
	Breaker   string
	UpdatedBy string
	UpdatedAt time.Time
}

// backendForm is the create form as sent back after a refusal; it has no
// credential field, so a refused form never echoes one.
type backendForm struct {
	Name, Style, BaseURL, APIVersion, Region, RPM, TPM, InputCost, OutputCost string
}

// breakers reads the in-process gateway's breaker gauge
// (plinth_llm_backend_breaker_open): the one view of breaker state the
// gateway exports.
func (u *UI) breakers() map[string]string {
	out := map[string]string{}
	if u.d.Metrics == nil {
		return out
	}
	fams, err := u.d.Metrics.Gather()
	if err != nil && len(fams) == 0 {
		return out
	}
	for _, f := range fams {
		if f.GetName() != "plinth_llm_backend_breaker_open" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "backend" {
					out[l.GetValue()] = map[bool]string{true: "open", false: "closed"}[m.GetGauge().GetValue() > 0]
				}
			}
		}
	}
	return out
}

func (u *UI) llmBackendsData(r *http.Request, q *req) (map[string]any, error) {
	list, err := u.d.LLM.ListBackends(r.Context())
	if err != nil {
		return nil, err
	}
	br := u.breakers()
	views := make([]backendView, 0, len(list))
	for _, b := range list {
		views = append(views, backendView{Name: b.Name, Style: b.Style, BaseURL: b.BaseURL, APIVersion: b.APIVersion, Region: b.Region,
			CredentialSet: b.CredentialSet, RequestsPerMinute: b.RequestsPerMinute, TokensPerMinute: b.TokensPerMinute,
			InputCostPer1K: b.InputCostPer1K, OutputCostPer1K: b.OutputCostPer1K, TimeoutMS: b.TimeoutMS, Models: b.Models,
			Breaker: br[b.Name], UpdatedBy: b.UpdatedBy, UpdatedAt: b.UpdatedAt})
	}
	return map[string]any{"Backends": views, "CanWrite": q.ID.Can(auth.LLMWrite, ""), "Styles": llm.Styles, "Form": backendForm{Style: "openai"}}, nil
}

func (u *UI) llmBackendsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	data, err := u.llmBackendsData(r, q)
	if err != nil {
		return err
	}
	if s := r.URL.Query().Get("created"); s != "" {
		data["Flash"] = "Backend " + s + " created. Its credential is sealed and is never shown again; add it to a model's pool with `plinth llm model update`."
	}
	u.render(w, r, q, http.StatusOK, "llm_backends", data)
	return nil
}

// llmBackendCreate creates a backend. The credential field is write-only:
// it is passed to the service, which seals it, and never put in a page,
// a redirect or the audit log (a refused form comes back without it).
func (u *UI) llmBackendCreate(w http.ResponseWriter, r *http.Request, q *req) error {
	if err := r.ParseForm(); err != nil {
		return fault.New(fault.Invalid, "unreadable form")
	}
	f := r.PostForm
	form := backendForm{Name: strings.TrimSpace(f.Get("name")), Style: f.Get("style"), BaseURL: strings.TrimSpace(f.Get("base_url")),
		APIVersion: strings.TrimSpace(f.Get("api_version")), Region: strings.TrimSpace(f.Get("region")), RPM: f.Get("requests_per_minute"),
		TPM: f.Get("tokens_per_minute"), InputCost: f.Get("input_cost_per_1k"), OutputCost: f.Get("output_cost_per_1k")}
	refuse := func(err error) error {
		fe, ok := formRefusal(err)
		if !ok {
			return err
		}
		u.recordRefusal(r, "llm.backend.create", err)
		data, derr := u.llmBackendsData(r, q)
		if derr != nil {
			return derr
		}
		data["Error"], data["Form"] = fe.Message, form
		u.render(w, r, q, http.StatusBadRequest, "llm_backends", data)
		return nil
	}
	in := llm.BackendInput{Name: form.Name, Style: &form.Style, BaseURL: &form.BaseURL}
	if form.APIVersion != "" {
		in.APIVersion = &form.APIVersion
	}
	if form.Region != "" {
		in.Region = &form.Region
	}
	if cred := f.Get("credential"); cred != "" {
		in.Credential = &cred
	}
	var err error
	if in.RequestsPerMinute, err = formInt(f, "requests_per_minute"); err != nil {
		return refuse(err)
	}
	if in.TokensPerMinute, err = formInt(f, "tokens_per_minute"); err != nil {
		return refuse(err)
	}
	if in.InputCostPer1K, err = formMoney(f, "input_cost_per_1k"); err != nil {
		return refuse(err)
	}
	if in.OutputCostPer1K, err = formMoney(f, "output_cost_per_1k"); err != nil {
		return refuse(err)
	}
	b, err := u.d.LLM.CreateBackend(r.Context(), in)
	if err != nil {
		return refuse(err)
	}
	http.Redirect(w, r, "/ui/llm/backends?created="+url.QueryEscape(b.Name), http.StatusSeeOther)
	return nil
}

// formInt is a whole-number field; empty is nil.
func formInt(f url.Values, field string) (*int64, error) {
	v := strings.TrimSpace(f.Get(field))
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, fault.InvalidField(field, "%q is not a whole number", clip(v))
	}
	return &n, nil
}

// formMoney is a price or budget field; empty is nil.
func formMoney(f url.Values, field string) (*float64, error) {
	v := strings.TrimSpace(f.Get(field))
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return nil, fault.InvalidField(field, "%q is not a number", clip(v))
	}
	return &n, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// ---- teams

// teamView is a team's limits and, for platform-wide usage readers, what
// it has used of them in the current UTC day and month.
type teamView struct {
	Team      string
	HasLimits bool
	llm.TeamLimits
	// Use is nil when the caller may not read the team's usage.
	Use *teamUse
}

type teamUse struct {
	TokensToday, TokensMonth int64
	CostToday, CostMonth     float64
}

func (u *UI) llmTeamsData(r *http.Request, q *req) (map[string]any, error) {
	limits, err := u.d.LLM.ListTeamLimits(r.Context())
	if err != nil {
		return nil, err
	}
	byTeam := map[string]*teamView{}
	for _, l := range limits {
		byTeam[l.Team] = &teamView{Team: l.Team, HasLimits: true, TeamLimits: l}
	}
	// Teams named by workspaces the caller can see but with no limits yet,
	// so that setting their first limits is one form away.
	if q.Workspaces == nil {
		if q.Workspaces, err = u.readable(r.Context(), q.ID); err != nil {
			return nil, err
		}
	}
	for _, ws := range q.Workspaces {
		if ws.Team != "" && byTeam[ws.Team] == nil {
			byTeam[ws.Team] = &teamView{Team: ws.Team}
		}
	}
	// Limits count a team's calls through every workspace, so only a
	// platform-wide usage reader sees the use beside them.
	canUse := q.ID.Can(auth.UsageRead, "")
	if canUse {
		now := u.d.Now().UTC()
		month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		points, err := u.d.Endpoints.UsageSeries(r.Context(), endpoint.UsageQuery{By: "team", Since: month})
		if err != nil {
			return nil, err
		}
		for _, p := range points {
			if p.Kind != endpoint.UsageLLM {
				continue
			}
			t := byTeam[p.Key]
			if t == nil {
				continue
			}
			if t.Use == nil {
				t.Use = &teamUse{}
			}
			t.Use.TokensMonth += p.Tokens
			t.Use.CostMonth += p.Cost
			if !p.Hour.Before(day) {
				t.Use.TokensToday += p.Tokens
				t.Use.CostToday += p.Cost
			}
		}
		for _, t := range byTeam {
			if t.Use == nil {
				t.Use = &teamUse{}
			}
		}
	}
	teams := make([]*teamView, 0, len(byTeam))
	for _, t := range byTeam {
		teams = append(teams, t)
	}
	sort.Slice(teams, func(i, j int) bool { return teams[i].Team < teams[j].Team })
	return map[string]any{"Teams": teams, "CanWrite": q.ID.Can(auth.LLMWrite, ""), "CanUse": canUse}, nil
}

func (u *UI) llmTeamsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	data, err := u.llmTeamsData(r, q)
	if err != nil {
		return err
	}
	switch qs := r.URL.Query(); {
	case qs.Get("saved") != "":
		data["Flash"] = "Limits of team " + qs.Get("saved") + " saved; gateways apply them within a second."
	case qs.Get("deleted") != "":
		data["Flash"] = "Team " + qs.Get("deleted") + " has no LLM limits any more."
	}
	u.render(w, r, q, http.StatusOK, "llm_teams", data)
	return nil
}

// llmTeamLimits sets all of a team's limits and budgets, as the API's PUT
// does: a field left empty means no limit.
func (u *UI) llmTeamLimits(w http.ResponseWriter, r *http.Request, q *req) error {
	if err := r.ParseForm(); err != nil {
		return fault.New(fault.Invalid, "unreadable form")
	}
	team := r.PathValue("team")
	if team == "" {
		team = strings.TrimSpace(r.PostForm.Get("team"))
	}
	refuse := func(err error) error {
		fe, ok := formRefusal(err)
		if !ok {
			return err
		}
		u.recordRefusal(r, "llm.limits.put", err)
		data, derr := u.llmTeamsData(r, q)
		if derr != nil {
			return derr
		}
		data["Error"] = "Team " + clip(team) + ": " + fe.Message
		u.render(w, r, q, http.StatusBadRequest, "llm_teams", data)
		return nil
	}
	var in llm.TeamLimitsInput
	for _, c := range []struct {
		field string
		dst   *int64
	}{{"requests_per_minute", &in.RequestsPerMinute}, {"tokens_per_minute", &in.TokensPerMinute},
		{"tokens_per_day", &in.TokensPerDay}, {"tokens_per_month", &in.TokensPerMonth}} {
		v, err := formInt(r.PostForm, c.field)
		if err != nil {
			return refuse(err)
		}
		if v != nil {
			*c.dst = *v
		}
	}
	for _, c := range []struct {
		field string
		dst   *float64
	}{{"budget_per_day", &in.BudgetPerDay}, {"budget_per_month", &in.BudgetPerMonth}} {
		v, err := formMoney(r.PostForm, c.field)
		if err != nil {
			return refuse(err)
		}
		if v != nil {
			*c.dst = *v
		}
	}
	if _, err := u.d.LLM.PutTeamLimits(r.Context(), team, in); err != nil {
		return refuse(err)
	}
	http.Redirect(w, r, "/ui/llm/teams?saved="+url.QueryEscape(team), http.StatusSeeOther)
	return nil
}

func (u *UI) llmTeamLimitsDelete(w http.ResponseWriter, r *http.Request, q *req) error {
	team := r.PathValue("team")
	if err := u.d.LLM.DeleteTeamLimits(r.Context(), team); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/llm/teams?deleted="+url.QueryEscape(team), http.StatusSeeOther)
	return nil
}
