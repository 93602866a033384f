package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// statusError is a request refused before its handler: answered with code
// and the connection closed.
type statusError struct {
	code int
	text string
}

func (e *statusError) Error() string { return http.StatusText(e.code) + ": " + e.text }

func badRequest(text string) error { return &statusError{http.StatusBadRequest, text} }

var errHeaderTooLarge = &statusError{http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"}

// errQuiet ends a connection without an answer: the caller closed it, or
// the head did not arrive in time (net/http does not answer either).
var errQuiet = errors.New("h1: connection ended before a request")

// readHead reads a request head into c.head, its lines (without line
// ends) into c.spans. Empty lines before the request line are skipped, as
// RFC 9112 asks of a server.
func (c *conn) readHead() error {
	c.head, c.spans = c.head[:0], c.spans[:0]
	maxBytes, maxLines := c.srv.maxHeaderBytes(), c.srv.maxHeaderFields()+1
	lineStart, blanks := 0, 0
	for {
		frag, err := c.br.ReadSlice('\n')
		if len(c.head)+len(frag) > maxBytes {
			return errHeaderTooLarge
		}
		c.head = append(c.head, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(c.head) > 0 {
				return badRequest("the connection ended within the request head")
			}
			return errQuiet
		}
		end := len(c.head) - 1
		if end > lineStart && c.head[end-1] == '\r' {
			end--
		}
		if end == lineStart {
			if len(c.spans) > 0 {
				return nil
			}
			if blanks++; blanks > 4 {
				return badRequest("empty lines instead of a request")
			}
			c.head = c.head[:lineStart]
			continue
		}
		if len(c.spans) == maxLines {
			return errHeaderTooLarge
		}
		c.spans = append(c.spans, span{int32(lineStart), int32(end)})
		lineStart = len(c.head)
	}
}

// headComplete reports whether b holds a whole request head.
func headComplete(b []byte) bool {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for {
		i := indexByte(b, '\n')
		if i < 0 {
			return false
		}
		b = b[i+1:]
		if len(b) > 0 && b[0] == '\n' || len(b) > 1 && b[0] == '\r' && b[1] == '\n' {
			return true
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// readRequest reads the next request and prepares its exchange.
func (c *conn) readRequest() (*exchange, error) {
	s := c.srv
	// The request's start is read from the clock only when a deadline
	// needs it: most requests arrive whole in one read.
	var t0 time.Time
	if !headComplete(c.peekBuffered()) {
		t0 = time.Now()
		if d := s.headerTimeout(); d > 0 {
			c.setReadDeadline(t0.Add(d), false)
		} else if !c.rdl.IsZero() {
			c.setReadDeadline(time.Time{}, false)
		}
	}
	if err := c.readHead(); err != nil {
		return nil, err
	}
	head := string(c.head)
	if cap(c.head) > 2*readBufferSize {
		// One large head does not keep its buffer for the connection's life.
		c.head = nil
	}
	line := head[c.spans[0].start:c.spans[0].end]
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || target == "" {
		return nil, badRequest("malformed request line")
	}
	if !validToken(method) {
		return nil, badRequest("invalid method")
	}
	minor, err := parseProto(proto)
	if err != nil {
		return nil, err
	}
	h, err := c.parseFields(head)
	if err != nil {
		return nil, err
	}

	x := &exchange{c: c, header: c.hdr, cl: -1, proto11: minor >= 1}
	x.isHead = method == "HEAD"
	method = internMethod(method)

	// The target.
	var u *url.URL
	switch {
	case fastURL(&x.url, target):
		u = &x.url
	case method == "CONNECT" && !strings.HasPrefix(target, "/"):
		if u, err = url.ParseRequestURI("http://" + target); err != nil {
			return nil, badRequest("malformed CONNECT target")
		}
		u.Scheme = ""
	default:
		if u, err = url.ParseRequestURI(target); err != nil {
			return nil, badRequest("malformed request target")
		}
	}

	// Host.
	hosts := h["Host"]
	switch {
	case len(hosts) > 1:
		return nil, badRequest("too many Host headers")
	case len(hosts) == 0 && minor >= 1 && method != "CONNECT":
		return nil, badRequest("missing required Host header")
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		return nil, badRequest("malformed Host header")
	}
	host := u.Host
	if host != "" && !httpguts.ValidHostHeader(host) {
		// net/http passes such a host from an absolute or CONNECT target on;
		// it would reach the model as X-Forwarded-Host.
		return nil, badRequest("malformed host in the request target")
	}
	if host == "" && len(hosts) == 1 {
		host = hosts[0]
	}
	delete(h, "Host")

	// Framing: the rules that keep this server and any proxy in front of it
	// agreeing on where a request ends.
	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		switch {
		case minor == 0:
			return nil, badRequest("Transfer-Encoding in an HTTP/1.0 request")
		case len(te) != 1 || !asciiEqualFold(te[0], "chunked"):
			return nil, &statusError{http.StatusNotImplemented, "unsupported transfer encoding"}
		}
		chunked = true
	}
	var length int64
	if cls, ok := h["Content-Length"]; ok {
		switch {
		case chunked:
			return nil, badRequest("both Transfer-Encoding and Content-Length")
		case len(cls) != 1:
			return nil, badRequest("more than one Content-Length")
		}
		if length, ok = parseLength(cls[0]); !ok {
			return nil, badRequest("invalid Content-Length")
		}
	}
	if chunked {
		length = -1
	}

	// Expect.
	continueNeeded := false
	if ex, ok := h["Expect"]; ok {
		if len(ex) == 0 || !hasToken(ex[0], "100-continue") {
			if len(ex) > 0 && ex[0] != "" {
				return nil, &statusError{http.StatusExpectationFailed, "unsupported expectation"}
			}
		} else {
			continueNeeded = minor >= 1 && length != 0
		}
	}
	if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	closing := hasClose
	if minor == 0 {
		closing = hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
		x.keepAlive10 = !closing
	}
	x.wantsClose = closing

	ctx, cancel := context.WithCancel(c.ctx)
	x.cancel = cancel
	r := &http.Request{
		Method:        method,
		URL:           u,
		Proto:         proto,
		ProtoMajor:    1,
		ProtoMinor:    minor,
		Header:        h,
		Body:          http.NoBody,
		ContentLength: length,
		Close:         closing,
		Host:          host,
		RemoteAddr:    c.remote,
		RequestURI:    target,
	}
	if chunked {
		r.TransferEncoding = []string{"chunked"}
	}
	if length != 0 {
		b := &x.body
		b.c, b.x, b.remain, b.continueNeeded = c, x, length, continueNeeded
		if chunked {
			b.chunks = httputil.NewChunkedReader(c.br)
		}
		r.Body = b
		x.hasBody = true
		// A body not already here must arrive within ReadTimeout of the
		// request's start.
		if chunked || int64(c.br.Buffered()) < length {
			var dl time.Time
			if s.ReadTimeout > 0 {
				if t0.IsZero() {
					t0 = time.Now()
				}
				dl = t0.Add(s.ReadTimeout)
			}
			c.setReadDeadline(dl, false)
		}
	}
	x.req = r.WithContext(ctx)
	return x, nil
}

func (c *conn) peekBuffered() []byte {
	b, _ := c.br.Peek(c.br.Buffered())
	return b
}

// parseProto parses the HTTP version; it returns the minor version.
func parseProto(p string) (int, error) {
	switch p {
	case "HTTP/1.1":
		return 1, nil
	case "HTTP/1.0":
		return 0, nil
	}
	if len(p) != len("HTTP/X.Y") || !strings.HasPrefix(p, "HTTP/") || p[6] != '.' || !isDigit(p[5]) || !isDigit(p[7]) {
		return 0, badRequest("malformed HTTP version")
	}
	if p[5] != '1' {
		return 0, &statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	return int(p[7] - '0'), nil
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// parseFields turns the header lines into a header, every string a piece
// of head (one allocation for all of them).
func (c *conn) parseFields(head string) (http.Header, error) {
	n := len(c.spans) - 1
	h := make(http.Header, n)
	vals := make([]string, n)
	var canon [64]byte
	for i, sp := range c.spans[1:] {
		line := head[sp.start:sp.end]
		if line[0] == ' ' || line[0] == '\t' {
			return nil, badRequest("obsolete line folding or leading white space")
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return nil, badRequest("malformed header line")
		}
		key, ok := canonicalKey(line[:colon], canon[:0])
		if !ok {
			return nil, badRequest("invalid header name")
		}
		v := trimOWS(line[colon+1:])
		for j := 0; j < len(v); j++ {
			if !validValueByte(v[j]) {
				return nil, badRequest("invalid header value")
			}
		}
		if vv, ok := h[key]; ok {
			h[key] = append(vv, v)
			continue
		}
		vals[i] = v
		h[key] = vals[i : i+1 : i+1]
	}
	return h, nil
}

// canonicalKey returns k in canonical form (net/http's), k itself when it
// already is, and false when k is not a token.
func canonicalKey(k string, buf []byte) (string, bool) {
	upper, canonical := true, true
	for i := 0; i < len(k); i++ {
		b := k[i]
		if !tokenByte[b] {
			return "", false
		}
		if upper && 'a' <= b && b <= 'z' || !upper && 'A' <= b && b <= 'Z' {
			canonical = false
		}
		upper = b == '-'
	}
	if canonical {
		return k, true
	}
	buf = append(buf, k...)
	upper = true
	for i, b := range buf {
		if upper && 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		} else if !upper && 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		buf[i] = b
		upper = b == '-'
	}
	if s, ok := commonKeys[string(buf)]; ok {
		return s, true
	}
	return string(buf), true
}

var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Api-Key", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Expect", "Host", "Keep-Alive",
		"Origin", "Pragma", "Referer", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id",
		"X-Ms-Client-Request-Id", "X-Plinth-Deployment", "Azureml-Model-Deployment",
	} {
		m[k] = k
	}
	return m
}()

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// tokenByte: RFC 9110's tchar.
var tokenByte = func() (t [256]bool) {
	for b := '0'; b <= '9'; b++ {
		t[b] = true
	}
	for b := 'a'; b <= 'z'; b++ {
		t[b], t[b-'a'+'A'] = true, true
	}
	for _, b := range "!#$%&'*+-.^_`|~" {
		t[b] = true
	}
	return t
}()

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

// validValueByte: field-vchar, SP, HTAB and obs-text; CR, LF, NUL and
// other controls are refused, so a value can never split a header.
func validValueByte(b byte) bool {
	return b >= 0x20 && b != 0x7f || b == '\t'
}

// pathByte is what a path may hold and still be its own escaped form
// (url.URL.EscapedPath of it is itself).
var pathByte = func() (t [256]bool) {
	for b := '0'; b <= '9'; b++ {
		t[b] = true
	}
	for b := 'a'; b <= 'z'; b++ {
		t[b], t[b-'a'+'A'] = true, true
	}
	for _, b := range "-_.~$&+,/:;=@" {
		t[b] = true
	}
	return t
}()

// fastURL fills u for an origin-form target that url.ParseRequestURI would
// take as it is (no escapes, no controls), without its allocations.
func fastURL(u *url.URL, target string) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		if !pathByte[path[i]] {
			return false
		}
	}
	for i := 0; i < len(query); i++ {
		if b := query[i]; b < 0x20 || b == 0x7f {
			return false
		}
	}
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

func internMethod(m string) string {
	switch m {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "HEAD":
		return "HEAD"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	}
	return m
}

// parseLength parses a Content-Length: digits only, no sign, no overflow.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds token t.
func hasToken(v, t string) bool {
	for v != "" {
		var item string
		item, v, _ = strings.Cut(v, ",")
		if asciiEqualFold(trimOWS(item), t) {
			return true
		}
	}
	return false
}

// body is a request body: Content-Length bytes or chunks, read from the
// connection's buffer.
type body struct {
	c              *conn
	x              *exchange
	remain         int64     // bytes left of a Content-Length body
	chunks         io.Reader // the chunked decoder; nil for Content-Length
	continueNeeded bool      // 100 Continue not sent yet
	err            error     // sticky: io.EOF once read to its end
	closed         bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.continueNeeded {
		b.continueNeeded = false
		b.x.sendContinue()
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if b.chunks == nil {
		if int64(len(p)) > b.remain {
			p = p[:b.remain]
		}
		n, err = b.c.br.Read(p)
		b.remain -= int64(n)
		switch {
		case b.remain == 0:
			err = io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = b.chunks.Read(p)
		if err == io.EOF {
			err = b.c.skipTrailers()
			if err == nil {
				err = io.EOF
			}
		}
	}
	if err != nil {
		b.err = err
		if err != io.EOF {
			// Where the next request starts is unknown now.
			b.x.closeAfter = true
			if b.c.rerr != nil {
				b.x.cancel() // the caller went away, as net/http has it
			}
		}
	}
	return n, err
}

func (b *body) Close() error {
	b.closed = true
	return nil
}

// settle reads what the handler left of the body, up to maxDiscard,
// before the response goes out (callers that send a whole request before
// reading could otherwise deadlock); it reports whether the connection can
// carry another request. A caller still waiting for 100 Continue, or a body
// known to be larger, closes the connection instead.
func (b *body) settle() bool {
	switch {
	case b.err == io.EOF:
		return true
	case b.err != nil, b.continueNeeded, b.closed:
		return false
	case b.chunks == nil && b.remain > maxDiscard:
		return false
	}
	var buf [4 << 10]byte
	for n := 0; n <= maxDiscard; {
		m, err := b.Read(buf[:])
		n += m
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// skipTrailers reads and drops a chunked body's trailer section.
func (c *conn) skipTrailers() error {
	total, partial := 0, false
	for {
		line, err := c.br.ReadSlice('\n')
		total += len(line)
		if total > c.srv.maxHeaderBytes() {
			return errors.New("h1: trailer section too large")
		}
		if err == bufio.ErrBufferFull {
			partial = true
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if !partial && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			return nil
		}
		partial = false
	}
}
