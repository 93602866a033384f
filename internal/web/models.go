package web

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
)

// Models and data (E3, I2): the registry with versions, aliases and
// stages; data assets with their versions; the lineage graph from data
// through runs to models and deployments. And the audit log (E5).

func (u *UI) modelsPage(w http.ResponseWriter, r *http.Request, q *req) error {
	filter := r.URL.Query().Get("filter")
	list, next, err := u.d.Registry.SearchModels(r.Context(), q.tracking(), filter, nil, 100, r.URL.Query().Get("page_token"))
	fe, err := asFilterError(err)
	if err != nil {
		return err
	}
	u.render(w, r, q, statusFor(fe), "models", map[string]any{"Models": list, "Filter": filter, "FilterError": fe, "Next": next})
	return nil
}

func (u *UI) modelPage(w http.ResponseWriter, r *http.Request, q *req) error {
	name := r.PathValue("name")
	m, err := u.d.Registry.GetModel(r.Context(), q.tracking(), name)
	if err != nil {
		return err
	}
	versions, _, err := u.d.Registry.SearchVersions(r.Context(), q.tracking(), "name = '"+strings.ReplaceAll(name, "'", "\\'")+"'", nil, 200, "")
	if err != nil {
		return err
	}
	sort.Slice(versions, func(i, j int) bool {
		a, _ := strconv.Atoi(versions[i].Version)
		b, _ := strconv.Atoi(versions[j].Version)
		return a > b
	})
	u.render(w, r, q, http.StatusOK, "model", map[string]any{"Model": m, "Versions": versions})
	return nil
}

func (u *UI) dataPage(w http.ResponseWriter, r *http.Request, q *req) error {
	assets, err := u.d.Registry.ListDataAssets(r.Context(), q.tracking())
	if err != nil {
		return err
	}
	data := map[string]any{"Assets": assets}
	if name := r.URL.Query().Get("name"); name != "" {
		versions, err := u.d.Registry.ListDataVersions(r.Context(), q.tracking(), name, true)
		if err != nil {
			return err
		}
		data["Name"], data["Versions"] = name, versions
	}
	u.render(w, r, q, http.StatusOK, "data", data)
	return nil
}

func (u *UI) lineagePage(w http.ResponseWriter, r *http.Request, q *req) error {
	node := r.URL.Query().Get("node")
	data := map[string]any{"Node": node}
	if node != "" {
		depth := 0
		if d := r.URL.Query().Get("depth"); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil {
				return fault.InvalidField("depth", "%q is not a number", d)
			}
			depth = n
		}
		g, err := u.d.Registry.Lineage(r.Context(), q.tracking(), node, r.URL.Query().Get("direction"), depth)
		if err != nil {
			return err
		}
		data["Graph"], data["SVG"] = g, lineageSVG(q, g)
	}
	u.render(w, r, q, http.StatusOK, "lineage", data)
	return nil
}

