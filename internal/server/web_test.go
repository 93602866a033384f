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
