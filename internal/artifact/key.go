package artifact

import (
	"strings"
	"unicode/utf8"

	"github.com/plinth-dev/plinth/internal/fault"
)

// MaxKeyBytes bounds a key's length: S3 allows 1024 bytes, so longer keys
// could be stored on disk and then not moved to an object store.
const MaxKeyBytes = 1024

// ReservedPrefix starts the first segment of the keys the store keeps for
// itself (multipart parts). CleanKey refuses such keys and List never shows
// them. Workspace names start with a letter or digit, so no workspace can
// collide with it.
const ReservedPrefix = ".plinth-"

// maxDecodeRounds bounds how many layers of percent-encoding CleanKey peels
// off before it gives up on a key.
const maxDecodeRounds = 10

// CleanKey checks an artifact path that came from a caller and returns the
// key to store it under. Keys are relative, slash-separated paths.
//
// The path is percent-decoded first, repeatedly until it stops changing (as
// MLflow's validate_path_is_safe does), so "%2e%2e/x", "%252e%252e/x" and
// "%2Fetc/passwd" are judged by what they decode to; the returned key is the
// decoded form. CleanKey then refuses: empty paths, absolute paths ("/x",
// "C:/x"), backslashes, NUL and other control characters, '#' (MLflow
// refuses it too), invalid UTF-8, ".." segments, empty segments ("a//b"),
// paths longer than MaxKeyBytes and paths under ReservedPrefix. "."
// segments and one trailing slash are dropped. Errors are fault.Invalid on
// the field "path" and quote the offending path.
func CleanKey(p string) (string, error) {
	if p == "" {
		return "", fault.InvalidField("path", "must not be empty")
	}
	d, ok := percentDecode(p)
	if !ok {
		return "", unsafe(p, "too many layers of percent-encoding")
	}
	if !utf8.ValidString(d) {
		return "", unsafe(p, "not valid UTF-8")
	}
	for _, c := range d {
		switch {
		case c < 0x20 || c == 0x7f:
			return "", unsafe(p, "contains a control character")
		case c == '\\':
			return "", unsafe(p, "contains a backslash (use '/' between segments)")
		case c == '#':
			return "", unsafe(p, "contains '#'")
		}
	}
	if strings.HasPrefix(d, "/") {
		return "", unsafe(p, "is absolute (it must be relative to the artifact root)")
	}
	if len(d) >= 2 && d[1] == ':' && isLetter(d[0]) && (len(d) == 2 || d[2] == '/') {
		return "", unsafe(p, "starts with a drive letter")
	}
	d = strings.TrimSuffix(d, "/")
	segs := strings.Split(d, "/")
	kept := segs[:0]
	for _, s := range segs {
		switch s {
		case "..":
			return "", unsafe(p, "contains a '..' segment")
		case "":
			return "", unsafe(p, "contains an empty segment ('//')")
		case ".":
			continue
		}
		kept = append(kept, s)
	}
	if len(kept) == 0 {
		return "", unsafe(p, "names no file or directory")
	}
	if strings.HasPrefix(kept[0], ReservedPrefix) {
		return "", unsafe(p, "is under the reserved prefix "+ReservedPrefix)
	}
	key := strings.Join(kept, "/")
	if len(key) > MaxKeyBytes {
		return "", fault.InvalidField("path", "%s is longer than %d bytes", clip(p), MaxKeyBytes)
	}
	return key, nil
}

func unsafe(p, why string) error {
	return fault.InvalidField("path", "%s is not a safe artifact path: %s", clip(p), why)
}

func clip(p string) string {
	if len(p) > 200 {
		p = p[:197] + "..."
	}
	return quote(p)
}

// quote quotes p the way %q does, so control characters show as escapes.
func quote(p string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range p {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || c == 0x7f:
			const hex = "0123456789abcdef"
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// percentDecode decodes %XX escapes until the string stops changing.
// Malformed escapes ("100%", "%zz") are kept as they are, like Python's
// urllib.parse.unquote. ok is false if the string still changes after
// maxDecodeRounds rounds.
func percentDecode(s string) (string, bool) {
	for range maxDecodeRounds {
		d := decodeOnce(s)
		if d == s {
			return s, true
		}
		s = d
	}
	return s, false
}

func decodeOnce(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
