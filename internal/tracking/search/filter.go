package search

import (
	"strings"
	"unicode/utf8"
)

// comparison is one "identifier comparator value" of a filter, before its
// identifier is resolved against runs or experiments.
type comparison struct {
	ident    string // the identifier's text, as MLflow sees it
	identPos int
	op       string // = != < <= > >= LIKE ILIKE IN NOT IN
	opPos    int
	val      value
}

// parseFilter splits a filter into its comparisons. As with MLflow, an
// empty or all-blank filter has none, and AND (in any case) is the only
// connective; stray ANDs before, after or between comparisons are ignored,
// as sqlparse leaves them out of the comparisons MLflow reads.
func parseFilter(filter string) ([]comparison, error) {
	s := &scanner{src: filter, kind: kindFilter}
	if err := checkText(s); err != nil {
		return nil, err
	}
	var out []comparison
	joined := true // an AND (or the start) precedes the next comparison
	for {
		s.skipSpace()
		if s.eof() {
			return out, nil
		}
		w := wordAt(s.src, s.pos)
		switch strings.ToUpper(w) {
		case "AND":
			s.pos += len(w)
			joined = true
			continue
		case "OR":
			return nil, s.errAt(s.pos, "OR is not supported; join comparisons with AND")
		case "NOT":
			return nil, s.errAt(s.pos, "NOT is only supported as NOT IN")
		}
		if !joined {
			return nil, s.errAt(s.pos, "unexpected %s; expected AND or the end of the filter", s.found())
		}
		if s.peek() == '(' {
			return nil, s.errAt(s.pos, "unexpected '('; parentheses are only allowed around the list of IN and NOT IN")
		}
		if len(out) == MaxComparisons {
			return nil, s.errAt(s.pos, "a filter holds at most %d comparisons", MaxComparisons)
		}
		c, err := parseComparison(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		joined = false
	}
}

func parseComparison(s *scanner) (comparison, error) {
	var c comparison
	var err error
	if c.ident, c.identPos, err = s.scanIdentifier(); err != nil {
		return c, err
	}
	if c.op, c.opPos, err = s.scanComparator(c.ident); err != nil {
		return c, err
	}
	if c.val, err = s.scanValue(); err != nil {
		return c, err
	}
	list := c.val.kind == valList
	inOp := c.op == "IN" || c.op == "NOT IN"
	switch {
	case inOp && !list:
		return c, s.errAt(c.val.pos, "%s needs a parenthesised list of single-quoted strings, as in ('a', 'b')", c.op)
	case list && !inOp:
		return c, s.errAt(c.opPos, "a list of values needs IN or NOT IN, not %s", c.op)
	}
	return c, nil
}

// checkText rejects input that no database can hold: invalid UTF-8 and NUL.
func checkText(s *scanner) error {
	for i := 0; i < len(s.src); {
		r, n := utf8.DecodeRuneInString(s.src[i:])
		if r == utf8.RuneError && n == 1 {
			return s.errAt(i, "invalid UTF-8")
		}
		if r == 0 {
			return s.errAt(i, "NUL character")
		}
		i += n
	}
	return nil
}
