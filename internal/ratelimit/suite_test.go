package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counters returns n Counters that share one fresh set of counters: the
// same Memory n times, or n Redis clients on one prefix.
type counters func(t *testing.T, n int) []Counter

// runSuite is the contract every Counter implementation passes.
func runSuite(t *testing.T, mk counters) {
	one := func(fn func(*testing.T, Counter)) func(*testing.T) {
		return func(t *testing.T) { fn(t, mk(t, 1)[0]) }
	}
	t.Run("AllOrNothing", one(testAllOrNothing))
	t.Run("SlidingExpiry", one(testSlidingExpiry))
	t.Run("RetryAfter", one(testRetryAfter))
	t.Run("AmountAboveMax", one(testAmountAboveMax))
	t.Run("LongWindow", one(testLongWindow))
	t.Run("ManyLimits", one(testManyLimits))
	t.Run("SlidingOracle", one(testSlidingOracle))
	t.Run("DayRollover", one(testDayRollover))
	t.Run("MonthRollover", one(testMonthRollover))
	t.Run("AdjustSliding", one(testAdjustSliding))
	t.Run("AdjustCalendar", one(testAdjustCalendar))
	t.Run("Peek", one(testPeek))
	t.Run("Invalid", one(testInvalid))
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, mk(t, 2)) })
	t.Run("ConcurrentAdjust", func(t *testing.T) { testConcurrentAdjust(t, mk(t, 2)) })
}

// base is a second boundary; at(s) is s seconds after it.
var base = time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }

func sec(s int64) int64 { return base.Unix() + s }

func minute(key string, max, amount int64) Limit {
	return Limit{Key: key, Max: max, Amount: amount, Period: Sliding, Window: time.Minute}
}

func reserve(t *testing.T, c Counter, now time.Time, limits ...Limit) Decision {
	t.Helper()
	d, err := c.Reserve(context.Background(), now, limits)
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	check(t, d, limits)
	return d
}

func peek(t *testing.T, c Counter, now time.Time, limits ...Limit) Decision {
	t.Helper()
	d, err := c.Peek(context.Background(), now, limits)
	if err != nil {
		t.Fatalf("Peek: %v", err)
	}
	check(t, d, limits)
	return d
}

func adjust(t *testing.T, c Counter, now time.Time, stamp int64, l Limit, delta int64) {
	t.Helper()
	if err := c.Adjust(context.Background(), now, stamp, l, delta); err != nil {
		t.Fatalf("Adjust: %v", err)
	}
}

// check tests the invariants of every decision.
func check(t *testing.T, d Decision, limits []Limit) {
	t.Helper()
	if len(d.Remaining) != len(limits) || len(d.Reset) != len(limits) {
		t.Fatalf("decision has %d remaining, %d reset for %d limits", len(d.Remaining), len(d.Reset), len(limits))
	}
	if d.Allowed != (d.Refused == -1) {
		t.Fatalf("Allowed %v with Refused %d", d.Allowed, d.Refused)
	}
	if d.Allowed && d.RetryAfter != 0 {
		t.Fatalf("allowed with RetryAfter %v", d.RetryAfter)
	}
	if !d.Allowed && (d.RetryAfter < time.Second || d.RetryAfter%time.Second != 0) {
		t.Fatalf("refused with RetryAfter %v, want whole seconds >= 1s", d.RetryAfter)
	}
}

// used reads a counter's usage: a Peek under a Max too large to clamp
// Remaining (Max does not name the counter).
func used(t *testing.T, c Counter, now time.Time, l Limit) int64 {
	t.Helper()
	l.Max, l.Amount = 1<<50, 0
	return l.Max - peek(t, c, now, l).Remaining[0]
}

