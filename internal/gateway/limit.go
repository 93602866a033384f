package gateway

import (
	"hash/maphash"
	"sync"
	"time"
)

// window is one rate-limit bucket: request counts per second over the last
// windowSlots seconds, in a ring indexed by second.
const windowSlots = 61

type window struct {
	stamp [windowSlots]int64
	count [windowSlots]uint32
	last  int64
}

// limiter is an exact sliding-window rate limiter kept in memory. A call at
// time t is admitted when fewer than limit calls were admitted in the
// seconds floor(t)-60 … floor(t): a span of 60 to 61 seconds that covers
// [t-60s, t], so no 60-second window ever admits more than limit calls.
type limiter struct {
	seed   maphash.Seed
	shards [32]limShard
}

type limShard struct {
	mu  sync.Mutex
	m   map[string]*window
	ops int
}

func newLimiter() *limiter {
	l := &limiter{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[string]*window{}
	}
	return l
}

func (l *limiter) shard(key string) *limShard {
	return &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
}

// allow admits one call under limit per minute for key. It returns the
// second the call was counted in (for refund) or, when refused, how long
// until a call would be admitted (at least one second).
func (l *limiter) allow(key string, limit int, now time.Time) (ok bool, retryAfter time.Duration, sec int64) {
	sec = now.Unix()
	s := l.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops++
	if s.ops&1023 == 0 {
		for k, w := range s.m {
			if w.last < sec-windowSlots {
				delete(s.m, k)
			}
		}
	}
	w := s.m[key]
	if w == nil {
		w = &window{}
		for i := range w.stamp {
			w.stamp[i] = -1 << 62
		}
		s.m[key] = w
	}
	oldest := sec - (windowSlots - 1)
	total := 0
	for i := range w.count {
		if w.stamp[i] >= oldest && w.stamp[i] <= sec {
			total += int(w.count[i])
		}
	}
	if total >= limit {
		// The earliest second whose expiry brings the count under limit.
		excess := total - limit + 1
		for t := oldest; t <= sec; t++ {
			i := mod(t)
			if w.stamp[i] != t {
				continue
			}
			excess -= int(w.count[i])
			if excess <= 0 {
				// Second t leaves the span when floor(now) reaches t+61.
				wait := time.Unix(t+windowSlots, 0).Sub(now)
				return false, roundUpSecond(wait), sec
			}
		}
		return false, time.Second, sec
	}
	i := mod(sec)
	if w.stamp[i] != sec {
		w.stamp[i], w.count[i] = sec, 0
	}
	w.count[i]++
	w.last = sec
	return true, 0, sec
}

// refund takes back a call admitted in second sec (refused later by another
// limit).
func (l *limiter) refund(key string, sec int64) {
	s := l.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.m[key]; w != nil {
		i := mod(sec)
		if w.stamp[i] == sec && w.count[i] > 0 {
			w.count[i]--
		}
	}
}

func mod(sec int64) int {
	m := sec % windowSlots
	if m < 0 {
		m += windowSlots
	}
	return int(m)
}

func roundUpSecond(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}
