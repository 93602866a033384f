package compute

import (
	"strings"
	"testing"
	"time"
)

func TestCron(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04 Mon", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		expr, when string
		want       bool
	}{
		{"0 19 * * 1-5", "2026-11-27 19:00 Fri", true},
		{"0 19 * * 1-5", "2026-11-28 19:00 Sat", false},
		{"*/15 * * * *", "2026-11-27 10:45 Fri", true},
		{"*/15 * * * *", "2026-11-27 10:46 Fri", false},
		{"0 8 1 * 0", "2026-11-01 08:00 Sun", true}, // day of month or weekday
		{"0 8 15 * 7", "2026-11-29 08:00 Sun", true},
		{"30 6,18 * 1-3,12 *", "2026-12-03 18:30 Thu", true},
		{"30 6,18 * 1-3,12 *", "2026-11-03 18:30 Tue", false},
	} {
		c, err := ParseCron(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if got := c.Matches(at(tc.when)); got != tc.want {
			t.Errorf("%q at %s = %v, want %v", tc.expr, tc.when, got, tc.want)
		}
	}
	c, _ := ParseCron("0 19 * * *")
	if !c.FiredBetween(at("2026-11-27 18:59 Fri"), at("2026-11-27 19:00 Fri")) || c.FiredBetween(at("2026-11-27 19:00 Fri"), at("2026-11-27 19:05 Fri")) {
		t.Error("FiredBetween counts the minutes after from, up to and including to")
	}
	for expr, want := range map[string]string{
		"* * * *":        "five fields",
		"60 * * * *":     "minute field",
		"* 24 * * *":     "hour field",
		"* * 0 * *":      "day of month field",
		"* * * 13 *":     "month field",
		"* * * * mon":    `"mon" is not a number`,
		"*/0 * * * *":    "step",
		"5-1 * * * *":    "outside",
		"1,2,x * * * * ": "not a number",
	} {
		if _, err := ParseCron(expr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCron(%q) = %v, want an error about %s", expr, err, want)
		}
	}
}