func wantDecision(t *testing.T, d Decision, allowed bool, refused int, retry time.Duration, remaining ...int64) {
	t.Helper()
	if d.Allowed != allowed || d.Refused != refused || d.RetryAfter != retry {
		t.Errorf("decision: allowed %v refused %d retry %v, want %v %d %v", d.Allowed, d.Refused, d.RetryAfter, allowed, refused, retry)
	}
	for i, r := range remaining {
		if d.Remaining[i] != r {
			t.Errorf("Remaining = %v, want %v", d.Remaining, remaining)
			break
		}
	}
}

func testAllOrNothing(t *testing.T, c Counter) {
	now := at(0.5)
	a := minute("a", 10, 5)
	b := Limit{Key: "b", Max: 3, Amount: 5, Period: Day, Name: "b per day"}
	// The second limit refuses: the first counts nothing.
	d := reserve(t, c, now, a, b)
	// The day ends 11:59:59.5 later.
	wantDecision(t, d, false, 1, 12*time.Hour, 10, 3)
	if u := used(t, c, now, a); u != 0 {
		t.Fatalf("refused call counted %d under the first limit", u)
	}
	b.Amount = 3
	d = reserve(t, c, now, a, b)
	wantDecision(t, d, true, -1, 0, 5, 0)
	if d.Reset[0] != 60*time.Second+500*time.Millisecond || d.Reset[1] != 12*time.Hour-500*time.Millisecond {
		t.Errorf("Reset = %v", d.Reset)
	}

	// The first limit refuses: the others count nothing either, and
	// Refused names the first even though b is exhausted too.
	a.Amount = 6
	m := Limit{Key: "m", Max: 100, Amount: 1, Period: Month}
	d = reserve(t, c, now, a, b, m)
	wantDecision(t, d, false, 0, 61*time.Second, 5, 0, 100)
	if u := used(t, c, now, m); u != 0 {
		t.Fatalf("refused call counted %d under the third limit", u)
	}

	// Limits without a Max are ignored and reported as -1.
	off := Limit{Key: "off", Max: 0, Amount: 1 << 40}
	d = reserve(t, c, now, off, minute("a", 10, 5))
	wantDecision(t, d, true, -1, 0, -1, 0)
	if d.Reset[0] != 0 {
		t.Errorf("ignored limit Reset = %v", d.Reset[0])
	}
}

func testSlidingExpiry(t *testing.T, c Counter) {
	l := Limit{Key: "rps", Max: 5, Amount: 1, Period: Sliding, Window: 10 * time.Second}
	for k := range 5 {
		d := reserve(t, c, at(float64(k)+0.5), l)
		wantDecision(t, d, true, -1, 0, int64(4-k))
	}
	// Seconds 0…4 hold one each. Second 0 leaves the span when floor(now)
	// reaches 11.
	d := reserve(t, c, at(5.5), l)
	wantDecision(t, d, false, 0, 6*time.Second, 0)
	if want := 9500 * time.Millisecond; d.Reset[0] != want {
		t.Errorf("Reset = %v, want %v", d.Reset[0], want)
	}
	for k := 6; k <= 10; k++ {
		d := peek(t, c, at(float64(k)+0.999), l)
		wantDecision(t, d, false, 0, time.Duration(11-k)*time.Second, 0)
	}
	d = reserve(t, c, at(11), l)
	wantDecision(t, d, true, -1, 0, 0)
	// Seconds 1…4 and 11: second 1 leaves at 12.
	d = reserve(t, c, at(11.5), l)
	wantDecision(t, d, false, 0, time.Second, 0)
	d = reserve(t, c, at(12), l)
	wantDecision(t, d, true, -1, 0, 0)
	// Second by second, one more expires each time.
	for k := int64(13); k <= 15; k++ {
		if u := used(t, c, at(float64(k)), l); u != 5-(k-12) {
			t.Errorf("at %d: used %d, want %d", k, u, 5-(k-12))
		}
	}
	// 11 and 12 are the last; both gone at 23.
	if u := used(t, c, at(22.9), l); u != 1 {
		t.Errorf("at 22.9: used %d, want 1", u)
	}
	d = peek(t, c, at(23), l)
	if d.Remaining[0] != 5 || d.Reset[0] != 0 {
		t.Errorf("at 23: remaining %d reset %v, want 5 and 0", d.Remaining[0], d.Reset[0])
	}
}

