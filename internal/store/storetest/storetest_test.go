package storetest

import (
	"context"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
)

func TestPostgresURLIsFreshAndEmpty(t *testing.T) {
	a, b := PostgresURL(t), PostgresURL(t)
	if a == b {
		t.Fatalf("two calls returned the same database %s", a)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables int
	err = db.Read().QueryRowContext(ctx,
		`SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("fresh database has %d tables, want 0", tables)
	}
}

func TestOpenMigratesEveryDialect(t *testing.T) {
	Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		all, err := store.Migrations(db.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		v, err := db.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != len(all) {
			t.Errorf("schema version %d, want %d", v, len(all))
		}
	})
}

func TestDatabaseNameIsAnIdentifier(t *testing.T) {
	t.Run("Weird/Name with SPACES-and.dots", func(t *testing.T) {
		n := databaseName(t)
		if len(n) > 63 {
			t.Errorf("%q is longer than PostgreSQL's 63-byte identifier limit", n)
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				t.Fatalf("%q has %q, outside [a-z0-9_]", n, r)
			}
		}
	})
}
