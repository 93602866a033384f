package ratelimit

import (
	"context"
	"hash/maphash"
	"sort"
	"sync"
	"time"
)

// memShards spreads keys over independently locked maps, so that calls on
// different keys rarely wait for each other.
const memShards = 64

// sweepEvery is how often (in the callers' seconds) a shard drops the
// counters that hold no usage any more. A sweep walks the whole shard, so it
// runs per elapsed time rather than per call: its cost stays proportional to
// the number of keys, not to traffic.
const sweepEvery = 10

// Memory is a Counter kept in this process: exact, and fast enough to sit in
// every request's path (a few hundred nanoseconds for two limits). It never
// blocks on anything but its own locks, so it ignores contexts.
//
// A sliding counter is a list of per-second buckets in ascending order and
// their sum: each call drops the buckets that left its window from the
// front, so a call costs O(1) amortized and memory follows the seconds that
// saw usage, not the window's length. Time is expected to move forward: a
// clock stepped back still counts everything it finds (erring towards
// refusing), and a calendar counter keeps counting in the later period.
type Memory struct {
	seed   maphash.Seed
	shards [memShards]memShard
}

type memShard struct {
	mu    sync.Mutex
	m     map[memKey]*entry
	swept int64 // the second of the last sweep
	// Keeps neighbouring shards' mutexes off one cache line.
	_ [40]byte
}

// memKey names a counter: a Sliding limit's key and window in seconds, or a
// calendar limit's key and period kind (w 0).
type memKey struct {
	key    string
	period Period
	w      int64
}

// entry is one counter.
type entry struct {
	// expires is the second from which the counter holds no usage: the
	// newest bucket has left the window, or the period has ended.
	expires int64
	// Sliding: per-second buckets in ascending order, and their sum.
	b   []bucket
	sum int64
	// Day, Month: the period counted and its usage.
	start int64
	count int64
}

type bucket struct{ sec, n int64 }

var _ Counter = (*Memory)(nil)

// NewMemory returns an empty in-process Counter.
func NewMemory() *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = map[memKey]*entry{}
	}
	return m
}

func (m *Memory) shardOf(key string) int {
	return int(maphash.String(m.seed, key) % memShards)
}

// Reserve implements Counter.
func (m *Memory) Reserve(_ context.Context, now time.Time, limits []Limit) (Decision, error) {
	return m.do(now, limits, true)
}

// Peek implements Counter.
func (m *Memory) Peek(_ context.Context, now time.Time, limits []Limit) (Decision, error) {
	return m.do(now, limits, false)
}

// small is the number of limits a call handles without allocating scratch
// space; gateways pass two to four.
const small = 8

func (m *Memory) do(now time.Time, limits []Limit, reserve bool) (Decision, error) {
	if err := validate(limits); err != nil {
		return Decision{Refused: -1}, err
	}
	n := len(limits)
	d := newDecision(now, n)
	sec := now.Unix()

	var (
		keysA   [small]memKey
		spansA  [small]span
		shardsA [small]int
		entsA   [small]*entry
		usedA   [small]int64
		lockA   [small]int
	)
	keys, spans, shards, ents, used, lock := keysA[:], spansA[:], shardsA[:], entsA[:], usedA[:], lockA[:0]
	if n > small {
		keys, spans, shards = make([]memKey, n), make([]span, n), make([]int, n)
		ents, used, lock = make([]*entry, n), make([]int64, n), make([]int, 0, n)
	}
	for i := range limits {
		l := &limits[i]
		if l.Max <= 0 {
			d.ignore(i)
			continue
		}
		spans[i] = resolve(l, sec)
		keys[i] = memKey{key: l.Key, period: l.Period, w: spans[i].w}
		shards[i] = m.shardOf(l.Key)
		lock = insertSorted(lock, shards[i])
	}
	// Shards are locked in ascending order, so that calls locking several
	// cannot deadlock; holding them all makes the check and the additions
	// one atomic step.
	for _, s := range lock {
		sh := &m.shards[s]
		sh.mu.Lock()
		sh.maybeSweep(sec)
	}

	for i := range limits {
		l := &limits[i]
		if l.Max <= 0 {
			continue
		}
		e := m.shards[shards[i]].m[keys[i]]
		if e != nil {
			used[i] = e.usage(l.Period, sec, spans[i])
		}
		ents[i] = e
		if d.Allowed && !fits(l, used[i]) {
			d.Allowed, d.Refused = false, i
		}
	}
	if reserve && d.Allowed {
		for i := range limits {
			l := &limits[i]
			if l.Max <= 0 || l.Amount == 0 {
				continue
			}
			e := ents[i]
			if e == nil {
				e = &entry{}
				e.usage(l.Period, sec, spans[i]) // starts the period
				m.shards[shards[i]].m[keys[i]] = e
				ents[i] = e
			}
			e.add(l.Period, sec, spans[i], sec, l.Amount)
			used[i] += l.Amount
		}
	}
	for i := range limits {
		l := &limits[i]
		if l.Max <= 0 {
			continue
		}
		u := usage{used: used[i]}
		if e := ents[i]; e != nil && l.Period == Sliding && len(e.b) > 0 {
			u.newest = e.b[len(e.b)-1].sec
			if i == d.Refused {
				u.free = e.freeing(excess(l, used[i]))
			}
		}
		d.set(i, now, l, spans[i], u)
	}
	// Not deferred: nothing above panics, and a deferred closure costs a
	// tenth of the call.
	for _, s := range lock {
		m.shards[s].mu.Unlock()
	}
	return d, nil
}

