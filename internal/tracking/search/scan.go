package search

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// scanner reads a filter or an order_by clause left to right. Its rules
// for words, quoted names, strings and numbers are those of the sqlparse
// tokenizer MLflow parses with (sqlparse/keywords.py, SQL_REGEX).
type scanner struct {
	src  string
	pos  int // byte offset
	kind string
}

func (s *scanner) errAt(pos int, format string, args ...any) *Error {
	return newError(s.kind, s.src, pos, format, args...)
}

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

// peek returns the rune at the current position, or -1 at the end.
func (s *scanner) peek() rune {
	if s.eof() {
		return -1
	}
	r, _ := utf8.DecodeRuneInString(s.src[s.pos:])
	return r
}

func (s *scanner) skipSpace() {
	for !s.eof() {
		r, n := utf8.DecodeRuneInString(s.src[s.pos:])
		if !unicode.IsSpace(r) {
			return
		}
		s.pos += n
	}
}

// isWordStart and isWordChar follow sqlparse's [0-9_A-ZÀ-Ü][_$#\w]* with
// Python's Unicode \w (letters, numbers and the underscore).
func isWordStart(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

func isWordChar(r rune) bool { return isWordStart(r) || r == '$' || r == '#' }

// wordAt returns the word starting at byte offset i ("" if none).
func wordAt(src string, i int) string {
	j := i
	for j < len(src) {
		r, n := utf8.DecodeRuneInString(src[j:])
		if (j == i && !isWordStart(r)) || !isWordChar(r) {
			break
		}
		j += n
	}
	return src[i:j]
}

// readWord consumes and returns the word at the current position.
func (s *scanner) readWord() string {
	w := wordAt(s.src, s.pos)
	s.pos += len(w)
	return w
}

// found describes what is at the current position, for error messages.
func (s *scanner) found() string { return describeAt(s.src, s.pos) }

func describeAt(src string, i int) string {
	if i >= len(src) {
		return "end of input"
	}
	if w := wordAt(src, i); w != "" {
		return "'" + w + "'"
	}
	r, _ := utf8.DecodeRuneInString(src[i:])
	return "'" + string(r) + "'"
}

// scanQuoted returns the end (just past the closing quote) of the quoted
// token that starts with the quote character q at src[start], or -1 when
// it is not closed. As in sqlparse's regular expressions, a doubled quote
// does not close it, nor (when backslash is set) a backslash-escaped quote
// or backslash. Where no closing quote follows, the regular expression
// backtracks and closes at the last quote it had taken as escaped; so does
// this.
func scanQuoted(src string, start int, q byte, backslash bool) int {
	last := -1
	for i := start + 1; i < len(src); {
		c := src[i]
		switch {
		case c == q && i+1 < len(src) && src[i+1] == q:
			last = i
			i += 2
		case c == q:
			return i + 1
		case backslash && c == '\\' && i+1 < len(src) && (src[i+1] == '\\' || src[i+1] == q):
			if src[i+1] == q {
				last = i + 1
			}
			i += 2
		default:
			i++
		}
	}
	if last >= 0 {
		return last + 1
	}
	return -1
}

// scanIdentifier consumes the left-hand side of a comparison, or the key of
// an order_by clause: names joined by dots, where a name is a word, a
// `backtick-quoted` or "double-quoted" name, or (after a dot) a
// 'single-quoted' one. sqlparse groups such a chain into one Identifier,
// and MLflow splits its text at the first dot; it returns that text.
func (s *scanner) scanIdentifier() (string, int, error) {
	start := s.pos
	for first := true; ; first = false {
		r := s.peek()
		switch {
		case r == '`' || r == '"' || (r == '\'' && !first):
			end := scanQuoted(s.src, s.pos, byte(r), r != '`')
			if end < 0 {
				return "", start, s.errAt(s.pos, "unterminated quoted name")
			}
			s.pos = end
		case r >= 0 && isWordStart(r):
			s.readWord()
		case first && r == '\'':
			return "", start, s.errAt(s.pos, "expected an identifier such as metrics.rmse or params.lr, found a string; quote a key with backticks or double quotes after its prefix, as in params.\"my key\"")
		case first:
			return "", start, s.errAt(s.pos, "expected an identifier such as metrics.rmse or params.lr, found %s", s.found())
		default:
			return "", start, s.errAt(s.pos, "expected a name after '.', found %s", s.found())
		}
		if s.peek() != '.' {
			return s.src[start:s.pos], start, nil
		}
		s.pos++
	}
}

// comparators that MLflow accepts for some entity, in the form they are
// reported in.
var symbolComparators = map[string]bool{"=": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true}

// scanComparator consumes a comparator: a run of the characters <>=~!
// (one sqlparse token) that must be one of = != < <= > >=, or LIKE,
// ILIKE, IN or NOT IN in any case. It returns it in upper case.
func (s *scanner) scanComparator(ident string) (string, int, error) {
	s.skipSpace()
	start := s.pos
	r := s.peek()
	switch {
	case r < 0:
		return "", start, s.errAt(start, "expected a comparator after '%s', found end of input", ident)
	case strings.ContainsRune("<>=~!", r):
		end := start
		for end < len(s.src) && strings.IndexByte("<>=~!", s.src[end]) >= 0 {
			end++
		}
		op := s.src[start:end]
		if symbolComparators[op] {
			s.pos = end
			return op, start, nil
		}
		// Report the first character that cannot extend a comparator.
		bad := start
		for n := len(op) - 1; n > 0; n-- {
			if symbolComparators[op[:n]] {
				bad = start + n
				break
			}
		}
		hint := ""
		switch op {
		case "==":
			hint = " (use = to compare for equality)"
		case "<>":
			hint = " (use != to compare for inequality)"
		}
		return "", start, s.errAt(bad, "unexpected '%c'%s", s.src[bad], hint)
	case isWordStart(r):
		w := s.readWord()
		switch strings.ToUpper(w) {
		case "LIKE", "ILIKE", "IN":
			return strings.ToUpper(w), start, nil
		case "NOT":
			s.skipSpace()
			at := s.pos
			if strings.EqualFold(wordAt(s.src, at), "IN") {
				s.readWord()
				return "NOT IN", start, nil
			}
			return "", start, s.errAt(at, "expected IN after NOT, found %s", describeAt(s.src, at))
		}
		return "", start, s.errAt(start, "expected a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN or NOT IN) after '%s', found '%s'", ident, w)
	default:
		return "", start, s.errAt(start, "expected a comparator after '%s', found %s", ident, s.found())
	}
}

type valueKind int

const (
	valString valueKind = iota // a quoted string; text is its raw content
	valNumber                  // a number; text is its literal
	valList                    // a parenthesised list of single-quoted strings
)

type value struct {
	kind valueKind
	text string
	list []string
	pos  int // byte offset of the value
}

// scanValue consumes the right-hand side of a comparison.
func (s *scanner) scanValue() (value, error) {
	s.skipSpace()
	start := s.pos
	r := s.peek()
	switch {
	case r == '\'' || r == '"':
		end := scanQuoted(s.src, start, byte(r), true)
		if end < 0 {
			return value{}, s.errAt(start, "unterminated string")
		}
		s.pos = end
		// MLflow strips the surrounding quotes and nothing else (no
		// unescaping of '' or \').
		return value{kind: valString, text: s.src[start+1 : end-1], pos: start}, nil
	case r == '(':
		list, err := s.scanList()
		return value{kind: valList, list: list, pos: start}, err
	case r == '-' || r == '.' || (r >= '0' && r <= '9'):
		text, err := s.scanNumber()
		return value{kind: valNumber, text: text, pos: start}, err
	case r < 0:
		return value{}, s.errAt(start, "expected a value, found end of input")
	case r == '`':
		return value{}, s.errAt(start, "expected a value in single or double quotes, found a backtick-quoted name")
	case isWordStart(r):
		return value{}, s.errAt(start, "expected a value: a string in single or double quotes or a number, found %s", s.found())
	default:
		return value{}, s.errAt(start, "unexpected %s; expected a value", s.found())
	}
}

// scanNumber consumes a number as sqlparse reads one: an optional minus,
// digits with an optional fraction, and an optional exponent (1, -2.5, .5,
// 3., 1e-3). sqlparse's hexadecimal numbers are not numeric values to MLflow.
func (s *scanner) scanNumber() (string, error) {
	src, start := s.src, s.pos
	i := start
	if i < len(src) && src[i] == '-' {
		i++
	}
	if i+1 < len(src) && src[i] == '0' && (src[i+1] == 'x' || src[i+1] == 'X') {
		return "", s.errAt(start, "hexadecimal numbers are not supported")
	}
	digits := func() int {
		j := i
		for i < len(src) && src[i] >= '0' && src[i] <= '9' {
			i++
		}
		return i - j
	}
	n := digits()
	if i < len(src) && src[i] == '.' {
		i++
		n += digits()
	}
	if n == 0 {
		return "", s.errAt(start, "invalid number %s", describeAt(src, start))
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && src[i] == '-' {
			i++
		}
		if digits() == 0 {
			return "", s.errAt(start, "invalid number '%s': the exponent has no digits", src[start:min(i+1, len(src))])
		}
	}
	if i < len(src) {
		if r, _ := utf8.DecodeRuneInString(src[i:]); isWordChar(r) || r == '.' {
			end := i + len(wordAt(src, i))
			if end == i {
				end = i + 1
			}
			return "", s.errAt(start, "invalid number '%s'", src[start:end])
		}
	}
	s.pos = i
	return src[start:i], nil
}

// scanList consumes a parenthesised, comma-separated, non-empty list of
// single-quoted strings, the only list MLflow accepts
// (SearchUtils._check_valid_identifier_list). MLflow reads the list with
// Python's ast.literal_eval, so the strings are Python literals: backslash
// escapes are decoded, and a doubled quote inside a string joins two
// adjacent literals, so the list string a, quote, quote, b reads as "ab".
func (s *scanner) scanList() ([]string, error) {
	open := s.pos
	s.pos++ // (
	s.skipSpace()
	if s.peek() == ')' {
		return nil, s.errAt(open, "empty list; a list needs at least one single-quoted string")
	}
	var items []string
	for {
		s.skipSpace()
		start := s.pos
		switch s.peek() {
		case '\'':
		case '"':
			return nil, s.errAt(start, "a list holds strings in single quotes only")
		default:
			return nil, s.errAt(start, "expected a single-quoted string in the list, found %s", s.found())
		}
		end := scanQuoted(s.src, start, '\'', true)
		if end < 0 {
			return nil, s.errAt(start, "unterminated string")
		}
		v, bad, msg := pyUnquote(s.src[start+1 : end-1])
		if msg != "" {
			return nil, s.errAt(start+1+bad, "%s", msg)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, s.errAt(start, "a list string decodes to a NUL character")
		}
		items = append(items, v)
		s.pos = end
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case ')':
			s.pos++
			return items, nil
		default:
			return nil, s.errAt(s.pos, "expected ',' or ')' in the list, found %s", s.found())
		}
	}
}

