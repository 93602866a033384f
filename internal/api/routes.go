package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/plinth-dev/plinth/internal/audit"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/tracking"
	"github.com/plinth-dev/plinth/internal/workspace"
)

// Routes is the whole /api/v1 surface. Each later domain adds its routes
// here, each naming the permission it needs.
func (a *API) Routes() []Route {
	return append([]Route{
		{Method: "GET", Path: "/api/v1/openapi.json", Permission: auth.Public, Summary: "The OpenAPI 3 document of this API", Handle: a.openapi},
		{Method: "GET", Path: "/api/v1/whoami", Permission: auth.Authenticated, RunToken: true, Summary: "The calling principal, key and roles", Handle: a.whoami},
		{Method: "GET", Path: "/api/v1/roles", Permission: auth.Authenticated, Summary: "Built-in roles and their permissions", Handle: a.roles},
		{Method: "GET", Path: "/api/v1/regions", Permission: auth.Authenticated, Summary: "Region names a workspace may use", Handle: a.regions},

		{Method: "GET", Path: "/api/v1/principals", Permission: auth.PrincipalsRead, Summary: "List principals", Handle: a.listPrincipals},
		{Method: "POST", Path: "/api/v1/principals", Permission: auth.PrincipalsWrite, Action: "principal.create", Status: http.StatusCreated, Summary: "Create a user or service principal", Handle: a.createPrincipal},
		{Method: "GET", Path: "/api/v1/principals/{name}", Permission: auth.PrincipalsRead, Summary: "Show a principal", Handle: a.getPrincipal},
		{Method: "DELETE", Path: "/api/v1/principals/{name}", Permission: auth.PrincipalsWrite, Action: "principal.delete", Status: http.StatusNoContent, Summary: "Delete a principal with its keys and roles", Handle: a.deletePrincipal},

		{Method: "GET", Path: "/api/v1/keys", Permission: auth.Authenticated, Summary: "List API keys (your own, or another principal's with keys.manage)", Handle: a.listKeys},
		{Method: "POST", Path: "/api/v1/keys", Permission: auth.Authenticated, Action: "key.create", Status: http.StatusCreated, Summary: "Create an API key; the secret is returned once", Handle: a.createKey},
		{Method: "DELETE", Path: "/api/v1/keys/{id}", Permission: auth.Authenticated, Action: "key.revoke", Summary: "Revoke an API key", Handle: a.revokeKey},

		{Method: "GET", Path: "/api/v1/workspaces", Permission: auth.Authenticated, Summary: "List the workspaces the caller may read", Handle: a.listWorkspaces},
		{Method: "POST", Path: "/api/v1/workspaces", Permission: auth.WorkspacesCreate, Action: "workspace.create", Status: http.StatusCreated, Summary: "Create a workspace", Handle: a.createWorkspace},
		{Method: "GET", Path: "/api/v1/workspaces/{ws}", Permission: auth.WorkspaceRead, Scoped: true, Summary: "Show a workspace", Handle: a.getWorkspace},
		{Method: "PATCH", Path: "/api/v1/workspaces/{ws}", Permission: auth.WorkspaceUpdate, Scoped: true, Action: "workspace.update", Summary: "Change a workspace", Handle: a.updateWorkspace},
		{Method: "DELETE", Path: "/api/v1/workspaces/{ws}", Permission: auth.WorkspaceDelete, Scoped: true, Action: "workspace.delete", Status: http.StatusNoContent, Summary: "Delete a workspace", Handle: a.deleteWorkspace},

		{Method: "GET", Path: "/api/v1/role-assignments", Permission: auth.RolesRead, Summary: "List platform-scope role assignments", Handle: a.listRoles},
		{Method: "POST", Path: "/api/v1/role-assignments", Permission: auth.RolesWrite, Action: "role.assign", Status: http.StatusCreated, Summary: "Assign a role at platform scope", Handle: a.assignRole},
		{Method: "DELETE", Path: "/api/v1/role-assignments/{id}", Permission: auth.RolesWrite, Action: "role.remove", Status: http.StatusNoContent, Summary: "Remove a platform-scope role assignment", Handle: a.removeRole},
		{Method: "GET", Path: "/api/v1/workspaces/{ws}/role-assignments", Permission: auth.RolesRead, Scoped: true, Summary: "List a workspace's role assignments", Handle: a.listRoles},
		{Method: "POST", Path: "/api/v1/workspaces/{ws}/role-assignments", Permission: auth.RolesWrite, Scoped: true, Action: "role.assign", Status: http.StatusCreated, Summary: "Assign a role in a workspace", Handle: a.assignRole},
		{Method: "DELETE", Path: "/api/v1/workspaces/{ws}/role-assignments/{id}", Permission: auth.RolesWrite, Scoped: true, Action: "role.remove", Status: http.StatusNoContent, Summary: "Remove a workspace role assignment", Handle: a.removeRole},

		{Method: "GET", Path: "/api/v1/audit", Permission: auth.AuditRead, Summary: "List audit records, newest first", Handle: a.listAudit},
		{Method: "GET", Path: "/api/v1/audit/verify", Permission: auth.AuditRead, Summary: "Verify the audit log's hash chain", Handle: a.verifyAudit},
		{Method: "GET", Path: "/api/v1/workspaces/{ws}/audit", Permission: auth.AuditRead, Scoped: true, Summary: "List a workspace's audit records", Handle: a.listAudit},

		{Method: "GET", Path: "/api/v1/workspaces/{ws}/lineage", Permission: auth.DataRead, Scoped: true, Summary: "The lineage graph around a data version, dataset, run or model version", Handle: a.lineage},
		{Method: "GET", Path: "/api/v1/workspaces/{ws}/models/{name}/versions/{version}/trace", Permission: auth.RegistryRead, Scoped: true, Summary: "A model version's traceability record", Handle: a.traceVersion},
	}, append(append(append(a.dataRoutes(), a.jobRoutes()...), a.endpointRoutes()...), a.llmRoutes()...)...)
}

