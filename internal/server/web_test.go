package server_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking"
)

// uiClient is a signed-in UI user over plain HTTP: a cookie jar and the
// CSRF token of its session.
type uiClient struct {
	t    testing.TB
	e    *env
	c    *http.Client
	csrf string
}

var csrfRE = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)

func signIn(t testing.TB, e *env, key string) *uiClient {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	b := &uiClient{t: t, e: e, c: &http.Client{Jar: jar}}
	res, err := b.c.PostForm(e.url+"/ui/login", url.Values{"key": {key}, "next": {"/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(res.Request.URL.Path, "/ui/w/") {
		t.Fatalf("sign-in: %d at %s: %s", res.StatusCode, res.Request.URL, body)
	}
	m := csrfRE.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the page after sign-in: %s", body)
	}
	b.csrf = string(m[1])
	return b
}

func (b *uiClient) get(path string) (int, string, http.Header) {
	b.t.Helper()
	res, err := b.c.Get(b.e.url + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body), res.Header
}

func (b *uiClient) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	res, err := b.c.PostForm(b.e.url+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// logRuns makes n runs in the Default experiment, each with a loss curve
// of steps points and a learning-rate param.
func logRuns(t testing.TB, e *env, n, steps int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		r := e.must(200, "POST", "/api/2.0/mlflow/runs/create", e.admin, map[string]any{"experiment_id": "0", "run_name": fmt.Sprintf("run-%d", i)})
		id := r.body["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
		var metrics []map[string]any
		for s := range steps {
			metrics = append(metrics, map[string]any{"key": "loss", "value": 1.0/float64(s+1) + float64(i)/10, "timestamp": 1700000000000 + int64(s)*1000, "step": s})
		}
		e.must(200, "POST", "/api/2.0/mlflow/runs/log-batch", e.admin, map[string]any{"run_id": id, "metrics": metrics,
			"params": []map[string]any{{"key": "lr", "value": fmt.Sprint(0.1 * float64(i+1))}, {"key": "layers", "value": "3"}}})
		ids = append(ids, id)
	}
	return ids
}

// TestWebPagesAndRules signs in over plain HTTP and checks what every
// page must do without a browser: render, carry the security headers,
// refuse forms without the CSRF token, show a bad filter's position,
// hide and refuse what a Reader may not do.
func TestWebPagesAndRules(t *testing.T) {
	e := start(t, store.SQLite)
	ids := logRuns(t, e, 3, 20)
	e.must(201, "POST", "/api/v1/workspaces/default/computes", e.admin, map[string]any{"name": "nb", "type": "instance", "size": "local-cpu-small"})
	t.Cleanup(func() { e.call("POST", "/api/v1/workspaces/default/computes/nb/stop", e.admin, nil) })

	// Unauthenticated: the root goes to the UI, the UI to sign-in.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noFollow.Get(e.url + "/")
	if err != nil || res.StatusCode != 302 || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /: %v %v", err, res)
	}
	res, _ = noFollow.Get(e.url + "/ui/w/default/experiments")
	if res.StatusCode != 303 || !strings.HasPrefix(res.Header.Get("Location"), "/ui/login?next=") {
		t.Fatalf("anonymous page: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	if res, err := http.PostForm(e.url+"/ui/login", url.Values{"key": {"plk_nope"}}); err != nil || res.StatusCode != 401 || strings.Contains(res.Header.Get("Set-Cookie"), "plinth_session") {
		t.Fatalf("bad key: %v %v", err, res)
	}

	admin := signIn(t, e, e.admin)
	for _, p := range []string{"/ui/w/default/experiments", "/ui/w/default/experiments/0", "/ui/w/default/runs/" + ids[0],
		"/ui/w/default/compare?run=" + ids[0] + "&run=" + ids[1], "/ui/w/default/jobs", "/ui/w/default/compute", "/ui/w/default/models",
		"/ui/w/default/data", "/ui/w/default/endpoints", "/ui/usage", "/ui/w/default/audit", "/ui/w/default/audit?verify=1",
		"/ui/w/default/lineage?node=run:" + ids[0]} {
		code, body, hdr := admin.get(p)
		if code != 200 {
			t.Errorf("%s: %d %s", p, code, body)
			continue
		}
		csp := hdr.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(body, "<script>") ||
			strings.Contains(body, " style=") {
			t.Errorf("%s: CSP %q or inline script/style in the page", p, csp)
		}
		if strings.Contains(body, adminKey) {
			t.Errorf("%s shows the API key", p)
		}
	}
	if _, body, _ := admin.get("/ui/w/default/audit?verify=1"); !strings.Contains(body, "Chain intact") {
		t.Errorf("audit verification not shown: %s", body)
	}
	// The session cookie is HttpOnly and SameSite, and holds no key in clear.
	res, err = noFollow.PostForm(e.url+"/ui/login", url.Values{"key": {e.admin}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	ck := res.Header.Get("Set-Cookie")
	if !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=") || strings.Contains(ck, "plk_") {
		t.Errorf("session cookie: %s", ck)
	}

	// A bad filter shows where it went wrong.
	code, body, _ := admin.get("/ui/w/default/experiments/0?filter=" + url.QueryEscape("metrics.loss < 'abc"))
	if code != 400 || !strings.Contains(body, "filter-error") || !strings.Contains(body, "position") {
		t.Errorf("bad filter: %d %s", code, body)
	}
	// Sorting and chosen columns.
	code, body, _ = admin.get("/ui/w/default/experiments/0?cols=metrics.loss,params.lr&order_by=" + url.QueryEscape("metrics.loss DESC"))
	if code != 200 || strings.Index(body, "run-2") > strings.Index(body, "run-0") || !strings.Contains(body, `aria-sort="descending"`) {
		t.Errorf("sorted runs table: %d", code)
	}
	// Run metrics as chart data.
	code, body, _ = admin.get("/ui/w/default/runs/" + ids[0] + "/metric?key=loss")
	if code != 200 || !strings.Contains(body, `"label":"loss"`) {
		t.Errorf("metric JSON: %d %s", code, body)
	}

	// Forms need the session's CSRF token.
	if code, _ := admin.post("/ui/w/default/compute/nb/stop", url.Values{}); code != 403 {
		t.Errorf("stop without CSRF token: %d", code)
	}
	show := e.must(200, "GET", "/api/v1/workspaces/default/computes/nb", e.admin, nil)
	if show.body["state"] != "Running" {
		t.Fatalf("refused stop stopped it: %s", show.raw)
	}

	// A Reader sees no Stop button, and is refused anyway.
	reader := signIn(t, e, e.principal("rita", "Reader", "default"))
	if _, body, _ := reader.get("/ui/w/default/compute"); strings.Contains(body, ">Stop<") || !strings.Contains(body, "nb") {
		t.Errorf("reader's compute page: %s", body)
	}
	if code, body := reader.post("/ui/w/default/compute/nb/stop", url.Values{"csrf_token": {reader.csrf}}); code != 403 || !strings.Contains(body, "compute.operate") {
		t.Errorf("reader stopping: %d %s", code, body)
	}
	if code, _, _ := reader.get("/ui/w/default/audit"); code != 403 {
		t.Errorf("reader's audit page: %d", code)
	}
	audit := e.must(200, "GET", "/api/v1/audit?action=compute.stop&result=permission_denied", e.admin, nil)
	if !strings.Contains(string(audit.raw), "rita") {
		t.Errorf("refused UI action not audited: %s", audit.raw)
	}
	// Signing out ends the session.
	if code, _ := reader.post("/ui/logout", url.Values{"csrf_token": {reader.csrf}}); code != 200 {
		t.Errorf("sign out: %d", code)
	}
	if _, _, hdr := reader.get("/ui/w/default/compute"); hdr.Get("Content-Security-Policy") == "" {
		t.Errorf("no headers on the sign-in page")
	}
	code, body, _ = reader.get("/ui/w/default/compute")
	if code != 200 || !strings.Contains(body, `name="key"`) {
		t.Errorf("after sign-out: %d", code)
	}

	// Static files are versioned and cached for long.
	m := regexp.MustCompile(`/ui/static/[0-9a-f]+/app\.js`).FindString(body)
	if m == "" {
		t.Fatalf("no versioned app.js in %s", body)
	}
	if code, _, hdr := admin.get(m); code != 200 || !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
		t.Errorf("static file: %d %v", code, hdr)
	}

	// The usage CSV.
	code, body, hdr := admin.get("/ui/usage.csv?by=workspace&since=7d")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("usage CSV: %d %v", code, hdr)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(rows) == 0 || rows[0][1] != "workspace" {
		t.Errorf("usage CSV: %v %q", err, body)
	}
}

// requireChromium returns the Chromium binary or skips (fails under
// PLINTH_TEST_REQUIRE_ALL=1).
func requireChromium(t *testing.T) string {
	const bin = "/usr/bin/chromium"
	if _, err := os.Stat(bin); err != nil {
		if _, err := exec.LookPath("chromium"); err != nil {
			requireOrSkip(t, "Chromium is not installed at /usr/bin/chromium (Debian: apt-get install chromium)")
		}
	}
	return bin
}

// BenchmarkWebPages measures the UI's pages, server time over real HTTP
// with a session, in a workspace with 10,000 runs (each with a metric
// history of 10 points, 3 metrics and 3 params): the runs table pages
// (50 runs a page) rather than rendering them all.
func BenchmarkWebPages(b *testing.B) {
	e := start(b, store.SQLite)
	ctx := context.Background()
	w, err := e.srv.Workspaces.Lookup(ctx, "default")
	if err != nil {
		b.Fatal(err)
	}
	sc := tracking.Scope{WorkspaceID: w.ID, Workspace: w.Name}
	var ids []string
	for i := range 10000 {
		run, err := e.srv.Tracking.CreateRun(ctx, sc, tracking.CreateRunInput{ExperimentID: "0", RunName: fmt.Sprintf("run-%05d", i), UserID: "admin"})
		if err != nil {
			b.Fatal(err)
		}
		var batch tracking.Batch
		for s := range 10 {
			batch.Metrics = append(batch.Metrics, tracking.Metric{Key: "loss", Value: 1 / float64(s+1+i%7), Timestamp: 1700000000000 + int64(s), Step: int64(s)})
		}
		batch.Metrics = append(batch.Metrics, tracking.Metric{Key: "acc", Value: float64(i%100) / 100, Timestamp: 1700000000000}, tracking.Metric{Key: "f1", Value: 0.5, Timestamp: 1700000000000})
		batch.Params = []tracking.Param{{Key: "lr", Value: fmt.Sprint(i % 10)}, {Key: "layers", Value: "3"}, {Key: "seed", Value: fmt.Sprint(i)}}
		if err := e.srv.Tracking.LogBatch(ctx, sc, run.Info.RunID, batch, "run.log-batch"); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, run.Info.RunID)
	}
	// The LLM pages read a month of hourly usage: 200 hours of 10 keys'
	// calls to one model through two backends.
	e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "mlops", "team": "research"})
	for _, name := range []string{"ptu", "paygo"} {
		e.must(201, "POST", "/api/v1/llm/backends", e.admin, map[string]any{"name": name, "style": "openai", "base_url": "http://127.0.0.1:9/v1", "credential": "sk-bench-credential-0123456789"})
	}
	e.must(201, "POST", "/api/v1/llm/models", e.admin, map[string]any{"name": "gpt-4o", "pool": []map[string]any{{"backend": "ptu"}, {"backend": "paygo", "priority": 1}}})
	e.must(200, "PUT", "/api/v1/llm/teams/research/limits", e.admin, map[string]any{"tokens_per_month": 5000000, "budget_per_month": 500})
	var calls []gateway.Record
	for h := range 200 {
		for k := range 10 {
			calls = append(calls, gateway.Record{Time: time.Now().Add(-time.Duration(h) * time.Hour), Workspace: "mlops", Team: "research", KeyID: fmt.Sprint("k", k),
				Status: 200, Latency: time.Millisecond, Model: "gpt-4o", Backend: []string{"ptu", "paygo"}[k%2], PromptTokens: 100, CompletionTokens: 50, Cost: 0.01})
		}
	}
	if err := e.srv.Endpoints.WriteCalls(ctx, calls); err != nil {
		b.Fatal(err)
	}
	c := signIn(b, e, e.admin)
	for _, bc := range []struct{ name, path string }{
		{"experiments", "/ui/w/default/experiments"},
		{"runs", "/ui/w/default/experiments/0"},
		{"runs_sorted_by_metric", "/ui/w/default/experiments/0?order_by=" + url.QueryEscape("metrics.acc DESC") + "&cols=metrics.acc,metrics.loss,params.lr"},
		{"runs_filtered", "/ui/w/default/experiments/0?filter=" + url.QueryEscape("metrics.acc > 0.5 and params.lr = '3'")},
		{"run", "/ui/w/default/runs/" + ids[5000]},
		{"run_metric_json", "/ui/w/default/runs/" + ids[5000] + "/metric?key=loss"},
		{"compare", "/ui/w/default/compare?run=" + strings.Join(ids[:10], "&run=")},
		{"compare_metric_json", "/ui/w/default/compare/metric?key=loss&run=" + strings.Join(ids[:10], "&run=")},
		{"usage", "/ui/usage"},
		{"audit", "/ui/w/default/audit"},
		{"llm_models", "/ui/llm/models"},
		{"llm_model", "/ui/llm/models/gpt-4o?since=30d"},
		{"llm_model_usage_json", "/ui/llm/models/gpt-4o/usage?metric=tokens&since=30d"},
		{"llm_backends", "/ui/llm/backends"},
		{"llm_teams", "/ui/llm/teams"},
		{"access_keys", "/ui/access/keys"},
		{"access_principals", "/ui/access/principals"},
		{"access_roles", "/ui/w/default/access"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if code, body, _ := c.get(bc.path); code != 200 {
					b.Fatalf("%s: %d %s", bc.path, code, body)
				}
			}
		})
	}
}