func testRetryAfter(t *testing.T, c Counter) {
	l := Limit{Key: "tpm", Max: 10, Period: Sliding, Window: 10 * time.Second}
	for _, r := range []struct {
		s float64
		n int64
	}{{0.2, 4}, {3.7, 3}, {6.1, 2}} {
		l.Amount = r.n
		if d := reserve(t, c, at(r.s), l); !d.Allowed {
			t.Fatalf("reserving %d at %v refused", r.n, r.s)
		}
	}
	// 9 used; 6 more need 5 freed: seconds 0 (4) and 3 (3) must leave, and
	// second 3 leaves at 14.
	l.Amount = 6
	d := reserve(t, c, at(7.25), l)
	wantDecision(t, d, false, 0, 7*time.Second, 1)
	// 2 more would fit once second 0 leaves, at 11.
	l.Amount = 2
	d = peek(t, c, at(7.25), l)
	wantDecision(t, d, false, 0, 4*time.Second, 1)
	l.Amount = 6
	if d := peek(t, c, at(13.999), l); d.Allowed {
		t.Errorf("allowed before the retry time")
	} else if d.RetryAfter != time.Second {
		t.Errorf("at 13.999 RetryAfter %v, want 1s", d.RetryAfter)
	}
	d = reserve(t, c, at(14), l)
	wantDecision(t, d, true, -1, 0, 2)

	// A calendar limit retries at the period's end.
	day := Limit{Key: "budget", Max: 100, Amount: 100, Period: Day}
	now := time.Date(2024, 2, 28, 23, 0, 0, 500_000_000, time.UTC)
	reserve(t, c, now, day)
	d = reserve(t, c, now, day)
	wantDecision(t, d, false, 0, time.Hour, 0)
	if want := time.Hour - 500*time.Millisecond; d.Reset[0] != want {
		t.Errorf("Reset = %v, want %v", d.Reset[0], want)
	}
}

func testAmountAboveMax(t *testing.T, c Counter) {
	l := minute("big", 10, 11)
	d := reserve(t, c, at(0.5), l)
	wantDecision(t, d, false, 0, time.Second, 10)
	l.Amount = 3
	reserve(t, c, at(1.5), l)
	l.Amount = 11
	// Never fits; RetryAfter is when the counter is empty again.
	d = reserve(t, c, at(2), l)
	wantDecision(t, d, false, 0, 60*time.Second, 7)
}

// testManyLimits passes more limits than the memory counter keeps on its
// stack, several in one shard.
func testManyLimits(t *testing.T, c Counter) {
	limits := make([]Limit, 12)
	for i := range limits {
		limits[i] = minute("many"+strconv.Itoa(i), 5, 2)
	}
	limits[11].Max = 1
	d := reserve(t, c, at(0.5), limits...)
	if d.Allowed || d.Refused != 11 {
		t.Fatalf("allowed %v refused %d, want refused by 11", d.Allowed, d.Refused)
	}
	limits[11].Max = 0
	for range 2 {
		if d := reserve(t, c, at(0.5), limits...); !d.Allowed {
			t.Fatalf("refused by %d", d.Refused)
		}
	}
	d = reserve(t, c, at(0.5), limits...)
	if d.Allowed || d.Refused != 0 {
		t.Fatalf("allowed %v refused %d, want refused by 0", d.Allowed, d.Refused)
	}
	for i, l := range limits[:11] {
		if u := used(t, c, at(0.5), l); u != 4 {
			t.Errorf("limit %d: used %d, want 4", i, u)
		}
	}
}

