package server_test

import (
	"fmt"
	"sync"
	"testing"
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