func (a *API) openapi(r *http.Request, _ *auth.Identity) (any, error) {
	return rawJSON(a.OpenAPI), nil
}

// rawJSON is written as is by writeJSON's encoder.
type rawJSON []byte

func (j rawJSON) MarshalJSON() ([]byte, error) { return j, nil }

// WhoAmI describes the caller.
type WhoAmI struct {
	Principal    string      `json:"principal"`
	Kind         string      `json:"kind"`
	KeyID        string      `json:"key_id"`
	KeyWorkspace string      `json:"key_workspace,omitempty"`
	KeyRunID     string      `json:"key_run_id,omitempty"`
	Grants       []GrantView `json:"grants"`
}

// GrantView is one role held by the caller.
type GrantView struct {
	Role  auth.Role `json:"role"`
	Scope string    `json:"scope"`
}

func (a *API) whoami(r *http.Request, c *auth.Identity) (any, error) {
	out := WhoAmI{Principal: c.Principal, Kind: c.Kind, KeyID: c.KeyID, KeyWorkspace: c.KeyWorkspace, KeyRunID: c.RunID, Grants: []GrantView{}}
	for _, g := range c.Grants {
		out.Grants = append(out.Grants, GrantView{Role: g.Role, Scope: auth.ScopeName(g.Workspace)})
	}
	return out, nil
}

// RoleDefinition is a built-in role and what it grants.
type RoleDefinition struct {
	Name        auth.Role         `json:"name"`
	Permissions []auth.Permission `json:"permissions"`
}

func (a *API) roles(r *http.Request, _ *auth.Identity) (any, error) {
	out := []RoleDefinition{}
	for _, role := range auth.Roles {
		d := RoleDefinition{Name: role, Permissions: []auth.Permission{}}
		for _, p := range auth.Permissions {
			if auth.RoleGrants(role, p.Permission) {
				d.Permissions = append(d.Permissions, p.Permission)
			}
		}
		out = append(out, d)
	}
	return map[string]any{"roles": out}, nil
}

func (a *API) regions(r *http.Request, _ *auth.Identity) (any, error) {
	return map[string]any{"regions": workspace.Regions}, nil
}

