package gateway

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/ratelimit"
	"github.com/plinth-dev/plinth/internal/ratelimit/redistest"
)

func TestLimiterSlidingWindow(t *testing.T) {
	l := newLimiter()
	t0 := time.Unix(1_000_000, 300e6) // 0.3 s into a second
	for i := 0; i < 3; i++ {
		if ok, _, _ := l.allow("k", 3, t0.Add(time.Duration(i)*10*time.Second)); !ok {
			t.Fatalf("call %d refused", i)
		}
	}
	// Calls at t0, t0+10s, t0+20s: the next one is possible once t0's second
	// leaves the span, at floor(t0)+61.
	ok, wait, _ := l.allow("k", 3, t0.Add(30*time.Second))
	if ok {
		t.Fatal("fourth call within the minute admitted")
	}
	if wait != 31*time.Second {
		t.Fatalf("retry after %v, want 31s", wait)
	}
	if ok, _, _ := l.allow("k", 3, t0.Add(60*time.Second)); ok {
		t.Fatal("admitted 60 s after the first call while still in its 61st second")
	}
	if ok, _, _ := l.allow("k", 3, time.Unix(1_000_061, 0)); !ok {
		t.Fatal("refused once the first call left the window")
	}
	// Other keys are independent.
	if ok, _, _ := l.allow("other", 3, t0); !ok {
		t.Fatal("other key refused")
	}
	// Refund gives a slot back.
	ok, _, sec := l.allow("r", 1, t0)
	if !ok {
		t.Fatal("refused")
	}
	l.refund("r", sec)
	if ok, _, _ := l.allow("r", 1, t0); !ok {
		t.Fatal("refund did not free the slot")
	}
	if ok, wait, _ := l.allow("r", 1, t0); ok || wait < time.Second {
		t.Fatalf("second call: ok=%v wait=%v", ok, wait)
	}
}

// No 60-second window may ever hold more than the limit.
func TestLimiterNeverExceedsLimitInAnyMinute(t *testing.T) {
	l := newLimiter()
	const limit = 7
	var admitted []time.Time
	t0 := time.Unix(2_000_000, 0)
	for ms := 0; ms < 300_000; ms += 137 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if ok, _, _ := l.allow("k", limit, now); ok {
			admitted = append(admitted, now)
		}
	}
	for i := range admitted {
		n := 0
		for j := i; j < len(admitted) && admitted[j].Sub(admitted[i]) < time.Minute; j++ {
			n++
		}
		if n > limit {
			t.Fatalf("%d calls within a minute of %v", n, admitted[i])
		}
	}
	if len(admitted) < 4*limit {
		t.Fatalf("only %d admitted over 5 minutes", len(admitted))
	}
}

func TestRateLimitConcurrentCallers(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 100})
	ep.RateLimitPerMinute = 20
	e.g.Update(snap(1, ep))

	const n = 50
	var ok, limited atomic.Int64
	results := make([]resp, n)
	parallel(n, func(i int) {
		results[i] = e.score("primary-key", "{}")
	})
	for _, r := range results {
		switch r.status {
		case 200:
			ok.Add(1)
		case 429:
			limited.Add(1)
			retryAfter(t, r)
			if r.errorCode(t) != "rate_limit_exceeded" || !strings.Contains(string(r.body), "per key") {
				t.Fatalf("429 body %s", r.body)
			}
		default:
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	if ok.Load() != 20 || limited.Load() != 30 {
		t.Fatalf("%d admitted, %d limited; want 20 and 30", ok.Load(), limited.Load())
	}
	// Another key has its own budget.
	if r := e.score("secondary-key", "{}"); r.status != 200 {
		t.Fatalf("secondary key: %d", r.status)
	}
	// Platform keys are limited per key id.
	for i := 0; i < 20; i++ {
		if r := e.score("platform-alice", "{}"); r.status != 200 {
			t.Fatalf("alice call %d: %d", i, r.status)
		}
	}
	if r := e.score("platform-alice", "{}"); r.status != 429 {
		t.Fatalf("alice 21st call: %d", r.status)
	}
}

func TestTeamRateLimit(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	a := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 100})
	a.RateLimitPerMinute, a.TeamRateLimitPerMinute = 3, 5
	b := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 100})
	b.Name, b.TeamRateLimitPerMinute = "ep2", 5
	e.g.Update(snap(1, a, b))

	var ok atomic.Int64
	parallel(30, func(i int) {
		tokens := []string{"primary-key", "secondary-key", "platform-alice", "platform-bob"}
		path := "/endpoints/ep/score"
		if i%2 == 1 {
			path = "/endpoints/ep2/score"
		}
		r := e.call("POST", path, tokens[i%len(tokens)], "{}")
		switch r.status {
		case 200:
			ok.Add(1)
		case 429:
			retryAfter(t, r)
		default:
			t.Errorf("status %d %s", r.status, r.body)
		}
	})
	if ok.Load() != 5 {
		t.Fatalf("team admitted %d calls across its keys and endpoints, want 5", ok.Load())
	}
	r := e.score("platform-carol", "{}")
	if r.status != 429 || !strings.Contains(string(r.body), "team") {
		t.Fatalf("team limit message: %d %s", r.status, r.body)
	}
}

// Two gateways sharing Redis enforce one endpoint rate limit: callers
// spread over both get at most the limit, together.
func TestEndpointRateLimitSharedInRedis(t *testing.T) {
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	m := newModel(t, "r0", nil)
	var envs []*env
	for range 2 {
		rc, err := ratelimit.OpenRedis(url, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		e := newEnv(t, Options{Counter: rc})
		ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 64})
		ep.RateLimitPerMinute = 30
		e.g.Update(snap(1, ep))
		envs = append(envs, e)
	}
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				r := envs[i%2].score("primary-key", `{}`)
				switch r.status {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					retryAfter(t, r)
				default:
					t.Errorf("%d %s", r.status, r.body)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 30 || limited.Load() != 70 {
		t.Fatalf("%d admitted, %d limited by two gateways under 30 per minute", ok.Load(), limited.Load())
	}
}
