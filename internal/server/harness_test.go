package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// env is one running Plinth over a real database and real HTTP.
type env struct {
	t     testing.TB
	srv   *server.Server
	url   string
	admin string
	// dataDir is the server's data directory (SQLite, local artifacts).
	dataDir string
}

const adminKey = "plk_test-admin-key-0123456789abcdef"

func start(t testing.TB, d store.Dialect) *env {
	t.Helper()
	cfg := server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey}
	if d == store.Postgres {
		cfg.Database = storetest.PostgresURL(t)
	}
	return startWith(t, cfg)
}

// startWith runs a server with cfg over real HTTP, its job scheduler
// included.
func startWith(t testing.TB, cfg server.Config) *env {
	t.Helper()
	return startLogged(t, cfg, discardLog())
}

// startLogged is startWith with the server logging to log.
func startLogged(t testing.TB, cfg server.Config, log *slog.Logger) *env {
	t.Helper()
	srv, err := server.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	srv.Jobs.SetTrackingURL(hs.URL)
	srv.Instances.SetServerURL(hs.URL)
	ctx, cancel := context.WithCancel(context.Background())
	scheduled := make(chan struct{})
	go func() {
		defer close(scheduled)
		srv.Jobs.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-scheduled
		hs.Close()
		srv.Close()
	})
	return &env{t: t, srv: srv, url: hs.URL, admin: adminKey, dataDir: cfg.DataDir}
}

// eachDB runs fn against a server on SQLite and one on PostgreSQL.
func eachDB(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { fn(t, start(t, d)) })
	}
}

// resp is an HTTP answer with its body decoded when it is JSON.
type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r resp) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r resp) errMessage() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

// call sends a request; body may be nil, a string (sent as is) or a value
// to encode as JSON.
func (e *env) call(method, path, key string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") && len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.body)
	}
	return out
}

// must fails the test unless the answer has the wanted status.
func (e *env) must(want int, method, path, key string, body any) resp {
	e.t.Helper()
	r := e.call(method, path, key, body)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.raw)
	}
	return r
}

// principal creates a principal, optionally grants it a role (ws "" for
// platform scope) and returns a key for it.
func (e *env) principal(name, role, ws string) string {
	e.t.Helper()
	e.must(201, "POST", "/api/v1/principals", e.admin, map[string]any{"name": name})
	if role != "" {
		path := "/api/v1/role-assignments"
		if ws != "" {
			path = "/api/v1/workspaces/" + ws + "/role-assignments"
		}
		e.must(201, "POST", path, e.admin, map[string]any{"principal": name, "role": role})
	}
	r := e.must(201, "POST", "/api/v1/keys", e.admin, map[string]any{"name": "k", "principal": name})
	return r.body["secret"].(string)
}

func (e *env) workspace(name string) {
	e.t.Helper()
	e.must(201, "POST", "/api/v1/workspaces", e.admin, map[string]any{"name": name})
}

// rawExec changes the database behind the server's back, as an attacker
// with database access would.
func rawExec(e *env, q string, args ...any) (int64, error) {
	var n int64
	err := e.srv.DB().Tx(context.Background(), func(tx store.Querier) error {
		res, err := tx.ExecContext(context.Background(), q, args...)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

func dialectOf(e *env) store.Dialect { return e.srv.DB().Dialect() }

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
