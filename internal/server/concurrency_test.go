package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/auth"
	"github.com/plinth-dev/plinth/internal/server"
)

// TestConcurrentUpdatesLoseNothing patches different fields of one
// workspace from two clients at once: each client's last write must
// survive, on PostgreSQL's READ COMMITTED as on SQLite, and the audit
// chain must stay whole.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	eachDB(t, func(t *testing.T, e *env) {
		e.workspace("shared")
		const n = 25
		var wg sync.WaitGroup
		for _, field := range []string{"team", "description"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					r := e.call("PATCH", "/api/v1/workspaces/shared", e.admin, map[string]any{field: fmt.Sprintf("%s-%d", field[:1], i)})
					if r.status != 200 {
						t.Errorf("PATCH %s: %d %s", field, r.status, r.raw)
						return
					}
				}
			}()
		}
		wg.Wait()
		got := e.must(200, "GET", "/api/v1/workspaces/shared", e.admin, nil)
		if got.body["team"] != fmt.Sprintf("t-%d", n-1) || got.body["description"] != fmt.Sprintf("d-%d", n-1) {
			t.Fatalf("an update was lost: team %v, description %v", got.body["team"], got.body["description"])
		}
		rep := e.must(200, "GET", "/api/v1/audit/verify", e.admin, nil)
		if rep.body["ok"] != true || rep.body["records"].(float64) < 2*n {
			t.Fatalf("audit after concurrent writes: %s", rep.raw)
		}
	})
}

// TestRevocationAcrossReplicas runs two servers on one database: a key
// revoked through one stops working on the other within auth.IdentityTTL
// (and at once on the one that revoked it).
func TestRevocationAcrossReplicas(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := server.New(context.Background(), server.Config{DataDir: dir, BootstrapKey: adminKey}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := server.New(context.Background(), server.Config{DataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	admin, err := a.Auth.Authenticate(ctx, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	key, secret, err := a.Auth.CreateKey(ctx, admin, auth.CreateKeyInput{Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Auth.Authenticate(ctx, secret); err != nil { // now cached on a
		t.Fatal(err)
	}
	if _, err := b.Auth.RevokeKey(ctx, admin, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Auth.Authenticate(ctx, secret); err == nil {
		t.Fatal("the replica that revoked the key still accepts it")
	}
	deadline := time.Now().Add(auth.IdentityTTL + time.Second)
	for {
		if _, err := a.Auth.Authenticate(ctx, secret); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica still accepts a revoked key after %s", auth.IdentityTTL+time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
