package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
)

func TestBootstrapOnceAndPreset(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	first, err := server.New(ctx, server.Config{DataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	secret := first.BootstrapSecret
	if !strings.HasPrefix(secret, "plk_") || len(secret) < 40 {
		t.Fatalf("first start: bootstrap secret %q, want a fresh plk_ key", secret)
	}
	first.Close()

	// A second start, even with a preset key, creates nothing new.
	second, err := server.New(ctx, server.Config{DataDir: dir, BootstrapKey: "plk_preset-but-too-late-000000"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.BootstrapSecret != "" {
		t.Fatalf("second start printed a key again: %q", second.BootstrapSecret)
	}
	if _, err := second.Auth.Authenticate(ctx, secret); err != nil {
		t.Fatalf("first key stopped working: %v", err)
	}
	if _, err := second.Auth.Authenticate(ctx, "plk_preset-but-too-late-000000"); err == nil {
		t.Fatal("preset key was accepted although an admin already existed")
	}

	// A preset key on a new database becomes the admin's key.
	preset, err := server.New(ctx, server.Config{DataDir: t.TempDir(), BootstrapKey: "automation-key-0123456789"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer preset.Close()
	id, err := preset.Auth.Authenticate(ctx, "automation-key-0123456789")
	if err != nil || id.Principal != "admin" {
		t.Fatalf("preset key: identity %+v, err %v", id, err)
	}

	if _, err := server.New(ctx, server.Config{DataDir: t.TempDir(), BootstrapKey: "short"}, log); err == nil || !strings.Contains(err.Error(), "PLINTH_BOOTSTRAP_KEY") {
		t.Fatalf("short preset key: err %v, want one naming PLINTH_BOOTSTRAP_KEY", err)
	}
}

func TestWorkspaceLifecycle(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		r := e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{
			"name": "fraud-detection", "display_name": "Fraud", "description": "card fraud models",
			"region": "westeurope", "allowed_regions": []string{"westeurope", "northeurope"}, "team": "risk",
			"tags": map[string]string{"cost-center": "42"},
		})
		if r.body["created_by"] != "admin" || r.body["region"] != "westeurope" {
			t.Fatalf("created: %s", r.raw)
		}
		got := e.must(200, "GET", "/api/v1/workspaces/fraud-detection", e.admin, nil)
		if got.body["team"] != "risk" || fmt.Sprint(got.body["allowed_regions"]) != "[northeurope westeurope]" {
			t.Fatalf("get: %s", got.raw)
		}
		up := e.must(200, "PATCH", "/api/v1/workspaces/fraud-detection", e.admin, map[string]any{"description": "v2", "tags": map[string]string{}})
		if up.body["description"] != "v2" || len(up.body["tags"].(map[string]any)) != 0 {
			t.Fatalf("update: %s", up.raw)
		}
		// Region is where the data lives; it cannot be changed.
		bad := e.must(400, "PATCH", "/api/v1/workspaces/fraud-detection", e.admin, map[string]any{"region": "eastus"})
		if !strings.Contains(bad.errMessage(), "region") {
			t.Fatalf("changing region: %s", bad.raw)
		}
		// Allowed regions must keep the workspace's own region.
		e.must(400, "PATCH", "/api/v1/workspaces/fraud-detection", e.admin, map[string]any{"allowed_regions": []string{"eastus"}})

		list := e.must(200, "GET", "/api/v1/workspaces?team=risk", e.admin, nil)
		if n := len(list.body["workspaces"].([]any)); n != 1 {
			t.Fatalf("list by team: %d workspaces", n)
		}
		e.must(204, "DELETE", "/api/v1/workspaces/fraud-detection", e.admin, nil)
		e.must(404, "GET", "/api/v1/workspaces/fraud-detection", e.admin, nil)
		e.must(404, "DELETE", "/api/v1/workspaces/fraud-detection", e.admin, nil)
	})
}

func TestBadInputChangesNothing(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.workspace("existing")
		huge := `{"name":"big","description":"` + strings.Repeat("x", 2<<20) + `"}`
		cases := []struct {
			name, body string
			status     int
			code, says string
		}{
			{"malformed JSON", `{"name": "a",`, 400, "invalid_argument", "not valid JSON"},
			{"not an object", `["a"]`, 400, "invalid_argument", "JSON object"},
			{"empty body", ``, 400, "invalid_argument", "empty"},
			{"trailing data", `{"name":"abc"} {"name":"def"}`, 400, "invalid_argument", "after the JSON object"},
			{"unknown field", `{"name":"abc","colour":"red"}`, 400, "invalid_argument", "colour"},
			{"wrong type", `{"name":42}`, 400, "invalid_argument", "name"},
			{"name too long", `{"name":"` + strings.Repeat("a", 34) + `"}`, 400, "invalid_argument", "not a valid workspace name"},
			{"name too short", `{"name":"ab"}`, 400, "invalid_argument", "not a valid workspace name"},
			{"SQL-looking name", `{"name":"x'); DROP TABLE workspaces;--"}`, 400, "invalid_argument", "not a valid workspace name"},
			{"SQL-looking description", `{"name":"sqlish","description":"'; DROP TABLE workspaces;--","region":"mars-1"}`, 400, "invalid_argument", "region"},
			{"invalid region", `{"name":"abc","region":"moon-1"}`, 400, "invalid_argument", "moon-1"},
			{"allowed regions without own", `{"name":"abc","region":"eastus","allowed_regions":["westus"]}`, 400, "invalid_argument", "allowed_regions"},
			{"unknown allowed region", `{"name":"abc","allowed_regions":["local","atlantis"]}`, 400, "invalid_argument", "atlantis"},
			{"duplicate name", `{"name":"existing"}`, 409, "already_exists", "already exists"},
			{"too many tags", `{"name":"abc","tags":{` + manyTags(51) + `}}`, 400, "invalid_argument", "tags"},
			{"huge body", huge, 413, "request_too_large", "larger than"},
		}
		before := e.must(200, "GET", "/api/v1/workspaces", e.admin, nil).raw
		for _, c := range cases {
			r := e.call("POST", "/api/v1/workspaces", e.admin, c.body)
			if r.status != c.status || r.errCode() != c.code || !strings.Contains(r.errMessage(), c.says) {
				t.Errorf("%s: got %d %s %q, want %d %s mentioning %q", c.name, r.status, r.errCode(), r.errMessage(), c.status, c.code, c.says)
			}
			if r.header.Get("X-Request-Id") == "" {
				t.Errorf("%s: no X-Request-Id", c.name)
			}
		}
		after := e.must(200, "GET", "/api/v1/workspaces", e.admin, nil).raw
		if string(before) != string(after) {
			t.Fatalf("bad input changed the workspaces:\nbefore %s\nafter  %s", before, after)
		}
		// A name that looks like SQL is just a string: it is stored and
		// found as such where the field allows it.
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "quoted", "description": "'; DROP TABLE workspaces;--"})
		got := e.must(200, "GET", "/api/v1/workspaces/quoted", e.admin, nil)
		if got.body["description"] != "'; DROP TABLE workspaces;--" {
			t.Fatalf("description round trip: %s", got.raw)
		}
		// Wrong content type and bad query parameters are refused too.
		r := e.call("POST", "/api/v1/principals", e.admin, nil)
		if r.status != 400 {
			t.Fatalf("empty principal body: %d %s", r.status, r.raw)
		}
		e.must(400, "GET", "/api/v1/workspaces?page_size=0", e.admin, nil)
		e.must(400, "GET", "/api/v1/workspaces?page_token=not*base64", e.admin, nil)
		e.must(400, "DELETE", "/api/v1/workspaces/quoted?force=perhaps", e.admin, nil)
		e.must(404, "GET", "/api/v1/no-such-thing", e.admin, nil)
		wrong := e.must(405, "PUT", "/api/v1/workspaces/quoted", e.admin, map[string]any{})
		if wrong.header.Get("Allow") != "GET, PATCH, DELETE" || wrong.errCode() != "method_not_allowed" {
			t.Fatalf("wrong method: %v %s", wrong.header, wrong.raw)
		}
	})
}

