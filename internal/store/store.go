// Package store opens Plinth's database (embedded SQLite or PostgreSQL),
// applies its versioned migrations, and runs queries and transactions with
// the few dialect differences kept here, so domain packages write SQL once.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL engine behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open Plinth database. For SQLite it holds one writer connection
// and a pool of read-only connections, because SQLite allows one writer at a
// time and serialising writes in-process avoids SQLITE_BUSY storms; for
// PostgreSQL both roles share one pool.
type DB struct {
	dialect Dialect
	write   *sql.DB
	read    *sql.DB
	// Location describes where the data lives, without credentials.
	Location string

	group group
	// Prepared statements of the reader pool, on SQLite.
	readStmts *stmtCache
}

// Open connects to the database named by dsn: a postgres:// or
// postgresql:// URL, or a SQLite file given as a path or sqlite:PATH.
// It does not migrate; call Migrate.
func Open(ctx context.Context, dsn string) (*DB, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return openPostgres(ctx, dsn)
	}
	return openSQLite(ctx, strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "sqlite:"))
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlite database path is empty")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating database directory: %w", err)
		}
	}
	// WAL lets readers proceed during a write; NORMAL sync in WAL mode
	// survives a process crash (kill -9) without an fsync per commit;
	// immediate transactions take the write lock at BEGIN, so two writers
	// from different processes queue instead of deadlocking on upgrade.
	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	write, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	n := max(4, runtime.NumCPU())
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	return &DB{dialect: SQLite, write: write, read: read, Location: "sqlite:" + path,
		readStmts: newStmtCache(read.PrepareContext)}, nil
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening postgres: %w", err)
	}
	pool.SetMaxOpenConns(max(10, 4*runtime.NumCPU()))
	pool.SetMaxIdleConns(max(10, 4*runtime.NumCPU()))
	pool.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.PingContext(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to postgres %s: %w", redact(dsn), err)
	}
	return &DB{dialect: Postgres, write: pool, read: pool, Location: redact(dsn)}, nil
}

// redact hides the password of a database URL so it can be logged.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparseable url)"
	}
	return u.Redacted()
}

// Conn reserves one connection of the write pool for session state
// (PostgreSQL advisory locks); Close gives it back.
func (db *DB) Conn(ctx context.Context) (*sql.Conn, error) { return db.write.Conn(ctx) }

// Dialect reports which SQL engine this DB speaks.
func (db *DB) Dialect() Dialect { return db.dialect }

// EngineVersion is the database server's version as it reports it
// ("15.18" for PostgreSQL, "3.46.1" for SQLite), for diagnostics.
func (db *DB) EngineVersion(ctx context.Context) (string, error) {
	q := `SELECT sqlite_version()`
	if db.dialect == Postgres {
		q = `SHOW server_version`
	}
	var version string
	err := db.read.QueryRowContext(ctx, q).Scan(&version)
	return version, err
}

// Close closes every connection. It is safe to call once.
func (db *DB) Close() error {
	db.closeGroup()
	db.readStmts.close()
	err := db.write.Close()
	if db.read != db.write {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// Ping checks that the database answers, for readiness probes.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.write.PingContext(ctx); err != nil {
		return err
	}
	if db.read != db.write {
		return db.read.PingContext(ctx)
	}
	return nil
}

// Pools returns the underlying connection pools by role, for metrics.
func (db *DB) Pools() map[string]*sql.DB {
	if db.read == db.write {
		return map[string]*sql.DB{"main": db.write}
	}
	return map[string]*sql.DB{"write": db.write, "read": db.read}
}

// Querier runs SQL written with ? placeholders on either dialect.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	Dialect() Dialect
}

type querier struct {
	dialect Dialect
	inner   interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	// stmts, when set, holds statements prepared on the pool behind inner
	// (SQLite only: pgx caches prepared statements itself).
	stmts *stmtCache
}

func (q querier) Dialect() Dialect { return q.dialect }

