package tokens

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// tiktoken splits text into pre-tokens with a regular expression before it
// merges bytes, and a count is only exact if the split is. The expressions
// need backtracking and a lookahead, which Go's regexp lacks, and a general
// backtracking engine is several times slower than the scanners below. Each
// scanner returns the match that the expression's leftmost-first alternation
// would; the comments quote the alternative each step implements.
//
// cl100k_base:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//	 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// o200k_base:
//
//	[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//	[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//	\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// \s is Unicode's White_Space property, as in tiktoken's regex engine (and
// Go's unicode.IsSpace).

// Character classes, as bits, so one table lookup answers every question the
// scanners ask about a rune.
const (
	cL  uint8 = 1 << iota // \p{L}
	cN                    // \p{N}
	cS                    // \s
	cU                    // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]: o200k's "upper" letters
	cW                    // [\p{Ll}\p{Lm}\p{Lo}\p{M}]: o200k's "lower" letters
	cNL                   // \r or \n
)

// classTables maps each class bit to the Unicode tables that make it up.
var classTables = []struct {
	bit    uint8
	tables []*unicode.RangeTable
}{
	{cL, []*unicode.RangeTable{unicode.L}},
	{cN, []*unicode.RangeTable{unicode.N}},
	{cS, []*unicode.RangeTable{unicode.White_Space}},
	{cU, []*unicode.RangeTable{unicode.Lu, unicode.Lt, unicode.Lm, unicode.Lo, unicode.M}},
	{cW, []*unicode.RangeTable{unicode.Ll, unicode.Lm, unicode.Lo, unicode.M}},
}

var (
	classesOnce sync.Once
	// bmpClass holds the classes of every rune below U+10000; the few runes
	// above it (emoji, rare ideographs) are looked up in the Unicode tables.
	bmpClass []uint8
)

// buildClasses fills bmpClass from the Unicode range tables: walking the
// ranges costs far less than asking about 65536 runes one by one.
func buildClasses() {
	classesOnce.Do(func() {
		t := make([]uint8, 0x10000)
		for _, ct := range classTables {
			for _, tab := range ct.tables {
				for _, r := range tab.R16 {
					for c := uint32(r.Lo); c <= uint32(r.Hi); c += uint32(r.Stride) {
						t[c] |= ct.bit
					}
				}
				for _, r := range tab.R32 {
					for c := r.Lo; c <= r.Hi && c < 0x10000; c += r.Stride {
						t[c] |= ct.bit
					}
				}
			}
		}
		t['\r'] |= cNL
		t['\n'] |= cNL
		bmpClass = t
	})
}

// slowClass computes the classes of a rune outside the BMP.
func slowClass(r rune) uint8 {
	var c uint8
	for _, ct := range classTables {
		if unicode.IsOneOf(ct.tables, r) {
			c |= ct.bit
		}
	}
	return c
}

// classAt returns the classes of the rune at byte p of s and its length in
// bytes. A byte that does not start valid UTF-8 is a one-byte rune of no class
// (like a symbol), so invalid input is still split and counted byte by byte.
func classAt(s string, p int) (uint8, int) {
	if b := s[p]; b < utf8.RuneSelf {
		return bmpClass[b], 1
	}
	r, n := utf8.DecodeRuneInString(s[p:])
	if r == utf8.RuneError && n == 1 {
		return 0, 1
	}
	if r < 0x10000 {
		return bmpClass[r], n
	}
	return slowClass(r), n
}

// skipWhile returns the end of the run of runes from p that have any of the
// classes in want.
func skipWhile(s string, p int, want uint8) int {
	for p < len(s) {
		c, n := classAt(s, p)
		if c&want == 0 {
			break
		}
		p += n
	}
	return p
}

// skipUntil returns the end of the run of runes from p that have none of the
// classes in stop.
func skipUntil(s string, p int, stop uint8) int {
	for p < len(s) {
		c, n := classAt(s, p)
		if c&stop != 0 {
			break
		}
		p += n
	}
	return p
}

// contraction matches (?i:'s|'t|'re|'ve|'m|'ll|'d) at p and returns its end,
// or -1. Case-insensitive matching uses Unicode simple case folding, as
// tiktoken's engine does, so ſ (U+017F, long s) matches s as well.
func contraction(s string, p int) int {
	if p+1 >= len(s) || s[p] != '\'' {
		return -1
	}
	switch s[p+1] {
	case 's', 'S', 't', 'T', 'm', 'M', 'd', 'D':
		return p + 2
	case 0xC5: // ſ is "\xc5\xbf"
		if p+2 < len(s) && s[p+2] == 0xBF {
			return p + 3
		}
		return -1
	}
	if p+2 >= len(s) {
		return -1
	}
	a, b := s[p+1]|0x20, s[p+2]|0x20 // ASCII lower case
	if (a == 'r' || a == 'v') && b == 'e' || a == 'l' && b == 'l' {
		return p + 3
	}
	return -1
}

