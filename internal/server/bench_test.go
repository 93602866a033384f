package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
)

// BenchmarkAuthenticatedWrite measures one whole authenticated, audited
// change over real HTTP: key lookup, grant loading, RBAC decision, JSON
// decode and validation, the update and its hash-chained audit record in
// one transaction, and the JSON answer. The read is the same path without
// the transaction, for comparison.
func BenchmarkAuthenticatedWrite(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			e := start(b, d)
			e.workspace("bench")
			key := e.principal("writer", "Contributor", "bench")
			http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 64

			b.Run("write", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					benchCall(b, "PATCH", e.url+"/api/v1/workspaces/bench", key, fmt.Sprintf(`{"description":"v%d"}`, i), 200)
				}
			})
			b.Run("write_parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						benchCall(b, "PATCH", e.url+"/api/v1/workspaces/bench", key, fmt.Sprintf(`{"description":"p%d"}`, i), 200)
					}
				})
			})
			b.Run("read", func(b *testing.B) {
				for b.Loop() {
					benchCall(b, "GET", e.url+"/api/v1/workspaces/bench", key, "", 200)
				}
			})
		})
	}
}

func benchCall(b *testing.B, method, url, key, body string, want int) {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != want {
		b.Fatalf("%s %s: %d", method, url, res.StatusCode)
	}
}