// testLongWindow runs an hour's window with traffic minutes apart: far
// more elapsed seconds than buckets, which Redis walks differently.
func testLongWindow(t *testing.T, c Counter) {
	l := Limit{Key: "tph", Max: 10, Period: Sliding, Window: time.Hour}
	for _, r := range []struct {
		s float64
		n int64
	}{{0.5, 3}, {1000.5, 4}, {2000.5, 2}} {
		l.Amount = r.n
		if d := reserve(t, c, at(r.s), l); !d.Allowed {
			t.Fatalf("reserving %d at %v refused", r.n, r.s)
		}
	}
	// 9 used; 5 more need 4 freed: seconds 0 and 1000 must leave, and
	// second 1000 leaves at 4601.
	l.Amount = 5
	d := reserve(t, c, at(3000.5), l)
	wantDecision(t, d, false, 0, 1601*time.Second, 1)
	// The newest, second 2000, leaves at 5601.
	if want := 2600500 * time.Millisecond; d.Reset[0] != want {
		t.Errorf("Reset = %v, want %v", d.Reset[0], want)
	}
	l.Amount = 4
	d = reserve(t, c, at(3601), l) // second 0 has left
	wantDecision(t, d, true, -1, 0, 0)
	if u := used(t, c, at(4601.5), l); u != 6 {
		t.Errorf("at 4601.5: used %d, want 6", u)
	}
	if u := used(t, c, at(7201), l); u != 4 {
		t.Errorf("at 7201: used %d, want 4", u)
	}
	if u := used(t, c, at(7202), l); u != 0 {
		t.Errorf("at 7202: used %d, want 0", u)
	}
}

// testSlidingOracle drives random reservations and adjustments through a
// counter and a direct model of the specification, and compares every
// decision; then checks that no interval of the window's length admitted
// more than Max.
func testSlidingOracle(t *testing.T, c Counter) {
	const w, limit = 10, 50
	l := Limit{Key: "oracle", Max: limit, Period: Sliding, Window: w * time.Second}
	rng := rand.New(rand.NewPCG(1, 2))
	buckets := map[int64]int64{} // the model: second -> usage
	written := map[int64]bool{}
	type admit struct {
		t time.Time
		n int64
	}
	var admitted []admit
	var stamps []int64
	// model returns the usage, newest second and sorted seconds in the
	// span at second s.
	model := func(s int64) (sum, newest int64, secs []int64) {
		for b, n := range buckets {
			if b < s-w {
				delete(buckets, b)
				delete(written, b)
				continue
			}
			sum += n
			secs = append(secs, b)
		}
		sort.Slice(secs, func(i, j int) bool { return secs[i] < secs[j] })
		if len(secs) > 0 {
			newest = secs[len(secs)-1]
		}
		return sum, newest, secs
	}
	now := at(0.3)
	for step := range 600 {
		now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
		s := now.Unix()
		if len(stamps) > 0 && rng.IntN(4) == 0 {
			stamp := stamps[rng.IntN(len(stamps))]
			delta := int64(rng.IntN(41) - 20)
			adjust(t, c, now, stamp, l, delta)
			model(s)
			at := stamp
			if stamp < s-w {
				at = s
				if delta < 0 {
					continue
				}
			}
			if delta > 0 || written[at] {
				buckets[at] = max(buckets[at]+delta, 0)
				written[at] = true
			}
			continue
		}
		l.Amount = int64(1 + rng.IntN(15))
		sum, newest, secs := model(s)
		d := reserve(t, c, now, l)
		wantAllowed := sum+l.Amount <= limit
		if d.Allowed != wantAllowed {
			t.Fatalf("step %d at %v: allowed %v with %d used + %d, want %v", step, now, d.Allowed, sum, l.Amount, wantAllowed)
		}
		if wantAllowed {
			buckets[s] += l.Amount
			written[s] = true
			sum += l.Amount
			newest = s
			admitted = append(admitted, admit{now, l.Amount})
			stamps = append(stamps, d.Stamp)
		} else {
			excess := sum - (limit - l.Amount)
			var cum int64
			free := newest
			for _, b := range secs {
				if cum += buckets[b]; cum >= excess {
					free = b
					break
				}
			}
			if want := roundUp(time.Unix(free+w+1, 0).Sub(now)); d.RetryAfter != want {
				t.Fatalf("step %d: RetryAfter %v, want %v", step, d.RetryAfter, want)
			}
		}
		if d.Remaining[0] != max(limit-sum, 0) {
			t.Fatalf("step %d: Remaining %d, want %d", step, d.Remaining[0], max(limit-sum, 0))
		}
		var wantReset time.Duration
		if sum > 0 {
			wantReset = time.Unix(newest+w+1, 0).Sub(now)
		}
		if d.Reset[0] != wantReset {
			t.Fatalf("step %d: Reset %v, want %v", step, d.Reset[0], wantReset)
		}
		if !d.Allowed {
			// The amount fits exactly then, not a second earlier. The clock
			// moves on to then: a counter evicts by the latest time it saw.
			if p := peek(t, c, now.Add(d.RetryAfter-time.Second), l); p.Allowed {
				t.Fatalf("step %d: allowed a second before RetryAfter %v", step, d.RetryAfter)
			}
			now = now.Add(d.RetryAfter)
			if p := peek(t, c, now, l); !p.Allowed {
				t.Fatalf("step %d: still refused after RetryAfter %v", step, d.RetryAfter)
			}
		}
	}
	if len(admitted) < 100 {
		t.Fatalf("only %d reservations admitted", len(admitted))
	}
	// Positive adjustments may pass Max; this check runs on a counter that
	// saw only reservations.
	c2 := Limit{Key: "oracle-window", Max: limit, Period: Sliding, Window: w * time.Second}
	now = at(0)
	var got []admit
	for range 600 {
		now = now.Add(time.Duration(rng.IntN(700)) * time.Millisecond)
		c2.Amount = int64(1 + rng.IntN(15))
		if reserve(t, c, now, c2).Allowed {
			got = append(got, admit{now, c2.Amount})
		}
	}
	for i, a := range got {
		var sum int64
		for _, b := range got[i:] {
			if b.t.Sub(a.t) > w*time.Second {
				break
			}
			sum += b.n
		}
		if sum > limit {
			t.Fatalf("%d admitted in the %ds from %v", sum, w, a.t)
		}
	}
}

