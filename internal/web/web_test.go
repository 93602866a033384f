package web

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/fault"
	"github.com/plinth-dev/plinth/internal/registry"
	"github.com/plinth-dev/plinth/internal/secret"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/tracking/search"
	"github.com/plinth-dev/plinth/internal/workspace"
)

func testSessions(t *testing.T, now *time.Time) *sessions {
	t.Helper()
	k, _, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return newSessions(k, func() time.Time { return *now })
}

// cookieOf makes a session and returns the request that carries it.
func cookieOf(t *testing.T, s *sessions, key string) *http.Request {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.create(rec, httptest.NewRequest("POST", "/ui/login", nil), key); err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/ui/", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	return req
}

func TestSessionCookie(t *testing.T) {
	now := time.Now()
	s := testSessions(t, &now)
	req := cookieOf(t, s, "plk_secret-key")
	c, _ := req.Cookie(cookieName)
	if strings.Contains(c.Value, "plk_") {
		t.Fatalf("the cookie holds the key in clear: %s", c.Value)
	}
	sess, err := s.read(req)
	if err != nil || sess.Key != "plk_secret-key" || sess.CSRF == "" {
		t.Fatalf("read: %+v %v", sess, err)
	}

	// A changed cookie, another server's key, or an expired one: no session.
	bad := httptest.NewRequest("GET", "/ui/", nil)
	bad.AddCookie(&http.Cookie{Name: cookieName, Value: c.Value[:len(c.Value)-4] + "AAAA"})
	if _, err := s.read(bad); err == nil {
		t.Error("a tampered cookie was accepted")
	}
	if _, err := testSessions(t, &now).read(req); err == nil {
		t.Error("a cookie sealed under another key was accepted")
	}
	later := now.Add(SessionTTL + time.Second)
	if _, err := (&sessions{key: s.key, now: func() time.Time { return later }, signedOf: map[string]time.Time{}}).read(req); err == nil {
		t.Error("an expired session was accepted")
	}

	// Signing out ends it here even if the browser keeps the cookie.
	s.end(httptest.NewRecorder(), req, sess)
	if _, err := s.read(req); err == nil {
		t.Error("a signed-out session was accepted")
	}
}

func TestCSRF(t *testing.T) {
	now := time.Now()
	s := testSessions(t, &now)
	sess, _ := s.read(cookieOf(t, s, "plk_k"))
	post := func(form url.Values, hdr map[string]string) bool {
		r := httptest.NewRequest("POST", "http://plinth.test/ui/w/x/compute/nb/stop", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		return s.checkCSRF(r, sess)
	}
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  map[string]string
		ok   bool
	}{
		{"form token", url.Values{csrfField: {sess.CSRF}}, nil, true},
		{"htmx header", nil, map[string]string{csrfHeader: sess.CSRF}, true},
		{"no token", nil, nil, false},
		{"wrong token", url.Values{csrfField: {"nope"}}, nil, false},
		{"same origin", url.Values{csrfField: {sess.CSRF}}, map[string]string{"Origin": "http://plinth.test", "Sec-Fetch-Site": "same-origin"}, true},
		{"other origin", url.Values{csrfField: {sess.CSRF}}, map[string]string{"Origin": "http://evil.test"}, false},
		{"cross-site fetch", url.Values{csrfField: {sess.CSRF}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
	} {
		if got := post(tc.form, tc.hdr); got != tc.ok {
			t.Errorf("%s: accepted=%v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestLocalNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/w/a/runs/1": "/ui/w/a/runs/1", "": "/ui/", "https://evil.test/": "/ui/", "//evil.test/ui/": "/ui/",
		"/api/v1/keys": "/ui/", "/ui/\\evil": "/ui/",
	} {
		if got := localNext(in); got != want {
			t.Errorf("localNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPagesParseAndStaticFiles(t *testing.T) {
	p := mustParsePages()
	for _, name := range []string{"login", "error", "home", "experiments", "runs", "run", "compare", "endpoints", "endpoint", "jobs", "job",
		"compute", "models", "model", "data", "lineage", "audit", "usage"} {
		if p.full[name] == nil {
			t.Errorf("no page %s", name)
		}
	}
	for _, f := range []string{"app.js", "app.css", "vendor/htmx-2.0.11.min.js", "vendor/uPlot-1.6.32.iife.min.js", "vendor/uPlot-1.6.32.min.css",
		"vendor/htmx.LICENSE", "vendor/uPlot.LICENSE"} {
		u := staticURL(f)
		rec := httptest.NewRecorder()
		serveStatic(rec, httptest.NewRequest("GET", u, nil))
		if rec.Code != 200 || !strings.Contains(rec.Header().Get("Cache-Control"), "immutable") {
			t.Errorf("%s: %d %v", u, rec.Code, rec.Header())
		}
	}
	rec := httptest.NewRecorder()
	serveStatic(rec, httptest.NewRequest("GET", "/ui/static/0000/app.js", nil))
	if rec.Code != 200 || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("stale version: %d %v", rec.Code, rec.Header())
	}
}

func TestLineageSVG(t *testing.T) {
	q := &req{WS: workspace.Workspace{Name: "a"}}
	g := registry.Graph{Root: "model:m:1", Nodes: []registry.Node{
		{ID: "model:m:1", Kind: "model", Label: "m v1"},
		{ID: "run:r1", Kind: "run", Label: "<script>x</script>"},
		{ID: "data:d:1", Kind: "data", Label: "d 1"},
		{ID: "deployment:e/blue", Kind: "deployment", Label: "e/blue"},
	}, Edges: []registry.Edge{{From: "data:d:1", To: "run:r1", Kind: "input"}, {From: "run:r1", To: "model:m:1", Kind: "produced"},
		{From: "model:m:1", To: "deployment:e/blue", Kind: "deployed"}}}
	svg := string(lineageSVG(q, g))
	if strings.Contains(svg, "<script>") || strings.Count(svg, "<path") != 3 || strings.Count(svg, "<rect") != 4 {
		t.Fatalf("svg: %s", svg)
	}
	// Layers run left to right: data, run, model, deployment.
	x := func(id string) int {
		i := strings.Index(svg, "<title>"+id+"</title>")
		j := strings.LastIndex(svg[:i], `x="`)
		var n int
		for _, c := range svg[j+3:] {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	if !(x("data:d:1") < x("run:r1") && x("run:r1") < x("model:m:1") && x("model:m:1") < x("deployment:e/blue")) {
		t.Fatalf("layers out of order: %s", svg)
	}
	if !strings.Contains(svg, `href="/ui/w/a/runs/r1"`) || !strings.Contains(svg, `href="/ui/w/a/models/m"`) {
		t.Fatalf("links: %s", svg)
	}
}

func TestFilterErrorMarksPosition(t *testing.T) {
	_, err := search.CompileRuns(store.SQLite, "params.lr = '0.1' and métrics.loss < 1", nil)
	fe, err := asFilterError(fault.Wrap(fault.Invalid, err, "bad"))
	if err != nil || fe == nil {
		t.Fatalf("not a filter error: %v", err)
	}
	if fe.Before+fe.At+fe.After != fe.Input || fe.At == "" || len([]rune(fe.Before)) != fe.Pos {
		t.Fatalf("marked %q|%q|%q at %d", fe.Before, fe.At, fe.After, fe.Pos)
	}
	if _, err := asFilterError(fault.New(fault.NotFound, "x")); err == nil {
		t.Fatal("another error was taken for a filter error")
	}
}
