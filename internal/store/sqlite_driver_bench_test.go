//go:build sqlitebench

// Built only with -tags sqlitebench, so the ncruces driver (a WebAssembly
// build of SQLite) is compiled only when comparing drivers, not in every
// test run.
package store_test

// BenchmarkSQLiteDriver compares the two pure-Go SQLite drivers DESIGN.md
// allows, set up the way store opens SQLite (same pragmas, one writer
// connection with immediate transactions, a query_only reader pool) on
// Plinth's real schema. Results and the command are in docs/benchmarks.md.

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	_ "github.com/ncruces/go-sqlite3/driver" // registers "sqlite3"
	"github.com/plinth-dev/plinth/internal/store"
	_ "modernc.org/sqlite" // registers "sqlite"
)

// The ncruces README still mentions github.com/ncruces/go-sqlite3/embed;
// since v0.30-something it is empty and prints a deprecation notice on
// init, so it is not imported.

var sqliteDrivers = []struct{ name, driver string }{
	{"modernc", "sqlite"},  // modernc.org/sqlite: C translated to Go (what store uses)
	{"ncruces", "sqlite3"}, // github.com/ncruces/go-sqlite3: Wasm build of SQLite translated to Go
}

const benchRows = 1000 // rows in principals before each read benchmark

type benchDB struct {
	write, read *sql.DB
}

// openBenchDB opens a fresh database the way store.openSQLite does, with
// the given driver, and applies Plinth's SQLite migrations.
func openBenchDB(b *testing.B, driver string) benchDB {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "bench.db")
	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	write, err := sql.Open(driver, base+"&_txlock=immediate")
	if err != nil {
		b.Fatal(err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	b.Cleanup(func() { write.Close() })
	read, err := sql.Open(driver, base+"&_pragma=query_only(1)")
	if err != nil {
		b.Fatal(err)
	}
	n := max(4, runtime.NumCPU())
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	b.Cleanup(func() { read.Close() })

	// Both drivers must really have applied the pragmas, or the
	// comparison is unfair.
	for pragma, want := range map[string]string{
		"journal_mode": "wal", "foreign_keys": "1", "synchronous": "1", "busy_timeout": "10000",
	} {
		var got string
		if err := write.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
			b.Fatalf("%s: PRAGMA %s: %v", driver, pragma, err)
		}
		if got != want {
			b.Fatalf("%s: PRAGMA %s = %s, want %s", driver, pragma, got, want)
		}
	}
	var queryOnly string
	if err := read.QueryRowContext(ctx, "PRAGMA query_only").Scan(&queryOnly); err != nil || queryOnly != "1" {
		b.Fatalf("%s: reader PRAGMA query_only = %s, %v; want 1", driver, queryOnly, err)
	}

	migrations, err := store.Migrations(store.SQLite)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range migrations {
		if _, err := write.ExecContext(ctx, m.SQL); err != nil {
			b.Fatalf("%s: migration %d: %v", driver, m.Version, err)
		}
	}
	return benchDB{write: write, read: read}
}

const insertPrincipalSQL = `INSERT INTO principals (id, name, kind, display_name, created_by, created_at) VALUES (?, ?, 'user', ?, ?, ?)`

func (db benchDB) insertTx(ctx context.Context, i int64) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	id := fmt.Sprintf("p-%08d", i)
	if _, err := tx.ExecContext(ctx, insertPrincipalSQL, id, "user-"+id, "User "+id, "bench", i); err != nil {
		return err
	}
	return tx.Commit()
}

func (db benchDB) fill(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range int64(benchRows) {
		id := fmt.Sprintf("p-%08d", i)
		if _, err := tx.ExecContext(ctx, insertPrincipalSQL, id, "user-"+id, "User "+id, "bench", i); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

type principalRow struct {
	id, name, kind, display string
	createdAt               int64
}

func (db benchDB) pointRead(ctx context.Context, i int) (principalRow, error) {
	var p principalRow
	err := db.read.QueryRowContext(ctx,
		`SELECT id, name, kind, display_name, created_at FROM principals WHERE id = ?`,
		fmt.Sprintf("p-%08d", i%benchRows)).Scan(&p.id, &p.name, &p.kind, &p.display, &p.createdAt)
	return p, err
}

func BenchmarkSQLiteDriver(b *testing.B) {
	ctx := context.Background()
	for _, drv := range sqliteDrivers {
		b.Run(drv.name, func(b *testing.B) {
			// One transaction with one INSERT through the single writer
			// connection: BEGIN IMMEDIATE, insert, COMMIT (a WAL append).
			b.Run("insert_tx", func(b *testing.B) {
				db := openBenchDB(b, drv.driver)
				b.ReportAllocs()
				b.ResetTimer()
				for i := range int64(b.N) {
					if err := db.insertTx(ctx, i); err != nil {
						b.Fatal(err)
					}
				}
			})
			// One row by primary key through the reader pool.
			b.Run("point_read", func(b *testing.B) {
				db := openBenchDB(b, drv.driver)
				db.fill(b)
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, err := db.pointRead(ctx, i*7919); err != nil {
						b.Fatal(err)
					}
				}
			})
			// The same read from GOMAXPROCS goroutines at once.
			b.Run("parallel_read", func(b *testing.B) {
				db := openBenchDB(b, drv.driver)
				db.fill(b)
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1)) * 104729
					for pb.Next() {
						i += 7919
						if _, err := db.pointRead(ctx, i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			// A page of 100 rows in index order, scanned into structs.
			b.Run("scan_100_rows", func(b *testing.B) {
				db := openBenchDB(b, drv.driver)
				db.fill(b)
				page := make([]principalRow, 0, 100)
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					rows, err := db.read.QueryContext(ctx,
						`SELECT id, name, kind, display_name, created_at FROM principals WHERE name > ? ORDER BY name LIMIT 100`,
						fmt.Sprintf("user-p-%08d", (i*37)%(benchRows-100)))
					if err != nil {
						b.Fatal(err)
					}
					page = page[:0]
					for rows.Next() {
						var p principalRow
						if err := rows.Scan(&p.id, &p.name, &p.kind, &p.display, &p.createdAt); err != nil {
							b.Fatal(err)
						}
						page = append(page, p)
					}
					if err := rows.Err(); err != nil {
						b.Fatal(err)
					}
					rows.Close()
					if len(page) != 100 {
						b.Fatalf("scanned %d rows, want 100", len(page))
					}
				}
			})
		})
	}
}
