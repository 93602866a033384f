package h1

import (
	"bufio"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// exchange is one request and its response: the http.ResponseWriter (and
// http.Flusher) the handler gets, with the request's parts allocated
// together.
type exchange struct {
	c      *conn
	req    *http.Request
	cancel func()
	url    url.URL
	body   body

	header  http.Header
	status  int
	cl      int64 // the body's length when known (declared or, at the end, counted); -1 otherwise
	written int64 // body bytes the handler wrote

	proto11       bool
	keepAlive10   bool // an HTTP/1.0 caller asked to keep the connection
	wantsClose    bool
	isHead        bool
	wroteHeader   bool // the status is chosen
	committed     bool // the head is in the connection's buffer
	chunked       bool
	closeAfter    bool // no further request on this connection
	lingerOnClose bool // unread request bytes may remain when closing
	done          bool // the handler returned
	hasBody       bool
}

// stageMax is how much of a response without a Content-Length is held
// before it goes out chunked: a whole small response gets a Content-Length
// instead (net/http holds 2 KiB the same way).
const stageMax = 2 << 10

func (x *exchange) Header() http.Header { return x.header }

func (x *exchange) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if x.wroteHeader {
		x.c.srv.logf("h1: superfluous WriteHeader(%d) for %s", code, x.req.URL.Path)
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		x.writeInformational(code)
		return
	}
	x.wroteHeader = true
	x.status = code
	if v, ok := x.header["Content-Length"]; ok && len(v) > 0 {
		if n, ok := parseLength(trimOWS(v[0])); ok {
			x.cl = n
		} else {
			x.c.srv.logf("h1: invalid Content-Length %q in a response; dropped", v[0])
			delete(x.header, "Content-Length")
		}
	}
}

// bodyAllowed: 1xx, 204 and 304 answers have no body.
func (x *exchange) bodyAllowed() bool {
	return x.status >= 200 && x.status != http.StatusNoContent && x.status != http.StatusNotModified
}

func (x *exchange) Write(p []byte) (int, error) {
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !x.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if x.cl >= 0 && x.written+int64(len(p)) > x.cl {
		return 0, http.ErrContentLength
	}
	c := x.c
	if c.werr != nil {
		return 0, c.werr
	}
	x.written += int64(len(p))
	if x.isHead {
		return len(p), nil
	}
	if !x.committed {
		if x.cl < 0 && len(c.stage)+len(p) <= stageMax {
			c.stage = append(c.stage, p...)
			return len(p), nil
		}
		if len(c.stage) == 0 {
			x.commit(p)
		} else {
			x.commit(c.stage)
		}
	}
	if x.chunked {
		if len(c.stage)+len(p) <= stageMax {
			c.stage = append(c.stage, p...)
			return len(p), nil
		}
		x.writeChunk(c.stage)
		c.stage = c.stage[:0]
		x.writeChunk(p)
	} else {
		c.bw.Write(p)
	}
	if c.werr != nil {
		return 0, c.werr
	}
	return len(p), nil
}

// WriteString spares io.WriteString a copy.
func (x *exchange) WriteString(s string) (int, error) {
	if !x.committed && x.cl < 0 && len(x.c.stage)+len(s) <= stageMax && x.wroteHeader && x.bodyAllowed() && !x.isHead && x.c.werr == nil {
		x.c.stage = append(x.c.stage, s...)
		x.written += int64(len(s))
		return len(s), nil
	}
	return x.Write([]byte(s))
}

// Flush sends what the handler wrote so far; a response not yet committed
// goes out chunked (or, for HTTP/1.0, ends with the connection).
func (x *exchange) Flush() { x.FlushError() }

// FlushError is Flush for http.ResponseController, with the write error.
func (x *exchange) FlushError() error {
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	c := x.c
	if !x.committed {
		x.commit(c.stage)
	}
	if x.chunked && len(c.stage) > 0 {
		x.writeChunk(c.stage)
		c.stage = c.stage[:0]
	}
	c.bw.Flush()
	return c.werr
}

func (x *exchange) writeChunk(p []byte) {
	if len(p) == 0 {
		return
	}
	bw := x.c.bw
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	bw.WriteString("\r\n")
}

