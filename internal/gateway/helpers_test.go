package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// model is a fake model server: one replica.
type model struct {
	id   string
	srv  *httptest.Server
	hits atomic.Int64
}

// seen is what the echo model reports about the request it got.
type seen struct {
	Replica       string `json:"replica"`
	Method        string `json:"method"`
	Path          string `json:"path"`
	Query         string `json:"query"`
	Body          string `json:"body"`
	Authorization string `json:"authorization"`
	APIKey        string `json:"api_key"`
	XFF           string `json:"xff"`
	RequestID     string `json:"request_id"`
	Mirror        string `json:"mirror"`
}

// newModel starts a replica; h nil echoes the request as JSON.
func newModel(t testing.TB, id string, h http.HandlerFunc) *model {
	t.Helper()
	m := &model{id: id}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(seen{
				Replica: id, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(b),
				Authorization: r.Header.Get("Authorization"), APIKey: r.Header.Get("Api-Key"),
				XFF: r.Header.Get("X-Forwarded-For"), RequestID: r.Header.Get("X-Request-Id"),
				Mirror: r.Header.Get(HeaderMirror),
			})
		}
	}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *model) replica() Replica {
	return Replica{ID: m.id, Addr: strings.TrimPrefix(m.srv.URL, "http://")}
}

func replicas(ms ...*model) []Replica {
	var rs []Replica
	for _, m := range ms {
		rs = append(rs, m.replica())
	}
	return rs
}

func hashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// fakeAuth is a platform Authenticator: "platform-<principal>" tokens are
// valid; "platform-outsider" is valid but not allowed anywhere; workspace
// "secret" admits nobody.
type fakeAuth struct{ calls atomic.Int64 }

func (a *fakeAuth) Authorize(ctx context.Context, token, workspace string) (string, string, error) {
	a.calls.Add(1)
	p, ok := strings.CutPrefix(token, "platform-")
	if !ok {
		return "", "", fmt.Errorf("checking key: %w", ErrUnauthenticated)
	}
	if p == "broken" {
		return "", "", fmt.Errorf("database is down")
	}
	if p == "outsider" || workspace == "secret" {
		return "", "", fmt.Errorf("%s may not invoke endpoints in %s: %w", p, workspace, ErrForbidden)
	}
	return p, "key-" + p, nil
}

// env is a gateway under test behind a real HTTP server.
type env struct {
	t      testing.TB
	g      *Gateway
	srv    *httptest.Server
	client *http.Client
	reg    *prometheus.Registry
	auth   *fakeAuth
}

func newEnv(t testing.TB, o Options) *env {
	t.Helper()
	e := &env{t: t, reg: prometheus.NewRegistry(), auth: &fakeAuth{}}
	if o.Auth == nil {
		o.Auth = e.auth
	}
	if o.Registry == nil {
		o.Registry = e.reg
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(testLogWriter(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	e.g = New(o)
	mux := http.NewServeMux()
	e.g.Register(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	t.Cleanup(e.g.Close)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// endpoint returns a key-mode endpoint "ep" in workspace default with
// keys "primary-key" and "secondary-key".
func keyEndpoint(deps ...*Deployment) *Endpoint {
	ep := &Endpoint{
		Workspace: "default", Name: "ep", Team: "team-a", AuthMode: "key",
		KeyHashes:   []string{hashKey("primary-key"), hashKey("secondary-key")},
		Traffic:     map[string]int{},
		Deployments: map[string]*Deployment{},
	}
	for _, d := range deps {
		ep.Deployments[d.Name] = d
	}
	if len(deps) == 1 {
		ep.Traffic[deps[0].Name] = 100
	}
	return ep
}

func snap(version int64, eps ...*Endpoint) *Snapshot {
	s := &Snapshot{Version: version, Endpoints: map[string]*Endpoint{}}
	for _, ep := range eps {
		s.Endpoints[ep.Workspace+"/"+ep.Name] = ep
	}
	return s
}

type resp struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (r resp) seen(t testing.TB) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("status %d, body %q: %v", r.status, r.body, err)
	}
	return s
}

func (r resp) errorCode(t testing.TB) string {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("status %d, body %q is not an error body: %v", r.status, r.body, err)
	}
	return b.Error.Code
}

// call sends a request through the gateway; hdr are name, value pairs.
func (e *env) call(method, path, token, body string, hdr ...string) resp {
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body == "" {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		return resp{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b, err: err}
}

func (e *env) score(token, body string, hdr ...string) resp {
	return e.call("POST", "/endpoints/ep/score", token, body, hdr...)
}

// parallel runs n goroutines of f and waits.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	wg.Wait()
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogWriter is where gateways under test log warnings: stderr with
// PLINTH_TEST_LOG=1, else nowhere.
func testLogWriter() io.Writer {
	if os.Getenv("PLINTH_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
