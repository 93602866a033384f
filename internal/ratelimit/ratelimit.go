// Package ratelimit keeps the counters behind request limits, token limits
// and spending quotas: each call reserves an amount under several limits at
// once, all or nothing, and may correct the amount later when the real
// usage is known (an LLM reports its token count only after answering).
//
// Two implementations share one contract, checked by one test suite:
// [Memory] for a single gateway process, and [Redis] for gateway replicas
// that must enforce one limit together.
//
// A limit counts either over a sliding window with one-second resolution
// or over a calendar day or month in UTC. The sliding window is exact, not
// an approximation from two fixed windows: a call at time t counts the
// usage of the seconds floor(t)-W … floor(t), a span of W to W+1 seconds
// that covers [t-W, t], so no interval of length W ever admits more than
// Max (the price is that a burst frees one second later than a pure
// [t-W, t] window would free it).
//
// Time is always the caller's now, never a clock of the store: tests drive
// it, and gateways' clocks are NTP-synchronised far below the one-second
// resolution that counting uses.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Period says how a limit counts.
type Period int

const (
	// Sliding counts over a trailing window of Limit.Window, rounded up to
	// whole seconds.
	Sliding Period = iota
	// Day counts from midnight UTC to the next midnight UTC.
	Day
	// Month counts from the first of a month, 00:00 UTC, to the first of
	// the next.
	Month
)

func (p Period) String() string {
	switch p {
	case Sliding:
		return "sliding"
	case Day:
		return "day"
	case Month:
		return "month"
	}
	return fmt.Sprintf("Period(%d)", int(p))
}

// Limit is one counter and what a call adds to it.
type Limit struct {
	// Key names the counter, e.g. "tpm:team:risk". A Sliding limit's
	// counter is Key and its window together, a calendar limit's Key and
	// its period kind, so one Key may carry a per-minute and a per-day
	// limit side by side.
	Key string
	// Max is the most the counter may hold; a Limit with Max <= 0 is
	// ignored (no limit configured), and reported with Remaining -1.
	Max int64
	// Amount is what this call adds: 1 for a request, the estimated
	// tokens for a token limit, micro-units of currency for a budget.
	// Zero adds nothing but is still refused by an exhausted counter.
	Amount int64
	Period Period
	// Window is the length of a Sliding limit, e.g. time.Minute; other
	// periods ignore it.
	Window time.Duration
	// Name is a unit-less description for error messages, e.g. "tokens
	// per minute for team risk".
	Name string
}

// Decision is the outcome of Reserve or Peek.
type Decision struct {
	// Allowed reports that every limit had room for its Amount (and, for
	// Reserve, that all amounts were added).
	Allowed bool
	// Refused is the index of the first limit without room, -1 when
	// allowed.
	Refused int
	// RetryAfter is, when refused, how long until Limits[Refused] has room
	// for its Amount if nothing else is counted meanwhile: for a sliding
	// window the earliest second whose expiry frees enough, for a calendar
	// period the period's end. It is rounded up to whole seconds (it feeds
	// Retry-After headers) and at least one second. A limit whose Amount
	// exceeds its Max never has room; RetryAfter then says when the counter
	// is empty again, and callers should reject such calls outright.
	RetryAfter time.Duration
	// Remaining is, per limit, Max less the usage after this call (or
	// now, when refused or peeked), never below 0; -1 for ignored limits.
	Remaining []int64
	// Reset is, per limit, how long until the usage counted now has left
	// the window entirely (0 when there is none), or until the calendar
	// period ends; 0 for ignored limits.
	Reset []time.Duration
	// Stamp identifies where the amounts were counted; pass it to Adjust.
	Stamp int64
}

// Counter counts usage under limits. Implementations are safe for
// concurrent use.
type Counter interface {
	// Reserve adds each limit's Amount to its counter only if every limit
	// has room (all or nothing, atomically, also across processes sharing
	// the counters). A limit has room when usage+Amount <= Max and usage <
	// Max. An error means nothing was decided (the store is unreachable,
	// the context ended, or a limit is invalid: errors.Is(err, ErrInvalid));
	// whether to let the call through is the caller's choice.
	Reserve(ctx context.Context, now time.Time, limits []Limit) (Decision, error)
	// Adjust adds delta, positive or negative, to the usage a Reserve
	// counted for l (l.Amount is ignored): an estimate corrected by the
	// real usage, or usage streamed after the reservation. It never fails
	// because of the limit: usage that happened is counted. The delta goes
	// to the second (or period) of stamp while that is still counted;
	// otherwise a positive delta counts now and a negative one is dropped,
	// because the overestimate it corrects has already expired and taking
	// it from the current window would let that window admit more than Max.
	// A negative delta never takes a counter below zero. A limit with
	// Max <= 0 is ignored here too.
	Adjust(ctx context.Context, now time.Time, stamp int64, l Limit, delta int64) error
	// Peek reports usage as Reserve would decide it, without adding
	// anything: for x-ratelimit-remaining headers and usage reports.
	Peek(ctx context.Context, now time.Time, limits []Limit) (Decision, error)
}

