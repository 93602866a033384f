package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
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

// BenchmarkSchedulingPass measures one scheduling pass of the job
// service over 10,000 queued jobs on one cluster whose quota keeps them
// all waiting: reading the queue, the clusters and the quotas from the
// database, planning, and recording why each job waits. "first" is the
// pass that writes 10,000 reasons (one transaction); "steady" the passes
// after it, which find nothing changed.
func BenchmarkSchedulingPass(b *testing.B) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			cfg := server.Config{DataDir: b.TempDir(), BootstrapKey: adminKey}
			if d == store.Postgres {
				cfg.Database = storetest.PostgresURL(b)
			}
			srv, err := server.New(context.Background(), cfg, discardLog())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			ctx := context.Background()
			w, err := srv.Workspaces.Lookup(ctx, "default")
			if err != nil {
				b.Fatal(err)
			}
			sc := compute.Scope{WorkspaceID: w.ID, Workspace: w.Name}
			one := 1
			if _, err := srv.Compute.CreateTarget(ctx, sc, compute.TargetInput{Name: "cpu", Size: "local-cpu-small", MaxInstances: &one}); err != nil {
				b.Fatal(err)
			}
			if err := srv.Compute.SetQuota(ctx, sc, "local-cpu", 0, 0); err != nil {
				b.Fatal(err)
			}
			const n = 10000
			err = srv.DB().Tx(ctx, func(tx store.Querier) error {
				for i := range n {
					if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, workspace_id, workspace, name, experiment_id, spec, status, priority, compute, sku, instance_count, submitted_at)
						VALUES (?, ?, 'default', ?, '0', '{}', 'Queued', ?, 'cpu', 'local-cpu-small', 1, ?)`,
						fmt.Sprintf("%032x", i), w.ID, fmt.Sprintf("job-%05d", i), i%3, 1700000000000+int64(i)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := srv.Jobs.Pass(ctx); err != nil {
				b.Fatal(err)
			}
			first := time.Since(start)
			var waiting int
			if err := srv.DB().Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE reason <> ''`).Scan(&waiting); err != nil || waiting != n {
				b.Fatalf("%d of %d jobs record why they wait (%v)", waiting, n, err)
			}
			b.ResetTimer()
			for b.Loop() {
				if err := srv.Jobs.Pass(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(first.Milliseconds()), "first-pass-ms")
		})
	}
}
