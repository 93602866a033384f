package search

import "strings"

// likePattern is a LIKE pattern read once and written for each engine. In
// the pattern, % matches any run of characters, _ any one character, and a
// backslash makes the next character literal (PostgreSQL's and MySQL's
// default; a trailing lone backslash is itself literal).
type likePattern []likeItem

type likeItem struct {
	r    rune // the literal character, when wild is 0
	wild rune // '%' or '_', or 0 for a literal
}

func parseLike(p string) likePattern {
	rs := []rune(p)
	out := make(likePattern, 0, len(rs))
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '%', '_':
			out = append(out, likeItem{wild: r})
		case '\\':
			if i+1 < len(rs) {
				i++
			}
			out = append(out, likeItem{r: rs[i]})
		default:
			out = append(out, likeItem{r: r})
		}
	}
	return out
}

// escaped writes the pattern for LIKE with backslash as the escape
// character.
func (p likePattern) escaped() string {
	var b strings.Builder
	for _, it := range p {
		switch {
		case it.wild != 0:
			b.WriteRune(it.wild)
		case it.r == '%' || it.r == '_' || it.r == '\\':
			b.WriteByte('\\')
			b.WriteRune(it.r)
		default:
			b.WriteRune(it.r)
		}
	}
	return b.String()
}

// glob writes the pattern for SQLite's case-sensitive GLOB, where * and ?
// are the wildcards and a character class makes *, ? and [ literal.
func (p likePattern) glob() string {
	var b strings.Builder
	for _, it := range p {
		switch {
		case it.wild == '%':
			b.WriteByte('*')
		case it.wild == '_':
			b.WriteByte('?')
		case it.r == '*' || it.r == '?' || it.r == '[':
			b.WriteByte('[')
			b.WriteRune(it.r)
			b.WriteByte(']')
		default:
			b.WriteRune(it.r)
		}
	}
	return b.String()
}
