package gateway

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRoutingByTrafficWeights(t *testing.T) {
	e := newEnv(t, Options{})
	blue, green := newModel(t, "blue-0", nil), newModel(t, "green-0", nil)
	ep := keyEndpoint(
		&Deployment{Name: "blue", Replicas: replicas(blue)},
		&Deployment{Name: "green", Replicas: replicas(green)},
	)
	ep.Traffic = map[string]int{"blue": 90, "green": 10}
	e.g.Update(snap(1, ep))

	const n = 2000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		r := e.score("primary-key", `{"x":1}`)
		if r.status != 200 {
			t.Fatalf("call %d: status %d %s", i, r.status, r.body)
		}
		counts[r.header.Get(HeaderAzureDeployment)]++
		if r.header.Get(HeaderAzureDeployment) == "blue" != (r.seen(t).Replica == "blue-0") {
			t.Fatalf("deployment header %q but replica %q", r.header.Get(HeaderAzureDeployment), r.seen(t).Replica)
		}
	}
	// Binomial(2000, 0.1): mean 200, sd 13.4; ±50 is over 3.5 sd.
	if g := counts["green"]; g < 150 || g > 250 {
		t.Fatalf("green got %d of %d calls, want about 200 (counts %v)", g, n, counts)
	}
	if counts["blue"]+counts["green"] != n {
		t.Fatalf("counts %v", counts)
	}
}

func TestPinnedDeploymentAndNoTraffic(t *testing.T) {
	e := newEnv(t, Options{})
	blue, green := newModel(t, "blue-0", nil), newModel(t, "green-0", nil)
	ep := keyEndpoint(
		&Deployment{Name: "blue", Replicas: replicas(blue)},
		&Deployment{Name: "green", Replicas: replicas(green)},
	)
	ep.Traffic = map[string]int{"blue": 100, "green": 0}
	e.g.Update(snap(1, ep))

	for _, h := range []string{HeaderDeployment, "azureml-model-deployment"} {
		r := e.score("primary-key", "{}", h, "green")
		if r.status != 200 || r.seen(t).Replica != "green-0" || r.header.Get(HeaderAzureDeployment) != "green" {
			t.Fatalf("pinned by %s: status %d replica %q", h, r.status, r.body)
		}
	}
	if r := e.score("primary-key", "{}", HeaderDeployment, "purple"); r.status != 404 || r.errorCode(t) != "not_found" {
		t.Fatalf("unknown pinned deployment: %d %s", r.status, r.body)
	}

	ep2 := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(blue)})
	ep2.Traffic = map[string]int{"blue": 0}
	e.g.Update(snap(2, ep2))
	r := e.score("primary-key", "{}")
	if r.status != 404 || !strings.Contains(string(r.body), "has traffic") {
		t.Fatalf("no traffic: %d %s", r.status, r.body)
	}
	// Pinning still reaches a deployment with 0%.
	if r := e.score("primary-key", "{}", HeaderDeployment, "blue"); r.status != 200 {
		t.Fatalf("pinned 0%% deployment: %d %s", r.status, r.body)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})
	tok := &Endpoint{Workspace: "default", Name: "tok", AuthMode: "token", KeyHashes: []string{hashKey("tok-key")},
		Traffic: map[string]int{"blue": 100}, Deployments: map[string]*Deployment{"blue": {Name: "blue", Replicas: replicas(m)}}}
	other := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})
	other.Name, other.KeyHashes = "other", []string{hashKey("other-key")}
	e.g.Update(snap(1, ep, tok, other))

	cases := []struct {
		name, path, token, apiKey string
		status                    int
		code                      string
	}{
		{"anonymous, known endpoint", "/endpoints/ep/score", "", "", 401, "unauthenticated"},
		{"anonymous, unknown endpoint", "/endpoints/nope/score", "", "", 401, "unauthenticated"},
		{"bad token, known endpoint", "/endpoints/ep/score", "wrong", "", 401, "unauthenticated"},
		{"bad token, unknown endpoint", "/endpoints/nope/score", "wrong", "", 401, "unauthenticated"},
		{"endpoint key of another endpoint", "/endpoints/ep/score", "other-key", "", 401, "unauthenticated"},
		{"endpoint key, unknown endpoint", "/endpoints/nope/score", "primary-key", "", 401, "unauthenticated"},
		{"platform key, unknown endpoint", "/endpoints/nope/score", "platform-alice", "", 404, "not_found"},
		{"platform key, unknown workspace allowed", "/w/other/endpoints/ep/score", "platform-alice", "", 404, "not_found"},
		{"platform key, forbidden", "/endpoints/ep/score", "platform-outsider", "", 403, "permission_denied"},
		{"platform key, forbidden unknown endpoint", "/endpoints/nope/score", "platform-outsider", "", 403, "permission_denied"},
		{"platform key, forbidden workspace", "/w/secret/endpoints/ep/score", "platform-alice", "", 403, "permission_denied"},
		{"authenticator down", "/endpoints/ep/score", "platform-broken", "", 503, "unavailable"},
		{"primary key", "/endpoints/ep/score", "primary-key", "", 200, ""},
		{"secondary key", "/endpoints/ep/score", "secondary-key", "", 200, ""},
		{"api-key header", "/endpoints/ep/score", "", "secondary-key", 200, ""},
		{"platform key", "/endpoints/ep/score", "platform-alice", "", 200, ""},
		{"token mode refuses endpoint key", "/endpoints/tok/score", "tok-key", "", 401, "unauthenticated"},
		{"token mode takes platform key", "/endpoints/tok/score", "platform-alice", "", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.apiKey != "" {
				hdr = []string{"api-key", tc.apiKey}
			}
			r := e.call("POST", tc.path, tc.token, "{}", hdr...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if r.header.Get("X-Request-Id") == "" {
				t.Fatal("no x-request-id")
			}
			if tc.code != "" {
				if got := r.errorCode(t); got != tc.code {
					t.Fatalf("code %q, want %q", got, tc.code)
				}
				if tc.status == 401 && r.header.Get("Www-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
				return
			}
			s := r.seen(t)
			if s.Authorization != "" || s.APIKey != "" {
				t.Fatalf("credential forwarded to the model: %+v", s)
			}
		})
	}
	// Both 401s look the same whether or not the endpoint exists.
	a := e.call("POST", "/endpoints/ep/score", "", "{}")
	b := e.call("POST", "/endpoints/nope/score", "", "{}")
	if string(a.body) != string(b.body) {
		t.Fatalf("401 bodies differ: %s vs %s", a.body, b.body)
	}
}

