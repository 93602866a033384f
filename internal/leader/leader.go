// Package leader elects the one control-plane replica that runs the
// scheduler and the controllers when several share a PostgreSQL database.
//
// The election is a PostgreSQL session advisory lock held on a connection
// reserved for it: the database itself is the arbiter, so there is no
// extra service to run, and a leader that dies (kill -9, lost node) loses
// the lock the moment PostgreSQL sees its connection close. Standbys try
// for the lock every RetryEvery; the leader checks its session every
// CheckEvery and steps down — stops everything it runs — as soon as the
// session fails; a new leader waits two checks' time before it starts, so
// that a leader cut off from its session has stopped by then.
// On SQLite there is one server by construction: it always leads.
package leader

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/plinth-dev/plinth/internal/store"
)

// lockKey is the advisory lock's key: an arbitrary constant ("plinth" in
// ASCII), the same in every replica.
const lockKey int64 = 0x706c696e7468

// Defaults of an Elector's timing.
const (
	DefaultRetryEvery = time.Second
	DefaultCheckEvery = time.Second
)

// Elector runs a function while this process leads.
type Elector struct {
	db  *store.DB
	log *slog.Logger
	// RetryEvery is how often a standby tries to become leader.
	RetryEvery time.Duration
	// CheckEvery is how often the leader checks that it still holds the
	// lock's session; it also bounds how long a leader whose database
	// connection broke keeps running.
	CheckEvery time.Duration

	leading atomic.Bool
	terms   atomic.Int64
}

// New returns an elector over db's database.
func New(db *store.DB, log *slog.Logger) *Elector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{db: db, log: log, RetryEvery: DefaultRetryEvery, CheckEvery: DefaultCheckEvery}
}

// Leading reports whether this process leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Terms counts how many times this process has become leader.
func (e *Elector) Terms() int64 { return e.terms.Load() }

// Run blocks until ctx ends. Each time this process becomes leader it calls
// lead with a context that is cancelled when leadership is lost (or ctx
// ends), and waits for lead to return before trying again.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) {
	if e.db.Dialect() != store.Postgres {
		e.term(ctx, lead, nil)
		return
	}
	for ctx.Err() == nil {
		conn := e.acquire(ctx)
		if conn == nil {
			return
		}
		// PostgreSQL frees the lock the moment the old leader's session
		// ends, but a leader whose session was ended while it lives (an
		// operator's pg_terminate_backend, a database restart) learns of
		// it only at its next check, which may itself take CheckEvery to
		// time out. Waiting that long before leading means the two never
		// run at once.
		select {
		case <-ctx.Done():
			e.release(conn)
			return
		case <-time.After(2*e.CheckEvery + 100*time.Millisecond):
		}
		e.term(ctx, lead, conn)
	}
}

// term runs lead for one term of leadership: while conn's session holds
// the lock (nil: for as long as ctx lasts).
func (e *Elector) term(ctx context.Context, lead func(context.Context), conn *sql.Conn) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	e.leading.Store(true)
	e.terms.Add(1)
	if conn != nil {
		e.log.Info("this server leads: running the scheduler and controllers")
	}
	go func() {
		defer close(done)
		lead(lctx)
	}()
	if conn != nil {
		e.hold(lctx, conn)
	} else {
		<-lctx.Done()
	}
	cancel()
	<-done
	e.leading.Store(false)
	if conn != nil {
		e.release(conn)
		if ctx.Err() == nil {
			e.log.Warn("this server lost the leadership; standing by")
		}
	}
}

// acquire reserves a connection and tries for the lock on it until it is
// won (the connection is returned, holding it) or ctx ends (nil).
func (e *Elector) acquire(ctx context.Context) *sql.Conn {
	var conn *sql.Conn
	t := time.NewTicker(e.RetryEvery)
	defer t.Stop()
	for {
		if conn == nil {
			c, err := e.db.Conn(ctx)
			if err != nil && ctx.Err() == nil {
				e.log.Warn("leader election: no database connection", "error", err)
			}
			conn = c
		}
		if conn != nil {
			var won bool
			qctx, cancel := context.WithTimeout(ctx, e.RetryEvery+time.Second)
			err := conn.QueryRowContext(qctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&won)
			cancel()
			switch {
			case err == nil && won:
				return conn
			case err != nil:
				if ctx.Err() == nil {
					e.log.Warn("leader election: trying for the lock failed", "error", err)
				}
				discard(conn)
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			if conn != nil {
				conn.Close()
			}
			return nil
		case <-t.C:
		}
	}
}

// hold checks the lock's session every CheckEvery until a check fails or
// ctx ends.
func (e *Elector) hold(ctx context.Context, conn *sql.Conn) {
	t := time.NewTicker(e.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, e.CheckEvery)
		var one int
		err := conn.QueryRowContext(qctx, `SELECT 1`).Scan(&one)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("leader election: the lock's database session failed; stepping down", "error", err)
			}
			return
		}
	}
}

// release gives the lock back (so a standby takes over at once on a
// graceful stop) and the connection with it: a connection whose unlock
// failed is discarded, never pooled while still holding the lock.
func (e *Elector) release(conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock($1)`, lockKey).Scan(&ok); err != nil || !ok {
		discard(conn)
		return
	}
	conn.Close()
}

// discard closes conn's underlying connection instead of pooling it.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close() // ErrConnDone once Raw has discarded it: nothing left to give back
}
