package web

import (
	"encoding/csv"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Usage and cost (E4, I3): endpoint and LLM calls, tokens, compute hours
// and cost per team, workspace, endpoint or model, over the workspaces
// the caller may read usage of, as charts, a table and CSV.

var usagePeriods = []struct{ Name, Label string }{{"24h", "last 24 hours"}, {"7d", "last 7 days"}, {"30d", "last 30 days"}}

// computeGrouping is how compute cost groups for a usage grouping; ""
// means compute has no such grouping (models, keys).
var computeGrouping = map[string]string{"team": "team", "workspace": "workspace", "endpoint": "compute", "deployment": "compute"}

type usageQuery struct {
	By, Since string
	Query     endpoint.UsageQuery
	// wsIDs are the workspaces' ids for the compute cost; nil: all.
	wsIDs []string
}

func (u *UI) usageQuery(r *http.Request, q *req) (usageQuery, error) {
	qs := r.URL.Query()
	uq := usageQuery{By: qs.Get("by"), Since: qs.Get("since")}
	if uq.By == "" {
		uq.By = "team"
	}
	if !slices.Contains(endpoint.UsageGroupings, uq.By) {
		return uq, fault.InvalidField("by", "%q: usage groups by team, workspace, endpoint, deployment, model, backend or key", uq.By)
	}
	if uq.Since == "" {
		uq.Since = "7d"
	}
	d, err := parsePeriod(uq.Since)
	if err != nil {
		return uq, fault.InvalidField("since", "%v", err)
	}
	uq.Query = endpoint.UsageQuery{By: uq.By, Since: u.d.Now().Add(-d)}
	// A platform-wide reader sees all usage; others their workspaces'.
	if !q.ID.Can(auth.UsageRead, "") {
		list, err := u.usageWorkspaces(r, q.ID)
		if err != nil {
			return uq, err
		}
		uq.Query.Workspaces, uq.wsIDs = []string{}, []string{}
		for _, w := range list {
			uq.Query.Workspaces = append(uq.Query.Workspaces, w.Name)
			uq.wsIDs = append(uq.wsIDs, w.ID)
		}
	}
	return uq, nil
}

func parsePeriod(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 1 || days > 400 {
			return 0, fault.New(fault.Invalid, "%q: want a number of days from 1d to 400d, or a duration like 12h", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fault.New(fault.Invalid, "%q: want a duration like 24h or 7d", s)
	}
	return d, nil
}

func (u *UI) usageWorkspaces(r *http.Request, id *auth.Identity) ([]workspace.Workspace, error) {
	var out []workspace.Workspace
	after := ""
	for {
		page, next, err := u.d.Workspaces.List(r.Context(), workspace.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		for _, w := range page {
			if id.Can(auth.UsageRead, w.Name) {
				out = append(out, w)
			}
		}
		if next == "" {
			return out, nil
		}
		after = next
	}
}

type usageReport struct {
	Calls   []endpoint.UsageRow
	Compute []compute.CostRow
	// ComputeBy is what Compute is grouped by ("" when not reported).
	ComputeBy string
}

func (u *UI) usageReport(r *http.Request, uq usageQuery) (usageReport, error) {
	var rep usageReport
	var err error
	if rep.Calls, err = u.d.Endpoints.Usage(r.Context(), uq.Query); err != nil {
		return rep, err
	}
	if rep.ComputeBy = computeGrouping[uq.By]; rep.ComputeBy != "" {
		if rep.Compute, err = u.d.Compute.NodeCost(r.Context(), rep.ComputeBy, uq.Query.Since, uq.wsIDs); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (u *UI) usagePage(w http.ResponseWriter, r *http.Request, q *req) error {
	uq, err := u.usageQuery(r, q)
	if err != nil {
		return err
	}
	rep, err := u.usageReport(r, uq)
	if err != nil {
		return err
	}
	var totalCost float64
	for _, c := range rep.Calls {
		totalCost += c.Cost
	}
	for _, c := range rep.Compute {
		totalCost += c.Cost
	}
	u.render(w, r, q, http.StatusOK, "usage", map[string]any{"By": uq.By, "Since": uq.Since, "Report": rep, "Total": totalCost,
		"Groupings": endpoint.UsageGroupings, "Periods": usagePeriods,
		"Query": "by=" + url.QueryEscape(uq.By) + "&since=" + url.QueryEscape(uq.Since)})
	return nil
}

// usageCSV is the report as one table: a row per call or compute line.
func (u *UI) usageCSV(w http.ResponseWriter, r *http.Request, q *req) error {
	uq, err := u.usageQuery(r, q)
	if err != nil {
		return err
	}
	rep, err := u.usageReport(r, uq)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="plinth-usage-by-`+uq.By+`-`+uq.Since+`.csv"`)
	cw := csv.NewWriter(w)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	cw.Write([]string{"kind", uq.By, "requests", "errors", "mean_latency_ms", "prompt_tokens", "completion_tokens", "replica_hours", "node_hours", "jobs", "cost"})
	for _, c := range rep.Calls {
		cw.Write([]string{c.Kind, csvSafe(c.Key), i(c.Requests), i(c.Errors), f(c.MeanLatencyMS), i(c.PromptTokens), i(c.CompletionTokens), f(c.ReplicaSeconds / 3600), "", "", f(c.Cost)})
	}
	for _, c := range rep.Compute {
		cw.Write([]string{"compute", csvSafe(c.Key), "", "", "", "", "", "", f(c.NodeSeconds / 3600), strconv.Itoa(c.Jobs), f(c.Cost)})
	}
	cw.Flush()
	return cw.Error()
}

// csvSafe keeps a spreadsheet from reading a name as a formula.
func csvSafe(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}

// usageSeriesJSON charts requests (or cost, or tokens) per hour for the
// busiest keys.
func (u *UI) usageSeriesJSON(w http.ResponseWriter, r *http.Request, q *req) error {
	uq, err := u.usageQuery(r, q)
	if err != nil {
		return err
	}
	points, err := u.d.Endpoints.UsageSeries(r.Context(), uq.Query)
	if err != nil {
		return err
	}
	metric := r.URL.Query().Get("metric")
	value := func(p endpoint.UsagePoint) float64 {
		switch metric {
		case "cost":
			return p.Cost
		case "tokens":
			return float64(p.Tokens)
		}
		return float64(p.Requests)
	}
	doc := chartDoc{XLabel: "time", YLabel: map[string]string{"cost": "cost per hour", "tokens": "tokens per hour"}[metric], Empty: "No usage in this period."}
	if doc.YLabel == "" {
		doc.YLabel = "requests per hour"
	}
	doc = hourlyChart(points, func(p endpoint.UsagePoint) string { return p.Kind + " " + p.Key }, value, doc)
	writeJSON(w, http.StatusOK, doc)
	return nil
}