// pyUnquote decodes the content of a single-quoted Python string literal
// as ast.literal_eval would. On failure it returns the byte offset in
// content and a message.
func pyUnquote(content string) (string, int, string) {
	if !strings.ContainsAny(content, "\\'\n\r") {
		return content, 0, ""
	}
	var b strings.Builder
	for i := 0; i < len(content); {
		c := content[i]
		switch c {
		case '\'':
			// Only a doubled quote gets here: two adjacent literals.
			i += 2
			continue
		case '\n', '\r':
			return "", i, "a line break in a list string"
		case '\\':
		default:
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(content) {
			return "", i, "a list string ends in a lone backslash"
		}
		e := content[i+1]
		switch e {
		case '\n':
			i += 2
		case '\r':
			i += 2
			if i < len(content) && content[i] == '\n' {
				i++
			}
		case '\\', '\'', '"':
			b.WriteByte(e)
			i += 2
		case 'a', 'b', 'f', 'n', 'r', 't', 'v':
			b.WriteByte(map[byte]byte{'a': 7, 'b': 8, 'f': 12, 'n': 10, 'r': 13, 't': 9, 'v': 11}[e])
			i += 2
		case '0', '1', '2', '3', '4', '5', '6', '7':
			j := i + 1
			v := 0
			for j < len(content) && j < i+4 && content[j] >= '0' && content[j] <= '7' {
				v = v*8 + int(content[j]-'0')
				j++
			}
			b.WriteRune(rune(v))
			i = j
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if i+2+n > len(content) {
				return "", i, "truncated \\" + string(e) + " escape"
			}
			v, err := strconv.ParseUint(content[i+2:i+2+n], 16, 32)
			if err != nil || strings.ContainsAny(content[i+2:i+2+n], "+-_") {
				return "", i, "invalid \\" + string(e) + " escape"
			}
			if v > unicode.MaxRune || (v >= 0xD800 && v <= 0xDFFF) {
				return "", i, "escape \\" + content[i+1:i+2+n] + " is not a valid character"
			}
			b.WriteRune(rune(v))
			i += 2 + n
		case 'N':
			return "", i, "\\N{...} escapes are not supported"
		default:
			// Python keeps an unknown escape as it is.
			b.WriteByte('\\')
			i++
		}
	}
	return b.String(), 0, ""
}

// pyIsLower is Python's str.islower: at least one cased character, and
// no upper- or title-case one.
func pyIsLower(s string) bool {
	cased := false
	for _, r := range s {
		if unicode.IsUpper(r) || unicode.IsTitle(r) {
			return false
		}
		if unicode.IsLower(r) {
			cased = true
		}
	}
	return cased
}

// stripQuotes removes one pair of surrounding single or double quotes, as
// SearchUtils._strip_quotes does; trimBackticks removes surrounding
// backticks, as SearchUtils._trim_backticks does.
func stripQuotes(s string) string {
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

func trimBackticks(s string) string {
	if len(s) >= 2 && s[0] == '`' && s[len(s)-1] == '`' {
		return s[1 : len(s)-1]
	}
	return s
}