var newKeyRE = regexp.MustCompile(`<code class="secret" id="new-key">([^<]+)</code>`)

// TestWebLLMAndAccess covers the LLM gateway and access pages over plain
// HTTP: they render; changes go through the services (audited) with the
// API's permissions; a Reader sees them read-only and is refused (and
// audited) when it tries; credentials and key secrets never appear in a
// page after the answer that created them.
func TestWebLLMAndAccess(t *testing.T) {
	e := start(t, store.SQLite)
	const credential = "sk-upstream-credential-0123456789-Q7ZX"
	e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "mlops", "team": "research"})
	admin := signIn(t, e, e.admin)

	// A backend made in the UI: the credential is write-only.
	form := url.Values{"name": {"openai"}, "style": {"openai"}, "base_url": {"http://127.0.0.1:9/v1"}, "credential": {credential},
		"requests_per_minute": {"600"}, "tokens_per_minute": {"90000"}, "input_cost_per_1k": {"0.5"}, "output_cost_per_1k": {"1.5"}}
	if code, _ := admin.post("/ui/llm/backends", form); code != 403 {
		t.Errorf("backend without CSRF token: %d", code)
	}
	bad := url.Values{"csrf_token": {admin.csrf}}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("base_url", "not a url")
	code, body := admin.post("/ui/llm/backends", bad)
	if code != 400 || !strings.Contains(body, "base_url") || strings.Contains(body, credential) || strings.Contains(body, "Q7ZX") {
		t.Errorf("refused backend: %d (echoes the credential: %v) %s", code, strings.Contains(body, "Q7ZX"), body)
	}
	form.Set("csrf_token", admin.csrf)
	if code, body := admin.post("/ui/llm/backends", form); code != 200 || !strings.Contains(body, "Backend openai created") {
		t.Fatalf("creating a backend: %d %s", code, body)
	}
	b := e.must(200, "GET", "/api/v1/llm/backends/openai", e.admin, nil)
	if b.body["credential_set"] != true || b.body["requests_per_minute"] != float64(600) {
		t.Fatalf("backend made in the UI: %s", b.raw)
	}
	e.must(201, "POST", "/api/v1/llm/backends", e.admin, map[string]any{"name": "vllm", "style": "openai", "base_url": "http://127.0.0.1:9/v1"})
	e.must(201, "POST", "/api/v1/llm/models", e.admin, map[string]any{"name": "gpt-4o", "cache_ttl_ms": 60000,
		"pool": []map[string]any{{"backend": "vllm", "priority": 0, "weight": 3}, {"backend": "openai", "priority": 1}}})
	e.must(201, "POST", "/api/v1/llm/models", e.admin, map[string]any{"name": "idle", "pool": []map[string]any{{"backend": "vllm"}}})
	e.must(200, "PUT", "/api/v1/llm/teams/research/limits", e.admin, map[string]any{"tokens_per_month": 5000000})
	now := time.Now().UTC()
	if err := e.srv.Endpoints.WriteCalls(context.Background(), []gateway.Record{
		{Time: now, Workspace: "mlops", Team: "research", Principal: "p", KeyID: "k1", Status: 200, Latency: time.Millisecond,
			Model: "gpt-4o", Backend: "vllm", PromptTokens: 100, CompletionTokens: 50, Cost: 0.25},
		{Time: now, Workspace: "mlops", Team: "research", Principal: "p", KeyID: "k1", Status: 200, Latency: time.Millisecond,
			Model: "gpt-4o", Backend: "openai", PromptTokens: 1000, CompletionTokens: 500, Cost: 1.5, Spillover: true},
	}); err != nil {
		t.Fatal(err)
	}

	pages := []string{"/ui/llm/models", "/ui/llm/models/gpt-4o", "/ui/llm/models/gpt-4o?by=team&since=24h", "/ui/llm/models/idle", "/ui/llm/backends", "/ui/llm/teams",
		"/ui/access/keys", "/ui/access/principals", "/ui/w/default/access", "/ui/w/default/audit", "/ui/usage?by=model"}
	for _, p := range pages {
		code, body, hdr := admin.get(p)
		if code != 200 || hdr.Get("Cache-Control") != "no-store" || strings.Contains(body, " style=") || strings.Contains(body, "<script>") {
			t.Errorf("%s: %d %s", p, code, body)
		}
		if strings.Contains(body, credential) || strings.Contains(body, "Q7ZX") {
			t.Errorf("%s shows the backend's credential", p)
		}
	}
	_, body, _ = admin.get("/ui/llm/backends")
	if !strings.Contains(body, `<td>set</td>`) || !strings.Contains(body, "not set") || !strings.Contains(body, "closed") && !strings.Contains(body, "—") {
		t.Errorf("backends page: %s", body)
	}
	_, body, _ = admin.get("/ui/llm/models/gpt-4o")
	if !strings.Contains(body, `name="weight.0" value="3"`) || !strings.Contains(body, "60000 ms") || !strings.Contains(body, "1000 / 500") {
		t.Errorf("model page: %s", body)
	}
	code, body, _ = admin.get("/ui/llm/models/gpt-4o/usage?metric=tokens&by=backend&since=24h")
	if code != 200 || !strings.Contains(body, `"label":"openai"`) || !strings.Contains(body, `"label":"vllm"`) {
		t.Errorf("model usage series: %d %s", code, body)
	}
	_, body, _ = admin.get("/ui/llm/teams")
	if !strings.Contains(body, `id="team-research"`) || !strings.Contains(body, "used 1650") || !strings.Contains(body, "spent 1.7500") {
		t.Errorf("teams page: %s", body)
	}

	// A pool member's weight and a team's limits, changed here, are what
	// the API shows after, audited as the API's changes are.
	_, body, _ = admin.get("/ui/llm/models/gpt-4o")
	version := regexp.MustCompile(`name="version" value="(\d+)"`).FindStringSubmatch(body)
	if version == nil {
		t.Fatalf("no version on the model page")
	}
	poolForm := url.Values{"csrf_token": {admin.csrf}, "version": {version[1]}, "backend.0": {"vllm"}, "backend.1": {"openai"},
		"weight.0": {"5"}, "priority.0": {"0"}, "weight.1": {"2"}, "priority.1": {"1"}}
	if code, body := admin.post("/ui/llm/models/gpt-4o/pool", poolForm); code != 200 || !strings.Contains(body, "Pool saved") {
		t.Fatalf("saving the pool: %d %s", code, body)
	}
	m := e.must(200, "GET", "/api/v1/llm/models/gpt-4o", e.admin, nil)
	pool := m.body["pool"].([]any)
	if pool[0].(map[string]any)["weight"] != float64(5) || pool[1].(map[string]any)["weight"] != float64(2) {
		t.Fatalf("pool after the UI's change: %s", m.raw)
	}
	if code, body := admin.post("/ui/llm/models/gpt-4o/pool", poolForm); code != 400 || !strings.Contains(body, "changed since this page was loaded") {
		t.Errorf("a stale pool form: %d", code)
	}
	if code, body := admin.post("/ui/llm/teams/research/limits", url.Values{"csrf_token": {admin.csrf}, "requests_per_minute": {"7"},
		"tokens_per_month": {"5000000"}, "budget_per_month": {"12.5"}}); code != 200 || !strings.Contains(body, "Limits of team research saved") {
		t.Fatalf("saving limits: %d %s", code, body)
	}
	lim := e.must(200, "GET", "/api/v1/llm/teams/research/limits", e.admin, nil)
	if lim.body["requests_per_minute"] != float64(7) || lim.body["budget_per_month"] != 12.5 || lim.body["tokens_per_day"] != float64(0) {
		t.Fatalf("limits after the UI's change: %s", lim.raw)
	}
	if code, body := admin.post("/ui/llm/teams", url.Values{"csrf_token": {admin.csrf}, "team": {"sales"}, "tokens_per_day": {"-1"}}); code != 400 || !strings.Contains(body, "tokens_per_day") {
		t.Errorf("negative limit: %d %s", code, body)
	}
	for _, action := range []string{"llm.backend.create", "llm.model.update", "llm.limits.put"} {
		a := e.must(200, "GET", "/api/v1/audit?action="+action+"&result=success", e.admin, nil)
		if !strings.Contains(string(a.raw), `"principal":"admin"`) || strings.Contains(string(a.raw), "Q7ZX") {
			t.Errorf("%s not audited (or with the credential): %s", action, a.raw)
		}
	}
	if a := e.must(200, "GET", "/api/v1/audit?action=llm.limits.put&result=invalid_argument", e.admin, nil); !strings.Contains(string(a.raw), "tokens_per_day") {
		t.Errorf("refused limits not audited: %s", a.raw)
	}

	// A platform Reader sees the LLM pages read-only and is refused changes.
	pat := signIn(t, e, e.principal("pat", "Reader", ""))
	for _, p := range []string{"/ui/llm/models/gpt-4o", "/ui/llm/backends", "/ui/llm/teams", "/ui/access/principals"} {
		code, body, _ := pat.get(p)
		if code != 200 || strings.Contains(body, `name="weight.0"`) || strings.Contains(body, `id="backend-form"`) || strings.Contains(body, ">Save<") ||
			strings.Contains(body, "Q7ZX") {
			t.Errorf("reader's %s: %d %s", p, code, body)
		}
	}
	if code, body := pat.post("/ui/llm/teams/research/limits", url.Values{"csrf_token": {pat.csrf}, "requests_per_minute": {"100000"}}); code != 403 || !strings.Contains(body, "llm.write") {
		t.Errorf("reader setting limits: %d %s", code, body)
	}
	if code, _ := pat.post("/ui/llm/models/gpt-4o/pool", url.Values{"csrf_token": {pat.csrf}}); code != 403 {
		t.Errorf("reader changing a pool: %d", code)
	}
	if a := e.must(200, "GET", "/api/v1/audit?action=llm.limits.put&result=permission_denied", e.admin, nil); !strings.Contains(string(a.raw), `"principal":"pat"`) {
		t.Errorf("refused UI limits change not audited: %s", a.raw)
	}
	// A workspace Reader holds no platform permission: refused as the API
	// refuses it.
	ritaKey := e.principal("rita", "Reader", "default")
	rita := signIn(t, e, ritaKey)
	for p, api := range map[string]string{"/ui/llm/models": "/api/v1/llm/models", "/ui/llm/teams": "/api/v1/llm/teams",
		"/ui/access/principals": "/api/v1/principals", "/ui/access/keys?principal=admin": "/api/v1/keys?principal=admin"} {
		if code, _, _ := rita.get(p); code != 403 {
			t.Errorf("workspace reader's %s: %d", p, code)
		}
		if r := e.call("GET", api, ritaKey, nil); r.status != 403 {
			t.Errorf("the API answers a workspace reader's %s with %d, the UI with 403", api, r.status)
		}
	}
	if code, body, _ := rita.get("/ui/w/default/access"); code != 200 || strings.Contains(body, ">Remove<") || !strings.Contains(body, "rita") {
		t.Errorf("workspace reader's roles page: %d %s", code, body)
	}
	if code, body := rita.post("/ui/w/default/access/roles", url.Values{"csrf_token": {rita.csrf}, "principal": {"rita"}, "role": {"Owner"}}); code != 403 || !strings.Contains(body, "roles.write") {
		t.Errorf("reader granting itself Owner: %d", code)
	}

	// Keys: made here, the secret is in this answer only.
	if code, _ := admin.post("/ui/access/keys", url.Values{"name": {"ui-key"}}); code != 403 {
		t.Errorf("key without CSRF token: %d", code)
	}
	code, body = admin.post("/ui/access/keys", url.Values{"csrf_token": {admin.csrf}, "name": {"ui-key"}, "workspace": {"mlops"}, "expires": {"30d"}})
	sm := newKeyRE.FindStringSubmatch(body)
	if code != 201 || sm == nil {
		t.Fatalf("creating a key: %d %s", code, body)
	}
	secret := sm[1]
	who := e.must(200, "GET", "/api/v1/whoami", secret, nil)
	if who.body["principal"] != "admin" || who.body["key_workspace"] != "mlops" {
		t.Fatalf("the new key: %s", who.raw)
	}
	keys := e.must(200, "GET", "/api/v1/keys", e.admin, nil)
	var keyID, prefix string
	for _, k := range keys.body["keys"].([]any) {
		if km := k.(map[string]any); km["name"] == "ui-key" {
			keyID, prefix = km["id"].(string), km["prefix"].(string)
			if km["expires_at"] == nil {
				t.Errorf("the key has no expiry: %v", km)
			}
		}
	}
	for _, p := range append(pages, "/ui/access/keys?principal=admin", "/ui/w/mlops/audit", "/ui/usage?by=key") {
		_, body, _ := admin.get(p)
		if strings.Contains(body, secret) || strings.Contains(body, credential) {
			t.Errorf("%s shows a secret after its creation", p)
		}
	}
	_, body, _ = admin.get("/ui/access/keys")
	if !strings.Contains(body, prefix) || !strings.Contains(body, "this session") {
		t.Errorf("keys page: %s", body)
	}
	// Another principal's keys: a Reader may not list or revoke them (not
	// found, as the API answers, and audited).
	if code, _ := rita.post("/ui/access/keys/"+keyID+"/revoke", url.Values{"csrf_token": {rita.csrf}}); code != 404 {
		t.Errorf("reader revoking admin's key: %d", code)
	}
	if a := e.must(200, "GET", "/api/v1/audit?action=key.revoke&result=not_found", e.admin, nil); !strings.Contains(string(a.raw), `"principal":"rita"`) {
		t.Errorf("refused revoke not audited: %s", a.raw)
	}
	if code, _ := rita.post("/ui/access/keys", url.Values{"csrf_token": {rita.csrf}, "name": {"x"}, "principal": {"admin"}}); code != 403 {
		t.Errorf("reader making a key for admin: %d", code)
	}
	if code, body := admin.post("/ui/access/keys/"+keyID+"/revoke", url.Values{"csrf_token": {admin.csrf}}); code != 200 || !strings.Contains(body, "Key ui-key revoked") {
		t.Fatalf("revoking: %d %s", code, body)
	}
	waitFor(t, "the revoked key to stop working", 5*time.Second, func() bool {
		return e.call("GET", "/api/v1/whoami", secret, nil).status == 401
	})
}
