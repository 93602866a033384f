// Package storetest gives tests real databases of every dialect Plinth
// supports, so one conformance suite runs on each: a SQLite file in the
// test's temporary directory, and a fresh PostgreSQL database on a
// throwaway server (or on the server named by PLINTH_TEST_POSTGRES_URL).
//
// When PostgreSQL is neither configured nor installed, PostgreSQL tests skip
// with a one-line reason; PLINTH_TEST_REQUIRE_ALL=1 turns that skip into a
// failure, as CI sets it.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/store"
)

// Environment variables read by this package.
const (
	// EnvPostgresURL names an existing PostgreSQL server to create test
	// databases on (a URL whose user may CREATE DATABASE). When it is unset
	// a throwaway server is started from the installed binaries.
	EnvPostgresURL = "PLINTH_TEST_POSTGRES_URL"
	// EnvRequireAll set to 1 makes a missing PostgreSQL fail the test
	// instead of skipping it.
	EnvRequireAll = "PLINTH_TEST_REQUIRE_ALL"
)

// Dialects lists every dialect the conformance suite runs on, in the order
// Each runs them.
var Dialects = []store.Dialect{store.SQLite, store.Postgres}

// Each runs fn once per dialect, as the subtests "sqlite" and "postgres",
// each with a fresh, migrated database closed when the subtest ends.
func Each(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}

// Open returns a fresh, migrated database of dialect d, closed in
// t.Cleanup. A PostgreSQL database is created for this test and dropped
// after it; the test is skipped when PostgreSQL is unavailable (see the
// package comment).
func Open(t testing.TB, d store.Dialect) *store.DB {
	t.Helper()
	var dsn string
	switch d {
	case store.SQLite:
		dsn = filepath.Join(t.TempDir(), "plinth.db")
	case store.Postgres:
		dsn = PostgresURL(t)
	default:
		t.Fatalf("storetest: unknown dialect %q", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("storetest: opening %s database: %v", d, err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatalf("storetest: migrating %s database: %v", d, err)
	}
	return db
}

// PostgresURL returns the URL of a fresh, empty (unmigrated) PostgreSQL
// database created for this test and dropped after it, for tests that
// start a whole server. It skips the test when PostgreSQL is unavailable
// (fails it under PLINTH_TEST_REQUIRE_ALL=1).
func PostgresURL(t testing.TB) string {
	t.Helper()
	srv, err := postgresServer()
	if err != nil {
		unavailable(t, err)
	}
	name := databaseName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The name is generated from [a-z0-9_], so quoting it is enough.
	if _, err := srv.admin.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		t.Fatalf("storetest: creating postgres database %s on %s: %v", name, srv.location(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends connections a test leaked, so the drop cannot hang.
		if _, err := srv.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Logf("storetest: dropping postgres database %s: %v", name, err)
		}
	})
	return srv.databaseURL(name)
}

// unavailable skips t, or fails it when every backend is required.
func unavailable(t testing.TB, err error) {
	t.Helper()
	msg := "PostgreSQL unavailable: " + oneLine(err.Error())
	if os.Getenv(EnvRequireAll) == "1" {
		t.Fatal(msg + " (" + EnvRequireAll + "=1)")
	}
	t.Skip(msg)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

var dbSeq atomic.Int64

// databaseName is unique across test binaries sharing one server and
// readable in pg_stat_activity: t_<test>_<pid>_<seq>_<random>.
func databaseName(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if b.Len() >= 24 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	return fmt.Sprintf("t_%s_%d_%d_%s", b.String(), os.Getpid(), dbSeq.Add(1), hex.EncodeToString(rnd[:]))
}

// server is a PostgreSQL server that test databases are created on.
type server struct {
	// base is a URL of the server's maintenance database, with credentials.
	base  *url.URL
	admin *sql.DB
}

func (s *server) location() string { return s.base.Redacted() }

func (s *server) databaseURL(name string) string {
	u := *s.base
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

var (
	serverOnce sync.Once
	theServer  *server
	serverErr  error
)

// postgresServer returns the one server of this test binary, starting it
// on first use. A failure is remembered: every later test skips with it.
func postgresServer() (*server, error) {
	serverOnce.Do(func() {
		theServer, serverErr = connectServer()
	})
	return theServer, serverErr
}

func connectServer() (*server, error) {
	raw := os.Getenv(EnvPostgresURL)
	if raw == "" {
		var err error
		if raw, err = startCluster(); err != nil {
			return nil, err
		}
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "postgres" && base.Scheme != "postgresql") {
		return nil, fmt.Errorf("%s is not a postgres:// URL", EnvPostgresURL)
	}
	admin, err := sql.Open("pgx", base.String())
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", base.Redacted(), err)
	}
	admin.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("connecting to %s: %w", base.Redacted(), err)
	}
	return &server{base: base, admin: admin}, nil
}