// lineageSVG draws a graph in layers, left to right: each node one layer
// after the furthest node that points at it, so data comes before the
// runs it fed, runs before the models they made, models before their
// deployments.
func lineageSVG(q *req, g registry.Graph) template.HTML {
	const boxW, boxH, gapX, gapY, pad = 200, 44, 80, 24, 16
	layer := map[string]int{}
	for _, n := range g.Nodes {
		layer[n.ID] = 0
	}
	// Longest-path layering; bounded so a cycle cannot loop forever.
	for range len(g.Nodes) {
		changed := false
		for _, e := range g.Edges {
			if _, ok := layer[e.To]; !ok {
				continue
			}
			if l := layer[e.From] + 1; l > layer[e.To] {
				layer[e.To], changed = l, true
			}
		}
		if !changed {
			break
		}
	}
	nodes := append([]registry.Node(nil), g.Nodes...)
	sort.Slice(nodes, func(i, j int) bool {
		if layer[nodes[i].ID] != layer[nodes[j].ID] {
			return layer[nodes[i].ID] < layer[nodes[j].ID]
		}
		return nodes[i].ID < nodes[j].ID
	})
	type pos struct{ x, y int }
	at := map[string]pos{}
	rows := map[int]int{}
	maxX, maxY := 0, 0
	for _, n := range nodes {
		l := layer[n.ID]
		p := pos{pad + l*(boxW+gapX), pad + rows[l]*(boxH+gapY)}
		rows[l]++
		at[n.ID] = p
		maxX, maxY = max(maxX, p.x+boxW+pad), max(maxY, p.y+boxH+pad)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-labelledby="lineage-title">`, maxX, maxY)
	fmt.Fprintf(&b, `<title id="lineage-title">Lineage of %s: %d nodes, %d edges</title>`, template.HTMLEscapeString(g.Root), len(g.Nodes), len(g.Edges))
	for _, e := range g.Edges {
		from, ok1 := at[e.From]
		to, ok2 := at[e.To]
		if !ok1 || !ok2 {
			continue
		}
		x1, y1, x2, y2 := from.x+boxW, from.y+boxH/2, to.x, to.y+boxH/2
		mid := (x1 + x2) / 2
		fmt.Fprintf(&b, `<path class="edge-%s" d="M%d %d C%d %d, %d %d, %d %d"><title>%s</title></path>`,
			template.HTMLEscapeString(e.Kind), x1, y1, mid, y1, mid, y2, x2, y2, template.HTMLEscapeString(e.Kind))
	}
	for _, n := range nodes {
		p := at[n.ID]
		href := lineageHref(q, n)
		fmt.Fprintf(&b, `<a href="%s"><rect class="kind-%s" x="%d" y="%d" width="%d" height="%d" rx="6"></rect>`,
			template.HTMLEscapeString(href), template.HTMLEscapeString(n.Kind), p.x, p.y, boxW, boxH)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text><text x="%d" y="%d">%s</text><title>%s</title></a>`,
			p.x+8, p.y+17, template.HTMLEscapeString(n.Kind), p.x+8, p.y+34, template.HTMLEscapeString(clipText(n.Label, 30)), template.HTMLEscapeString(n.ID))
	}
	b.WriteString(`</svg>`)
	// Everything in it was escaped above.
	return template.HTML(b.String())
}

func lineageHref(q *req, n registry.Node) string {
	kind, rest, _ := strings.Cut(n.ID, ":")
	switch kind {
	case registry.NodeRun:
		return q.wsURL("runs", url.PathEscape(rest))
	case registry.NodeModel:
		name, _, _ := cutLast(rest)
		return q.wsURL("models", url.PathEscape(name))
	}
	return q.wsURL("lineage") + "?node=" + url.QueryEscape(n.ID)
}

func cutLast(s string) (string, string, bool) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func clipText(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, q *req) error {
	qs := r.URL.Query()
	f := audit.Filter{Workspace: q.WS.Name, Principal: qs.Get("principal"), Action: qs.Get("action"), Result: qs.Get("result"),
		PageSize: 100, PageToken: qs.Get("page_token")}
	if since := qs.Get("since"); since != "" {
		d, err := parsePeriod(since)
		if err != nil {
			return fault.InvalidField("since", "%v", err)
		}
		f.Since = u.d.Now().Add(-d)
	}
	list, next, err := u.d.Audit.List(r.Context(), f)
	if err != nil {
		return err
	}
	// The chain spans every workspace, so only a platform-wide auditor
	// may have it verified (as in the REST API).
	canVerify := q.ID.Can(auth.AuditRead, "")
	data := map[string]any{"Records": list, "Next": next, "Filter": f, "Since": qs.Get("since"), "CanVerify": canVerify}
	if qs.Get("verify") != "" {
		if !canVerify {
			return fault.New(fault.PermissionDenied, "verifying the audit chain needs %s at platform scope", auth.AuditRead)
		}
		start := time.Now()
		rep, err := u.d.Audit.Verify(r.Context())
		if err != nil {
			return err
		}
		data["Report"], data["VerifyTook"] = rep, time.Since(start).Round(time.Millisecond)
	}
	u.render(w, r, q, http.StatusOK, "audit", data)
	return nil
}

func (u *UI) switchWorkspace(w http.ResponseWriter, r *http.Request, q *req) error {
	ws := r.URL.Query().Get("ws")
	if ws == "" {
		http.Redirect(w, r, "/ui/", http.StatusFound)
		return nil
	}
	http.Redirect(w, r, "/ui/w/"+url.PathEscape(ws)+"/", http.StatusFound)
	return nil
}
