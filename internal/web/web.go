// Package web serves Plinth's browser UI under /ui: server-rendered pages
// over the same domain services and RBAC decisions as the REST API.
package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plinth-dev/plinth/internal/api"
	"github.com/plinth-dev/plinth/internal/artifact"
	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/endpoint"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/llm"
	"github.com/plinth-dev/plinth/internal/observe"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Deps are the services the pages read and change. They are the ones the
// REST API uses, so the UI cannot do what the API would refuse.
type Deps struct {
	Auth       *auth.Service
	Workspaces *workspace.Service
	Tracking   *tracking.Service
	Registry   *registry.Service
	Artifacts  *artifact.Store
	Compute    *compute.Service
	Instances  *compute.Instances
	Jobs       *jobs.Service
	Endpoints  *endpoint.Service
	LLM        *llm.Service
	Audit      *audit.Log
	// Secret seals session cookies, so any control plane with the same
	// platform key accepts them.
	Secret *secret.Key
	// Metrics is where the gateway's own counters are read from for the
	// endpoint charts; nil leaves those charts empty.
	Metrics prometheus.Gatherer
	Log     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// UI is the web UI's handler set.
type UI struct {
	d        Deps
	pages    *pages
	sessions *sessions
	samples  *sampler
}

// New builds the UI; Register adds its routes to a mux.
func New(d Deps) *UI {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	return &UI{d: d, pages: mustParsePages(), sessions: newSessions(d.Secret, d.Now), samples: newSampler(d.Metrics, d.Now)}
}

// page is one route of the UI: like the REST API's route table, each
// names the permission it needs, checked before the handler runs, in the
// workspace of the {ws} path value when Scoped. Handlers that show
// actions check the actions' own permissions (via req.Can) to hide what
// the caller may not do; the service call behind each action is guarded
// here again, by its route's permission, so a hidden button is never the
// only protection.
type page struct {
	Method     string
	Path       string
	Permission auth.Permission
	Scoped     bool
	// Action names a change for the audit log's record of refusals.
	Action string
	Handle func(w http.ResponseWriter, r *http.Request, q *req) error
}

// routes is the whole UI. A later feature adds its pages here and a
// template under templates/, and links them from the nav in layout.html.
func (u *UI) routes() []page {
	const w = "/ui/w/{ws}"
	return []page{
		{Method: "GET", Path: w + "/{$}", Permission: auth.WorkspaceRead, Scoped: true, Handle: u.workspaceHome},

		{Method: "GET", Path: w + "/experiments", Permission: auth.TrackingRead, Scoped: true, Handle: u.experiments},
		{Method: "GET", Path: w + "/experiments/{id}", Permission: auth.TrackingRead, Scoped: true, Handle: u.runsPage},
		{Method: "GET", Path: w + "/runs/{id}", Permission: auth.TrackingRead, Scoped: true, Handle: u.runPage},
		{Method: "GET", Path: w + "/runs/{id}/metric", Permission: auth.TrackingRead, Scoped: true, Handle: u.runMetricJSON},
		{Method: "GET", Path: w + "/runs/{id}/artifacts", Permission: auth.TrackingRead, Scoped: true, Handle: u.runArtifacts},
		{Method: "GET", Path: w + "/runs/{id}/artifact", Permission: auth.TrackingRead, Scoped: true, Handle: u.runArtifactFile},
		{Method: "GET", Path: w + "/compare", Permission: auth.TrackingRead, Scoped: true, Handle: u.comparePage},
		{Method: "GET", Path: w + "/compare/metric", Permission: auth.TrackingRead, Scoped: true, Handle: u.compareMetricJSON},

		{Method: "GET", Path: w + "/endpoints", Permission: auth.EndpointsRead, Scoped: true, Handle: u.endpointsPage},
		{Method: "GET", Path: w + "/endpoints/{name}", Permission: auth.EndpointsRead, Scoped: true, Handle: u.endpointPage},
		{Method: "GET", Path: w + "/endpoints/{name}/metrics", Permission: auth.EndpointsRead, Scoped: true, Handle: u.endpointMetricsJSON},
		{Method: "POST", Path: w + "/endpoints/{name}/traffic", Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.update", Handle: u.endpointTraffic},
		{Method: "POST", Path: w + "/endpoints/{name}/keys", Permission: auth.EndpointsWrite, Scoped: true, Action: "endpoint.keys.regenerate", Handle: u.endpointKeys},

		{Method: "GET", Path: w + "/jobs", Permission: auth.JobsRead, Scoped: true, Handle: u.jobsPage},
		{Method: "GET", Path: w + "/jobs/{id}", Permission: auth.JobsRead, Scoped: true, Handle: u.jobPage},
		{Method: "GET", Path: w + "/jobs/{id}/logs", Permission: auth.JobsRead, Scoped: true, Handle: u.jobLogs},
		{Method: "POST", Path: w + "/jobs/{id}/cancel", Permission: auth.JobsWrite, Scoped: true, Action: "job.cancel", Handle: u.jobCancel},

		{Method: "GET", Path: w + "/compute", Permission: auth.ComputeRead, Scoped: true, Handle: u.computePage},
		{Method: "POST", Path: w + "/compute/{name}/start", Permission: auth.ComputeOperate, Scoped: true, Action: "compute.start", Handle: u.computeStart},
		{Method: "POST", Path: w + "/compute/{name}/stop", Permission: auth.ComputeOperate, Scoped: true, Action: "compute.stop", Handle: u.computeStop},

		{Method: "GET", Path: w + "/models", Permission: auth.RegistryRead, Scoped: true, Handle: u.modelsPage},
		{Method: "GET", Path: w + "/models/{name}", Permission: auth.RegistryRead, Scoped: true, Handle: u.modelPage},
		{Method: "GET", Path: w + "/data", Permission: auth.DataRead, Scoped: true, Handle: u.dataPage},
		{Method: "GET", Path: w + "/lineage", Permission: auth.DataRead, Scoped: true, Handle: u.lineagePage},

		{Method: "GET", Path: w + "/audit", Permission: auth.AuditRead, Scoped: true, Handle: u.auditPage},

		{Method: "GET", Path: w + "/access", Permission: auth.RolesRead, Scoped: true, Handle: u.workspaceRolesPage},
		{Method: "POST", Path: w + "/access/roles", Permission: auth.RolesWrite, Scoped: true, Action: "role.assign", Handle: u.workspaceRoleAssign},
		{Method: "POST", Path: w + "/access/roles/{id}/remove", Permission: auth.RolesWrite, Scoped: true, Action: "role.remove", Handle: u.workspaceRoleRemove},

		// The LLM front door and principals are platform-wide, as in the API.
		{Method: "GET", Path: "/ui/llm", Permission: auth.LLMRead, Handle: u.llmHome},
		{Method: "GET", Path: "/ui/llm/models", Permission: auth.LLMRead, Handle: u.llmModelsPage},
		{Method: "GET", Path: "/ui/llm/models/{name}", Permission: auth.LLMRead, Handle: u.llmModelPage},
		{Method: "GET", Path: "/ui/llm/models/{name}/usage", Permission: auth.LLMRead, Handle: u.llmModelUsageJSON},
		{Method: "POST", Path: "/ui/llm/models/{name}/pool", Permission: auth.LLMWrite, Action: "llm.model.update", Handle: u.llmModelPool},
		{Method: "GET", Path: "/ui/llm/backends", Permission: auth.LLMRead, Handle: u.llmBackendsPage},
		{Method: "POST", Path: "/ui/llm/backends", Permission: auth.LLMWrite, Action: "llm.backend.create", Handle: u.llmBackendCreate},
		{Method: "GET", Path: "/ui/llm/teams", Permission: auth.LLMRead, Handle: u.llmTeamsPage},
		{Method: "POST", Path: "/ui/llm/teams", Permission: auth.LLMWrite, Action: "llm.limits.put", Handle: u.llmTeamLimits},
		{Method: "POST", Path: "/ui/llm/teams/{team}/limits", Permission: auth.LLMWrite, Action: "llm.limits.put", Handle: u.llmTeamLimits},
		{Method: "POST", Path: "/ui/llm/teams/{team}/limits/delete", Permission: auth.LLMWrite, Action: "llm.limits.delete", Handle: u.llmTeamLimitsDelete},

		{Method: "GET", Path: "/ui/access/principals", Permission: auth.PrincipalsRead, Handle: u.principalsPage},
		// Keys are self-service, as in the API: the service refuses another
		// principal's keys without keys.manage.
		{Method: "GET", Path: "/ui/access/keys", Permission: auth.Authenticated, Handle: u.keysPage},
		{Method: "POST", Path: "/ui/access/keys", Permission: auth.Authenticated, Action: "key.create", Handle: u.keyCreate},
		{Method: "POST", Path: "/ui/access/keys/{id}/revoke", Permission: auth.Authenticated, Action: "key.revoke", Handle: u.keyRevoke},

		{Method: "GET", Path: "/ui/switch", Permission: auth.Authenticated, Handle: u.switchWorkspace},
		// Usage spans the workspaces the caller may read usage of.
		{Method: "GET", Path: "/ui/usage", Permission: auth.Authenticated, Handle: u.usagePage},
		{Method: "GET", Path: "/ui/usage.csv", Permission: auth.Authenticated, Handle: u.usageCSV},
		{Method: "GET", Path: "/ui/usage/series", Permission: auth.Authenticated, Handle: u.usageSeriesJSON},
	}
}

// Register adds the UI's routes to mux, and sends / to the UI.
func (u *UI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.Handle("GET /ui/static/", secured(http.HandlerFunc(serveStatic)))
	mux.Handle("GET /ui/login", secured(http.HandlerFunc(u.loginForm)))
	mux.Handle("POST /ui/login", secured(http.HandlerFunc(u.login)))
	mux.Handle("POST /ui/logout", secured(http.HandlerFunc(u.logout)))
	mux.Handle("GET /ui/{$}", secured(u.wrap(page{Permission: auth.Authenticated, Handle: u.home})))
	for _, p := range u.routes() {
		mux.Handle(p.Method+" "+p.Path, secured(u.wrap(p)))
	}
	// Anything else under /ui is a page that does not exist, shown as one.
	mux.Handle("/ui/", secured(u.wrap(page{Permission: auth.Authenticated, Handle: func(w http.ResponseWriter, r *http.Request, q *req) error {
		return fault.New(fault.NotFound, "there is no page %s", r.URL.Path)
	}})))
}

// secured sets the headers every UI response carries: no inline script
// or style may run, no other site may frame the UI.
func secured(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "+
			"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// req is what a page handler knows about the request beyond *http.Request.
type req struct {
	ID      *auth.Identity
	Session session
	// WS is the workspace of a scoped page; zero otherwise.
	WS workspace.Workspace
	// Workspaces are those the caller may read, for the switcher.
	Workspaces []workspace.Workspace
	ui         *UI
	r          *http.Request
}

// Can reports whether the caller may do p in the page's workspace.
func (q *req) Can(p auth.Permission) bool { return q.ID.Can(p, q.WS.Name) }

func (q *req) tracking() tracking.Scope {
	return tracking.Scope{WorkspaceID: q.WS.ID, Workspace: q.WS.Name}
}

func (q *req) compute() compute.Scope {
	w := q.WS
	return compute.Scope{WorkspaceID: w.ID, Workspace: w.Name, Team: w.Team, Region: w.Region, AllowedRegions: w.AllowedRegions}
}

// wsURL is a path inside the page's workspace.
func (q *req) wsURL(parts ...string) string {
	return "/ui/w/" + url.PathEscape(q.WS.Name) + "/" + strings.Join(parts, "/")
}

func (u *UI) wrap(p page) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Pages are per user and may show secrets once; no cache keeps them.
		w.Header().Set("Cache-Control", "no-store")
		sess, err := u.sessions.read(r)
		if err != nil {
			u.toLogin(w, r)
			return
		}
		id, err := u.d.Auth.Authenticate(r.Context(), sess.Key)
		if err != nil {
			// A revoked or expired key ends the session at once.
			u.sessions.clear(w, r)
			u.toLogin(w, r)
			return
		}
		ctx := audit.WithCaller(r.Context(), audit.Caller{Principal: id.Principal, KeyID: id.KeyID,
			Source: api.SourceAddr(r), RequestID: observe.RequestID(r.Context())})
		r = r.WithContext(ctx)
		q := &req{ID: id, Session: sess, ui: u, r: r}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			if !u.sessions.checkCSRF(r, sess) {
				u.fail(w, r, q, p, fault.New(fault.PermissionDenied, "this form has expired or did not come from this site (CSRF check failed); reload the page and try again"))
				return
			}
		}
		wsName := ""
		if p.Scoped {
			wsName = r.PathValue("ws")
		}
		if !id.Can(p.Permission, wsName) {
			u.fail(w, r, q, p, fault.New(fault.PermissionDenied, "%s may not do this at %s (needs %s)", id.Principal, auth.ScopeName(wsName), p.Permission))
			return
		}
		if p.Scoped {
			ws, err := u.d.Workspaces.Lookup(ctx, wsName)
			if err != nil {
				u.fail(w, r, q, p, err)
				return
			}
			q.WS = ws
		}
		if err := p.Handle(w, r, q); err != nil {
			u.fail(w, r, q, p, err)
		}
	})
}

