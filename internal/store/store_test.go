package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// openUnmigrated returns a fresh database of dialect d that Migrate has
// not touched.
func openUnmigrated(t *testing.T, d store.Dialect) *store.DB {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "plinth.db")
	if d == store.Postgres {
		dsn = storetest.PostgresURL(t)
	}
	db, err := store.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrationsMatchAcrossDialects(t *testing.T) {
	versions := map[store.Dialect][]string{}
	for _, d := range storetest.Dialects {
		all, err := store.Migrations(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 0 {
			t.Fatalf("%s has no migrations", d)
		}
		for _, m := range all {
			versions[d] = append(versions[d], fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	if !slices.Equal(versions[store.SQLite], versions[store.Postgres]) {
		t.Errorf("migrations differ:\nsqlite:   %v\npostgres: %v", versions[store.SQLite], versions[store.Postgres])
	}
}

func TestMigrateAppliesOnce(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			ctx := t.Context()
			db := openUnmigrated(t, d)
			all, err := store.Migrations(d)
			if err != nil {
				t.Fatal(err)
			}
			if v, err := db.SchemaVersion(ctx); err != nil || v != 0 {
				t.Fatalf("new database: SchemaVersion = %d, %v; want 0", v, err)
			}
			applied, err := db.Migrate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != len(all) {
				t.Fatalf("first Migrate applied %d migrations, want %d", len(applied), len(all))
			}
			for i, m := range applied {
				if m.Version != i+1 {
					t.Errorf("applied[%d] is version %d, want %d", i, m.Version, i+1)
				}
			}
			applied, err = db.Migrate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != 0 {
				t.Errorf("second Migrate applied %v, want nothing", applied)
			}
			v, err := db.SchemaVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if v != len(all) {
				t.Errorf("SchemaVersion = %d, want %d", v, len(all))
			}
			var rows int
			if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM plinth_schema_migrations`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows != len(all) {
				t.Errorf("plinth_schema_migrations has %d rows, want %d", rows, len(all))
			}
		})
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		all, err := store.Migrations(db.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		future := len(all) + 1
		err = db.Tx(ctx, func(tx store.Querier) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO plinth_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				future, "from_the_future", 0)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		applied, err := db.Migrate(ctx)
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("Migrate = %v, want an error wrapping ErrSchemaTooNew", err)
		}
		if !strings.Contains(err.Error(), "run a newer plinth") {
			t.Errorf("error %q does not tell the operator to run a newer plinth", err)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(future)) {
			t.Errorf("error %q does not name the database's version %d", err, future)
		}
		if len(applied) != 0 {
			t.Errorf("Migrate applied %v to a newer schema", applied)
		}
		if v, err := db.SchemaVersion(ctx); err != nil || v != future {
			t.Errorf("SchemaVersion = %d, %v; want %d", v, err, future)
		}
	})
}

// insertPrincipal is the smallest valid principals row.
func insertPrincipal(ctx context.Context, q store.Querier, id, name string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO principals (id, name, kind, created_by, created_at) VALUES (?, ?, 'user', 'test', 0)`, id, name)
	return err
}

func countRows(t *testing.T, db *store.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Read().QueryRowContext(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestTx(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		count := func() int { return countRows(t, db, `SELECT COUNT(*) FROM principals`) }

		t.Run("commits on nil", func(t *testing.T) {
			err := db.Tx(ctx, func(tx store.Querier) error {
				if tx.Dialect() != db.Dialect() {
					t.Errorf("tx dialect %s, db dialect %s", tx.Dialect(), db.Dialect())
				}
				if err := insertPrincipal(ctx, tx, "p-commit-1", "commit-1"); err != nil {
					return err
				}
				return insertPrincipal(ctx, tx, "p-commit-2", "commit-2")
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := countRows(t, db, `SELECT COUNT(*) FROM principals WHERE id IN (?, ?)`, "p-commit-1", "p-commit-2"); n != 2 {
				t.Errorf("%d committed rows visible, want 2", n)
			}
		})

		t.Run("rolls back on error", func(t *testing.T) {
			before := count()
			errBoom := errors.New("boom")
			err := db.Tx(ctx, func(tx store.Querier) error {
				if err := insertPrincipal(ctx, tx, "p-err-1", "err-1"); err != nil {
					return err
				}
				if err := insertPrincipal(ctx, tx, "p-err-2", "err-2"); err != nil {
					return err
				}
				return fmt.Errorf("second step: %w", errBoom)
			})
			if !errors.Is(err, errBoom) {
				t.Fatalf("Tx = %v, want the callback's error", err)
			}
			if after := count(); after != before {
				t.Errorf("%d rows after a failed Tx, want %d: half-written", after, before)
			}
		})

		t.Run("rolls back on a failed statement", func(t *testing.T) {
			before := count()
			err := db.Tx(ctx, func(tx store.Querier) error {
				if err := insertPrincipal(ctx, tx, "p-dup-1", "dup-1"); err != nil {
					return err
				}
				return insertPrincipal(ctx, tx, "p-dup-2", "dup-1") // duplicate name
			})
			if !store.IsUniqueViolation(err) {
				t.Fatalf("Tx = %v, want a unique violation", err)
			}
			if after := count(); after != before {
				t.Errorf("%d rows after a failed Tx, want %d: half-written", after, before)
			}
		})

		t.Run("rolls back on panic", func(t *testing.T) {
			before := count()
			var recovered any
			func() {
				defer func() { recovered = recover() }()
				db.Tx(ctx, func(tx store.Querier) error {
					if err := insertPrincipal(ctx, tx, "p-panic", "panic"); err != nil {
						t.Error(err)
					}
					panic("in the middle")
				})
			}()
			if recovered != "in the middle" {
				t.Fatalf("recovered %v, want the callback's panic passed on", recovered)
			}
			if after := count(); after != before {
				t.Errorf("%d rows after a panicking Tx, want %d: half-written", after, before)
			}
			// The connection went back usable: SQLite has only one writer.
			if err := db.Tx(ctx, func(tx store.Querier) error {
				return insertPrincipal(ctx, tx, "p-after-panic", "after-panic")
			}); err != nil {
				t.Fatalf("Tx after a panic: %v", err)
			}
		})
	})
}

func TestConstraintErrors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		exec := func(query string, args ...any) error {
			return db.Tx(ctx, func(tx store.Querier) error {
				_, err := tx.ExecContext(ctx, query, args...)
				return err
			})
		}
		if err := exec(`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p1', 'alice', 'user', 'test', 0)`); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name         string
			err          error
			unique, fkey bool
		}{
			{"duplicate unique column",
				exec(`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p2', 'alice', 'user', 'test', 0)`),
				true, false},
			{"duplicate primary key",
				exec(`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p1', 'bob', 'user', 'test', 0)`),
				true, false},
			{"missing foreign key",
				exec(`INSERT INTO api_keys (id, principal_id, name, prefix, hash, created_by, created_at) VALUES ('k1', 'nobody', 'ci', 'pl_', 'h1', 'test', 0)`),
				false, true},
			{"check constraint",
				exec(`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p3', 'carol', 'robot', 'test', 0)`),
				false, false},
			{"syntax error", exec(`INSERT INTO nowhere VALUES (1)`), false, false},
			{"nil", nil, false, false},
			{"plain error", errors.New("unique violation"), false, false},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if tc.name != "nil" && tc.err == nil {
					t.Fatal("statement succeeded, want an error")
				}
				wrapped := fmt.Errorf("creating thing: %w", tc.err)
				for _, err := range []error{tc.err, wrapped} {
					if got := store.IsUniqueViolation(err); got != tc.unique {
						t.Errorf("IsUniqueViolation(%v) = %v, want %v", err, got, tc.unique)
					}
					if got := store.IsForeignKeyViolation(err); got != tc.fkey {
						t.Errorf("IsForeignKeyViolation(%v) = %v, want %v", err, got, tc.fkey)
					}
				}
			})
		}
	})
}