func (a *API) listPrincipals(r *http.Request, _ *auth.Identity) (any, error) {
	p, err := pageOf(r)
	if err != nil {
		return nil, err
	}
	list, next, err := a.Auth.ListPrincipals(r.Context(), p.After, p.Size)
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []auth.Principal{}
	}
	return map[string]any{"principals": list, "next_page_token": pageToken(next)}, nil
}

func (a *API) createPrincipal(r *http.Request, c *auth.Identity) (any, error) {
	var in auth.CreatePrincipalInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Auth.CreatePrincipal(r.Context(), c, in)
}

func (a *API) getPrincipal(r *http.Request, _ *auth.Identity) (any, error) {
	return a.Auth.GetPrincipal(r.Context(), r.PathValue("name"))
}

func (a *API) deletePrincipal(r *http.Request, c *auth.Identity) (any, error) {
	return nil, a.Auth.DeletePrincipal(r.Context(), c, r.PathValue("name"))
}

func (a *API) listKeys(r *http.Request, c *auth.Identity) (any, error) {
	all, err := boolParam(r, "include_revoked")
	if err != nil {
		return nil, err
	}
	keys, err := a.Auth.ListKeys(r.Context(), c, r.URL.Query().Get("principal"), all)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys = []auth.APIKey{}
	}
	return map[string]any{"keys": keys}, nil
}

// CreatedKey is the answer to a key creation: the only time the secret is
// ever shown.
type CreatedKey struct {
	Key    auth.APIKey `json:"key"`
	Secret string      `json:"secret"`
}

// createKeyBody accepts expires_in (a Go duration such as "720h") as a
// convenience beside expires_at.
type createKeyBody struct {
	auth.CreateKeyInput
	ExpiresIn string `json:"expires_in"`
}

func (a *API) createKey(r *http.Request, c *auth.Identity) (any, error) {
	var in createKeyBody
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	if in.ExpiresIn != "" {
		if in.ExpiresAt != nil {
			return nil, fault.InvalidField("expires_in", "give expires_in or expires_at, not both")
		}
		d, err := time.ParseDuration(in.ExpiresIn)
		if err != nil || d <= 0 {
			return nil, fault.InvalidField("expires_in", "%q is not a positive duration such as 720h", clip(in.ExpiresIn))
		}
		t := time.Now().Add(d)
		in.ExpiresAt = &t
	}
	key, secret, err := a.Auth.CreateKey(r.Context(), c, in.CreateKeyInput)
	if err != nil {
		return nil, err
	}
	return CreatedKey{Key: key, Secret: secret}, nil
}

func (a *API) revokeKey(r *http.Request, c *auth.Identity) (any, error) {
	return a.Auth.RevokeKey(r.Context(), c, r.PathValue("id"))
}

func (a *API) listWorkspaces(r *http.Request, c *auth.Identity) (any, error) {
	p, err := pageOf(r)
	if err != nil {
		return nil, err
	}
	opts := workspace.ListOptions{After: p.After, Limit: p.Size, Team: r.URL.Query().Get("team")}
	names, everywhere := c.Workspaces(auth.WorkspaceRead)
	if !everywhere {
		opts.Only = names
		if opts.Only == nil {
			opts.Only = []string{}
		}
	}
	list, next, err := a.Workspaces.List(r.Context(), opts)
	if err != nil {
		return nil, err
	}
	return map[string]any{"workspaces": list, "next_page_token": pageToken(next)}, nil
}

func (a *API) createWorkspace(r *http.Request, c *auth.Identity) (any, error) {
	var in workspace.CreateInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Workspaces.Create(r.Context(), c, in)
}

func (a *API) getWorkspace(r *http.Request, _ *auth.Identity) (any, error) {
	return a.Workspaces.Get(r.Context(), r.PathValue("ws"))
}

func (a *API) updateWorkspace(r *http.Request, _ *auth.Identity) (any, error) {
	var in workspace.UpdateInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Workspaces.Update(r.Context(), r.PathValue("ws"), in)
}