// whitespace handles the three alternatives every pattern ends with, at a
// rune in \s:
//
//	\s*[\r\n]+   a run holding a line break ends after its last line break;
//	\s+(?!\S)    otherwise a run followed by more text leaves its last rune
//	             to be the prefix of what follows ("  x" splits as " ", " x");
//	\s+          a single whitespace rune before text stands alone.
func whitespace(s string, p int) int {
	lastBreak, lastRune, runes := -1, p, 0
	q := p
	for q < len(s) {
		c, n := classAt(s, q)
		if c&cS == 0 {
			break
		}
		if c&cNL != 0 {
			lastBreak = q
		}
		lastRune = q
		runes++
		q += n
	}
	switch {
	case lastBreak >= 0:
		return lastBreak + 1 // \r and \n are one byte
	case q == len(s) || runes == 1:
		return q
	default:
		return lastRune
	}
}

// nextCL100K returns the end of the cl100k_base pre-token starting at p.
func nextCL100K(s string, p int) int {
	c, n := classAt(s, p)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if s[p] == '\'' {
		if e := contraction(s, p); e > 0 {
			return e
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c&cL != 0 {
		return skipWhile(s, p+n, cL)
	}
	if c&(cL|cN|cNL) == 0 && p+n < len(s) {
		if c2, n2 := classAt(s, p+n); c2&cL != 0 {
			return skipWhile(s, p+n+n2, cL)
		}
	}
	// \p{N}{1,3}
	if c&cN != 0 {
		return digits(s, p, n)
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	if e := punctuation(s, p, c, n); e > 0 {
		for e < len(s) && (s[e] == '\r' || s[e] == '\n') {
			e++
		}
		return e
	}
	return whitespace(s, p)
}

// digits matches \p{N}{1,3} at p, whose first rune is n bytes long.
func digits(s string, p, n int) int {
	e := p + n
	for i := 1; i < 3 && e < len(s); i++ {
		c, n := classAt(s, e)
		if c&cN == 0 {
			break
		}
		e += n
	}
	return e
}

// punctuation matches ` ?[^\s\p{L}\p{N}]+` at p, whose rune has classes c and
// is n bytes long, and returns its end or -1.
func punctuation(s string, p int, c uint8, n int) int {
	const other = cS | cL | cN
	if s[p] == ' ' && p+1 < len(s) {
		if c2, _ := classAt(s, p+1); c2&other == 0 {
			return skipUntil(s, p+1, other)
		}
	}
	if c&other == 0 {
		return skipUntil(s, p+n, other)
	}
	return -1
}

// nextO200K returns the end of the o200k_base pre-token starting at p.
func nextO200K(s string, p int) int {
	c, n := classAt(s, p)
	// The first two alternatives start with an optional [^\r\n\p{L}\p{N}],
	// tried with the prefix first.
	prefix := c&(cL|cN|cNL) == 0 && p+n < len(s)
	// [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|...)?
	if prefix {
		if e := upperLower(s, p+n); e > 0 {
			return contractionAfter(s, e)
		}
	}
	if e := upperLower(s, p); e > 0 {
		return contractionAfter(s, e)
	}
	// [^\r\n\p{L}\p{N}]?[U]+[W]*(?i:'s|...)?
	if prefix {
		if e := upperThenLower(s, p+n); e > 0 {
			return contractionAfter(s, e)
		}
	}
	if e := upperThenLower(s, p); e > 0 {
		return contractionAfter(s, e)
	}
	// \p{N}{1,3}
	if c&cN != 0 {
		return digits(s, p, n)
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
	if e := punctuation(s, p, c, n); e > 0 {
		for e < len(s) && (s[e] == '\r' || s[e] == '\n' || s[e] == '/') {
			e++
		}
		return e
	}
	return whitespace(s, p)
}

// upperLower matches [U]*[W]+ at p (U and W overlap in Lm, Lo and M) and
// returns its end, or -1. Backtracking gives the match: the greedy [U]* takes
// the whole run of U runes; if a W rune follows, [W]+ runs on from there.
// Otherwise [U]* gives runes back until the next one is a W, which is the last
// W rune inside the run, and [W]+ ends right after it (the runes after it in
// the run are not W).
func upperLower(s string, p int) int {
	lastW := -1 // end of the last W rune inside the U run
	q := p
	for q < len(s) {
		c, n := classAt(s, q)
		if c&cU == 0 {
			if c&cW != 0 {
				return skipWhile(s, q+n, cW)
			}
			break
		}
		q += n
		if c&cW != 0 {
			lastW = q
		}
	}
	return lastW
}

// upperThenLower matches [U]+[W]* at p and returns its end, or -1.
func upperThenLower(s string, p int) int {
	q := skipWhile(s, p, cU)
	if q == p {
		return -1
	}
	return skipWhile(s, q, cW)
}

// contractionAfter extends a word ending at e by an optional contraction.
func contractionAfter(s string, e int) int {
	if e < len(s) && s[e] == '\'' {
		if c := contraction(s, e); c > 0 {
			return c
		}
	}
	return e
}
