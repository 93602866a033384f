package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// maxGroup bounds how many units share one transaction, so one commit
// never waits behind an unbounded queue.
const maxGroup = 128

// ErrClosed is returned for work submitted after the DB was closed.
var ErrClosed = errors.New("store: database is closed")

type unit struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx Querier) error
	done chan error
}

// group is the group-commit writer behind TxGrouped.
type group struct {
	once      sync.Once
	closeOnce sync.Once
	queue     chan *unit
	closed    chan struct{}
	exited    chan struct{}
}

// TxGrouped runs fn in a write transaction that it may share with other
// callers' units, each inside its own savepoint: fn's changes commit or
// roll back as one, whatever the others do, but many small writes pay for
// one BEGIN and one COMMIT. It returns once the shared transaction has
// committed (or fn failed). Use it for small, frequent, independent
// writes such as metric logging. fn gets a context that carries ctx's
// values but not its cancellation (a cancelled caller must not abort a
// transaction it shares); a failed commit fails every unit of the group.
func (db *DB) TxGrouped(ctx context.Context, fn func(ctx context.Context, tx Querier) error) error {
	g := &db.group
	g.once.Do(func() {
		g.queue = make(chan *unit, maxGroup)
		g.closed = make(chan struct{})
		g.exited = make(chan struct{})
		go db.runGroups()
	})
	u := &unit{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case g.queue <- u:
	case <-g.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-u.done:
		return err
	case <-g.closed:
		// The writer finishes what it dequeued before exiting.
		<-g.exited
		select {
		case err := <-u.done:
			return err
		default:
			return ErrClosed
		}
	}
}

func (db *DB) runGroups() {
	g := &db.group
	defer close(g.exited)
	for {
		var first *unit
		select {
		case first = <-g.queue:
		case <-g.closed:
			return
		}
		units := []*unit{first}
	drain:
		for len(units) < maxGroup {
			select {
			case u := <-g.queue:
				units = append(units, u)
			default:
				break drain
			}
		}
		db.commitGroup(units)
	}
}

func (db *DB) commitGroup(units []*unit) {
	results := make([]error, len(units))
	err := db.Tx(context.Background(), func(tx Querier) error {
		for i, u := range units {
			if err := u.ctx.Err(); err != nil {
				results[i] = err
				continue
			}
			// The statements run without the caller's cancellation: a
			// cancelled request must not abort a transaction it shares.
			ctx := context.WithoutCancel(u.ctx)
			if _, err := tx.ExecContext(ctx, `SAVEPOINT unit`); err != nil {
				return fmt.Errorf("starting savepoint: %w", err)
			}
			if err := u.fn(ctx, tx); err != nil {
				results[i] = err
				if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT unit`); rerr != nil {
					return fmt.Errorf("rolling back to savepoint: %w", rerr)
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT unit`); err != nil {
				return fmt.Errorf("releasing savepoint: %w", err)
			}
		}
		return nil
	})
	for i, u := range units {
		switch {
		case err != nil && results[i] == nil:
			u.done <- err
		default:
			u.done <- results[i]
		}
	}
}

// closeGroup stops the group writer after its current group.
func (db *DB) closeGroup() {
	g := &db.group
	g.closeOnce.Do(func() {
		started := true
		g.once.Do(func() { started = false }) // never start one after Close
		if started {
			close(g.closed)
			<-g.exited
		}
	})
}