// ErrInvalid is wrapped by the errors returned for malformed limits.
var ErrInvalid = errors.New("ratelimit: invalid limit")

// calendarMargin is how long a calendar counter outlives its period in
// Redis: long enough that a replica whose clock lags slightly still finds
// the counter it expects around the boundary.
const calendarMargin = time.Hour

// span is a limit resolved against one call's clock.
type span struct {
	w          int64 // Sliding: window length in whole seconds
	start, end int64 // Day, Month: the period's bounds in Unix seconds
}

func windowSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// resolve computes the span of an active, valid limit at second sec.
func resolve(l *Limit, sec int64) span {
	switch l.Period {
	case Sliding:
		return span{w: windowSeconds(l.Window)}
	case Day:
		start := sec - mod(sec, 86400)
		return span{start: start, end: start + 86400}
	default: // Month
		t := time.Unix(sec, 0).UTC()
		start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return span{start: start.Unix(), end: start.AddDate(0, 1, 0).Unix()}
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// validate checks the active limits of a call. Two limits on one counter
// are refused: each would check its room without seeing the other's
// amount, so together they could pass Max.
func validate(limits []Limit) error {
	for i := range limits {
		l := &limits[i]
		if l.Max <= 0 {
			continue
		}
		if err := validateOne(l); err != nil {
			return err
		}
		for j := range i {
			o := &limits[j]
			if o.Max > 0 && o.Key == l.Key && o.Period == l.Period &&
				(l.Period != Sliding || windowSeconds(o.Window) == windowSeconds(l.Window)) {
				return fmt.Errorf("%w: limits %d and %d both count %q (%s)", ErrInvalid, j, i, l.Key, l.Period)
			}
		}
	}
	return nil
}

func validateOne(l *Limit) error {
	if l.Amount < 0 {
		return fmt.Errorf("%w: %q: negative amount %d (use Adjust to give usage back)", ErrInvalid, l.Key, l.Amount)
	}
	switch l.Period {
	case Sliding:
		if l.Window <= 0 {
			return fmt.Errorf("%w: %q: sliding window of %v", ErrInvalid, l.Key, l.Window)
		}
	case Day, Month:
	default:
		return fmt.Errorf("%w: %q: unknown period %d", ErrInvalid, l.Key, int(l.Period))
	}
	return nil
}

// need is the room a call must find: its amount, and at least 1 so that an
// exhausted counter refuses even calls that add nothing.
func need(l *Limit) int64 { return max(l.Amount, 1) }

// fits reports whether a counter holding used has room for l.Amount.
func fits(l *Limit, used int64) bool { return used <= l.Max-need(l) }

// excess is how much usage must expire before l.Amount fits.
func excess(l *Limit, used int64) int64 { return used - (l.Max - need(l)) }

// usage is one limit's counter as a backend found it.
type usage struct {
	used   int64 // in the window or period, after this call's amount if added
	newest int64 // Sliding: the newest second holding usage, when used > 0
	free   int64 // Sliding, the refused limit: the second whose expiry frees enough
}

// decisionSpace backs both slices of a Decision for up to four limits with
// one allocation: in the memory counter's path, allocations cost as much as
// the counting.
type decisionSpace struct {
	remaining [4]int64
	reset     [4]time.Duration
}

func newDecision(now time.Time, n int) Decision {
	d := Decision{Allowed: true, Refused: -1, Stamp: now.Unix()}
	if n <= 4 {
		sp := new(decisionSpace)
		d.Remaining, d.Reset = sp.remaining[:n:n], sp.reset[:n:n]
	} else {
		d.Remaining, d.Reset = make([]int64, n), make([]time.Duration, n)
	}
	return d
}

// until is time.Unix(s, 0).Sub(now) without building a Time.
func until(s int64, now time.Time) time.Duration {
	return time.Duration(s-now.Unix())*time.Second - time.Duration(now.Nanosecond())
}

// ignore marks limit i as not configured.
func (d *Decision) ignore(i int) { d.Remaining[i] = -1 }

// set records limit i's usage, and RetryAfter when i is the refused limit.
func (d *Decision) set(i int, now time.Time, l *Limit, sp span, u usage) {
	d.Remaining[i] = max(l.Max-u.used, 0)
	if l.Period == Sliding {
		if u.used > 0 {
			// Second n leaves the span once floor(now) reaches n+W+1.
			d.Reset[i] = until(u.newest+sp.w+1, now)
		}
	} else {
		d.Reset[i] = until(sp.end, now)
	}
	if d.Refused != i {
		return
	}
	switch {
	case l.Period != Sliding:
		d.RetryAfter = roundUp(d.Reset[i])
	case need(l) > l.Max:
		d.RetryAfter = roundUp(d.Reset[i])
	default:
		d.RetryAfter = roundUp(until(u.free+sp.w+1, now))
	}
}

// roundUp rounds d up to whole seconds, at least one.
func roundUp(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}