func TestDeleteCascades(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		err := db.Tx(ctx, func(tx store.Querier) error {
			for _, q := range []string{
				`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p1', 'alice', 'user', 'test', 0)`,
				`INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p2', 'bob', 'user', 'test', 0)`,
				`INSERT INTO workspaces (id, name, region, allowed_regions, created_by, created_at, updated_at) VALUES ('w1', 'ml', 'local', '["local"]', 'test', 0, 0)`,
				`INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES ('r1', 'p1', 'admin', '', NULL, 'test', 0)`,
				`INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES ('r2', 'p1', 'reader', 'ml', 'w1', 'test', 0)`,
				`INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES ('r3', 'p2', 'reader', '', NULL, 'test', 0)`,
				`INSERT INTO role_assignments (id, principal_id, role, workspace, workspace_id, created_by, created_at) VALUES ('r4', 'p2', 'writer', 'ml', 'w1', 'test', 0)`,
				`INSERT INTO api_keys (id, principal_id, name, prefix, hash, created_by, created_at) VALUES ('k1', 'p1', 'ci', 'pl_', 'h1', 'test', 0)`,
				`INSERT INTO api_keys (id, principal_id, name, prefix, hash, created_by, created_at) VALUES ('k2', 'p2', 'ci', 'pl_', 'h2', 'test', 0)`,
			} {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		err = db.Tx(ctx, func(tx store.Querier) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM principals WHERE id = ?`, "p1")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM role_assignments WHERE principal_id = ?`, "p1"); n != 0 {
			t.Errorf("deleted principal keeps %d role assignments", n)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM api_keys WHERE principal_id = ?`, "p1"); n != 0 {
			t.Errorf("deleted principal keeps %d API keys", n)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM role_assignments WHERE principal_id = ?`, "p2"); n != 2 {
			t.Errorf("other principal has %d role assignments, want 2", n)
		}

		err = db.Tx(ctx, func(tx store.Querier) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM workspaces WHERE id = ?`, "w1")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		rows, err := db.Read().QueryContext(ctx, `SELECT id FROM role_assignments ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			left = append(left, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(left, []string{"r3"}) {
			t.Errorf("after deleting the workspace, role assignments %v remain, want [r3]", left)
		}
	})
}

func TestPlaceholders(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		err := db.Tx(ctx, func(tx store.Querier) error {
			_, err := tx.ExecContext(ctx,
				`INSERT INTO principals (id, name, kind, display_name, created_by, created_at) VALUES (?, ?, 'user', 'who? me?', ?, ?)`,
				"p1", "alice", "it's?", 42)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var name, display, createdBy string
		var createdAt int64
		err = db.Read().QueryRowContext(ctx,
			`SELECT name, display_name, created_by, created_at FROM principals WHERE display_name = 'who? me?' AND id = ? AND created_by <> 'isn''t ?' AND created_at = ?`,
			"p1", 42).Scan(&name, &display, &createdBy, &createdAt)
		if err != nil {
			t.Fatal(err)
		}
		if name != "alice" || display != "who? me?" || createdBy != "it's?" || createdAt != 42 {
			t.Errorf("read back %q %q %q %d", name, display, createdBy, createdAt)
		}

		// More than nine placeholders: $10 is not $1 followed by 0.
		ids := []any{"x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "p1"}
		q := `SELECT COUNT(*) FROM principals WHERE id IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ") + `)`
		if n := countRows(t, db, q, ids...); n != 1 {
			t.Errorf("%s matched %d rows, want 1", q, n)
		}
	})
}

// TestConcurrentWriters checks that transactions from many goroutines are
// serialised without losing an update. Run it with -race.
func TestConcurrentWriters(t *testing.T) {
	const writers, perWriter = 8, 20
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := t.Context()
		err := db.Tx(ctx, func(tx store.Querier) error {
			if _, err := tx.ExecContext(ctx, `CREATE TABLE test_counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE test_counter_log (n BIGINT PRIMARY KEY, writer INTEGER NOT NULL)`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO test_counter (id, n) VALUES (1, 0)`)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		var wg sync.WaitGroup
		errs := make(chan error, writers*perWriter)
		for w := range writers {
			wg.Go(func() {
				for range perWriter {
					errs <- db.Tx(ctx, func(tx store.Querier) error {
						// The increment and the log row it names are one
						// unit: each value must be seen by exactly one Tx.
						var n int64
						if err := tx.QueryRowContext(ctx, `UPDATE test_counter SET n = n + 1 WHERE id = ? RETURNING n`, 1).Scan(&n); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, `INSERT INTO test_counter_log (n, writer) VALUES (?, ?)`, n, w)
						return err
					})
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		const want = writers * perWriter
		if n := countRows(t, db, `SELECT n FROM test_counter WHERE id = 1`); n != want {
			t.Errorf("counter = %d, want %d: updates lost", n, want)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM test_counter_log WHERE n BETWEEN 1 AND ?`, want); n != want {
			t.Errorf("%d distinct counter values logged, want %d", n, want)
		}
	})
}

func TestSQLiteReadIsReadOnly(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	ctx := t.Context()
	_, err := db.Read().ExecContext(ctx, `INSERT INTO principals (id, name, kind, created_by, created_at) VALUES ('p1', 'alice', 'user', 'test', 0)`)
	if err == nil {
		t.Fatal("insert through Read() succeeded, want it refused")
	}
	if !strings.Contains(err.Error(), "readonly") {
		t.Errorf("insert through Read(): %v, want a read-only error", err)
	}
	if n := countRows(t, db, `SELECT COUNT(*) FROM principals`); n != 0 {
		t.Errorf("%d rows written through Read()", n)
	}
	if _, err := db.Read().ExecContext(ctx, `CREATE TABLE sneaky (x INTEGER)`); err == nil {
		t.Error("CREATE TABLE through Read() succeeded, want it refused")
	}
}

// TestEngineVersion: each engine reports a dotted version, for plinth doctor.
func TestEngineVersion(t *testing.T) {
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) {
			v, err := openUnmigrated(t, d).EngineVersion(t.Context())
			if err != nil || !strings.Contains(v, ".") {
				t.Fatalf("EngineVersion = %q, %v", v, err)
			}
			t.Logf("%s %s", d, v)
		})
	}
}