func TestRequestIDsAndForwardedHeaders(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))

	r := e.score("primary-key", "{}", "X-Request-Id", "caller-id-1", "x-ms-client-request-id", "client-7", "X-Forwarded-For", "10.1.2.3")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r.header.Get("X-Request-Id") != "caller-id-1" || r.header.Get("x-ms-client-request-id") != "client-7" {
		t.Fatalf("ids not echoed: %v", r.header)
	}
	s := r.seen(t)
	if s.RequestID != "caller-id-1" || s.XFF != "10.1.2.3, 127.0.0.1" {
		t.Fatalf("forwarded: %+v", s)
	}
	// Unprintable ids are replaced.
	r = e.score("primary-key", "{}", "X-Request-Id", strings.Repeat("x", 200))
	if id := r.header.Get("X-Request-Id"); id == "" || len(id) > 128 {
		t.Fatalf("request id %q", id)
	}
	// Errors carry it too.
	if r := e.call("GET", "/endpoints/ep/score", "", ""); r.header.Get("X-Request-Id") == "" {
		t.Fatal("error without x-request-id")
	}
}

func TestPathMapping(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), ScoringPath: "/v2/predict"})
	ws := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})
	ws.Workspace = "team1"
	e.g.Update(snap(1, ep, ws))
	cases := []struct{ method, path, want, query string }{
		{"POST", "/endpoints/ep/score", "/v2/predict", ""},
		{"POST", "/endpoints/ep/score?verbose=1", "/v2/predict", "verbose=1"},
		{"POST", "/endpoints/ep/score/explain", "/v2/predict/explain", ""},
		{"POST", "/endpoints/ep/v1/chat/completions", "/v1/chat/completions", ""},
		{"GET", "/endpoints/ep/swagger.json", "/swagger.json", ""},
		{"POST", "/endpoints/ep/a%20b", "/a b", ""},
		{"POST", "/w/team1/endpoints/ep/score", "/score", ""},
	}
	for _, tc := range cases {
		r := e.call(tc.method, tc.path, "primary-key", "{}")
		if r.status != 200 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, r.status, r.body)
		}
		s := r.seen(t)
		if s.Path != tc.want || s.Method != tc.method || s.Query != tc.query || (tc.method == "POST" && s.Body != "{}") {
			t.Fatalf("%s %s reached %+v, want path %s", tc.method, tc.path, s, tc.want)
		}
	}
}

func TestMetricsAndLoad(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	e.g.Update(snap(7, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))
	for i := 0; i < 3; i++ {
		e.score("primary-key", "{}")
	}
	e.score("", "{}")
	if got := testutil.ToFloat64(e.g.metrics.requests.WithLabelValues("default", "ep", "blue", "2xx")); got != 3 {
		t.Fatalf("2xx = %v", got)
	}
	if got := testutil.ToFloat64(e.g.metrics.requests.WithLabelValues("default", "ep", "", "4xx")); got != 1 {
		t.Fatalf("4xx = %v", got)
	}
	n, err := testutil.GatherAndCount(e.reg, "plinth_gateway_replicas_ready", "plinth_gateway_requests_in_flight", "plinth_gateway_snapshot_version")
	if err != nil || n != 3 {
		t.Fatalf("load series: %d %v", n, err)
	}
	load := e.g.Load()
	if l := load["default/ep/blue"]; l.Replicas != 1 || l.InFlight != 0 {
		t.Fatalf("load %+v", load)
	}
	// Removing the deployment removes its series.
	e.g.Update(snap(8))
	if n, _ := testutil.GatherAndCount(e.reg, "plinth_gateway_requests_total"); n != 0 {
		t.Fatalf("requests_total series after removal: %d", n)
	}
}

// The gateway must run apart from the control plane: it may not import
// the database, the domain services or the API.
func TestNoControlPlaneImports(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	const mod = "github.com/plinth-dev/plinth"
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{mod + "/internal/store", mod + "/internal/auth", mod + "/internal/api", mod + "/internal/endpoint", "database/sql"} {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("gateway depends on %s", dep)
			}
		}
	}
}

func retryAfter(t testing.TB, r resp) int {
	t.Helper()
	v := r.header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("status %d: Retry-After %q is not an integer ≥ 1", r.status, v)
	}
	return n
}