func manyTags(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%d":"v"`, i)
	}
	return strings.Join(parts, ",")
}

func TestPagination(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		for i := range 5 {
			e.workspace(fmt.Sprintf("ws-%d", i))
		}
		var names []string
		token := ""
		pages := 0
		for {
			r := e.must(200, "GET", "/api/v1/workspaces?page_size=2&page_token="+token, e.admin, nil)
			for _, w := range r.body["workspaces"].([]any) {
				names = append(names, w.(map[string]any)["name"].(string))
			}
			pages++
			token, _ = r.body["next_page_token"].(string)
			if token == "" {
				break
			}
		}
		// "default" is the workspace MLflow's root tracking URI serves.
		if pages != 3 || strings.Join(names, ",") != "default,ws-0,ws-1,ws-2,ws-3,ws-4" {
			t.Fatalf("%d pages: %v", pages, names)
		}
	})
}

func TestKeys(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.workspace("team-a")
		e.workspace("team-b")
		alice := e.principal("alice", "Contributor", "")

		// A key authenticates as bearer and as the password of basic auth.
		me := e.must(200, "GET", "/api/v1/whoami", alice, nil)
		if me.body["principal"] != "alice" {
			t.Fatalf("whoami: %s", me.raw)
		}
		for _, user := range []string{"alice", "anything", ""} {
			r := basic(t, e, user, alice)
			if r != 200 {
				t.Fatalf("basic auth as %q: %d", user, r)
			}
		}

		// Anonymous, garbage and unsupported schemes are 401 with a challenge.
		r := e.call("GET", "/api/v1/workspaces", "", nil)
		if r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("anonymous: %d %v", r.status, r.header)
		}
		e.must(401, "GET", "/api/v1/workspaces", "plk_not-a-real-key", nil)

		// A key limited to a workspace sees only it and grants nothing at
		// platform scope.
		created := e.must(201, "POST", "/api/v1/keys", alice, map[string]any{"name": "only-a", "workspace": "team-a"})
		scoped := created.body["secret"].(string)
		list := e.must(200, "GET", "/api/v1/workspaces", scoped, nil)
		if ws := list.body["workspaces"].([]any); len(ws) != 1 || ws[0].(map[string]any)["name"] != "team-a" {
			t.Fatalf("scoped key lists %s", list.raw)
		}
		e.must(403, "GET", "/api/v1/workspaces/team-b", scoped, nil)
		e.must(403, "POST", "/api/v1/workspaces", scoped, map[string]any{"name": "new-one"})
		e.must(200, "GET", "/api/v1/workspaces/team-a", scoped, nil)
		// ...and cannot mint a wider key.
		e.must(400, "POST", "/api/v1/keys", scoped, map[string]any{"name": "wider"})

		// The secret is never listed or stored in the clear.
		keys := e.must(200, "GET", "/api/v1/keys", alice, nil)
		if strings.Contains(string(keys.raw), alice) || strings.Contains(string(keys.raw), scoped) {
			t.Fatal("key list shows a secret")
		}
		var count int
		if err := e.srv.DB().Read().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM api_keys WHERE hash = ? OR prefix = ?`, scoped, scoped).Scan(&count); err != nil || count != 0 {
			t.Fatalf("secret stored in the clear (%d rows, %v)", count, err)
		}

		// Revoked keys stop at once; others cannot revoke what they cannot see.
		keyID := created.body["key"].(map[string]any)["id"].(string)
		bob := e.principal("bob", "Reader", "")
		e.must(404, "DELETE", "/api/v1/keys/"+keyID, bob, nil)
		e.must(403, "GET", "/api/v1/keys?principal=alice", bob, nil)
		e.must(200, "DELETE", "/api/v1/keys/"+keyID, alice, nil)
		r = e.must(401, "GET", "/api/v1/workspaces", scoped, nil)
		if !strings.Contains(r.errMessage(), "revoked") {
			t.Fatalf("revoked key: %s", r.raw)
		}
		e.must(409, "DELETE", "/api/v1/keys/"+keyID, alice, nil)

		// Expired keys stop too.
		soon := e.must(201, "POST", "/api/v1/keys", alice, map[string]any{"name": "brief", "expires_in": "300ms"})
		brief := soon.body["secret"].(string)
		e.must(200, "GET", "/api/v1/whoami", brief, nil)
		time.Sleep(400 * time.Millisecond)
		r = e.must(401, "GET", "/api/v1/whoami", brief, nil)
		if !strings.Contains(r.errMessage(), "expired") {
			t.Fatalf("expired key: %s", r.raw)
		}
		e.must(400, "POST", "/api/v1/keys", alice, map[string]any{"name": "past", "expires_at": "2001-01-01T00:00:00Z"})
		e.must(409, "POST", "/api/v1/keys", alice, map[string]any{"name": "brief"})

		// Admin manages others' keys; alice cannot make keys for bob.
		e.must(403, "POST", "/api/v1/keys", alice, map[string]any{"name": "for-bob", "principal": "bob"})
		e.must(201, "POST", "/api/v1/keys", e.admin, map[string]any{"name": "for-bob", "principal": "bob"})
	})
}

func basic(t *testing.T, e *env, user, password string) int {
	t.Helper()
	req, _ := newRequest("GET", e.url+"/api/v1/whoami")
	req.SetBasicAuth(user, password)
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestRolesAndDelete(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		// A platform Contributor creates a workspace and becomes its Owner.
		carol := e.principal("carol", "Contributor", "")
		e.must(201, "POST", "/api/v1/workspaces", carol, map[string]any{"name": "carols"})
		roles := e.must(200, "GET", "/api/v1/workspaces/carols/role-assignments", carol, nil)
		if !strings.Contains(string(roles.raw), `"principal":"carol","role":"Owner"`) {
			t.Fatalf("creator is not Owner: %s", roles.raw)
		}
		// As its Owner she grants Reader to dave, who can then read it only.
		dave := e.principal("dave", "", "")
		e.must(403, "GET", "/api/v1/workspaces/carols", dave, nil)
		ra := e.must(201, "POST", "/api/v1/workspaces/carols/role-assignments", carol, map[string]any{"principal": "dave", "role": "Reader"})
		e.must(200, "GET", "/api/v1/workspaces/carols", dave, nil)
		e.must(403, "PATCH", "/api/v1/workspaces/carols", dave, map[string]any{"description": "mine now"})
		e.must(409, "POST", "/api/v1/workspaces/carols/role-assignments", carol, map[string]any{"principal": "dave", "role": "Reader"})
		e.must(400, "POST", "/api/v1/workspaces/carols/role-assignments", carol, map[string]any{"principal": "dave", "role": "Janitor"})
		e.must(400, "POST", "/api/v1/workspaces/carols/role-assignments", carol, map[string]any{"principal": "nobody", "role": "Reader"})
		// Removing the grant takes effect on the next request.
		e.must(204, "DELETE", "/api/v1/workspaces/carols/role-assignments/"+ra.body["id"].(string), carol, nil)
		e.must(403, "GET", "/api/v1/workspaces/carols", dave, nil)

		// The last platform Owner cannot be removed.
		platform := e.must(200, "GET", "/api/v1/role-assignments?principal=admin", e.admin, nil)
		adminOwner := platform.body["role_assignments"].([]any)[0].(map[string]any)["id"].(string)
		e.must(409, "DELETE", "/api/v1/role-assignments/"+adminOwner, e.admin, nil)

		// Deleting a workspace takes its role assignments with it: a new
		// workspace of the same name starts with no grants.
		e.must(204, "DELETE", "/api/v1/workspaces/carols", carol, nil)
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "carols"})
		after := e.must(200, "GET", "/api/v1/workspaces/carols/role-assignments", e.admin, nil)
		if strings.Contains(string(after.raw), `"principal":"carol"`) {
			t.Fatalf("old grants survived: %s", after.raw)
		}
	})
}

// thingHolder is a real domain table standing in for later resource
// kinds (experiments, jobs) that keep a workspace from being deleted.
type thingHolder struct{}

func (thingHolder) ResourcesIn(ctx context.Context, q store.Querier, wsID string) (map[string]int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM test_things WHERE workspace_id = ?`, wsID).Scan(&n)
	return map[string]int{"things": n}, err
}