// insertSorted adds v to the ascending set s.
func insertSorted(s []int, v int) []int {
	i := len(s)
	for i > 0 && s[i-1] >= v {
		if s[i-1] == v {
			return s
		}
		i--
	}
	s = append(s, 0)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// Adjust implements Counter.
func (m *Memory) Adjust(_ context.Context, now time.Time, stamp int64, l Limit, delta int64) error {
	if l.Max <= 0 || delta == 0 {
		return nil
	}
	l.Amount = 0
	if err := validateOne(&l); err != nil {
		return err
	}
	sec := now.Unix()
	sp := resolve(&l, sec)
	k := memKey{key: l.Key, period: l.Period, w: sp.w}
	sh := &m.shards[m.shardOf(l.Key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e != nil {
		e.usage(l.Period, sec, sp)
	}
	at := sec
	if inWindow(l.Period, stamp, sec, sp) {
		at = stamp
	} else if delta < 0 {
		return nil
	}
	if delta < 0 {
		if e != nil {
			e.take(l.Period, at, -delta)
		}
		return nil
	}
	if e == nil {
		e = &entry{}
		e.usage(l.Period, sec, sp)
		sh.m[k] = e
	}
	e.add(l.Period, sec, sp, at, delta)
	return nil
}

// inWindow reports whether usage counted at second stamp is still counted
// at second sec.
func inWindow(p Period, stamp, sec int64, sp span) bool {
	if p == Sliding {
		return stamp >= sec-sp.w
	}
	return stamp >= sp.start && stamp < sp.end
}

// usage drops what has left the window (or starts a new period) and returns
// the usage counted at second sec.
func (e *entry) usage(p Period, sec int64, sp span) int64 {
	if p != Sliding {
		// A clock stepped back into an earlier period keeps counting in the
		// later one: erring towards refusing.
		if e.start < sp.start {
			e.start, e.count, e.expires = sp.start, 0, sp.end
		}
		return e.count
	}
	lo := sec - sp.w
	k := 0
	for k < len(e.b) && e.b[k].sec < lo {
		e.sum -= e.b[k].n
		k++
	}
	switch {
	case k == 0:
		// Nothing left the window: no write, so no GC write barrier.
	case k == len(e.b):
		e.b = e.b[:0] // keep the array
	default:
		e.b = e.b[k:]
	}
	return e.sum
}

// add counts n at second at (a calendar counter's current period).
func (e *entry) add(p Period, sec int64, sp span, at, n int64) {
	if p != Sliding {
		e.count += n
		return
	}
	e.sum += n
	last := len(e.b) - 1
	switch {
	case last >= 0 && e.b[last].sec == at:
		e.b[last].n += n
	case last < 0 || e.b[last].sec < at:
		e.b = append(e.b, bucket{at, n})
	default:
		// An earlier second: Adjust on a reservation's own second, or a
		// clock stepped back.
		i := sort.Search(len(e.b), func(i int) bool { return e.b[i].sec >= at })
		if e.b[i].sec == at {
			e.b[i].n += n
		} else {
			e.b = append(e.b, bucket{})
			copy(e.b[i+1:], e.b[i:])
			e.b[i] = bucket{at, n}
		}
	}
	e.expires = max(e.expires, e.b[len(e.b)-1].sec+sp.w+1)
}

// take removes up to n from second at (a calendar counter's current
// period), never below zero.
func (e *entry) take(p Period, at, n int64) {
	if p != Sliding {
		e.count -= min(n, e.count)
		return
	}
	i := sort.Search(len(e.b), func(i int) bool { return e.b[i].sec >= at })
	if i < len(e.b) && e.b[i].sec == at {
		n = min(n, e.b[i].n)
		e.b[i].n -= n
		e.sum -= n
	}
}

// freeing returns the earliest second whose expiry frees at least excess.
func (e *entry) freeing(excess int64) int64 {
	var cum int64
	for _, b := range e.b {
		cum += b.n
		if cum >= excess {
			return b.sec
		}
	}
	return e.b[len(e.b)-1].sec
}

// maybeSweep drops the shard's counters that hold no usage at second sec.
func (s *memShard) maybeSweep(sec int64) {
	if sec-s.swept < sweepEvery && s.swept-sec < sweepEvery {
		return
	}
	s.swept = sec
	for k, e := range s.m {
		if e.expires <= sec {
			delete(s.m, k)
		}
	}
}

// size returns the number of counters held, for tests.
func (m *Memory) size() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