func testDayRollover(t *testing.T, c Counter) {
	l := Limit{Key: "rpd", Max: 100, Amount: 60, Period: Day}
	late := time.Date(2024, 2, 28, 23, 59, 59, 900_000_000, time.UTC)
	reserve(t, c, late, l)
	d := reserve(t, c, late, l)
	wantDecision(t, d, false, 0, time.Second, 40)
	if d.Reset[0] != 100*time.Millisecond {
		t.Errorf("Reset = %v, want 100ms", d.Reset[0])
	}
	// 29 February is a day of its own.
	d = reserve(t, c, time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), l)
	wantDecision(t, d, true, -1, 0, 40)
	if d.Reset[0] != 24*time.Hour {
		t.Errorf("Reset = %v, want 24h", d.Reset[0])
	}
	if u := used(t, c, time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC), l); u != 60 {
		t.Errorf("used %d at the day's last instant, want 60", u)
	}
	if u := used(t, c, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), l); u != 0 {
		t.Errorf("used %d on the next day, want 0", u)
	}
	// A clock in another zone counts by the UTC day: 20:00 at UTC-5 on
	// the 1st is 01:00 UTC on the 2nd, 23 hours before that day ends.
	est := time.FixedZone("EST", -5*3600)
	d = reserve(t, c, time.Date(2024, 3, 1, 20, 0, 0, 0, est), l)
	wantDecision(t, d, true, -1, 0, 40)
	if d.Reset[0] != 23*time.Hour {
		t.Errorf("Reset = %v, want 23h", d.Reset[0])
	}
	if u := used(t, c, time.Date(2024, 3, 2, 23, 30, 0, 0, time.UTC), l); u != 60 {
		t.Errorf("used %d late on the reservation's UTC day, want 60", u)
	}
}