// fail shows err as a page (or a fragment, for htmx), and records refused
// or failed changes in the audit log as the REST API does.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, q *req, p page, err error) {
	if p.Action != "" {
		rec := audit.Record{Action: p.Action, Resource: "ui" + strings.TrimPrefix(r.URL.Path, "/ui"), Workspace: r.PathValue("ws"), Result: string(fault.KindOf(err))}
		if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
			rec.Details = map[string]any{"error": fe.Message}
		}
		if aerr := u.d.Audit.Record(r.Context(), rec); aerr != nil {
			u.d.Log.Error("recording a failed UI action in the audit log", "error", aerr)
		}
	}
	status := http.StatusInternalServerError
	msg := "internal error; quote request id " + observe.RequestID(r.Context()) + " when reporting it"
	if fe, ok := fault.As(err); ok && fe.Kind != fault.Internal {
		status, msg = api.StatusOf(fe.Kind), fe.Message
	} else if errors.Is(err, context.Canceled) {
		return
	} else {
		u.d.Log.Error("UI request failed", "path", r.URL.Path, "request_id", observe.RequestID(r.Context()), "error", err)
	}
	if r.Header.Get("HX-Request") != "" {
		// htmx swaps only successful answers; the error belongs where the
		// fragment would have gone.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<p class="error" role="alert">%s</p>`, template.HTMLEscapeString(msg))
		return
	}
	if strings.HasSuffix(r.URL.Path, ".json") || r.Header.Get("Accept") == "application/json" {
		writeJSON(w, status, map[string]any{"error": msg})
		return
	}
	u.render(w, r, q, status, "error", map[string]any{"Status": status, "Message": msg})
}

