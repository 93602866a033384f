package auth

import "testing"

func TestCan(t *testing.T) {
	reader := &Identity{Principal: "r", Grants: []Grant{{Reader, "a"}}}
	platformOwner := &Identity{Principal: "o", Grants: []Grant{{Owner, ""}}}
	scopedOwner := &Identity{Principal: "o", KeyWorkspace: "a", Grants: []Grant{{Owner, ""}}}
	mixed := &Identity{Principal: "m", Grants: []Grant{{Reader, ""}, {Contributor, "b"}}}
	runOwner := &Identity{Principal: "o", KeyWorkspace: "a", RunID: "r1", Grants: []Grant{{Owner, ""}}}
	runReader := &Identity{Principal: "r", KeyWorkspace: "a", RunID: "r1", Grants: []Grant{{Reader, "a"}}}
	runUnscoped := &Identity{Principal: "o", RunID: "r1", Grants: []Grant{{Owner, ""}}}
	var anonymous *Identity
	tests := []struct {
		name string
		id   *Identity
		p    Permission
		ws   string
		want bool
	}{
		{"reader reads its workspace", reader, WorkspaceRead, "a", true},
		{"reader cannot read another", reader, WorkspaceRead, "b", false},
		{"reader cannot update", reader, WorkspaceUpdate, "a", false},
		{"workspace role grants nothing platform-wide", reader, WorkspaceRead, "", false},
		{"platform owner everywhere", platformOwner, WorkspaceDelete, "zzz", true},
		{"platform owner platform perms", platformOwner, PrincipalsWrite, "", true},
		{"platform-only perm never in a workspace", platformOwner, PrincipalsWrite, "a", false},
		{"scoped key inside its workspace", scopedOwner, WorkspaceDelete, "a", true},
		{"scoped key outside its workspace", scopedOwner, WorkspaceRead, "b", false},
		{"scoped key at platform scope", scopedOwner, WorkspacesCreate, "", false},
		{"roles add up", mixed, WorkspaceUpdate, "b", true},
		{"platform reader cannot update elsewhere", mixed, WorkspaceUpdate, "c", false},
		{"anyone authenticated", reader, Authenticated, "", true},
		{"run token logs to its workspace", runOwner, TrackingWrite, "a", true},
		{"run token reads models", runOwner, RegistryRead, "a", true},
		{"run token reads data", runOwner, DataRead, "a", true},
		{"run token cannot register models", runOwner, RegistryWrite, "a", false},
		{"run token cannot write data", runOwner, DataWrite, "a", false},
		{"run token cannot read the workspace", runOwner, WorkspaceRead, "a", false},
		{"run token cannot read audit", runOwner, AuditRead, "a", false},
		{"run token cannot submit jobs", runOwner, JobsWrite, "a", false},
		{"run token nothing at platform scope", runOwner, PrincipalsRead, "", false},
		{"run token nothing elsewhere", runOwner, TrackingRead, "b", false},
		{"run token is an intersection", runReader, TrackingWrite, "a", false},
		{"run token of a reader reads", runReader, TrackingRead, "a", true},
		{"run token without a workspace grants nothing", runUnscoped, TrackingRead, "a", false},
		{"run token is authenticated", runOwner, Authenticated, "", true},
		{"anonymous only public", anonymous, Authenticated, "", false},
		{"anonymous public", anonymous, Public, "", true},
	}
	for _, tc := range tests {
		if got := tc.id.Can(tc.p, tc.ws); got != tc.want {
			t.Errorf("%s: Can(%s, %q) = %v, want %v", tc.name, tc.p, tc.ws, got, tc.want)
		}
	}
}

func TestWorkspaces(t *testing.T) {
	mixed := &Identity{Grants: []Grant{{Reader, "b"}, {EndpointInvoker, "a"}, {Owner, "c"}}}
	names, all := mixed.Workspaces(WorkspaceRead)
	if all || len(names) != 3 || names[0] != "a" || names[2] != "c" {
		t.Fatalf("Workspaces(read) = %v, %v", names, all)
	}
	if names, _ := mixed.Workspaces(WorkspaceUpdate); len(names) != 1 || names[0] != "c" {
		t.Fatalf("Workspaces(update) = %v", names)
	}
	scoped := &Identity{KeyWorkspace: "k", Grants: []Grant{{Reader, ""}}}
	if names, all := scoped.Workspaces(WorkspaceRead); all || len(names) != 1 || names[0] != "k" {
		t.Fatalf("scoped key Workspaces = %v, %v", names, all)
	}
}

func TestEveryRoleIsOrdered(t *testing.T) {
	// Each role grants a subset of the one above it, except that
	// EndpointInvoker's invoke right is not a Reader's.
	for i := 1; i < len(Roles)-1; i++ {
		for _, p := range Permissions {
			if RoleGrants(Roles[i], p.Permission) && !RoleGrants(Roles[i-1], p.Permission) {
				t.Errorf("%s grants %s but %s does not", Roles[i], p.Permission, Roles[i-1])
			}
		}
	}
	for _, p := range Permissions {
		if !RoleGrants(Owner, p.Permission) {
			t.Errorf("Owner lacks %s", p.Permission)
		}
	}
}

func TestLLMPermissions(t *testing.T) {
	for _, p := range []Permission{LLMRead, LLMWrite, LLMCredentialsRead} {
		if !IsPlatformOnly(p) {
			t.Errorf("%s should be granted at platform scope only", p)
		}
	}
	for role, want := range map[Role][3]bool{
		Owner: {true, true, true}, Contributor: {true, false, false}, DataScientist: {true, false, false},
		Reader: {true, false, false}, EndpointInvoker: {false, false, false},
	} {
		for i, p := range []Permission{LLMRead, LLMWrite, LLMCredentialsRead} {
			if got := RoleGrants(role, p); got != want[i] {
				t.Errorf("RoleGrants(%s, %s) = %v, want %v", role, p, got, want[i])
			}
		}
	}
	ws := &Identity{Principal: "o", Grants: []Grant{{Owner, "a"}}}
	if ws.Can(LLMCredentialsRead, "") || ws.Can(LLMWrite, "a") {
		t.Error("a workspace Owner may not configure the LLM front door or read its credentials")
	}
}