func testMonthRollover(t *testing.T, c Counter) {
	l := Limit{Key: "budget", Max: 1000, Amount: 600, Period: Month}
	utc := func(y int, m time.Month, d, h, min, s int) time.Time {
		return time.Date(y, m, d, h, min, s, 0, time.UTC)
	}
	d := reserve(t, c, utc(2024, 1, 31, 23, 59, 59), l)
	wantDecision(t, d, true, -1, 0, 400)
	if d.Reset[0] != time.Second {
		t.Errorf("Reset = %v, want 1s", d.Reset[0])
	}
	d = reserve(t, c, utc(2024, 2, 1, 0, 0, 0), l)
	wantDecision(t, d, true, -1, 0, 400)
	if want := 29 * 24 * time.Hour; d.Reset[0] != want { // a leap February
		t.Errorf("Reset = %v, want %v", d.Reset[0], want)
	}
	d = reserve(t, c, utc(2024, 2, 29, 23, 0, 0), l)
	wantDecision(t, d, false, 0, time.Hour, 400)
	if d := peek(t, c, utc(2024, 2, 29, 12, 0, 0), l); d.Reset[0] != 12*time.Hour {
		t.Errorf("29 Feb 2024 noon: Reset %v, want 12h", d.Reset[0])
	}
	d = reserve(t, c, utc(2024, 3, 1, 0, 0, 0), l)
	wantDecision(t, d, true, -1, 0, 400)
	if want := 31 * 24 * time.Hour; d.Reset[0] != want {
		t.Errorf("Reset = %v, want %v", d.Reset[0], want)
	}
	// A common year's February ends on the 28th.
	if d := peek(t, c, utc(2023, 2, 28, 12, 0, 0), l); d.Reset[0] != 12*time.Hour {
		t.Errorf("28 Feb 2023 noon: Reset %v, want 12h", d.Reset[0])
	}
	// The year rolls over with December.
	dec := time.Date(2024, 12, 31, 23, 59, 59, 500_000_000, time.UTC)
	reserve(t, c, dec, l)
	d = reserve(t, c, dec, l)
	wantDecision(t, d, false, 0, time.Second, 400)
	if d.Reset[0] != 500*time.Millisecond {
		t.Errorf("Reset = %v, want 500ms", d.Reset[0])
	}
	d = reserve(t, c, utc(2025, 1, 1, 0, 0, 0), l)
	wantDecision(t, d, true, -1, 0, 400)
}

func testAdjustSliding(t *testing.T, c Counter) {
	l := minute("tpm", 1000, 500)
	r1 := reserve(t, c, at(0.5), l)
	l.Amount = 200
	r2 := reserve(t, c, at(4.5), l)
	if r1.Stamp == r2.Stamp {
		t.Fatalf("reservations a few seconds apart have one stamp %d", r1.Stamp)
	}
	adjust(t, c, at(5), r1.Stamp, l, -70)  // 500 estimated, 430 used
	adjust(t, c, at(5), r1.Stamp, l, 100)  // then 100 more streamed
	adjust(t, c, at(5), r2.Stamp, l, 9800) // never refused: it happened
	d := peek(t, c, at(5), l)
	// 9730 must leave: second 0 (530) and second 4 (10000), at 65.
	wantDecision(t, d, false, 0, 60*time.Second, 0)
	if u := used(t, c, at(5), l); u != 530+10000 {
		t.Fatalf("used %d, want %d", u, 530+10000)
	}
	// At 60 second 0 is still counted, the last time it is, so a refund
	// still reaches it.
	adjust(t, c, at(60.5), r1.Stamp, l, -30)
	// The corrections went to the reservation's own second, and left with it.
	if u := used(t, c, at(60.9), l); u != 10500 {
		t.Errorf("at 60.9: used %d, want 10500", u)
	}
	if u := used(t, c, at(61), l); u != 10000 {
		t.Errorf("at 61: used %d, want 10000", u)
	}
	// Second 0 has left: a refund for it is dropped (its overestimate has
	// expired already); more usage counts now.
	adjust(t, c, at(61), r1.Stamp, l, -100)
	if u := used(t, c, at(61), l); u != 10000 {
		t.Errorf("stale refund: used %d, want 10000", u)
	}
	adjust(t, c, at(61.5), r1.Stamp, l, 5)
	// A refund never takes a second below zero.
	adjust(t, c, at(62), r2.Stamp, l, -1<<40)
	if u := used(t, c, at(62), l); u != 5 {
		t.Errorf("after refunding second 4 wholly: used %d, want 5", u)
	}
	if u := used(t, c, at(121.9), l); u != 5 {
		t.Errorf("at 121.9: used %d, want 5", u)
	}
	if u := used(t, c, at(122), l); u != 0 {
		t.Errorf("at 122: used %d, want 0", u)
	}
	// A limit without Max is ignored.
	off := l
	off.Max = 0
	adjust(t, c, at(130), r1.Stamp, off, 7)
	if u := used(t, c, at(130), l); u != 0 {
		t.Errorf("adjusting an ignored limit counted %d", u)
	}
	// Adjusting a counter nobody reserved on creates it.
	fresh := minute("fresh", 10, 0)
	adjust(t, c, at(130), 0, fresh, 3)
	if u := used(t, c, at(130), fresh); u != 3 {
		t.Errorf("fresh counter: used %d, want 3", u)
	}
}

