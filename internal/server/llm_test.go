package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/llm"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// llmCred is a backend credential; llmCredPart is a part of it that no
// answer, audit record or log line may ever hold.
const (
	llmCred     = "sk-proj-NEVERSHOWN-0123456789abcdefWXYZ"
	llmCredPart = "NEVERSHOWN"
)

func ptrTo[T any](v T) *T { return &v }

// lockedBuffer collects a server's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLLMConfiguration configures the front door through the API on
// both databases: backends, models with priority groups, team limits;
// refuses bad input naming the field; keeps credentials out of every
// answer, audit record and log line; and publishes the routing table in
// the gateway snapshot within a second, with credentials only for a
// caller that has llm.credentials.read.
func TestLLMConfiguration(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			logs := &lockedBuffer{}
			cfg := server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey}
			if d == store.Postgres {
				cfg.Database = storetest.PostgresURL(t)
			}
			e := startLogged(t, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			testLLMConfiguration(t, e, logs)
		})
	}
}

func testLLMConfiguration(t *testing.T, e *env, logs *lockedBuffer) {
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() { defer close(published); e.srv.Snapshots.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-published })

	var answers []resp
	keep := func(r resp) resp { answers = append(answers, r); return r }
	admin := e.admin
	contributor := e.principal("contributor", "Contributor", "")
	reader := e.principal("reader", "Reader", "")
	wsOwner := e.principal("ws-owner", "Owner", "default")
	e.must(201, "POST", "/api/v1/workspaces", admin, map[string]any{"name": "mlops", "team": "research"})

	// Backends.
	b := keep(e.must(201, "POST", "/api/v1/llm/backends", admin, map[string]any{"name": "openai", "style": "openai",
		"base_url": "https://api.openai.com/v1", "credential": llmCred, "input_cost_per_1k": 0.0025, "output_cost_per_1k": 0.01}))
	if b.body["credential_set"] != true || b.body["credential_hint"] != "...WXYZ" || b.body["credential"] != nil {
		t.Fatalf("created backend: %s", b.raw)
	}
	keep(e.must(201, "POST", "/api/v1/llm/backends", admin, map[string]any{"name": "aoai-east", "style": "azure-openai",
		"base_url": "https://east.openai.azure.com", "api_version": "2024-06-01", "credential": llmCred + "-2", "tokens_per_minute": 300000, "region": "eastus"}))
	for _, c := range []struct {
		body        map[string]any
		field, want string
	}{
		{map[string]any{"name": "x1", "style": "bedrock", "base_url": "https://x", "credential": llmCred}, "style", `"bedrock" is not one of`},
		{map[string]any{"name": "x1", "style": "openai", "base_url": "not a url", "credential": llmCred}, "base_url", "absolute http or https URL"},
		{map[string]any{"name": "x1", "style": "azure-openai", "base_url": "https://x.openai.azure.com", "credential": llmCred}, "api_version", "needs the api-version"},
		{map[string]any{"name": "x1", "style": "endpoint", "base_url": "https://x"}, "base_url", "workspace/endpoint"},
		{map[string]any{"name": "x1", "style": "openai", "base_url": "https://x/v1", "input_cost_per_1k": -1}, "input_cost_per_1k", "not a cost"},
		{map[string]any{"name": "x1", "style": "openai", "base_url": "https://x/v1", "secret": "x"}, "secret", "unknown field"},
	} {
		r := keep(e.call("POST", "/api/v1/llm/backends", admin, c.body))
		details, _ := r.body["error"].(map[string]any)["details"].(map[string]any)
		if r.status != 400 || details["field"] != c.field || !strings.Contains(r.errMessage(), c.want) {
			t.Errorf("%v: %d %s, want 400 on %s with %q", c.body, r.status, r.raw, c.field, c.want)
		}
	}

	// Models with two priority groups, one with a '/' in its name.
	m := keep(e.must(201, "POST", "/api/v1/llm/models", admin, map[string]any{"name": "gpt-4o", "pool": []map[string]any{
		{"backend": "aoai-east", "model": "gpt-4o-ptu", "priority": 0, "weight": 3}, {"backend": "openai", "priority": 1}},
		"tokens_per_minute_per_key": 50000, "cache_ttl_ms": 300000}))
	if pool, _ := m.body["pool"].([]any); len(pool) != 2 {
		t.Fatalf("created model: %s", m.raw)
	}
	keep(e.must(201, "POST", "/api/v1/llm/models", admin, map[string]any{"name": "meta-llama/Llama-3.1-8B", "pool": []map[string]any{{"backend": "openai"}}}))
	keep(e.must(200, "GET", "/api/v1/llm/models/meta-llama%2FLlama-3.1-8B", reader, nil))
	for _, c := range []struct {
		body        map[string]any
		field, want string
	}{
		{map[string]any{"name": "m2", "pool": []map[string]any{}}, "pool", "at least one backend"},
		{map[string]any{"name": "m2", "pool": []map[string]any{{"backend": "nope"}}}, "pool[0].backend", `"nope" does not exist`},
		{map[string]any{"name": "m2", "pool": []map[string]any{{"backend": "openai", "priority": -1}}}, "pool[0].priority", "not from 0"},
		{map[string]any{"name": "m2", "pool": []map[string]any{{"backend": "openai"}}, "mirror_model": "gpt-5", "mirror_percent": 5}, "mirror_model", "does not exist"},
		{map[string]any{"name": "m2", "pool": []map[string]any{{"backend": "openai"}}, "mirror_model": "gpt-4o", "mirror_percent": 80}, "mirror_percent", "not from 0 to 50"},
	} {
		r := e.call("POST", "/api/v1/llm/models", admin, c.body)
		details, _ := r.body["error"].(map[string]any)["details"].(map[string]any)
		if r.status != 400 || details["field"] != c.field || !strings.Contains(r.errMessage(), c.want) {
			t.Errorf("%v: %d %s, want 400 on %s with %q", c.body, r.status, r.raw, c.field, c.want)
		}
	}
	if r := e.call("DELETE", "/api/v1/llm/backends/openai", admin, nil); r.status != 409 || !strings.Contains(r.errMessage(), "gpt-4o, meta-llama/Llama-3.1-8B") {
		t.Errorf("deleting a backend in use: %d %s", r.status, r.raw)
	}
	keep(e.must(200, "PATCH", "/api/v1/llm/models/gpt-4o", admin, map[string]any{"requests_per_minute_per_key": 120}))

	// Limits.
	keep(e.must(200, "PUT", "/api/v1/llm/teams/research/limits", admin, map[string]any{"tokens_per_month": 5000000, "budget_per_month": 250}))
	if r := e.call("PUT", "/api/v1/llm/teams/research/limits", admin, map[string]any{"tokens_per_day": -5}); r.status != 400 || !strings.Contains(r.errMessage(), "tokens_per_day") {
		t.Errorf("negative limit: %d %s", r.status, r.raw)
	}
	lim := keep(e.must(200, "GET", "/api/v1/llm/teams/research/limits", reader, nil))
	if lim.body["tokens_per_month"] != float64(5000000) || lim.body["budget_per_month"] != float64(250) || lim.body["team"] != "research" {
		t.Fatalf("limits: %s", lim.raw)
	}
	e.must(404, "GET", "/api/v1/llm/teams/sales/limits", reader, nil)

	// Who may do what.
	for _, path := range []string{"/api/v1/llm/backends", "/api/v1/llm/backends/openai", "/api/v1/llm/models", "/api/v1/llm/models/gpt-4o", "/api/v1/llm/teams"} {
		keep(e.must(200, "GET", path, contributor, nil))
		keep(e.must(200, "GET", path, reader, nil))
		e.must(403, "GET", path, wsOwner, nil)
	}
	e.must(403, "POST", "/api/v1/llm/backends", contributor, map[string]any{"name": "x2", "style": "openai", "base_url": "https://x/v1", "credential": llmCred})
	e.must(403, "PATCH", "/api/v1/llm/backends/openai", reader, map[string]any{"credential": llmCred})
	e.must(403, "PUT", "/api/v1/llm/teams/research/limits", contributor, map[string]any{})

	// Rotating the credential shows its new hint, never the value.
	rot := keep(e.must(200, "PATCH", "/api/v1/llm/backends/openai", admin, map[string]any{"credential": llmCred + "-rotated-ROT9"}))
	if rot.body["credential_hint"] != "...ROT9" {
		t.Fatalf("rotated: %s", rot.raw)
	}

	// The routing table reaches the snapshot within a second of a change.
	start := time.Now()
	keep(e.must(201, "POST", "/api/v1/llm/models", admin, map[string]any{"name": "gpt-4o-mini", "pool": []map[string]any{{"backend": "openai"}}}))
	var snap *gateway.Snapshot
	waitFor(t, "the new model in the snapshot", time.Second, func() bool {
		snap = e.srv.Snapshots.Current()
		return snap.LLM != nil && snap.LLM.Models["gpt-4o-mini"] != nil
	})
	t.Logf("published %s after the change", time.Since(start).Round(time.Millisecond))
	if snap.LLM.Backends["openai"].Credential != llmCred+"-rotated-ROT9" || snap.LLM.WorkspaceTeams["mlops"] != "research" ||
		snap.LLM.Teams["research"].BudgetPerMonth != 250 || len(snap.LLM.Models["gpt-4o"].Pool) != 2 {
		t.Fatalf("in-process snapshot: %+v", snap.LLM)
	}
	// Over the API: credentials for llm.credentials.read (Owner), not for
	// a Contributor who may read routes.
	full := e.must(200, "GET", "/api/v1/gateway/snapshot", admin, nil)
	if !strings.Contains(string(full.raw), `"credential":"`+llmCred+`-rotated-ROT9"`) || !strings.Contains(string(full.raw), `"gpt-4o-mini"`) {
		t.Fatalf("the Owner's snapshot lacks the credential: %s", full.raw)
	}
	stripped := keep(e.must(200, "GET", "/api/v1/gateway/snapshot", contributor, nil))
	if !strings.Contains(string(stripped.raw), `"aoai-east"`) || strings.Contains(string(stripped.raw), `"credential"`) {
		t.Fatalf("a Contributor's snapshot: %s", stripped.raw)
	}
	after := keep(e.must(200, "GET", "/api/v1/gateway/snapshot?after=0", contributor, nil))
	if strings.Contains(string(after.raw), `"credential"`) {
		t.Fatalf("a Contributor's long-polled snapshot: %s", after.raw)
	}
	if snap.LLM.Backends["openai"].Credential == "" {
		t.Fatal("stripping the snapshot for a caller changed the published one")
	}

	// Deletes.
	e.must(204, "DELETE", "/api/v1/llm/models/gpt-4o-mini", admin, nil)
	e.must(204, "DELETE", "/api/v1/llm/models/meta-llama%2FLlama-3.1-8B", admin, nil)
	e.must(204, "DELETE", "/api/v1/llm/teams/research/limits", admin, nil)
	e.must(404, "DELETE", "/api/v1/llm/teams/research/limits", admin, nil)
	waitFor(t, "the deleted model to leave the snapshot", time.Second, func() bool {
		return e.srv.Snapshots.Current().LLM.Models["gpt-4o-mini"] == nil
	})

	// Nothing ever showed a credential: not the answers, the audit log
	// (successes and refusals) or the server's log.
	for _, r := range answers {
		if strings.Contains(string(r.raw), llmCredPart) {
			t.Errorf("an API answer holds a credential: %s", r.raw)
		}
	}
	audit := e.must(200, "GET", "/api/v1/audit?page_size=1000", admin, nil)
	if strings.Contains(string(audit.raw), llmCredPart) {
		t.Errorf("the audit log holds a credential: %s", audit.raw)
	}
	for _, action := range []string{"llm.backend.create", "llm.backend.update", "llm.model.create", "llm.model.update", "llm.model.delete", "llm.limits.put", "llm.limits.delete"} {
		if !strings.Contains(string(audit.raw), `"action":"`+action+`"`) {
			t.Errorf("no audit record of %s", action)
		}
	}
	if !strings.Contains(string(audit.raw), `"credential_changed":true`) || !strings.Contains(string(audit.raw), `"result":"invalid_argument"`) ||
		!strings.Contains(string(audit.raw), `"result":"permission_denied"`) {
		t.Errorf("the audit log lacks the credential change or the refusals")
	}
	if strings.Contains(logs.String(), llmCredPart) {
		t.Errorf("the server's log holds a credential")
	}
	var stored string
	if err := e.srv.DB().Read().QueryRowContext(context.Background(), `SELECT credential FROM llm_backends WHERE name = 'openai'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stored, llmCredPart) {
		t.Fatalf("the credential is stored in clear: %q", stored)
	}
}

// TestLLMSecretKey: the server seals credentials under the key in
// PLINTH_SECRET_KEY (Config.SecretKey) or the data directory's
// secret.key, made on first start; started with another key, it still
// serves and says why the credentials cannot be used.
func TestLLMSecretKey(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	first, err := server.New(ctx, server.Config{DataDir: dir, BootstrapKey: adminKey}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "secret.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		first.Close()
		t.Fatalf("secret.key: %v %v", st, err)
	}
	_, err = first.LLM.CreateBackend(ctx, llm.BackendInput{Name: "openai", Style: ptrTo("openai"), BaseURL: ptrTo("https://api.openai.com/v1"), Credential: ptrTo(llmCred)})
	if err == nil {
		_, err = first.LLM.CreateBackend(ctx, llm.BackendInput{Name: "vllm", Style: ptrTo("openai"), BaseURL: ptrTo("http://10.0.0.7:8000/v1")})
	}
	if err == nil {
		_, err = first.LLM.CreateModel(ctx, llm.ModelInput{Name: "llama", Pool: []llm.Target{{Backend: "openai"}, {Backend: "vllm", Priority: 1}}})
	}
	first.Close()
	if err != nil {
		t.Fatal(err)
	}

	_, other, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	e2 := startLogged(t, server.Config{DataDir: dir, BootstrapKey: adminKey, SecretKey: other}, slog.New(slog.NewJSONHandler(logs, nil)))
	if !strings.Contains(logs.String(), "LLM backend credentials cannot be unsealed") || !strings.Contains(logs.String(), "sealed under a different secret key") ||
		strings.Contains(logs.String(), llmCredPart) {
		t.Fatalf("start with another key logged: %s", logs.String())
	}
	if err := e2.srv.Snapshots.Rebuild(ctx); err == nil || !strings.Contains(err.Error(), "openai") {
		t.Fatalf("Rebuild with another key: %v", err)
	}
	// The model is still served, by the backend that needs no credential.
	table := e2.srv.Snapshots.Current().LLM
	if table == nil || table.Backends["openai"] != nil || table.Backends["vllm"] == nil || table.Models["llama"] == nil {
		t.Fatalf("the routing table with another key: %+v", table)
	}
	// Endpoints still route; the answers still work.
	e2.must(200, "GET", "/api/v1/llm/backends/openai", e2.admin, nil)
}

// TestLLMUsage: LLM calls metered by the gateway are stored with their
// tokens and cost, rolled up by team, model, backend and key (endpoint
// rollups keep endpoint calls only), and reported by /api/v1/usage to
// those who may read them.
func TestLLMUsage(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "mlops", "team": "research"})
		mlReader := e.principal("ml-reader", "Reader", "mlops")
		now := time.Now().UTC()
		call := func(ws, team, model, backend, key string, status int, prompt, completion int64, cost float64, spill bool) gateway.Record {
			return gateway.Record{Time: now, Workspace: ws, Team: team, Principal: "p", KeyID: key, Status: status, Latency: 200 * time.Millisecond,
				Model: model, Backend: backend, PromptTokens: prompt, CompletionTokens: completion, Cost: cost, Spillover: spill}
		}
		batch := []gateway.Record{
			call("mlops", "research", "gpt-4o", "aoai-east", "k1", 200, 100, 50, 0.0007, false),
			call("mlops", "research", "gpt-4o", "aoai-east", "k1", 200, 200, 100, 0.0014, false),
			call("mlops", "research", "gpt-4o", "openai", "k2", 200, 1000, 500, 0.0075, true),
			call("mlops", "research", "gpt-4o", "", "k2", 429, 0, 0, 0, false),
			call("default", "", "gpt-4o-mini", "openai", "k3", 200, 10, 5, 0.00001, false),
			{Time: now, Workspace: "default", Endpoint: "fraud", Deployment: "blue", Status: 200, Latency: time.Millisecond, KeyID: "primary"},
		}
		mirror := call("mlops", "research", "gpt-4o-next", "openai", "k1", 200, 100, 50, 1, false)
		mirror.Mirrored = true
		batch = append(batch, mirror)
		if err := e.srv.Endpoints.WriteCalls(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		var calls, llmRows, epRows int
		q := e.srv.DB().Read()
		ctx := context.Background()
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM endpoint_calls WHERE model <> '' AND prompt_tokens > 0`).Scan(&calls); err != nil {
			t.Fatal(err)
		}
		q.QueryRowContext(ctx, `SELECT COUNT(*) FROM llm_usage_hourly`).Scan(&llmRows)
		q.QueryRowContext(ctx, `SELECT COUNT(*) FROM endpoint_usage_hourly`).Scan(&epRows)
		if calls != 5 || llmRows != 4 || epRows != 1 {
			t.Fatalf("stored %d LLM calls with tokens, %d LLM rollup rows, %d endpoint rollup rows; want 5, 4, 1", calls, llmRows, epRows)
		}
		var cost float64
		var spill bool
		if err := q.QueryRowContext(ctx, `SELECT cost, spillover FROM endpoint_calls WHERE key_id = 'k2' AND status = 200`).Scan(&cost, &spill); err != nil || cost != 0.0075 || !spill {
			t.Fatalf("a stored LLM call: cost %v spillover %v %v", cost, spill, err)
		}
		// The same batch again adds up.
		if err := e.srv.Endpoints.WriteCalls(ctx, batch[:1]); err != nil {
			t.Fatal(err)
		}

		rows := func(r resp) map[string]map[string]any {
			out := map[string]map[string]any{}
			list, _ := r.body["rows"].([]any)
			for _, x := range list {
				m := x.(map[string]any)
				out[m["kind"].(string)+":"+m["key"].(string)] = m
			}
			return out
		}
		byModel := rows(e.must(200, "GET", "/api/v1/usage?by=model&since=1h", e.admin, nil))
		g := byModel["llm:gpt-4o"]
		if len(byModel) != 2 || g == nil || g["requests"] != float64(5) || g["errors"] != float64(1) || g["prompt_tokens"] != float64(1400) ||
			g["completion_tokens"] != float64(700) || g["spillovers"] != float64(1) || g["mean_latency_ms"] != float64(200) {
			t.Fatalf("by model: %v", byModel)
		}
		if c := g["cost"].(float64); c < 0.01029 || c > 0.01031 {
			t.Fatalf("gpt-4o cost %v, want 0.0103", c)
		}
		byTeam := rows(e.must(200, "GET", "/api/v1/usage?by=team&since=1h", e.admin, nil))
		if byTeam["llm:research"]["requests"] != float64(5) || byTeam["llm:"]["requests"] != float64(1) || byTeam["endpoint:"]["requests"] != float64(1) {
			t.Fatalf("by team: %v", byTeam)
		}
		byBackend := rows(e.must(200, "GET", "/api/v1/usage?by=backend&model=gpt-4o&since=1h", e.admin, nil))
		if len(byBackend) != 3 || byBackend["llm:aoai-east"]["requests"] != float64(3) || byBackend["llm:openai"]["prompt_tokens"] != float64(1000) {
			t.Fatalf("by backend of gpt-4o: %v", byBackend)
		}
		byKey := rows(e.must(200, "GET", "/api/v1/usage?by=key&since=1h", e.admin, nil))
		if byKey["llm:k2"]["requests"] != float64(2) || byKey["llm:k3"] == nil {
			t.Fatalf("by key: %v", byKey)
		}
		byDeployment := rows(e.must(200, "GET", "/api/v1/usage?by=deployment&since=1h", e.admin, nil))
		if len(byDeployment) != 1 || byDeployment["endpoint:default/fraud/blue"] == nil {
			t.Fatalf("by deployment: %v", byDeployment)
		}
		// A reader of workspace ml sees ml's calls only.
		mine := rows(e.must(200, "GET", "/api/v1/usage?by=model&since=1h", mlReader, nil))
		if len(mine) != 1 || mine["llm:gpt-4o"] == nil {
			t.Fatalf("a workspace reader's usage: %v", mine)
		}
		for _, bad := range []string{"by=color", "by=deployment&model=gpt-4o", "since=forever"} {
			if r := e.call("GET", "/api/v1/usage?"+bad, e.admin, nil); r.status != 400 {
				t.Errorf("usage?%s: %d %s", bad, r.status, r.raw)
			}
		}
	})
}
