package ratelimit

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	runSuite(t, func(t *testing.T, n int) []Counter {
		m := NewMemory()
		cs := make([]Counter, n)
		for i := range cs {
			cs[i] = m
		}
		return cs
	})
}

// TestMemorySweep checks that counters holding no usage are dropped, and
// that counters still counting are kept.
func TestMemorySweep(t *testing.T) {
	m := NewMemory()
	ctx := context.Background()
	const n = 1000
	key := func(i int) string { return "k" + strconv.Itoa(i) }
	for i := range n {
		m.Reserve(ctx, at(0.5), []Limit{minute(key(i), 10, 1), {Key: key(i), Max: 10, Amount: 1, Period: Day}})
	}
	if got := m.size(); got != 2*n {
		t.Fatalf("%d counters, want %d", got, 2*n)
	}
	// At 61 the minute counters are empty; peeking (which creates
	// nothing) visits every shard.
	for i := range n {
		m.Peek(ctx, at(61+sweepEvery), []Limit{minute(key(i), 10, 1)})
	}
	if got := m.size(); got != n {
		t.Fatalf("%d counters after the minute, want the %d day counters", got, n)
	}
	next := time.Date(2024, 3, 11, 0, 0, 0, 0, time.UTC)
	for i := range n {
		m.Peek(ctx, next, []Limit{minute(key(i), 10, 1)})
	}
	if got := m.size(); got != 0 {
		t.Fatalf("%d counters on the next day, want 0", got)
	}
}

// TestMemoryAllocs keeps Reserve to the two slices it returns.
func TestMemoryAllocs(t *testing.T) {
	m := NewMemory()
	limits := []Limit{minute("rpm:key:1", 1<<40, 1), minute("tpm:team:risk", 1<<40, 500)}
	now := at(0)
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		m.Reserve(context.Background(), now, limits)
	})
	if allocs > 2.1 {
		t.Errorf("Reserve allocates %.2f times per call, want 2", allocs)
	}
}

// BenchmarkMemoryReserve reserves under a request and a token limit per
// call, for a thousand tenants, with the clock moving 1µs a call.
func BenchmarkMemoryReserve(b *testing.B) {
	m := NewMemory()
	const tenants = 1000
	limits := make([][]Limit, tenants)
	for i := range limits {
		limits[i] = []Limit{
			minute("rpm:key:"+strconv.Itoa(i), 1<<40, 1),
			minute("tpm:team:"+strconv.Itoa(i), 1<<40, 500),
		}
	}
	b.ReportAllocs()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		now := at(0)
		i := 0
		for pb.Next() {
			i++
			now = now.Add(time.Microsecond)
			if d, _ := m.Reserve(context.Background(), now, limits[i%tenants]); !d.Allowed {
				b.Fatal("refused")
			}
		}
	})
	reportCPU(b, cpu)
}

// BenchmarkMemoryReserveHot has every goroutine reserve on the same two
// counters: the contended case.
func BenchmarkMemoryReserveHot(b *testing.B) {
	m := NewMemory()
	limits := []Limit{minute("rpm:key:1", 1<<40, 1), minute("tpm:team:risk", 1<<40, 500)}
	b.ReportAllocs()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		now := at(0)
		for pb.Next() {
			now = now.Add(time.Microsecond)
			m.Reserve(context.Background(), now, limits)
		}
	})
	reportCPU(b, cpu)
}
