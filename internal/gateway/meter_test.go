package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMeterNeverBlocks(t *testing.T) {
	reg := prometheus.NewRegistry()
	block := make(chan struct{})
	var got atomic.Int64
	m := NewMeter(func(ctx context.Context, b []Record) error {
		<-block
		got.Add(int64(len(b)))
		return nil
	}, 10, 5, time.Millisecond, reg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()

	began := time.Now()
	for i := 0; i < 1000; i++ {
		m.Add(Record{Endpoint: "ep", Status: 200})
	}
	if d := time.Since(began); d > 500*time.Millisecond {
		t.Fatalf("1000 Adds against a stuck sink took %v", d)
	}
	// The sink holds one batch of 5; the buffer holds 10 more (and the
	// run loop may hold a few pending): the rest were dropped, counted.
	dropped := m.Dropped()
	if dropped < 1000-10-5-5 || dropped > 1000-10 {
		t.Fatalf("dropped %d", dropped)
	}
	if c := testutil.ToFloat64(m.drops.WithLabelValues("buffer_full")); int64(c) != dropped {
		t.Fatalf("counter %v, Dropped %d", c, dropped)
	}
	close(block)
	cancel()
	<-done
	if got.Load()+m.Dropped() != 1000 {
		t.Fatalf("written %d + dropped %d != 1000", got.Load(), m.Dropped())
	}
}

func TestMeterFlushesOnExitAndInBatches(t *testing.T) {
	var mu sync.Mutex
	var batches [][]Record
	m := NewMeter(func(ctx context.Context, b []Record) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mu.Lock()
		batches = append(batches, append([]Record(nil), b...))
		mu.Unlock()
		return nil
	}, 1000, 10, time.Hour, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	for i := 0; i < 25; i++ {
		m.Add(Record{Status: i})
	}
	// Two full batches go out without waiting for the (hourly) tick.
	waitFor(t, "full batches", func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 2 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for i, b := range batches {
		if len(b) > 10 {
			t.Fatalf("batch %d has %d records", i, len(b))
		}
		for _, r := range b {
			if r.Status != total {
				t.Fatalf("record %d out of order: %d", total, r.Status)
			}
			total++
		}
	}
	if total != 25 || m.Dropped() != 0 {
		t.Fatalf("wrote %d, dropped %d", total, m.Dropped())
	}
}

func TestMeterRetriesFailedBatches(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	var written atomic.Int64
	m := NewMeter(func(ctx context.Context, b []Record) error {
		if fail.Load() {
			return errors.New("database is locked")
		}
		written.Add(int64(len(b)))
		return nil
	}, 100, 10, 5*time.Millisecond, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	for i := 0; i < 30; i++ {
		m.Add(Record{})
	}
	time.Sleep(50 * time.Millisecond)
	fail.Store(false)
	waitFor(t, "retried records", func() bool { return written.Load() == 30 })
	// Failing at exit: counted, never silent.
	fail.Store(true)
	for i := 0; i < 7; i++ {
		m.Add(Record{})
	}
	cancel()
	<-done
	if m.Dropped() != 7 {
		t.Fatalf("dropped %d, want 7", m.Dropped())
	}
}
