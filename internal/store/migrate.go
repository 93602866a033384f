package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations
var migrationFiles embed.FS

// Migration is one versioned schema change for one dialect.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ErrSchemaTooNew is wrapped by Migrate when the database was written by a
// newer Plinth than this binary.
var ErrSchemaTooNew = fmt.Errorf("database schema is newer than this binary")

// Migrations returns the embedded migrations for a dialect, in order.
// Files are named NNNN_name.sql; both dialects carry the same versions.
func Migrations(d Dialect) ([]Migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s migrations: %w", d, err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: name must be NNNN_description.sql", name)
		}
		body, err := fs.ReadFile(migrationFiles, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: rest, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("%s migrations: expected version %d, found %d (%s)", d, i+1, m.Version, m.Name)
		}
	}
	return out, nil
}

// SchemaVersion returns the highest migration version applied, 0 for a
// new database.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) {
	if err := db.ensureMigrationTable(ctx); err != nil {
		return 0, err
	}
	var v int
	err := db.Read().QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM plinth_schema_migrations`).Scan(&v)
	return v, err
}

func (db *DB) ensureMigrationTable(ctx context.Context) error {
	_, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS plinth_schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at BIGINT NOT NULL)`)
	if err != nil {
		return fmt.Errorf("creating migration table: %w", err)
	}
	return nil
}

// Migrate brings the schema up to this binary's latest version, one
// transaction per migration. It refuses a database whose schema is newer
// than the binary, so an old binary never writes to a schema it does not
// understand. Concurrent Migrate calls (several replicas starting at once)
// are serialised by the database.
func (db *DB) Migrate(ctx context.Context) (applied []Migration, err error) {
	all, err := Migrations(db.dialect)
	if err != nil {
		return nil, err
	}
	if err := db.ensureMigrationTable(ctx); err != nil {
		return nil, err
	}
	latest := len(all)
	for {
		var m *Migration
		err := db.Tx(ctx, func(tx Querier) error {
			// Held until the transaction ends: one replica migrates at a time.
			if err := Lock(ctx, tx, LockMigrate); err != nil {
				return err
			}
			var current int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM plinth_schema_migrations`).Scan(&current); err != nil {
				return err
			}
			if current > latest {
				return fmt.Errorf("%w: database is at version %d, this binary knows up to %d; run a newer plinth", ErrSchemaTooNew, current, latest)
			}
			if current == latest {
				return nil
			}
			m = &all[current]
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO plinth_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return applied, err
		}
		if m == nil {
			return applied, nil
		}
		applied = append(applied, *m)
	}
}
