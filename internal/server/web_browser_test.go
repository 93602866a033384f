package server_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/plinth-dev/plinth/internal/llm/llmtest"
	"github.com/plinth-dev/plinth/internal/store"
)

// chrome starts headless Chromium for a test: a fresh profile, no
// sandbox (CI runs as root), no background traffic.
func chrome(t *testing.T) context.Context {
	t.Helper()
	bin := requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, so its start-up is not charged to a step.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// screenshotsOnFailure saves a screenshot of each main page when the test
// failed, into the test's artifact directory (go test -artifacts keeps it).
func screenshotsOnFailure(t *testing.T, ctx context.Context, base string, pages []string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := t.ArtifactDir()
		for i, p := range pages {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := chromedp.Do(sctx, chromedp.Navigate(base+p), chromedp.Sleep(500*time.Millisecond))
			var png []byte
			if err == nil {
				png, err = chromedp.Run(sctx, chromedp.FullScreenshot(90))
			}
			cancel()
			if err != nil {
				t.Logf("screenshot of %s: %v", p, err)
				continue
			}
			name := filepath.Join(dir, fmt.Sprintf("%02d-%s.png", i, strings.NewReplacer("/", "_", "?", "_", "&", "_", "=", "_").Replace(strings.TrimPrefix(p, "/ui/"))))
			if err := os.WriteFile(name, png, 0o644); err != nil {
				t.Logf("saving screenshot: %v", err)
			}
		}
		t.Logf("screenshots of the main pages are in %s (go test -artifacts -outputdir=DIR keeps them)", dir)
	})
}

// step runs browser actions with a deadline.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// inkJS counts the pixels a chart's canvas has drawn on.
const inkJS = `(() => {
  const c = document.querySelector(%q);
  if (!c) return -1;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
  return n;
})()`

