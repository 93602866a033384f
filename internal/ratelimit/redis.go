package ratelimit

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// script does every operation in one atomic step on the server; see the
// comment at its top for its arguments and the layout of the counters.
//
//go:embed ratelimit.lua
var scriptSource string

// script is shared by every Redis counter: go-redis runs it by EVALSHA and
// falls back to EVAL (which caches it again) when the server has not seen
// it, e.g. after a restart or SCRIPT FLUSH.
var script = redis.NewScript(scriptSource)

// Redis is a Counter whose counters live in Redis, shared by every process
// that uses the same server and prefix.
//
// Keys are "{prefix}:w60:KEY" (a 60-second sliding window),
// "{prefix}:d20240229:KEY" (a day) and "{prefix}:m202402:KEY" (a month).
// The braces make the prefix a Redis Cluster hash tag: one call's keys must
// sit in one slot for its script to see them all, and a call combines
// unrelated keys (a key's, a team's, a user's). So on a cluster all counters
// of one prefix live on one node; a single node runs well over 10^4 calls a
// second, and deployments that need more can give groups of tenants their
// own prefixes.
//
// Decisions use the caller's now (see the package comment); Redis's own
// clock only expires idle keys, and key lifetimes are sent as relative
// TTLs, so a server clock that differs from the gateways' loses nothing.
type Redis struct {
	client redis.UniversalClient
	prefix string
	owned  bool
}

var _ Counter = (*Redis)(nil)

// NewRedis returns a Counter that keeps its counters in client under
// prefix (default "ratelimit"). The client stays the caller's to close.
//
// Calls take as long as the client lets them: for a quick error when the
// server is unreachable, set up the client as [OpenRedis] does and pass
// contexts with deadlines.
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	if prefix == "" {
		prefix = "ratelimit"
	}
	return &Redis{client: client, prefix: "{" + prefix + "}:"}
}

// OpenRedis connects to the server named by a redis:// or rediss:// URL
// (see redis.ParseURL) and returns a Counter that closes the connection in
// Close.
//
// The client is set up to fail fast, since a gateway asks on every request
// and decides itself what an outage means: it honours contexts' deadlines,
// gives up dialling after a second, dials once per attempt and retries a
// command once (a pooled connection the server has closed), unless the URL
// says otherwise. go-redis's defaults (5 dials with backoff, 3 retries)
// would hold each request for seconds while the server is down.
func OpenRedis(rawURL, prefix string) (*Redis, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	if opt.DialTimeout == 0 {
		opt.DialTimeout = time.Second
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 1
	}
	r := NewRedis(redis.NewClient(opt), prefix)
	r.owned = true
	return r, nil
}

// Close closes the client when OpenRedis made it.
func (r *Redis) Close() error {
	if r.owned {
		return r.client.Close()
	}
	return nil
}

// key returns the Redis key of an active limit's counter.
func (r *Redis) key(l *Limit, sp span) string {
	var tag string
	switch l.Period {
	case Sliding:
		tag = "w" + strconv.FormatInt(sp.w, 10)
	case Day:
		tag = time.Unix(sp.start, 0).UTC().Format("d20060102")
	default:
		tag = time.Unix(sp.start, 0).UTC().Format("m200601")
	}
	return r.prefix + tag + ":" + l.Key
}

func kind(p Period) string {
	if p == Sliding {
		return "s"
	}
	return "c"
}

// calendarTTL is how long a calendar counter is kept after second sec.
func calendarTTL(sp span, sec int64) int64 {
	return sp.end - sec + int64(calendarMargin/time.Second)
}

// Reserve implements Counter.
func (r *Redis) Reserve(ctx context.Context, now time.Time, limits []Limit) (Decision, error) {
	return r.do(ctx, now, limits, "r")
}

// Peek implements Counter.
func (r *Redis) Peek(ctx context.Context, now time.Time, limits []Limit) (Decision, error) {
	return r.do(ctx, now, limits, "p")
}

func (r *Redis) do(ctx context.Context, now time.Time, limits []Limit, mode string) (Decision, error) {
	if err := validate(limits); err != nil {
		return Decision{Refused: -1}, err
	}
	d := newDecision(now, len(limits))
	sec := now.Unix()
	spans := make([]span, len(limits))
	var keys []string
	var index []int // keys[j] counts limits[index[j]]
	args := []any{mode, sec}
	for i := range limits {
		l := &limits[i]
		if l.Max <= 0 {
			d.ignore(i)
			continue
		}
		sp := resolve(l, sec)
		spans[i] = sp
		keys = append(keys, r.key(l, sp))
		index = append(index, i)
		var ttl int64
		if l.Period != Sliding {
			ttl = calendarTTL(sp, sec)
		}
		args = append(args, kind(l.Period), sp.w, l.Max, l.Amount, ttl)
	}
	if len(keys) == 0 {
		return d, nil
	}
	vals, err := script.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return Decision{Refused: -1}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	if len(vals) != 2+2*len(keys) {
		return Decision{Refused: -1}, fmt.Errorf("ratelimit: redis: script returned %d values for %d keys", len(vals), len(keys))
	}
	if j := vals[0]; j > 0 {
		d.Allowed, d.Refused = false, index[j-1]
	}
	for j, i := range index {
		u := usage{used: vals[1+2*j], newest: vals[2+2*j]}
		if i == d.Refused {
			u.free = vals[len(vals)-1]
		}
		d.set(i, now, &limits[i], spans[i], u)
	}
	return d, nil
}

// Adjust implements Counter.
func (r *Redis) Adjust(ctx context.Context, now time.Time, stamp int64, l Limit, delta int64) error {
	if l.Max <= 0 || delta == 0 {
		return nil
	}
	l.Amount = 0
	if err := validateOne(&l); err != nil {
		return err
	}
	sec := now.Unix()
	sp := resolve(&l, sec)
	var ttl int64
	if l.Period != Sliding {
		// A refund for an ended period is dropped here; usage counts in
		// the current period (see Counter.Adjust).
		if !inWindow(l.Period, stamp, sec, sp) && delta < 0 {
			return nil
		}
		ttl = calendarTTL(sp, sec)
	}
	err := script.Run(ctx, r.client, []string{r.key(&l, sp)},
		"a", sec, kind(l.Period), sp.w, stamp, delta, ttl).Err()
	if err != nil {
		return fmt.Errorf("ratelimit: redis: %w", err)
	}
	return nil
}
