package ratelimit

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plinth-dev/plinth/internal/ratelimit/redistest"
)

// redisCounters returns a factory of Redis counters on one server: every
// call gets a fresh prefix, and each of its n counters its own client.
func redisCounters(t *testing.T) (counters, *redis.Options) {
	opt, err := redis.ParseURL(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	opt.ContextTimeoutEnabled = true
	var seq atomic.Int64
	return func(t *testing.T, n int) []Counter {
		prefix := redistest.Prefix(t) + strconv.FormatInt(seq.Add(1), 10)
		cs := make([]Counter, n)
		for i := range cs {
			client := redis.NewClient(opt)
			t.Cleanup(func() { client.Close() })
			cs[i] = NewRedis(client, prefix)
		}
		t.Cleanup(func() { deleteKeys(t, opt, prefix) })
		return cs
	}, opt
}

// deleteKeys removes a test's counters, which on a shared server
// (PLINTH_TEST_REDIS_URL) would otherwise linger until their TTLs: hours
// for calendar counters.
func deleteKeys(t testing.TB, opt *redis.Options, prefix string) {
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := client.Scan(ctx, 0, "{"+prefix+"}:*", 100).Iterator()
	for iter.Next(ctx) {
		client.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("deleting test keys: %v", err)
	}
}

func TestRedis(t *testing.T) {
	mk, _ := redisCounters(t)
	runSuite(t, mk)
}

// TestRedisKeys checks where counters live: under the prefix, as a
// cluster hash tag, each with a lifetime.
func TestRedisKeys(t *testing.T) {
	_, opt := redisCounters(t)
	client := redis.NewClient(opt)
	defer client.Close()
	prefix := redistest.Prefix(t)
	c := NewRedis(client, prefix)
	t.Cleanup(func() { deleteKeys(t, opt, prefix) })
	ctx := context.Background()
	now := time.Date(2024, 2, 29, 23, 0, 0, 0, time.UTC)
	limits := []Limit{
		minute("rpm:key:1", 10, 1),
		{Key: "tpd:team:risk", Max: 1000, Amount: 500, Period: Day},
		{Key: "budget:ws:default", Max: 1000, Amount: 500, Period: Month},
	}
	if d, err := c.Reserve(ctx, now, limits); err != nil || !d.Allowed {
		t.Fatalf("Reserve: %v %+v", err, d)
	}
	tag := "{" + prefix + "}:"
	want := map[string]time.Duration{
		tag + "w60:rpm:key:1":             62 * time.Second,
		tag + "d20240229:tpd:team:risk":   2 * time.Hour,
		tag + "m202402:budget:ws:default": 2 * time.Hour,
	}
	keys, err := client.Keys(ctx, "*"+prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(want) {
		t.Fatalf("keys %q, want %d", keys, len(want))
	}
	for _, k := range keys {
		ttl, ok := want[k]
		if !ok {
			t.Errorf("unexpected key %q", k)
			continue
		}
		got, err := client.TTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Relative TTLs from the caller's clock: 2024 is long past for
		// the server, and the keys live anyway.
		if got <= ttl-5*time.Second || got > ttl {
			t.Errorf("%s: TTL %v, want about %v", k, got, ttl)
		}
	}
}

// TestRedisScriptFlush checks the EVAL fallback when the server has
// forgotten the script.
func TestRedisScriptFlush(t *testing.T) {
	mk, opt := redisCounters(t)
	c := mk(t, 1)[0]
	l := minute("k", 10, 1)
	reserve(t, c, at(0.5), l)
	client := redis.NewClient(opt)
	defer client.Close()
	if err := client.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	reserve(t, c, at(0.5), l)
	if u := used(t, c, at(0.5), l); u != 2 {
		t.Fatalf("used %d after the flush, want 2", u)
	}
}

// TestRedisUnreachable: with nothing listening, calls fail at once.
func TestRedisUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := OpenRedis("redis://"+addr+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Reserve(ctx, at(0), []Limit{minute("k", 10, 1)}); err == nil {
		t.Fatal("Reserve succeeded without a server")
	}
	if _, err := c.Peek(ctx, at(0), []Limit{minute("k", 10, 1)}); err == nil {
		t.Fatal("Peek succeeded without a server")
	}
	if err := c.Adjust(ctx, at(0), 0, minute("k", 10, 1), 5); err == nil {
		t.Fatal("Adjust succeeded without a server")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing took %v", d)
	}
}

// TestRedisDeadline: a server that accepts connections but never answers
// costs a call no more than its context's deadline.
func TestRedisDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// Read and say nothing, until the test ends.
			go func() {
				defer conn.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	c, err := OpenRedis("redis://"+ln.Addr().String()+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := c.Reserve(ctx, at(0), []Limit{minute("k", 10, 1)})
		cancel()
		if err == nil {
			t.Fatal("Reserve succeeded against a silent server")
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Reserve with a 200ms deadline took %v: %v", d, err)
		}
	}
}

func TestOpenRedisBadURL(t *testing.T) {
	if _, err := OpenRedis("http://localhost", ""); err == nil || !strings.Contains(err.Error(), "ratelimit") {
		t.Fatalf("OpenRedis of an http URL: %v", err)
	}
}

// BenchmarkRedisReserve measures one round trip with two limits.
func BenchmarkRedisReserve(b *testing.B) {
	opt, err := redis.ParseURL(redistest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	prefix := redistest.Prefix(b)
	c := NewRedis(client, prefix)
	b.Cleanup(func() { deleteKeys(b, opt, prefix) })
	limits := []Limit{minute("rpm:key:1", 1<<40, 1), minute("tpm:team:risk", 1<<40, 500)}
	b.RunParallel(func(pb *testing.PB) {
		now := at(0)
		for pb.Next() {
			now = now.Add(time.Microsecond)
			if _, err := c.Reserve(context.Background(), now, limits); err != nil {
				b.Fatal(err)
			}
		}
	})
}
