package llmtest

import (
	"slices"
	"strings"
	"testing"
)

func TestPieces(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"one", []string{"one"}},
		{"Hello world!", []string{"Hello", " world!"}},
		{"  lead and  double\nline ", []string{"  lead", " and", "  double", "\nline "}},
		{"   ", []string{"   "}},
	} {
		got := pieces(tc.in)
		if !slices.Equal(got, tc.want) {
			t.Errorf("pieces(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Join(got, "") != tc.in {
			t.Errorf("pieces(%q) lose text", tc.in)
		}
	}
}

func TestTruncate(t *testing.T) {
	ps := pieces("a b c d")
	got, cut := truncate(ps, 2, CountWords)
	if !cut || strings.Join(got, "") != "a b" {
		t.Errorf("%q %v", got, cut)
	}
	got, cut = truncate(ps, 4, CountWords)
	if cut || len(got) != 4 {
		t.Errorf("%q %v", got, cut)
	}
}