// commit writes the response head; first is the body's beginning, for
// sniffing a Content-Type. Staged bytes go out after the head.
func (x *exchange) commit(first []byte) {
	x.committed = true
	c := x.c
	h := x.header
	body := x.bodyAllowed()
	if body && x.cl < 0 && x.done && (!x.isHead || x.written > 0) {
		x.cl = x.written
	}
	switch {
	case !body || x.isHead || x.cl >= 0:
	case x.proto11:
		x.chunked = true
	default:
		x.closeAfter = true // an HTTP/1.0 body without a length ends with the connection
	}
	if x.wantsClose || c.srv.closed.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		x.closeAfter = true
	}
	if !x.proto11 && (!x.keepAlive10 || x.cl < 0 && body && !x.isHead) {
		x.closeAfter = true
	}
	if x.hasBody && !x.closeAfter && !x.body.settle() {
		x.closeAfter, x.lingerOnClose = true, true
	}

	bw := c.bw
	bw.WriteString(statusLine(x.proto11, x.status))
	for k, vs := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		if !validToken(k) {
			continue
		}
		if !body && k == "Content-Type" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			writeValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	if body && x.cl >= 0 {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), x.cl, 10))
		bw.WriteString("\r\n")
	}
	if x.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if _, ok := h["Content-Type"]; !ok && body && len(first) > 0 {
		bw.WriteString("Content-Type: ")
		bw.WriteString(http.DetectContentType(first))
		bw.WriteString("\r\n")
	}
	switch {
	case x.closeAfter && x.proto11:
		bw.WriteString("Connection: close\r\n")
	case !x.closeAfter && !x.proto11:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if len(c.stage) > 0 && !x.chunked {
		if !x.isHead {
			bw.Write(c.stage)
		}
		c.stage = c.stage[:0]
	}
}

// writeValue writes a header value with any CR or LF turned into a space,
// so a handler's value cannot end the header early (net/http does the same).
func writeValue(bw *bufio.Writer, v string) {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			for j := 0; j < len(v); j++ {
				if b := v[j]; b == '\r' || b == '\n' {
					bw.WriteByte(' ')
				} else {
					bw.WriteByte(b)
				}
			}
			return
		}
	}
	bw.WriteString(v)
}

// writeInformational sends a 1xx answer (103 Early Hints) with the header
// as it stands.
func (x *exchange) writeInformational(code int) {
	if x.committed {
		return
	}
	bw := x.c.bw
	bw.WriteString(statusLine(x.proto11, code))
	for k, vs := range x.header {
		if !validToken(k) {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			writeValue(bw, v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	bw.Flush()
}

func (x *exchange) sendContinue() {
	if x.committed || x.c.werr != nil {
		return
	}
	x.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	x.c.bw.Flush()
}

// finish completes the response after the handler returned, and reads
// what it left of the request body.
func (x *exchange) finish() {
	x.done = true
	c := x.c
	if !x.wroteHeader {
		x.WriteHeader(http.StatusOK)
	}
	if !x.committed {
		x.commit(c.stage)
	}
	if x.chunked {
		x.writeChunk(c.stage)
		c.stage = c.stage[:0]
		c.bw.WriteString("0\r\n\r\n")
	}
	if x.cl >= 0 && x.written < x.cl && x.bodyAllowed() && !x.isHead {
		// Fewer bytes than announced: the caller must see the connection
		// end rather than wait.
		x.closeAfter = true
	}
	if cap(c.stage) > 2*stageMax {
		c.stage = nil
	}
	c.stage = c.stage[:0]
	c.bw.Flush()
}

var statusLines [2][600]string

func init() {
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			statusLines[0][code] = "HTTP/1.0 " + strconv.Itoa(code) + " " + t + "\r\n"
			statusLines[1][code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n"
		}
	}
}

func statusLine(proto11 bool, code int) string {
	i := 0
	if proto11 {
		i = 1
	}
	if code < 600 && statusLines[i][code] != "" {
		return statusLines[i][code]
	}
	p := "HTTP/1.0 "
	if proto11 {
		p = "HTTP/1.1 "
	}
	return p + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}

// httpDate is the Date header's value, formatted once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &cachedDate{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]