// stmt returns a prepared statement for query, bound to the transaction
// when there is one, or nil to run the query unprepared.
func (q querier) stmt(ctx context.Context, query string) *sql.Stmt {
	if q.stmts == nil {
		return nil
	}
	return q.stmts.get(ctx, query)
}

func (q querier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query = rebind(q.dialect, query)
	if st := q.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return q.inner.ExecContext(ctx, query, args...)
}

func (q querier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query = rebind(q.dialect, query)
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return q.inner.QueryContext(ctx, query, args...)
}

func (q querier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query = rebind(q.dialect, query)
	if st := q.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return q.inner.QueryRowContext(ctx, query, args...)
}

// stmtCache keeps prepared statements by query text, so hot queries are
// parsed once instead of once per call: parsing was a quarter of the CPU
// of metric logging on SQLite. A cache serves either a connection pool
// (the readers) or one transaction (the single writer connection is busy
// with it, so its statements are prepared on the transaction and live as
// long as it does; group commit makes that one parse per group).
type stmtCache struct {
	prepare func(ctx context.Context, query string) (*sql.Stmt, error)
	mu      sync.Mutex
	m       map[string]*sql.Stmt
}

// maxCachedStmts bounds a cache; queries built with variable-length lists
// beyond it simply run unprepared.
const maxCachedStmts = 1000

func newStmtCache(prepare func(ctx context.Context, query string) (*sql.Stmt, error)) *stmtCache {
	return &stmtCache{prepare: prepare, m: map[string]*sql.Stmt{}}
}

func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st
	}
	if len(c.m) >= maxCachedStmts {
		return nil
	}
	st, err := c.prepare(context.WithoutCancel(ctx), query)
	if err != nil {
		return nil // let the unprepared call report the error
	}
	c.m[query] = st
	return st
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = map[string]*sql.Stmt{}
}

// Read returns a Querier for reads outside a transaction. On SQLite its
// connections are read-only.
func (db *DB) Read() Querier {
	return querier{dialect: db.dialect, inner: db.read, stmts: db.readStmts}
}

// Tx runs fn in one read-write transaction, committing if fn returns nil
// and rolling back otherwise, so nothing half-written survives an error.
func (db *DB) Tx(ctx context.Context, fn func(tx Querier) error) (err error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			tx.Rollback()
			panic(p)
		}
		if err != nil {
			tx.Rollback()
		}
	}()
	q := querier{dialect: db.dialect, inner: tx}
	if db.dialect == SQLite {
		q.stmts = newStmtCache(tx.PrepareContext)
	}
	if err = fn(q); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// Exec runs one statement in a transaction of its own and returns how
// many rows it changed.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := db.Tx(ctx, func(tx Querier) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// rebind turns ? placeholders into PostgreSQL's $n. A ? inside a string
// literal, a quoted identifier or a -- comment is left alone.
func rebind(d Dialect, query string) string {
	if d != Postgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	var quote byte // the quote character we are inside, or 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				end = len(query) - i
			}
			b.WriteString(query[i : i+end])
			i += end - 1
			continue
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// IsUniqueViolation reports whether err is a unique or primary-key
// constraint failure on either dialect.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// IsForeignKeyViolation reports whether err is a foreign-key failure.
func IsForeignKeyViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23503"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	return false
}

// ForUpdate is the row-locking suffix for a SELECT inside a transaction
// that will write what it read. PostgreSQL's default READ COMMITTED would
// otherwise let two such transactions overwrite each other's changes;
// SQLite needs none, since its immediate transactions admit one writer.
func ForUpdate(q Querier) string {
	if q.Dialect() == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Lock serialises the transactions that take the same lock id until they
// end: an advisory lock on PostgreSQL, and nothing more on SQLite, whose
// writers are already serialised. Use it where a check spans rows that do
// not exist yet (such as "no admin exists, so create one").
func Lock(ctx context.Context, tx Querier, lockID int64) error {
	if tx.Dialect() != Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, lockID)
	return err
}

// Advisory lock ids used with Lock; one place, so they never collide.
const (
	LockMigrate        int64 = 7263511
	LockPlatformOwners int64 = 7263512
)