func testAdjustCalendar(t *testing.T, c Counter) {
	l := Limit{Key: "spend", Max: 100, Amount: 80, Period: Day}
	day1 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	r := reserve(t, c, day1, l)
	adjust(t, c, day1.Add(time.Minute), r.Stamp, l, -30)
	if u := used(t, c, day1, l); u != 50 {
		t.Errorf("used %d, want 50", u)
	}
	adjust(t, c, day1.Add(time.Minute), r.Stamp, l, 500)
	d := peek(t, c, day1.Add(2*time.Minute), l)
	wantDecision(t, d, false, 0, 11*time.Hour+58*time.Minute, 0)
	// A day later the refund is dropped and more usage counts in day 2.
	adjust(t, c, day2, r.Stamp, l, -100)
	adjust(t, c, day2, r.Stamp, l, 7)
	if u := used(t, c, day2, l); u != 7 {
		t.Errorf("day 2: used %d, want 7", u)
	}
	r2 := reserve(t, c, day2, l)
	adjust(t, c, day2, r2.Stamp, l, -1000)
	if u := used(t, c, day2, l); u != 0 {
		t.Errorf("refund below zero: used %d, want 0", u)
	}
}

func testPeek(t *testing.T, c Counter) {
	l := minute("rpm", 10, 7)
	now := at(0.5)
	reserve(t, c, now, l)
	for range 3 {
		l.Amount = 3
		d := peek(t, c, now, l)
		wantDecision(t, d, true, -1, 0, 3) // Remaining is now's, not after
		l.Amount = 4
		d = peek(t, c, now, l)
		wantDecision(t, d, false, 0, 61*time.Second, 3)
	}
	// An exhausted counter refuses even amount 0.
	l.Amount = 3
	reserve(t, c, now, l)
	l.Amount = 0
	wantDecision(t, peek(t, c, now, l), false, 0, 61*time.Second, 0)
	wantDecision(t, reserve(t, c, now, l), false, 0, 61*time.Second, 0)
	// Peeking a counter that does not exist reports it empty.
	d := peek(t, c, now, minute("none", 10, 1), Limit{Key: "none", Max: 5, Amount: 1, Period: Month})
	wantDecision(t, d, true, -1, 0, 10, 5)
	if d.Reset[0] != 0 || d.Reset[1] != base.AddDate(0, 0, 22).Add(-12*time.Hour).Sub(now) {
		t.Errorf("Reset = %v", d.Reset)
	}
}

