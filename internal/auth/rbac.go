package auth

import (
	"fmt"
	"slices"
	"sort"
)

// Permission is one thing a principal may do. Each is granted either at
// platform scope only (PlatformOnly) or in a workspace, where a
// platform-scope role assignment grants it in every workspace.
type Permission string

// The permissions. Later domains (tracking, jobs, endpoints...) are listed
// now so that roles mean the same thing from the first release.
const (
	WorkspacesCreate Permission = "workspaces.create"
	PrincipalsRead   Permission = "principals.read"
	PrincipalsWrite  Permission = "principals.write"
	KeysManage       Permission = "keys.manage"

	WorkspaceRead   Permission = "workspace.read"
	WorkspaceUpdate Permission = "workspace.update"
	WorkspaceDelete Permission = "workspace.delete"
	RolesRead       Permission = "roles.read"
	RolesWrite      Permission = "roles.write"
	AuditRead       Permission = "audit.read"
	TrackingRead    Permission = "tracking.read"
	TrackingWrite   Permission = "tracking.write"
	RegistryRead    Permission = "registry.read"
	RegistryWrite   Permission = "registry.write"
	RegistryPromote Permission = "registry.promote"
	DataRead        Permission = "data.read"
	DataWrite       Permission = "data.write"
	JobsRead        Permission = "jobs.read"
	JobsWrite       Permission = "jobs.write"
	ComputeRead     Permission = "compute.read"
	ComputeOperate  Permission = "compute.operate"
	ComputeWrite    Permission = "compute.write"
	EndpointsRead   Permission = "endpoints.read"
	EndpointsWrite  Permission = "endpoints.write"
	EndpointsInvoke Permission = "endpoints.invoke"
	UsageRead       Permission = "usage.read"
	QuotasWrite     Permission = "quotas.write"

	LLMRead            Permission = "llm.read"
	LLMWrite           Permission = "llm.write"
	LLMCredentialsRead Permission = "llm.credentials.read"

	// Authenticated is not granted by roles: every authenticated caller
	// has it. It guards self-service routes (whoami, one's own keys).
	Authenticated Permission = "authenticated"
	// Public routes need no credentials at all.
	Public Permission = "public"
)

// PermissionInfo describes a permission for the matrix document.
type PermissionInfo struct {
	Permission   Permission
	PlatformOnly bool
	Description  string
}

// Permissions lists every role-granted permission, in the order the RBAC
// matrix shows them.
var Permissions = []PermissionInfo{
	{WorkspacesCreate, true, "create workspaces (the creator becomes the new workspace's Owner)"},
	{PrincipalsRead, true, "list and show users and service principals"},
	{PrincipalsWrite, true, "create and delete users and service principals"},
	{KeysManage, true, "create, list and revoke API keys of other principals"},
	{WorkspaceRead, false, "see the workspace and its settings"},
	{WorkspaceUpdate, false, "change the workspace's display name, description, team, tags, allowed regions"},
	{WorkspaceDelete, false, "delete the workspace"},
	{RolesRead, false, "list role assignments"},
	{RolesWrite, false, "assign and remove roles"},
	{AuditRead, false, "read and verify the audit log"},
	{TrackingRead, false, "read experiments, runs, metrics and artifacts"},
	{TrackingWrite, false, "create and change experiments and runs, log metrics and artifacts"},
	{RegistryRead, false, "read registered models and versions"},
	{RegistryWrite, false, "register models, create versions, set aliases and stages other than Production"},
	{RegistryPromote, false, "move a model version into (or out of) the Production stage"},
	{DataRead, false, "read data assets and lineage"},
	{DataWrite, false, "create data asset versions"},
	{JobsRead, false, "read jobs, their logs and outputs"},
	{JobsWrite, false, "submit and cancel jobs, sweeps and pipelines"},
	{ComputeRead, false, "see compute targets and their state"},
	{ComputeOperate, false, "start, stop and restart existing compute"},
	{ComputeWrite, false, "create, change and delete compute targets"},
	{EndpointsRead, false, "see endpoints, deployments and their metrics"},
	{EndpointsWrite, false, "create and change endpoints and deployments, traffic, keys"},
	{EndpointsInvoke, false, "call endpoints and models through the gateway"},
	{UsageRead, false, "read usage and cost reports"},
	{QuotasWrite, false, "set the workspace's compute quotas"},
	{LLMRead, true, "see the LLM front door's backends (never their credentials), models and team limits"},
	{LLMWrite, true, "create, change and delete LLM backends, models and team limits"},
	{LLMCredentialsRead, true, "receive LLM backend credentials in the gateway's route snapshot (a standalone gateway's key needs it)"},
}

// Role is a named set of permissions.
type Role string

// The built-in roles, after Azure's: Owner can do everything including
// granting access; Contributor everything but access control, audit,
// quotas, production promotion and the LLM front door's configuration;
// DataScientist works with experiments, data, jobs and models but does not
// change compute, endpoints or the workspace; Reader only reads;
// EndpointInvoker only calls endpoints.
const (
	Owner           Role = "Owner"
	Contributor     Role = "Contributor"
	DataScientist   Role = "DataScientist"
	Reader          Role = "Reader"
	EndpointInvoker Role = "EndpointInvoker"
)