// TestWebInBrowser drives the UI in headless Chromium as a person would:
// sign in, open a run and see its chart drawn, compare runs, change an
// endpoint's traffic split and see the gateway follow it, stop a compute
// instance, download the usage CSV.
func TestWebInBrowser(t *testing.T) {
	ctx := chrome(t)
	e := start(t, store.SQLite)
	ids := logRuns(t, e, 3, 50)
	e.must(200, "PUT", "/api/2.0/mlflow-artifacts/artifacts/default/0/"+ids[0]+"/artifacts/notes/readme.txt", e.admin, "hello from the artifact store\n")
	e.must(201, "POST", "/api/v1/workspaces/default/computes", e.admin, map[string]any{"name": "nb", "type": "instance", "size": "local-cpu-small"})
	t.Cleanup(func() { e.call("POST", "/api/v1/workspaces/default/computes/nb/stop", e.admin, nil) })
	screenshotsOnFailure(t, ctx, e.url, []string{"/ui/w/default/experiments", "/ui/w/default/experiments/0", "/ui/w/default/runs/" + ids[0],
		"/ui/w/default/compare?run=" + ids[0] + "&run=" + ids[1], "/ui/w/default/jobs", "/ui/w/default/compute", "/ui/w/default/models",
		"/ui/w/default/data", "/ui/w/default/endpoints", "/ui/w/default/endpoints/fraud", "/ui/usage", "/ui/w/default/audit"})

	t.Run("sign in", func(t *testing.T) {
		step(t, ctx, "sign-in form", chromedp.Navigate(e.url+"/"), chromedp.WaitVisible(chromedp.ID("key")))
		step(t, ctx, "signing in", chromedp.SendKeys(chromedp.ID("key"), e.admin), chromedp.Submit(chromedp.ID("key")),
			chromedp.WaitVisible(chromedp.CSS(`nav a[aria-current="page"]`)))
		loc := eval[string](t, ctx, `location.pathname`)
		if loc != "/ui/w/default/experiments" {
			t.Fatalf("after sign-in at %s", loc)
		}
		if cookie := eval[string](t, ctx, `document.cookie`); strings.Contains(cookie, "plinth_session") {
			t.Fatalf("the session cookie is readable from scripts: %q", cookie)
		}
	})

	t.Run("run chart and artifacts", func(t *testing.T) {
		step(t, ctx, "run page", chromedp.Navigate(e.url+"/ui/w/default/runs/"+ids[0]),
			chromedp.WaitVisible(chromedp.CSS(`figure[data-drawn="1"] canvas`)))
		if ink := eval[int](t, ctx, fmt.Sprintf(inkJS, `figure[data-drawn="1"] canvas`)); ink < 200 {
			t.Fatalf("the loss chart drew %d pixels", ink)
		}
		// The time axis redraws the same chart.
		step(t, ctx, "time axis", chromedp.Click(chromedp.CSS(`button[data-xaxis="time"]`)), chromedp.Sleep(300*time.Millisecond))
		if ink := eval[int](t, ctx, fmt.Sprintf(inkJS, `figure[data-drawn="1"] canvas`)); ink < 200 {
			t.Fatalf("the loss chart on the time axis drew %d pixels", ink)
		}
		step(t, ctx, "artifact preview", chromedp.WaitVisible(chromedp.Search(`//a[contains(., "notes/")]`)),
			chromedp.Click(chromedp.Search(`//a[contains(., "notes/")]`)),
			chromedp.WaitVisible(chromedp.Search(`//a[contains(., "readme.txt")]`)),
			chromedp.Click(chromedp.Search(`//a[contains(., "readme.txt")]`)),
			chromedp.WaitVisible(chromedp.CSS(`pre.preview`)))
		if text := eval[string](t, ctx, `document.querySelector("pre.preview").textContent`); !strings.Contains(text, "hello from the artifact store") {
			t.Fatalf("artifact preview: %q", text)
		}
	})

	t.Run("compare runs", func(t *testing.T) {
		step(t, ctx, "runs table", chromedp.Navigate(e.url+"/ui/w/default/experiments/0"),
			chromedp.WaitVisible(chromedp.CSS(`input[name="run"][value="`+ids[0]+`"]`)),
			chromedp.Click(chromedp.CSS(`input[name="run"][value="`+ids[0]+`"]`)),
			chromedp.Click(chromedp.CSS(`input[name="run"][value="`+ids[2]+`"]`)),
			chromedp.Click(chromedp.Search(`//button[contains(., "Compare selected")]`)),
			chromedp.WaitVisible(chromedp.CSS(`figure[data-drawn="2"] canvas`)))
		if ink := eval[int](t, ctx, fmt.Sprintf(inkJS, `figure[data-drawn="2"] canvas`)); ink < 200 {
			t.Fatalf("the overlaid chart drew %d pixels", ink)
		}
		legend := eval[string](t, ctx, `document.querySelector('figure[data-drawn="2"] .u-legend').textContent`)
		if !strings.Contains(legend, "run-0") || !strings.Contains(legend, "run-2") {
			t.Fatalf("legend of the overlay: %q", legend)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll("td.differs").length`); n != 2 {
			t.Fatalf("differing lr cells: %d, want 2", n)
		}
	})

	t.Run("stop compute", func(t *testing.T) {
		step(t, ctx, "compute page", chromedp.Navigate(e.url+"/ui/w/default/compute"),
			chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Stop nb"]`)),
			chromedp.Click(chromedp.CSS(`button[aria-label="Stop nb"]`)),
			chromedp.WaitVisible(chromedp.Search(`//p[contains(., "nb stopped.")]`)),
			chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Start nb"]`)))
		show := e.must(200, "GET", "/api/v1/workspaces/default/computes/nb", e.admin, nil)
		if show.body["state"] != "Stopped" {
			t.Fatalf("after Stop: %s", show.raw)
		}
		audit := e.must(200, "GET", "/api/v1/audit?action=compute.stop", e.admin, nil)
		if !strings.Contains(string(audit.raw), "stopped by admin in the UI") {
			t.Fatalf("the stop is not audited with its reason: %s", audit.raw)
		}
	})

	t.Run("traffic split", func(t *testing.T) {
		startEndpoints(t, e)
		script := filepath.Join(t.TempDir(), "serve.py")
		if err := os.WriteFile(script, []byte(modelServer), 0o644); err != nil {
			t.Fatal(err)
		}
		e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "fraud"})
		for _, d := range []string{"blue", "green"} {
			e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/"+d, e.admin, map[string]any{"command": "exec python3 " + script,
				"instance_type": "local-cpu-small", "instance_count": 1, "readiness_probe": map[string]any{"period": 1, "failure_threshold": 20}})
		}
		waitReady(t, e, "blue", 1)
		waitReady(t, e, "green", 1)
		e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 100}})
		time.Sleep(300 * time.Millisecond)
		scoreURL := e.url + "/endpoints/fraud/score"
		served := func() string {
			_, out, _, err := score(scoreURL, e.admin, `{}`)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := out["deployment"].(string)
			return s
		}
		if d := served(); d != "blue" {
			t.Fatalf("before the change, %q served", d)
		}
		page := e.url + "/ui/w/default/endpoints/fraud"
		// A split that does not add up is refused next to the form.
		step(t, ctx, "bad split", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("save-traffic")),
			chromedp.SetValue(chromedp.CSS(`input[name="traffic.green"]`), "30"),
			chromedp.Click(chromedp.ID("save-traffic")), chromedp.WaitVisible(chromedp.ID("form-error")))
		if msg := eval[string](t, ctx, `document.getElementById("form-error").textContent`); !strings.Contains(msg, "add up to 130") {
			t.Fatalf("bad split message: %q", msg)
		}
		step(t, ctx, "new split", chromedp.SetValue(chromedp.CSS(`input[name="traffic.blue"]`), "0"),
			chromedp.SetValue(chromedp.CSS(`input[name="traffic.green"]`), "100"),
			chromedp.SetValue(chromedp.CSS(`input[name="mirror.blue"]`), "10"),
			chromedp.Click(chromedp.ID("save-traffic")), chromedp.WaitVisible(chromedp.Search(`//p[contains(., "Traffic saved")]`)))
		waitFor(t, "the gateway to route to green", 10*time.Second, func() bool { return served() == "green" })
		for range 5 {
			if d := served(); d != "green" {
				t.Fatalf("after the change, %q served", d)
			}
		}
		ep := e.must(200, "GET", "/api/v1/workspaces/default/endpoints/fraud", e.admin, nil)
		if mirror := ep.body["mirror_traffic"].(map[string]any); mirror["blue"] != float64(10) {
			t.Fatalf("mirror after the change: %s", ep.raw)
		}
		// The rate chart draws from the gateway's counters while calls flow.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					score(scoreURL, e.admin, `{}`)
				}
			}
		}()
		step(t, ctx, "rate chart", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS(`figure[data-drawn="2"] canvas`)))
		close(stop)
		<-done
		if ink := eval[int](t, ctx, fmt.Sprintf(inkJS, `figure[data-drawn="2"] canvas`)); ink < 200 {
			t.Fatalf("the request-rate chart drew %d pixels", ink)
		}
		// A key regenerated here is shown once, on this answer only.
		step(t, ctx, "regenerate key", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`),
			chromedp.Click(chromedp.Search(`//button[contains(., "Regenerate secondary key")]`)), chromedp.WaitVisible(chromedp.ID("new-key")))
		key := eval[string](t, ctx, `document.getElementById("new-key").textContent`)
		if code, _, _, _ := score(scoreURL, key, `{}`); !strings.HasPrefix(key, "pek_") || code != 200 {
			t.Fatalf("new key %q scores %d", key, code)
		}
		step(t, ctx, "reload", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("save-traffic")))
		if html := eval[string](t, ctx, `document.documentElement.outerHTML`); strings.Contains(html, key) {
			t.Fatal("the new key is shown again")
		}
	})

	t.Run("usage CSV", func(t *testing.T) {
		dir := t.TempDir()
		// Calls are metered in batches, flushed every second.
		waitFor(t, "the endpoint's calls in the usage report", 10*time.Second, func() bool {
			r := e.must(200, "GET", "/api/v1/usage?by=endpoint", e.admin, nil)
			return strings.Contains(string(r.raw), `"key":"default/fraud"`)
		})
		step(t, ctx, "usage page", chromedp.Navigate(e.url+"/ui/usage?by=endpoint&since=24h"), chromedp.WaitVisible(chromedp.ID("usage-csv")))
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		progress := chromedp.Events(dctx, browser.DownloadProgress)
		enabled := true
		if err := chromedp.Do(dctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &enabled})
			return err
		}), chromedp.Click(chromedp.ID("usage-csv"))); err != nil {
			t.Fatal(err)
		}
		var file string
		for ev, err := range progress {
			if err != nil {
				t.Fatalf("waiting for the download: %v", err)
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				file = filepath.Join(dir, ev.GUID)
				break
			}
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rows, err := csv.NewReader(f).ReadAll()
		if err != nil || len(rows) < 2 || rows[0][0] != "kind" || rows[0][1] != "endpoint" {
			t.Fatalf("usage CSV: %v %v", err, rows)
		}
		found := false
		for _, r := range rows[1:] {
			if r[0] == "endpoint" && r[1] == "default/fraud" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no row for default/fraud in the usage CSV: %v", rows)
		}
	})
}