func testInvalid(t *testing.T, c Counter) {
	now := at(0)
	for name, limits := range map[string][]Limit{
		"no window":       {{Key: "k", Max: 1, Amount: 1, Period: Sliding}},
		"negative amount": {minute("k", 1, -1)},
		"unknown period":  {{Key: "k", Max: 1, Amount: 1, Period: Period(9)}},
		"one counter twice": {
			minute("k", 10, 1),
			{Key: "k", Max: 20, Amount: 1, Period: Sliding, Window: 60 * time.Second},
		},
	} {
		if _, err := c.Reserve(context.Background(), now, limits); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Reserve error %v, want ErrInvalid", name, err)
		}
		if _, err := c.Peek(context.Background(), now, limits); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Peek error %v, want ErrInvalid", name, err)
		}
	}
	if err := c.Adjust(context.Background(), now, 0, Limit{Key: "k", Max: 1}, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Adjust of a windowless sliding limit: %v, want ErrInvalid", err)
	}
	// One key under different windows or periods is different counters.
	d := reserve(t, c, now, minute("k", 10, 1),
		Limit{Key: "k", Max: 10, Amount: 1, Period: Sliding, Window: time.Hour},
		Limit{Key: "k", Max: 10, Amount: 1, Period: Day},
		Limit{Key: "k", Max: 0, Amount: -5, Period: Period(9)}) // ignored
	wantDecision(t, d, true, -1, 0, 9, 9, 9, -1)
}

// testConcurrent has 50 goroutines, spread over the counters, reserve
// random token amounts until refused: the total admitted must stay within
// Max and reach Max less one request's amount.
func testConcurrent(t *testing.T, cs []Counter) {
	const workers, limit, largest = 50, 10_000, 100
	now := at(30.5)
	for round := range 3 {
		tpm := minute("tpm", limit, 0)
		tpm.Key += string(rune('a' + round))
		rpm := minute("rpm"+tpm.Key, 1<<40, 1)
		var admitted, requests atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				c := cs[w%len(cs)]
				for {
					l := tpm
					l.Amount = int64(1 + rng.IntN(largest))
					d, err := c.Reserve(context.Background(), now, []Limit{rpm, l})
					if err != nil {
						t.Error(err)
						return
					}
					if !d.Allowed {
						if d.Refused != 1 {
							t.Errorf("refused by limit %d", d.Refused)
						}
						return
					}
					admitted.Add(l.Amount)
					requests.Add(1)
				}
			})
		}
		wg.Wait()
		total := admitted.Load()
		if total > limit || total < limit-largest {
			t.Errorf("round %d: admitted %d tokens under a limit of %d", round, total, limit)
		}
		if u := used(t, cs[0], now, tpm); u != total {
			t.Errorf("round %d: counter holds %d, admitted %d", round, u, total)
		}
		if u := used(t, cs[len(cs)-1], now, rpm); u != requests.Load() {
			t.Errorf("round %d: request counter holds %d, admitted %d", round, u, requests.Load())
		}
	}
}

// testConcurrentAdjust mixes reservations and corrections from many
// goroutines: no update may be lost.
func testConcurrentAdjust(t *testing.T, cs []Counter) {
	const workers, perWorker = 20, 40
	l := minute("mixed", 1<<40, 0)
	now := at(0.5)
	var want atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, uint64(w)))
			c := cs[w%len(cs)]
			for i := range perWorker {
				l := l
				l.Amount = int64(1 + rng.IntN(1000))
				now := now.Add(time.Duration(i) * 100 * time.Millisecond)
				d, err := c.Reserve(context.Background(), now, []Limit{l})
				if err != nil || !d.Allowed {
					t.Errorf("Reserve: %v %+v", err, d)
					return
				}
				delta := -rng.Int64N(l.Amount + 1)
				if err := c.Adjust(context.Background(), now, d.Stamp, l, delta); err != nil {
					t.Error(err)
					return
				}
				want.Add(l.Amount + delta)
			}
		})
	}
	wg.Wait()
	if u := used(t, cs[0], at(5), l); u != want.Load() {
		t.Errorf("counter holds %d, want %d", u, want.Load())
	}
}
