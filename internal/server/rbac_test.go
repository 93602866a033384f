package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/api"
	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/store"
)

// subject is someone calling the API: a role held in the test workspace,
// the same role held platform-wide, a principal with no role, or nobody.
type subject struct {
	name     string
	role     auth.Role
	platform bool
	key      string
}

// TestRBACMatrix calls every route as every role (in the workspace and
// platform-wide), as a principal with no role and anonymously, and checks
// each answer against docs/rbac.md's rules: allowed calls never get 401
// or 403; refused ones get exactly 403 (401 without credentials).
//
// Mutating calls are sent so that they fail after authorisation (an
// invalid body, a missing id), so the matrix can run in one server
// without changing what later calls see; the scenario tests cover the
// successful paths.
func TestRBACMatrix(t *testing.T) {
	e := start(t, store.SQLite)
	e.workspace("ws1")
	var subjects []subject
	for _, role := range auth.Roles {
		for _, platform := range []bool{false, true} {
			name := strings.ToLower(string(role))
			ws := "ws1"
			if platform {
				name += "-platform"
				ws = ""
			}
			subjects = append(subjects, subject{name: name, role: role, platform: platform, key: e.principal(name, string(role), ws)})
		}
	}
	subjects = append(subjects, subject{name: "no-role", key: e.principal("no-role", "", "")}, subject{name: "anonymous"})

	routes := e.srv.API.Routes()
	for _, rt := range routes {
		for _, s := range subjects {
			path, body := requestFor(rt)
			r := e.call(rt.Method, path, s.key, body)
			allowed := expectAllowed(s, rt)
			switch {
			case s.name == "anonymous" && rt.Permission != auth.Public:
				if r.status != 401 {
					t.Errorf("%s %s as anonymous: %d, want 401", rt.Method, path, r.status)
				}
			case allowed && (r.status == 401 || r.status == 403):
				t.Errorf("%s %s as %s: %d %s, want allowed", rt.Method, path, s.name, r.status, r.raw)
			case !allowed && r.status != 403:
				t.Errorf("%s %s as %s: %d %s, want 403", rt.Method, path, s.name, r.status, r.raw)
			case allowed && r.status >= 500:
				t.Errorf("%s %s as %s: %d %s", rt.Method, path, s.name, r.status, r.raw)
			}
		}
	}
	if n := len(routes) * len(subjects); n < 200 {
		t.Fatalf("matrix covered only %d calls", n)
	}

	// Spot checks written out by hand, independent of the table above.
	key := func(name string) string {
		for _, s := range subjects {
			if s.name == name {
				return s.key
			}
		}
		t.Fatalf("no subject %s", name)
		return ""
	}
	e.must(403, "DELETE", "/api/v1/workspaces/ws1", key("reader"), nil)
	e.must(403, "PATCH", "/api/v1/workspaces/ws1", key("datascientist"), map[string]any{"team": "x"})
	e.must(200, "GET", "/api/v1/workspaces/ws1", key("endpointinvoker"), nil)
	e.must(403, "GET", "/api/v1/workspaces/ws1/role-assignments", key("endpointinvoker"), nil)
	e.must(403, "POST", "/api/v1/role-assignments", key("contributor-platform"), map[string]any{"principal": "reader", "role": "Owner"})
	e.must(403, "POST", "/api/v1/role-assignments", key("owner"), map[string]any{"principal": "reader", "role": "Owner"})
	e.must(403, "GET", "/api/v1/audit", key("owner"), nil)
	e.must(200, "GET", "/api/v1/workspaces/ws1/audit", key("owner"), nil)
	e.must(403, "POST", "/api/v1/workspaces", key("owner"), map[string]any{"name": "ws2"})
	e.must(201, "POST", "/api/v1/workspaces", key("contributor-platform"), map[string]any{"name": "ws2"})
	e.must(200, "PATCH", "/api/v1/workspaces/ws1", key("contributor"), map[string]any{"team": "x"})
}

// TestNoExistenceLeak checks that someone who may not read a workspace
// gets the same answer whether or not it exists.
func TestNoExistenceLeak(t *testing.T) {
	e := start(t, store.SQLite)
	e.workspace("secret-project")
	outsider := e.principal("outsider", "", "")
	for _, m := range []struct{ method, suffix string }{
		{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"GET", "/role-assignments"}, {"GET", "/audit"},
	} {
		real := e.call(m.method, "/api/v1/workspaces/secret-project"+m.suffix, outsider, map[string]any{})
		fake := e.call(m.method, "/api/v1/workspaces/no-such-project"+m.suffix, outsider, map[string]any{})
		strip := func(s string) string {
			return strings.ReplaceAll(strings.ReplaceAll(s, "secret-project", "X"), "no-such-project", "X")
		}
		if real.status != 403 || fake.status != 403 || strip(string(real.raw)) != strip(string(fake.raw)) {
			t.Errorf("%s %s: existing %d %s vs missing %d %s", m.method, m.suffix, real.status, real.raw, fake.status, fake.raw)
		}
	}
}

// expectAllowed restates the rules of docs/rbac.md: a role grants its
// permissions in its workspace, or everywhere when held platform-wide;
// platform-only permissions need a platform-wide role.
func expectAllowed(s subject, rt api.Route) bool {
	switch rt.Permission {
	case auth.Public:
		return true
	case auth.Authenticated:
		return s.name != "anonymous"
	}
	if s.role == "" || !auth.RoleGrants(s.role, rt.Permission) {
		return false
	}
	if s.platform {
		return true
	}
	return rt.Scoped && !auth.IsPlatformOnly(rt.Permission)
}

// requestFor fills a route's path values and picks a body that fails
// validation after authorisation, so nothing changes.
func requestFor(rt api.Route) (string, any) {
	path := strings.NewReplacer("{ws}", "ws1", "{name}", "no-such-principal", "{id}", "no-such-id", "{version}", "1", "{index}", "0", "{family}", "local-cpu", "{deployment}", "blue", "{team}", "no-such-team", "{digest}", "sha256:"+strings.Repeat("0", 64)).Replace(rt.Path)
	switch rt.Method {
	case "POST", "PATCH":
		return path, map[string]any{}
	case "DELETE":
		if strings.HasSuffix(rt.Path, "/workspaces/{ws}") {
			return path + "?force=not-a-bool", nil
		}
	}
	if strings.Contains(path, "{") {
		panic(fmt.Sprintf("route %s has a path value the matrix test does not fill", rt.Path))
	}
	return path, nil
}
