package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/store"
)

// modelServer is a small model server in Python (any language serves):
// it answers readiness and liveness on GET, and scores on POST with its
// deployment's name and a version from its environment.
const modelServer = `import os, json, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply(200, b'{"status":"ok"}')
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(n) or b"{}")
        if req.get("fail"):
            return self.reply(500, b'{"error":"model failed"}')
        if req.get("sleep"):
            import time
            time.sleep(req["sleep"])
        model = sorted(os.listdir(os.environ["AZUREML_MODEL_DIR"])) if "AZUREML_MODEL_DIR" in os.environ else []
        self.reply(200, json.dumps({"deployment": os.environ["PLINTH_DEPLOYMENT"], "version": os.environ.get("VERSION", ""), "pid": os.getpid(), "model": model}).encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`

// startEndpoints runs the endpoint controller and the snapshot publisher
// for a test server.
func startEndpoints(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.srv.RunEndpoints(ctx) }()
	t.Cleanup(func() {
		// Replicas are processes: stop them with their deployments.
		for _, ep := range []string{"fraud", "elastic", "broken"} {
			e.call("DELETE", "/api/v1/workspaces/default/endpoints/"+ep, e.admin, nil)
		}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var n int
			e.srv.DB().Read().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM retired_replicas`).Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		<-done
	})
}

func score(url, key string, body string) (int, map[string]any, http.Header, error) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return res.StatusCode, out, res.Header, nil
}

func waitReady(t *testing.T, e *env, dep string, replicas int) {
	waitReadyAt(t, e, "fraud", dep, replicas)
}

func waitReadyAt(t *testing.T, e *env, ep, dep string, replicas int) {
	t.Helper()
	var last resp
	defer func() {
		if t.Failed() {
			t.Logf("last seen: %s", last.raw)
		}
	}()
	waitFor(t, "deployment "+dep+" ready", 60*time.Second, func() bool {
		r := e.call("GET", "/api/v1/workspaces/default/endpoints/"+ep+"/deployments/"+dep, e.admin, nil)
		last = r
		reps, _ := r.body["replicas"].([]any)
		ready := 0
		for _, x := range reps {
			if x.(map[string]any)["state"] == "ready" && x.(map[string]any)["generation"] == r.body["generation"] {
				ready++
			}
		}
		return r.body["provisioning_state"] == "Succeeded" && ready == replicas && len(reps) == replicas
	})
	// The gateway routes from the snapshot the publisher builds next.
	time.Sleep(300 * time.Millisecond)
}

// TestEndpointServesAndRollsWithoutErrors deploys a model server behind
// an endpoint, calls it with the endpoint's keys and a platform key,
// shifts traffic blue -> green and rolls green to a new version under
// steady load, and kills a replica under load: no call fails. Usage and
// the deployment's history record it all.
func TestEndpointServesAndRollsWithoutErrors(t *testing.T) {
	e := start(t, store.SQLite)
	startEndpoints(t, e)
	script := filepath.Join(t.TempDir(), "serve.py")
	if err := os.WriteFile(script, []byte(modelServer), 0o644); err != nil {
		t.Fatal(err)
	}
	created := e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "fraud"})
	keys := created.body["keys"].(map[string]any)
	primary := keys["primary_key"].(string)
	deployment := func(version string, count int) map[string]any {
		return map[string]any{"command": "exec python3 " + script, "instance_type": "local-cpu-small", "instance_count": count,
			"environment_variables": map[string]string{"VERSION": version}, "readiness_probe": map[string]any{"period": 1, "failure_threshold": 20},
			"request_settings": map[string]any{"max_concurrent_requests_per_instance": 8}}
	}
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/blue", e.admin, deployment("1", 1))
	waitReady(t, e, "blue", 1)
	url := e.url + "/endpoints/fraud/score"
	if code, _, _, _ := score(url, primary, `{}`); code != 404 {
		t.Fatalf("no deployment has traffic yet: %d", code)
	}
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 100}})
	time.Sleep(300 * time.Millisecond)
	code, out, hdr, err := score(url, primary, `{"x": 1}`)
	if err != nil || code != 200 || out["deployment"] != "blue" || hdr.Get("X-Request-Id") == "" {
		t.Fatalf("scoring: %v %d %v %v", err, code, out, hdr)
	}
	for key, want := range map[string]int{"": 401, "pek_wrong": 401, keys["secondary_key"].(string): 200, e.admin: 200} {
		if code, _, _, _ := score(url, key, `{}`); code != want {
			t.Errorf("key %q: %d, want %d", key, code, want)
		}
	}
	if code, _, _, _ := score(e.url+"/endpoints/nope/score", e.admin, `{}`); code != 404 {
		t.Errorf("unknown endpoint: %d", code)
	}
	if code, _, hdr, _ := score(url, primary, `{"fail": true}`); code != 424 {
		t.Errorf("model error: %d %v", code, hdr)
	}

	// Steady load from here on: every call must succeed.
	var failures, calls atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, out, _, err := score(url, primary, `{"x": 2}`)
				calls.Add(1)
				if err != nil || code != 200 {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %v %v at %s", code, err, out, time.Now().Format("15:04:05.000")))
				}
			}
		}()
	}
	// Green serves a registered model, whose files its replicas get.
	run := e.must(200, "POST", "/api/2.0/mlflow/runs/create", e.admin, map[string]any{"experiment_id": "0"})
	info := run.body["run"].(map[string]any)["info"].(map[string]any)
	art := strings.TrimPrefix(info["artifact_uri"].(string), "mlflow-artifacts:/")
	e.must(200, "PUT", "/api/2.0/mlflow-artifacts/artifacts/"+art+"/model/MLmodel", e.admin, "flavors: {}\n")
	e.must(200, "POST", "/api/2.0/mlflow/registered-models/create", e.admin, map[string]any{"name": "fraud"})
	e.must(200, "POST", "/api/2.0/mlflow/model-versions/create", e.admin, map[string]any{"name": "fraud", "source": "runs:/" + info["run_id"].(string) + "/model"})
	e.must(200, "POST", "/api/2.0/mlflow/registered-models/alias", e.admin, map[string]any{"name": "fraud", "alias": "champion", "version": "1"})
	green := deployment("1", 1)
	green["model"] = "models:/fraud@champion"
	green["data_collector"] = map[string]any{"sampling_rate": 1}
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/green", e.admin, green)
	waitReady(t, e, "green", 1)
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+primary)
	req.Header.Set("x-plinth-deployment", "green")
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), `"model": ["MLmodel"]`) {
			t.Fatalf("green's replica has no model files: %d %s", res.StatusCode, body)
		}
	}
	// Green samples every call into the artifact store.
	var captured []string
	waitFor(t, "a captured call of green", 10*time.Second, func() bool {
		captured, _ = filepath.Glob(filepath.Join(e.dataDir, "artifacts", ".plinth-capture", "default", "fraud", "green", "*", "*", "*", "*", "*.json"))
		return len(captured) > 0
	})
	if b, _ := os.ReadFile(captured[0]); !strings.Contains(string(b), `"request":"{}"`) || !strings.Contains(string(b), `MLmodel`) {
		t.Fatalf("a captured call: %s", b)
	}
	lin := e.must(200, "GET", "/api/v1/workspaces/default/lineage?node=model:fraud:1&direction=down", e.admin, nil)
	if !edgeIn(lin.body, "model:fraud:1", "deployment:fraud/green", "deployed") {
		t.Fatalf("lineage lacks the deployment: %s", lin.raw)
	}
	trace := e.must(200, "GET", "/api/v1/workspaces/default/models/fraud/versions/1/trace", e.admin, nil)
	if !strings.Contains(string(trace.raw), `"deployment":"green"`) || !strings.Contains(string(trace.raw), `"deployed_by":"admin"`) {
		t.Fatalf("the trace lacks the deployment: %s", trace.raw)
	}
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 90, "green": 10}})
	time.Sleep(time.Second)
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 0, "green": 100}})
	// Blue takes no traffic now: it can go (and free its node).
	e.must(204, "DELETE", "/api/v1/workspaces/default/endpoints/fraud/deployments/blue", e.admin, nil)
	// Roll green to a new version: the new replica is ready before the
	// old drains. Then scale it to two (no new generation).
	green2 := deployment("2", 1)
	green2["model"] = "models:/fraud@champion"
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/green", e.admin, green2)
	waitReady(t, e, "green", 1)
	green2["instance_count"] = 2
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/green", e.admin, green2)
	waitReady(t, e, "green", 2)
	waitFor(t, "version 2 to answer", 20*time.Second, func() bool {
		_, out, _, _ := score(url, primary, `{}`)
		return out["version"] == "2"
	})
	// Kill one of green's two replicas.
	_, out, _, _ = score(url, primary, `{}`)
	pid := int(out["pid"].(float64))
	t.Logf("killing replica pid %d at %s", pid, time.Now().Format("15:04:05.000"))
	readyIDs := func() map[string]bool {
		r := e.call("GET", "/api/v1/workspaces/default/endpoints/fraud/deployments/green", e.admin, nil)
		ids := map[string]bool{}
		reps, _ := r.body["replicas"].([]any)
		for _, x := range reps {
			if m := x.(map[string]any); m["state"] == "ready" {
				ids[m["id"].(string)] = true
			}
		}
		return ids
	}
	before := readyIDs()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The dead replica is replaced by a new one, which gets ready.
	waitFor(t, "the killed replica to be replaced", 60*time.Second, func() bool {
		now := readyIDs()
		fresh := 0
		for id := range now {
			if !before[id] {
				fresh++
			}
		}
		return len(now) == 2 && fresh == 1
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed during traffic shifts, a rollout and a replica kill; the first: %v", n, calls.Load(), firstFailure.Load())
	}
	t.Logf("%d calls, none failed", calls.Load())

	waitFor(t, "usage to be recorded", 10*time.Second, func() bool {
		r := e.call("GET", "/api/v1/usage?by=deployment&since=1h", e.admin, nil)
		return strings.Contains(string(r.raw), `"key":"default/fraud/green"`) && strings.Contains(string(r.raw), `"key":"default/fraud/blue"`) &&
			strings.Contains(string(r.raw), `"replica_seconds"`)
	})
	metrics := e.call("GET", "/metrics", "", nil)
	for _, want := range []string{`plinth_endpoint_replicas_desired{deployment="green",endpoint="fraud",workspace="default"} 2`,
		`plinth_endpoint_replicas_ready{deployment="green",endpoint="fraud",workspace="default"} 2`} {
		if !strings.Contains(string(metrics.raw), want) {
			var lines []string
			for _, l := range strings.Split(string(metrics.raw), "\n") {
				if strings.Contains(l, "replicas") {
					lines = append(lines, l)
				}
			}
			t.Errorf("/metrics lacks %s: %s", want, strings.Join(lines, "\n"))
		}
	}
	if r := e.call("GET", "/api/v1/workspaces/default/endpoints/fraud/deployments/green/logs", e.admin, nil); r.status != 200 {
		t.Fatalf("a replica's logs: %d %s", r.status, r.raw)
	}
	hist := e.must(200, "GET", "/api/v1/workspaces/default/endpoints/fraud/deployments/green/history", e.admin, nil)
	if !strings.Contains(string(hist.raw), `"change":"update"`) || !strings.Contains(string(hist.raw), `"change":"scale"`) || !strings.Contains(string(hist.raw), `"changed_by":"admin"`) {
		t.Fatalf("history: %s", hist.raw)
	}
}

// TestEndpointScalesFromZeroAndBack: a scale-to-zero deployment has no
// replica until the first call, which waits for one; load brings a
// second; quiet takes it back to none. A server that cannot start leaves
// a Failed deployment saying why, with its last output.
func TestEndpointScalesFromZeroAndBack(t *testing.T) {
	e := start(t, store.SQLite)
	startEndpoints(t, e)
	script := filepath.Join(t.TempDir(), "serve.py")
	if err := os.WriteFile(script, []byte(modelServer), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "elastic"}).body["keys"].(map[string]any)
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/elastic/deployments/auto", e.admin, map[string]any{
		"command": "exec python3 " + script, "instance_type": "local-cpu-small",
		"scale_settings":   map[string]any{"type": "target_utilization", "min_instances": 0, "max_instances": 2, "target_concurrency": 1, "scale_to_zero": true, "scale_down_window_seconds": 2},
		"request_settings": map[string]any{"max_queue_wait_ms": 30000, "max_concurrent_requests_per_instance": 4, "request_timeout_ms": 10000},
		"readiness_probe":  map[string]any{"period": 1, "failure_threshold": 20}})
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/elastic", e.admin, map[string]any{"traffic": map[string]int{"auto": 100}})
	replicas := func() int {
		r := e.call("GET", "/api/v1/workspaces/default/endpoints/elastic/deployments/auto", e.admin, nil)
		reps, _ := r.body["replicas"].([]any)
		n := 0
		for _, x := range reps {
			if x.(map[string]any)["state"] != "draining" {
				n++
			}
		}
		return n
	}
	time.Sleep(time.Second)
	if n := replicas(); n != 0 {
		t.Fatalf("a scale-to-zero deployment started %d replicas before any call", n)
	}
	url := e.url + "/endpoints/elastic/score"
	start := time.Now()
	code, out, _, err := score(url, keys["primary_key"].(string), `{}`)
	if err != nil || code != 200 || out["deployment"] != "auto" {
		t.Fatalf("the first call, from zero: %v %d %v", err, code, out)
	}
	t.Logf("first call from zero answered in %s", time.Since(start).Round(time.Millisecond))
	// Four slow calls at once: two replicas' worth at target_concurrency 1.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 6 {
				score(url, keys["primary_key"].(string), `{"sleep": 0.5}`)
			}
		}()
	}
	waitFor(t, "a second replica under load", 20*time.Second, func() bool { return replicas() == 2 })
	wg.Wait()
	waitFor(t, "scale back to zero when quiet", 30*time.Second, func() bool { return replicas() == 0 })

	e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "broken"})
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/broken/deployments/bad", e.admin, map[string]any{
		"command": "echo loading weights; echo out of memory >&2; exit 3", "instance_type": "local-cpu-small"})
	waitFor(t, "a failing deployment to say why", 20*time.Second, func() bool {
		r := e.call("GET", "/api/v1/workspaces/default/endpoints/broken/deployments/bad", e.admin, nil)
		reason, _ := r.body["reason"].(string)
		return r.body["provisioning_state"] == "Failed" && strings.Contains(reason, "exited (code 3)") && strings.Contains(reason, "out of memory")
	})
}

// TestEndpointTrafficRules: splits that do not add up, mirrors of live
// deployments or above 50%, unknown deployments and taken names are
// refused with the reason; nothing changes.
func TestEndpointTrafficRules(t *testing.T) {
	e := start(t, store.SQLite)
	base := "/api/v1/workspaces/default/endpoints"
	e.must(201, "POST", base, e.admin, map[string]any{"name": "rules"})
	for _, d := range []string{"blue", "green"} {
		e.must(200, "PUT", base+"/rules/deployments/"+d, e.admin, map[string]any{"command": "sleep 600", "instance_type": "local-cpu-small"})
	}
	for _, c := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"traffic": map[string]int{"blue": 90, "green": 20}}, "add up to 110"},
		{map[string]any{"traffic": map[string]int{"red": 100}}, `deployment "red" does not exist`},
		{map[string]any{"traffic": map[string]int{"blue": 100}, "mirror_traffic": map[string]int{"blue": 10}}, "takes live traffic"},
		{map[string]any{"traffic": map[string]int{"blue": 100}, "mirror_traffic": map[string]int{"green": 60}}, "not from 0 to 50"},
		{map[string]any{"auth_mode": "token"}, "cannot change"},
	} {
		if r := e.call("PATCH", base+"/rules", e.admin, c.body); r.status != 400 || !strings.Contains(r.errMessage(), c.want) {
			t.Errorf("%v: %d %s (want 400 %q)", c.body, r.status, r.raw, c.want)
		}
	}
	ok := e.must(200, "PATCH", base+"/rules", e.admin, map[string]any{"traffic": map[string]int{"blue": 100}, "mirror_traffic": map[string]int{"green": 20}})
	if !strings.Contains(string(ok.raw), `"mirror_traffic":{"green":20}`) {
		t.Fatalf("a valid split: %s", ok.raw)
	}
	if r := e.call("DELETE", base+"/rules/deployments/blue", e.admin, nil); r.status != 409 || !strings.Contains(r.errMessage(), "takes 100% of the traffic") {
		t.Fatalf("deleting a live deployment: %d %s", r.status, r.raw)
	}
	for body, want := range map[string]string{
		`{"name": "x"}`:                           "must be 3 to 32 letters",
		`{"name": "rules"}`:                       "already exists",
		`{"name": "ok-name", "auth_mode": "aad"}`: `"aad" is not key or token`,
	} {
		r := e.call("POST", base, e.admin, body)
		if r.status != 400 && r.status != 409 || !strings.Contains(r.errMessage(), want) {
			t.Errorf("create %s: %d %s (want %q)", body, r.status, r.raw, want)
		}
	}
	if r := e.call("PUT", base+"/rules/deployments/bad", e.admin, map[string]any{"command": "x", "instance_type": "no-such-sku"}); r.status != 400 || !strings.Contains(r.errMessage(), "no-such-sku") {
		t.Errorf("unknown instance type: %d %s", r.status, r.raw)
	}
	if r := e.call("PUT", base+"/rules/deployments/bad", e.admin, map[string]any{"command": "x", "instance_type": "local-cpu-small", "model": "models:/nope/1"}); r.status != 400 || !strings.Contains(r.errMessage(), "nope") {
		t.Errorf("unknown model: %d %s", r.status, r.raw)
	}
	// The replicas of "sleep 600" never get ready; delete it all.
	e.must(200, "PATCH", base+"/rules", e.admin, map[string]any{"traffic": map[string]int{"blue": 0}, "mirror_traffic": map[string]int{}})
	e.must(204, "DELETE", base+"/rules", e.admin, nil)
}
