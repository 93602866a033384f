package id

import (
	"regexp"
	"sort"
	"testing"
	"time"
)

func TestIDsSortByTimeAndAreUnique(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{26}$`)
	seen := map[string]bool{}
	var ids []string
	base := time.UnixMilli(1_700_000_000_000)
	for i := range 1000 {
		v := At(base.Add(time.Duration(i) * time.Millisecond))
		if !shape.MatchString(v) {
			t.Fatalf("id %q has the wrong shape", v)
		}
		if seen[v] {
			t.Fatalf("duplicate id %q", v)
		}
		seen[v] = true
		ids = append(ids, v)
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids made later do not sort later")
	}
}