// Roles lists the built-in roles, most powerful first.
var Roles = []Role{Owner, Contributor, DataScientist, Reader, EndpointInvoker}

var roleGrants = func() map[Role]map[Permission]bool {
	all := make([]Permission, 0, len(Permissions))
	for _, p := range Permissions {
		all = append(all, p.Permission)
	}
	without := func(except ...Permission) []Permission {
		var out []Permission
		for _, p := range all {
			if !slices.Contains(except, p) {
				out = append(out, p)
			}
		}
		return out
	}
	grants := map[Role][]Permission{
		Owner:       all,
		Contributor: without(PrincipalsWrite, KeysManage, RolesWrite, AuditRead, RegistryPromote, QuotasWrite, LLMWrite, LLMCredentialsRead),
		DataScientist: {
			PrincipalsRead, WorkspaceRead, RolesRead, TrackingRead, TrackingWrite, RegistryRead, RegistryWrite, DataRead, DataWrite,
			JobsRead, JobsWrite, ComputeRead, ComputeOperate, EndpointsRead, EndpointsInvoke, UsageRead, LLMRead,
		},
		Reader: {
			PrincipalsRead, WorkspaceRead, RolesRead, TrackingRead, RegistryRead, DataRead, JobsRead,
			ComputeRead, EndpointsRead, UsageRead, LLMRead,
		},
		EndpointInvoker: {WorkspaceRead, EndpointsInvoke},
	}
	out := make(map[Role]map[Permission]bool, len(grants))
	for role, perms := range grants {
		out[role] = make(map[Permission]bool, len(perms))
		for _, p := range perms {
			out[role][p] = true
		}
	}
	return out
}()

var platformOnly = func() map[Permission]bool {
	m := map[Permission]bool{}
	for _, p := range Permissions {
		if p.PlatformOnly {
			m[p.Permission] = true
		}
	}
	return m
}()

// IsPlatformOnly reports whether p can only be granted at platform scope.
func IsPlatformOnly(p Permission) bool { return platformOnly[p] }

// RoleGrants reports whether role includes permission p.
func RoleGrants(role Role, p Permission) bool { return roleGrants[role][p] }

// ParseRole checks that name is a built-in role.
func ParseRole(name string) (Role, error) {
	for _, r := range Roles {
		if string(r) == name {
			return r, nil
		}
	}
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return "", fmt.Errorf("unknown role %q (want one of %v)", name, names)
}

// Grant is one role held by a principal, at platform scope (Workspace
// empty) or in one workspace.
type Grant struct {
	Role      Role
	Workspace string
}

// Identity is an authenticated caller: the principal, the key it used and
// the roles it holds.
type Identity struct {
	PrincipalID string
	Principal   string
	Kind        string
	KeyID       string
	// KeyWorkspace, when set, limits this key to one workspace: it grants
	// nothing at platform scope and nothing in other workspaces.
	KeyWorkspace string
	// RunID, when set, limits this key to one MLflow run (a run token):
	// it grants at most RunTokenPermissions, in KeyWorkspace only, and
	// the MLflow layer lets it write only to this run.
	RunID  string
	Grants []Grant
}

// Can is Plinth's one authorisation decision: may this identity do p in
// workspace ws ("" for platform scope)? Every API route and every list
// filter asks it.
func (id *Identity) Can(p Permission, ws string) bool {
	if id == nil {
		return p == Public
	}
	switch p {
	case Public, Authenticated:
		return true
	}
	if platformOnly[p] && ws != "" {
		return false
	}
	if id.KeyWorkspace != "" && (ws == "" || ws != id.KeyWorkspace) {
		return false
	}
	if id.RunID != "" && (id.KeyWorkspace == "" || !runTokenAllows[p]) {
		// A run token: the intersection of its owner's grants and
		// RunTokenPermissions (and never without its workspace).
		return false
	}
	for _, g := range id.Grants {
		if !roleGrants[g.Role][p] {
			continue
		}
		if g.Workspace == "" || (ws != "" && g.Workspace == ws) {
			return true
		}
	}
	return false
}

// CanInAnyWorkspace reports whether p is granted at platform scope or in
// at least one workspace; list endpoints use it to decide between "empty
// list" and "forbidden".
func (id *Identity) CanInAnyWorkspace(p Permission) bool {
	if id.Can(p, "") || (id.KeyWorkspace != "" && id.Can(p, id.KeyWorkspace)) {
		return true
	}
	for _, g := range id.Grants {
		if g.Workspace != "" && id.Can(p, g.Workspace) {
			return true
		}
	}
	return false
}

// Workspaces returns the workspaces in which p is granted by a
// workspace-scope role, and whether it is granted everywhere.
func (id *Identity) Workspaces(p Permission) (names []string, everywhere bool) {
	if id.KeyWorkspace == "" && id.Can(p, "") {
		return nil, true
	}
	seen := map[string]bool{}
	for _, g := range id.Grants {
		ws := g.Workspace
		if ws == "" {
			ws = id.KeyWorkspace
		}
		if ws != "" && !seen[ws] && id.Can(p, ws) {
			seen[ws] = true
			names = append(names, ws)
		}
	}
	sort.Strings(names)
	return names, false
}