// TestWebInBrowserLLMAndKeys drives the LLM and access pages in headless
// Chromium: a team's limit changed on the page takes effect on the LLM
// gateway (the call over it gets 429), and a key made on the page is shown
// once, listed by its prefix after, and stops working when revoked there.
func TestWebInBrowserLLMAndKeys(t *testing.T) {
	ctx := chrome(t)
	e := start(t, store.SQLite)
	screenshotsOnFailure(t, ctx, e.url, []string{"/ui/llm/models", "/ui/llm/models/llama", "/ui/llm/backends", "/ui/llm/teams",
		"/ui/access/keys", "/ui/access/principals", "/ui/w/default/access"})
	step(t, ctx, "signing in", chromedp.Navigate(e.url+"/ui/login"), chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), e.admin), chromedp.Submit(chromedp.ID("key")),
		chromedp.WaitVisible(chromedp.CSS(`nav a[aria-current="page"]`)))

	t.Run("team limit", func(t *testing.T) {
		startEndpoints(t, e)
		up := llmtest.New(llmtest.Options{Name: "vllm", APIKey: "upstream-secret-0123456789"})
		t.Cleanup(up.Close)
		e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": "fraud-ws", "team": "risk"})
		e.must(201, "POST", "/api/v1/llm/backends", e.admin, map[string]any{"name": "vllm", "style": "openai",
			"base_url": up.URL() + "/v1", "credential": "upstream-secret-0123456789", "input_cost_per_1k": 1.0, "output_cost_per_1k": 2.0})
		e.must(201, "POST", "/api/v1/llm/models", e.admin, map[string]any{"name": "llama", "pool": []map[string]any{{"backend": "vllm"}}})
		caller := e.principal("scorer", "EndpointInvoker", "fraud-ws")
		call := func() int {
			req, _ := http.NewRequest("POST", e.url+"/w/fraud-ws/openai/v1/chat/completions",
				strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"is this fraud"}]}`))
			req.Header.Set("Authorization", "Bearer "+caller)
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res.StatusCode
		}
		waitFor(t, "the gateway to route llama", 10*time.Second, func() bool { return call() == 200 })
		for i := range 3 {
			if code := call(); code != 200 {
				t.Fatalf("call %d with no limits: %d", i, code)
			}
		}
		rpm := `input[form="limits-risk"][name="requests_per_minute"]`
		step(t, ctx, "teams page", chromedp.Navigate(e.url+"/ui/llm/teams"), chromedp.WaitVisible(chromedp.CSS(rpm)),
			chromedp.SetValue(chromedp.CSS(rpm), "1"),
			chromedp.Click(chromedp.CSS(`button[aria-label="Save limits of risk"]`)),
			chromedp.WaitVisible(chromedp.Search(`//p[contains(., "Limits of team risk saved")]`)))
		if v := eval[string](t, ctx, `document.querySelector('`+rpm+`').value`); v != "1" {
			t.Fatalf("the saved limit shows as %q", v)
		}
		lim := e.must(200, "GET", "/api/v1/llm/teams/risk/limits", e.admin, nil)
		if lim.body["requests_per_minute"] != float64(1) {
			t.Fatalf("limits after the page's change: %s", lim.raw)
		}
		// The routing table reaches the gateway within a second: then one
		// call a minute passes and the next is refused.
		waitFor(t, "the gateway to refuse the team's calls over 1 RPM", 10*time.Second, func() bool { return call() == http.StatusTooManyRequests })
		if code := call(); code != http.StatusTooManyRequests {
			t.Fatalf("a call over the team's limit: %d", code)
		}
		a := e.must(200, "GET", "/api/v1/audit?action=llm.limits.put", e.admin, nil)
		if !strings.Contains(string(a.raw), `"principal":"admin"`) || !strings.Contains(string(a.raw), "llm/teams/risk/limits") {
			t.Fatalf("the change is not audited: %s", a.raw)
		}
	})

	t.Run("api key", func(t *testing.T) {
		page := e.url + "/ui/access/keys"
		step(t, ctx, "create a key", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("create-key")),
			chromedp.SendKeys(chromedp.CSS(`#key-form input[name="name"]`), "browser-key"),
			chromedp.Click(chromedp.ID("create-key")), chromedp.WaitVisible(chromedp.ID("new-key")))
		secret := eval[string](t, ctx, `document.getElementById("new-key").textContent`)
		if !strings.HasPrefix(secret, "plk_") {
			t.Fatalf("new key %q", secret)
		}
		if who := e.call("GET", "/api/v1/whoami", secret, nil); who.status != 200 || who.body["principal"] != "admin" {
			t.Fatalf("the new key: %d %s", who.status, who.raw)
		}
		step(t, ctx, "reload", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("create-key")))
		html := eval[string](t, ctx, `document.documentElement.outerHTML`)
		if strings.Contains(html, secret) {
			t.Fatal("the key's secret is shown again")
		}
		if !strings.Contains(html, secret[:12]) {
			t.Fatalf("the key's prefix %s is not listed", secret[:12])
		}
		step(t, ctx, "revoke", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`),
			chromedp.Click(chromedp.CSS(`button[aria-label="Revoke browser-key"]`)),
			chromedp.WaitVisible(chromedp.Search(`//p[contains(., "Key browser-key revoked")]`)))
		if n := eval[int](t, ctx, `document.querySelectorAll('button[aria-label="Revoke browser-key"]').length`); n != 0 {
			t.Fatalf("a revoked key still has a Revoke button")
		}
		waitFor(t, "the revoked key to stop working", 5*time.Second, func() bool {
			return e.call("GET", "/api/v1/whoami", secret, nil).status == http.StatusUnauthorized
		})
	})
}
