package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

// TestTxGroupedIsolatesUnits runs many concurrent grouped writes, a third
// of which fail after writing: the failing ones leave nothing, the others
// all commit, on both databases.
func TestTxGroupedIsolatesUnits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := db.Tx(ctx, func(tx store.Querier) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE grouped (id INTEGER PRIMARY KEY, note TEXT NOT NULL)`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		var wg sync.WaitGroup
		errs := make([]error, 300)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.TxGrouped(ctx, func(ctx context.Context, tx store.Querier) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO grouped (id, note) VALUES (?, ?)`, i, fmt.Sprint("n", i)); err != nil {
						return err
					}
					if i%3 == 0 {
						return boom
					}
					if i%7 == 0 {
						// A statement error inside a unit (duplicate key) is
						// rolled back to its savepoint, even on PostgreSQL.
						_, err := tx.ExecContext(ctx, `INSERT INTO grouped (id, note) VALUES (?, 'dup')`, i)
						return err
					}
					return nil
				})
			}()
		}
		wg.Wait()
		want := 0
		for i, err := range errs {
			switch {
			case i%3 == 0:
				if !errors.Is(err, boom) {
					t.Fatalf("unit %d: %v, want boom", i, err)
				}
			case i%7 == 0:
				if !store.IsUniqueViolation(err) {
					t.Fatalf("unit %d: %v, want a unique violation", i, err)
				}
			default:
				if err != nil {
					t.Fatalf("unit %d: %v", i, err)
				}
				want++
			}
		}
		var got int
		db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM grouped`).Scan(&got)
		if got != want {
			t.Fatalf("%d rows committed, want %d", got, want)
		}
		var bad int
		db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM grouped WHERE id % 3 = 0 OR (id % 7 = 0)`).Scan(&bad)
		if bad != 0 {
			t.Fatalf("%d rows of failed units survived", bad)
		}
	})
}

func TestTxGroupedAfterClose(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	ctx := context.Background()
	if err := db.TxGrouped(ctx, func(context.Context, store.Querier) error { return nil }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := db.TxGrouped(ctx, func(context.Context, store.Querier) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