func (a *API) deleteWorkspace(r *http.Request, _ *auth.Identity) (any, error) {
	force, err := boolParam(r, "force")
	if err != nil {
		return nil, err
	}
	return nil, a.Workspaces.Delete(r.Context(), r.PathValue("ws"), force)
}

// scopeOf is the workspace a role-assignment route acts in ("" for the
// platform routes); it checks the workspace exists, for callers allowed to
// know.
func (a *API) scopeOf(r *http.Request) (string, error) {
	ws := r.PathValue("ws")
	if ws == "" {
		return "", nil
	}
	_, err := a.Workspaces.Get(r.Context(), ws)
	return ws, err
}

func (a *API) listRoles(r *http.Request, _ *auth.Identity) (any, error) {
	ws, err := a.scopeOf(r)
	if err != nil {
		return nil, err
	}
	list, err := a.Auth.ListRoleAssignments(r.Context(), ws, r.URL.Query().Get("principal"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"role_assignments": list}, nil
}

func (a *API) assignRole(r *http.Request, c *auth.Identity) (any, error) {
	ws, err := a.scopeOf(r)
	if err != nil {
		return nil, err
	}
	var in auth.AssignRoleInput
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	return a.Auth.AssignRole(r.Context(), c, ws, in)
}

func (a *API) removeRole(r *http.Request, _ *auth.Identity) (any, error) {
	ws, err := a.scopeOf(r)
	if err != nil {
		return nil, err
	}
	return nil, a.Auth.RemoveRoleAssignment(r.Context(), ws, r.PathValue("id"))
}

func (a *API) listAudit(r *http.Request, _ *auth.Identity) (any, error) {
	q := r.URL.Query()
	f := audit.Filter{Principal: q.Get("principal"), Resource: strings.TrimPrefix(q.Get("resource"), "/"), Action: q.Get("action"),
		Workspace: q.Get("workspace"), Result: q.Get("result"), PageToken: q.Get("page_token")}
	if ws := r.PathValue("ws"); ws != "" {
		f.Workspace = ws
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if s := q.Get(name); s != "" {
			t, err := parseTimeParam(s)
			if err != nil {
				return nil, fault.InvalidField(name, "%v", err)
			}
			*dst = t
		}
	}
	size, err := pageSizeOf(r)
	if err != nil {
		return nil, err
	}
	f.PageSize = size
	records, next, err := a.Audit.List(r.Context(), f)
	if err != nil {
		return nil, err
	}
	if records == nil {
		records = []audit.Record{}
	}
	return map[string]any{"records": records, "next_page_token": next}, nil
}

// parseTimeParam accepts RFC 3339 or a duration ago ("24h" = a day ago).
func parseTimeParam(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fault.New(fault.Invalid, "%q is neither an RFC 3339 time nor a duration such as 24h", clip(s))
}

func (a *API) verifyAudit(r *http.Request, _ *auth.Identity) (any, error) {
	return a.Audit.Verify(r.Context())
}

// scope resolves the workspace a tracking or registry route acts in.
func (a *API) scope(r *http.Request) (tracking.Scope, error) {
	w, err := a.Workspaces.Lookup(r.Context(), r.PathValue("ws"))
	if err != nil {
		return tracking.Scope{}, err
	}
	return tracking.Scope{WorkspaceID: w.ID, Workspace: w.Name}, nil
}

func (a *API) lineage(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	node := q.Get("node")
	if node == "" {
		return nil, fault.InvalidField("node", "required: data:<name>:<version>, model:<name>:<version>, run:<id> or dataset:<name>:<digest>")
	}
	depth := 0
	if d := q.Get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil {
			return nil, fault.InvalidField("depth", "must be an integer, not %q", clip(d))
		}
		depth = n
	}
	return a.Registry.Lineage(r.Context(), sc, node, q.Get("direction"), depth)
}

func (a *API) traceVersion(r *http.Request, _ *auth.Identity) (any, error) {
	sc, err := a.scope(r)
	if err != nil {
		return nil, err
	}
	return a.Registry.TraceVersion(r.Context(), sc, r.PathValue("name"), r.PathValue("version"))
}
