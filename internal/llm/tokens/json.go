package tokens

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// reader walks a JSON document once, front to back, without building it:
// the estimator asks for each value in the shape it expects, and everything
// else is validated and skipped. Decoding a request into Go values first would
// read its text twice (encoding/json validates, then decodes) and allocate
// every field the gateway does not care about.
//
// Strings decode as encoding/json decodes them: invalid UTF-8 and unpaired
// surrogates become U+FFFD.
type reader struct {
	data  []byte
	pos   int
	depth int
	buf   []byte // scratch for strings that need unescaping
}

// maxDepth bounds nesting so that a body of a million "[" fails cleanly
// instead of recursing that deep (encoding/json has the same limit).
const maxDepth = 10000

// syntaxError is malformed JSON, at a byte offset into the body.
type syntaxError struct {
	offset int
	msg    string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.offset, e.msg)
}

func (r *reader) fail(msg string) error { return &syntaxError{r.pos, msg} }

// peek skips whitespace and returns the next byte, or 0 at the end.
func (r *reader) peek() byte {
	for r.pos < len(r.data) {
		switch c := r.data[r.pos]; c {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return c
		}
	}
	return 0
}

// end checks that nothing but whitespace follows the document.
func (r *reader) end() error {
	if r.peek(); r.pos < len(r.data) {
		return r.fail("unexpected data after the top-level value")
	}
	return nil
}

// object reads an object (the next value must be one) and calls fn with each
// key, with the reader at the key's value; fn must consume that value. The
// key is only valid until fn reads a string.
func (r *reader) object(fn func(key []byte) error) error {
	if r.peek() != '{' {
		return r.fail("want an object")
	}
	if r.depth++; r.depth > maxDepth {
		return r.fail("nested too deeply")
	}
	r.pos++
	if r.peek() == '}' {
		r.pos++
		r.depth--
		return nil
	}
	for {
		if r.peek() != '"' {
			return r.fail("want a string key")
		}
		key, err := r.stringBytes()
		if err != nil {
			return err
		}
		if r.peek() != ':' {
			return r.fail("want ':' after an object key")
		}
		r.pos++
		if err := fn(key); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			r.depth--
			return nil
		default:
			return r.fail("want ',' or '}' in an object")
		}
	}
}

// array reads an array (the next value must be one) and calls fn with each
// index, with the reader at the element; fn must consume it.
func (r *reader) array(fn func(i int) error) error {
	if r.peek() != '[' {
		return r.fail("want an array")
	}
	if r.depth++; r.depth > maxDepth {
		return r.fail("nested too deeply")
	}
	r.pos++
	if r.peek() == ']' {
		r.pos++
		r.depth--
		return nil
	}
	for i := 0; ; i++ {
		if err := fn(i); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			r.depth--
			return nil
		default:
			return r.fail("want ',' or ']' in an array")
		}
	}
}

// str reads a string value.
func (r *reader) str() (string, error) {
	b, err := r.stringBytes()
	return string(b), err
}

// stringBytes reads a string (the next value must be one) and returns its
// decoded bytes, which alias the input or the scratch buffer: they are valid
// until the next string is read.
func (r *reader) stringBytes() ([]byte, error) {
	if r.peek() != '"' {
		return nil, r.fail("want a string")
	}
	start := r.pos + 1
	ascii := true
	for i := start; i < len(r.data); i++ {
		switch c := r.data[i]; {
		case c == '"':
			raw := r.data[start:i]
			if ascii || utf8.Valid(raw) {
				r.pos = i + 1
				return raw, nil
			}
			return r.unescape(start)
		case c == '\\' || c < 0x20:
			return r.unescape(start)
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	r.pos = len(r.data)
	return nil, r.fail("unterminated string")
}

// unescape decodes the string whose contents start at byte start into the
// scratch buffer.
func (r *reader) unescape(start int) ([]byte, error) {
	b := r.buf[:0]
	d := r.data
	i := start
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			r.pos = i + 1
			r.buf = b
			return b, nil
		case c < 0x20:
			r.pos = i
			return nil, r.fail("control character in a string")
		case c >= utf8.RuneSelf:
			ru, n := utf8.DecodeRune(d[i:])
			if ru == utf8.RuneError && n == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, d[i:i+n]...)
			}
			i += n
			continue
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		// An escape.
		if i+1 >= len(d) {
			break
		}
		switch e := d[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			ru, ok := hex4(d, i+2)
			if !ok {
				r.pos = i
				return nil, r.fail("bad \\u escape")
			}
			i += 6
			if utf16.IsSurrogate(ru) {
				if lo, ok := hex4(d, i+2); ok && i+1 < len(d) && d[i] == '\\' && d[i+1] == 'u' {
					if dec := utf16.DecodeRune(ru, lo); dec != utf8.RuneError {
						b = utf8.AppendRune(b, dec)
						i += 6
						continue
					}
				}
				ru = utf8.RuneError
			}
			b = utf8.AppendRune(b, ru)
			continue
		default:
			r.pos = i
			return nil, r.fail("bad escape in a string")
		}
		i += 2
	}
	r.pos = len(d)
	return nil, r.fail("unterminated string")
}

// hex4 decodes the four hex digits at d[i:].
func hex4(d []byte, i int) (rune, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var v rune
	for _, c := range d[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	return v, true
}

// null consumes a null if one is next and reports whether it did.
func (r *reader) null() bool {
	if r.peek() == 'n' && r.literal("null") == nil {
		return true
	}
	return false
}

func (r *reader) literal(want string) error {
	if len(r.data)-r.pos < len(want) || string(r.data[r.pos:r.pos+len(want)]) != want {
		return r.fail("invalid literal")
	}
	r.pos += len(want)
	return nil
}

// number reads a number and returns its text.
func (r *reader) number() ([]byte, error) {
	if c := r.peek(); c != '-' && (c < '0' || c > '9') {
		return nil, r.fail("want a number")
	}
	d := r.data
	start, i := r.pos, r.pos
	if d[i] == '-' {
		i++
	}
	digits := func() bool {
		j := i
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		return i > j
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		r.pos = i
		return nil, r.fail("bad number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			r.pos = i
			return nil, r.fail("bad number")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			r.pos = i
			return nil, r.fail("bad number")
		}
	}
	r.pos = i
	return d[start:i], nil
}

// skip validates and skips one value of any kind.
func (r *reader) skip() error {
	switch c := r.peek(); c {
	case '{':
		return r.object(func([]byte) error { return r.skip() })
	case '[':
		return r.array(func(int) error { return r.skip() })
	case '"':
		_, err := r.stringBytes()
		return err
	case 't':
		return r.literal("true")
	case 'f':
		return r.literal("false")
	case 'n':
		return r.literal("null")
	case 0:
		if r.pos == len(r.data) {
			return r.fail("unexpected end of input")
		}
		return r.fail("unexpected character")
	default:
		_, err := r.number()
		return err
	}
}

// compact skips one value and returns its text without insignificant
// whitespace, so that how a client indents its JSON does not change a count.
func (r *reader) compact() ([]byte, error) {
	r.peek()
	start := r.pos
	if err := r.skip(); err != nil {
		return nil, err
	}
	raw := r.data[start:r.pos]
	out := make([]byte, 0, len(raw))
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString:
			if c == '\\' {
				out = append(out, c, raw[i+1])
				i++
				continue
			}
			inString = c != '"'
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c == '"':
			inString = true
		}
		out = append(out, c)
	}
	return out, nil
}
