package leader

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// replica is one elector over its own connection pool, as a separate
// server process would have, counting the terms it ran.
type replica struct {
	e       *Elector
	db      *store.DB
	running atomic.Int32
	cancel  context.CancelFunc
	done    chan struct{}
}

func startReplica(t *testing.T, url string, overlap *atomic.Int32) *replica {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &replica{e: New(db, nil), db: db, done: make(chan struct{})}
	r.e.RetryEvery, r.e.CheckEvery = 100*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.e.Run(ctx, func(ctx context.Context) {
			if overlap.Add(1) > 1 {
				t.Error("two leaders at once")
			}
			r.running.Add(1)
			<-ctx.Done()
			r.running.Add(-1)
			overlap.Add(-1)
		})
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(began)
}

func TestOneLeaderAndFailover(t *testing.T) {
	url := storetest.PostgresURL(t)
	var leaders atomic.Int32
	a := startReplica(t, url, &leaders)
	waitFor(t, "a leads", 5*time.Second, a.e.Leading)
	b := startReplica(t, url, &leaders)
	time.Sleep(500 * time.Millisecond)
	if b.e.Leading() || b.running.Load() != 0 {
		t.Fatal("b leads while a holds the lock")
	}

	// A graceful stop hands over at once.
	a.cancel()
	<-a.done
	d := waitFor(t, "b takes over after a stops", 3*time.Second, b.e.Leading)
	t.Logf("takeover after a graceful stop: %v", d)

	// A leader whose database session dies (as when its process is killed
	// or its network fails) steps down, and another takes over.
	c := startReplica(t, url, &leaders)
	var pid int
	// The lock holder's backend is found through pg_locks.
	if err := a.db.Read().QueryRowContext(context.Background(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.db.Read().ExecContext(context.Background(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b steps down", 3*time.Second, func() bool { return !b.e.Leading() })
	d = waitFor(t, "a new leader", 5*time.Second, func() bool { return b.e.Leading() || c.e.Leading() })
	t.Logf("takeover after the leader's session was killed: %v", d)
	if b.e.Terms()+c.e.Terms() != 2 {
		t.Fatalf("terms: b %d, c %d", b.e.Terms(), c.e.Terms())
	}
}

func TestSQLiteAlwaysLeads(t *testing.T) {
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := New(db, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go e.Run(ctx, func(ctx context.Context) { close(ran); <-ctx.Done() })
	<-ran
	if !e.Leading() {
		t.Fatal("not leading")
	}
	cancel()
	waitFor(t, "stops", time.Second, func() bool { return !e.Leading() })
}
