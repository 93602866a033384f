package compute

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed five-field cron expression (minute hour day-of-month
// month day-of-week), as compute instance schedules use: numbers, *,
// lists (1,3), ranges (1-5) and steps (*/15, 0-30/10). Day-of-week 0 and
// 7 are Sunday. When both day fields are restricted, a day matching
// either matches, as cron has it.
type Cron struct {
	text                          string
	minute, hour, dom, month, dow uint64
	domAll, dowAll                bool
}

// ParseCron reads a cron expression.
func ParseCron(s string) (Cron, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return Cron{}, fmt.Errorf("%q: a cron expression has five fields (minute hour day month weekday), not %d", clipText(s), len(f))
	}
	c := Cron{text: s}
	var err error
	for i, spec := range []struct {
		dst      *uint64
		min, max int
		name     string
	}{{&c.minute, 0, 59, "minute"}, {&c.hour, 0, 23, "hour"}, {&c.dom, 1, 31, "day of month"}, {&c.month, 1, 12, "month"}, {&c.dow, 0, 7, "day of week"}} {
		if *spec.dst, err = cronField(f[i], spec.min, spec.max); err != nil {
			return Cron{}, fmt.Errorf("%q: %s field %q: %v", clipText(s), spec.name, f[i], err)
		}
	}
	if c.dow&(1<<7) != 0 {
		c.dow |= 1
	}
	c.domAll, c.dowAll = f[2] == "*", f[4] == "*"
	return c, nil
}

func cronField(s string, lo, hi int) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(s, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a positive number", stepText)
			}
			step = n
		}
		from, to := lo, hi
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if from, err = strconv.Atoi(a); err != nil {
				return 0, fmt.Errorf("%q is not a number", a)
			}
			to = from
			if isRange {
				if to, err = strconv.Atoi(b); err != nil {
					return 0, fmt.Errorf("%q is not a number", b)
				}
			} else if hasStep {
				to = hi
			}
		}
		if from < lo || to > hi || from > to {
			return 0, fmt.Errorf("%d-%d is outside %d-%d", from, to, lo, hi)
		}
		for v := from; v <= to; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

// Matches reports whether the expression fires in t's minute.
func (c Cron) Matches(t time.Time) bool {
	if c.minute&(1<<uint(t.Minute())) == 0 || c.hour&(1<<uint(t.Hour())) == 0 || c.month&(1<<uint(t.Month())) == 0 {
		return false
	}
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	switch {
	case c.domAll && c.dowAll:
		return true
	case c.domAll:
		return dow
	case c.dowAll:
		return dom
	}
	return dom || dow
}

// FiredBetween reports whether the expression fires in a minute after
// from and up to to (at most a day is checked).
func (c Cron) FiredBetween(from, to time.Time) bool {
	t := from.Truncate(time.Minute).Add(time.Minute)
	for n := 0; !t.After(to) && n < 1440; n++ {
		if c.Matches(t) {
			return true
		}
		t = t.Add(time.Minute)
	}
	return false
}

func (c Cron) String() string { return c.text }