func (u *UI) toLogin(w http.ResponseWriter, r *http.Request) {
	next := r.URL.RequestURI()
	if r.Method != http.MethodGet {
		next = "/ui/"
	}
	target := "/ui/login?next=" + url.QueryEscape(next)
	if r.Header.Get("HX-Request") != "" {
		// htmx follows a redirect inside the fragment; this makes the
		// whole page go to the sign-in form instead.
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// home sends the caller to the first workspace they may read.
func (u *UI) home(w http.ResponseWriter, r *http.Request, q *req) error {
	list, err := u.readable(r.Context(), q.ID)
	if err != nil {
		return err
	}
	for _, ws := range list {
		if ws.Name == "default" {
			http.Redirect(w, r, "/ui/w/default/", http.StatusFound)
			return nil
		}
	}
	if len(list) > 0 {
		http.Redirect(w, r, "/ui/w/"+url.PathEscape(list[0].Name)+"/", http.StatusFound)
		return nil
	}
	u.render(w, r, q, http.StatusOK, "home", nil)
	return nil
}

// workspaceHome opens the first section the caller may read.
func (u *UI) workspaceHome(w http.ResponseWriter, r *http.Request, q *req) error {
	for _, s := range []struct {
		perm auth.Permission
		path string
	}{{auth.TrackingRead, "experiments"}, {auth.EndpointsRead, "endpoints"}, {auth.JobsRead, "jobs"}, {auth.ComputeRead, "compute"}} {
		if q.Can(s.perm) {
			http.Redirect(w, r, q.wsURL(s.path), http.StatusFound)
			return nil
		}
	}
	u.render(w, r, q, http.StatusOK, "home", nil)
	return nil
}

// readable lists the workspaces id may read, for the switcher; at most
// 1000 of them (a switcher longer than that needs a search box).
func (u *UI) readable(ctx context.Context, id *auth.Identity) ([]workspace.Workspace, error) {
	opts := workspace.ListOptions{Limit: 1000}
	names, everywhere := id.Workspaces(auth.WorkspaceRead)
	if !everywhere {
		opts.Only = names
		if opts.Only == nil {
			opts.Only = []string{}
		}
	}
	list, _, err := u.d.Workspaces.List(ctx, opts)
	return list, err
}