func (thingHolder) DeleteResourcesIn(ctx context.Context, tx store.Querier, wsID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM test_things WHERE workspace_id = ?`, wsID)
	return err
}

func TestDeleteRefusedWhileHoldingResources(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.workspace("busy")
		db := e.srv.DB()
		err := db.Tx(ctx, func(tx store.Querier) error {
			if _, err := tx.ExecContext(ctx, `CREATE TABLE test_things (id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL)`); err != nil {
				return err
			}
			wsID, err := e.srv.Workspaces.WorkspaceID(ctx, tx, "busy")
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO test_things VALUES ('t1', ?), ('t2', ?)`, wsID, wsID)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		e.srv.Workspaces.AddHolder(thingHolder{})
		r := e.must(409, "DELETE", "/api/v1/workspaces/busy", e.admin, nil)
		if r.errCode() != "failed_precondition" || !strings.Contains(r.errMessage(), "2 things") {
			t.Fatalf("delete of a busy workspace: %s", r.raw)
		}
		e.must(200, "GET", "/api/v1/workspaces/busy", e.admin, nil)
		e.must(204, "DELETE", "/api/v1/workspaces/busy?force=true", e.admin, nil)
		var left int
		db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM test_things`).Scan(&left)
		if left != 0 {
			t.Fatalf("force left %d things behind", left)
		}
	})
}

func TestOperationsEndpoints(t *testing.T) {
	e := start(t, store.SQLite)
	e.must(200, "GET", "/healthz", "", nil)
	ready := e.must(200, "GET", "/readyz", "", nil)
	if ready.body["status"] != "ready" {
		t.Fatalf("readyz: %s", ready.raw)
	}
	// Request ids: ours is echoed, a bad one is replaced.
	req, _ := newRequest("GET", e.url+"/healthz")
	req.Header.Set("X-Request-Id", "trace-abc-123")
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("X-Request-Id"); got != "trace-abc-123" {
		t.Fatalf("request id echoed as %q", got)
	}
	e.must(200, "GET", "/api/v1/workspaces", e.admin, nil)
	e.call("GET", "/api/v1/workspaces", "wrong", nil)
	m := e.must(200, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`plinth_http_requests_total{code="200",method="GET",route="GET /api/v1/workspaces"} 1`,
		`plinth_http_requests_total{code="401",method="GET",route="GET /api/v1/workspaces"} 1`,
		`plinth_http_request_duration_seconds_bucket{method="GET",route="GET /api/v1/workspaces",le=`,
		`go_goroutines`, `process_resident_memory_bytes`,
		`go_sql_max_open_connections{db_name="write"} 1`, `go_sql_in_use_connections{db_name="read"}`,
	} {
		if !strings.Contains(string(m.raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	doc := e.must(200, "GET", "/api/v1/openapi.json", "", nil)
	if doc.body["openapi"] == nil {
		t.Fatalf("openapi.json: %s", doc.raw[:min(200, len(doc.raw))])
	}
}

// TestDefaultExperimentBackfill restarts on a database where a workspace
// lacks its Default experiment (as workspaces made before tracking did):
// the start gives it one.
func TestDefaultExperimentBackfill(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	first, err := server.New(ctx, server.Config{DataDir: dir, BootstrapKey: adminKey}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.DB().Tx(ctx, func(tx store.Querier) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM experiments WHERE experiment_id = 0`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	first.Close()
	second, err := server.New(ctx, server.Config{DataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	var n int
	second.DB().Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM experiments WHERE experiment_id = 0 AND name = 'Default'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d Default experiments after restart, want 1 (for the default workspace)", n)
	}
}
