package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// upstream is the gateway's HTTP/1.1 client for model replicas. It writes
// the request and reads the answer on the calling goroutine, over a LIFO
// pool of keep-alive connections per replica address.
//
// It exists because net/http's Transport hands every call to two
// goroutines of its own (a writer and a reader per connection) and back
// over channels; on a busy gateway those hand-offs and the reader's extra
// poll after each body cost more CPU than the proxying itself. Replicas are
// plain-HTTP servers started by the platform, so the client needs no TLS,
// no HTTP/2, no proxies and no redirects — only what RFC 9112 asks of a
// client reading a response.
type upstream struct {
	dialer      net.Dialer
	tlsConfig   *tls.Config // for https upstreams (LLM backends); nil = system roots
	idleTimeout time.Duration
	maxIdle     int // per address

	mu    sync.Mutex
	pools map[string]*connPool
}

const (
	upReadBuffer  = 16 << 10 // also the longest response header line
	upWriteBuffer = 8 << 10
	// upMaxHeaderBytes bounds a response's header section.
	upMaxHeaderBytes = 1 << 20
	// upProbeAfter is how long a connection may sit idle before it is
	// checked for a close from the replica before reuse (servers such as
	// gunicorn and uvicorn close idle keep-alive connections after 2–5 s).
	upProbeAfter = time.Second
	// upWriteDeadlineOver is the body size above which sending gets a
	// deadline of its own: smaller requests fit in the socket's buffer
	// and never wait for the replica to read, so they skip the cost.
	upWriteDeadlineOver = 64 << 10
)

func newUpstream(connectTimeout time.Duration) *upstream {
	return &upstream{
		dialer:      net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second},
		idleTimeout: 90 * time.Second,
		maxIdle:     1024,
		pools:       map[string]*connPool{},
	}
}

type connPool struct {
	mu   sync.Mutex
	idle []*upConn // most recently used last
}

// upConn is one keep-alive connection to a replica.
type upConn struct {
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	pool      *connPool
	idleSince time.Time
	writeDL   bool // a write deadline is set
	// lastValues are the header values of the previous response, in order.
	lastValues []string
}

// setDeadlines bounds waiting for the response by deadline and, when
// write says so, sending too (else sending is unbounded but still
// interrupted when the caller leaves).
func (c *upConn) setDeadlines(deadline time.Time, write bool) {
	switch {
	case write:
		c.nc.SetDeadline(deadline)
		c.writeDL = true
	case c.writeDL:
		c.nc.SetDeadline(time.Time{})
		c.nc.SetReadDeadline(deadline)
		c.writeDL = false
	default:
		c.nc.SetReadDeadline(deadline)
	}
}

func (u *upstream) pool(addr string) *connPool {
	u.mu.Lock()
	p := u.pools[addr]
	if p == nil {
		p = &connPool{}
		u.pools[addr] = p
	}
	u.mu.Unlock()
	return p
}

// idleConn takes the most recently used idle connection to addr, closing
// any that sat idle too long.
func (u *upstream) idleConn(p *connPool, now time.Time) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now.Sub(c.idleSince) < u.idleTimeout {
			return c
		}
		c.nc.Close()
	}
	return nil
}

// put returns a connection whose last response was read to its end.
func (u *upstream) put(c *upConn, now time.Time) {
	p := c.pool
	c.idleSince = now
	p.mu.Lock()
	if len(p.idle) >= u.maxIdle {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	// The oldest sits first; drop it when it has expired, so a pool that
	// shrank after a burst does not keep its connections open forever.
	if len(p.idle) > 0 && now.Sub(p.idle[0].idleSince) >= u.idleTimeout {
		p.idle[0].nc.Close()
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// closeIdle closes every idle connection.
func (u *upstream) closeIdle() {
	u.mu.Lock()
	pools := make([]*connPool, 0, len(u.pools))
	for _, p := range u.pools {
		pools = append(pools, p)
	}
	u.mu.Unlock()
	for _, p := range pools {
		p.mu.Lock()
		for _, c := range p.idle {
			c.nc.Close()
		}
		p.idle = nil
		p.mu.Unlock()
	}
}

// upRequest is what is sent to a replica.
type upRequest struct {
	method   string
	addr     string // host:port
	host     string // the Host header; "" = addr
	tls      bool   // https: LLM backends such as Azure OpenAI
	path     string // decoded
	rawPath  string // escaped form when it differs from the default escaping
	rawQuery string
	fwd      *forwarding
	extra    [][2]string // fields the gateway adds (an LLM backend's credential)
	body     []byte
}

// Stages of a call to a replica, for errors.
const (
	stageDial  = "connect"
	stageWrite = "send"
	stageHead  = "read the response head"
)

// upError is a failure before the replica's answer began.
type upError struct {
	stage   string
	timeout bool // the deadline passed (or the caller left: see the caller's context)
	err     error
}

func (e *upError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *upError) Unwrap() error { return e.err }

// connectionLost reports a failure in which the replica closed or reset
// the connection before answering.
func (e *upError) connectionLost() bool {
	return e.stage != stageDial && !e.timeout && isConnectionFailure(e.err)
}

// badResponse is a response that is not HTTP/1.x as RFC 9112 has it.
type badResponse struct{ msg string }

func (e *badResponse) Error() string { return "malformed response: " + e.msg }

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// send writes req to a replica and reads the response head. The deadline
// bounds connecting (also bounded by the dialer's timeout), sending and
// waiting for the head; ctx ending interrupts all of them. A connection
// from the pool that turns out closed by the replica before any response
// byte is replaced by a new one once, as the replica may close idle
// connections at any time.
func (u *upstream) send(ctx context.Context, req *upRequest, deadline time.Time) (*upResponse, error) {
	key := req.addr
	if req.tls {
		key = "tls:" + req.addr
	}
	p := u.pool(key)
	for fresh := false; ; fresh = true {
		now := time.Now()
		var c *upConn
		if !fresh {
			c = u.idleConn(p, now)
		}
		reused := c != nil
		if c == nil {
			dctx, cancel := context.WithDeadline(ctx, deadline)
			nc, err := u.dialer.DialContext(dctx, "tcp", req.addr)
			if err == nil && req.tls {
				nc, err = u.handshake(dctx, nc, req.addr)
			}
			timedOut := dctx.Err() == context.DeadlineExceeded
			cancel()
			if err != nil {
				return nil, &upError{stage: stageDial, timeout: timedOut || isTimeout(err), err: err}
			}
			c = &upConn{nc: nc, br: bufio.NewReaderSize(nc, upReadBuffer), bw: bufio.NewWriterSize(nc, upWriteBuffer), pool: p}
		}
		c.setDeadlines(deadline, len(req.body) > upWriteDeadlineOver)
		if reused && now.Sub(c.idleSince) >= upProbeAfter && !alive(c.nc) {
			c.nc.Close()
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
		resp, err := c.roundTrip(req)
		if err != nil {
			stop()
			c.nc.Close()
			var ue *upError
			if reused && !fresh && errors.As(err, &ue) && ue.connectionLost() && ctx.Err() == nil {
				continue
			}
			return nil, err
		}
		resp.stop = stop
		resp.u = u
		return resp, nil
	}
}

// handshake starts TLS on nc, offering only HTTP/1.1.
func (u *upstream) handshake(ctx context.Context, nc net.Conn, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	var cfg *tls.Config
	if u.tlsConfig != nil {
		cfg = u.tlsConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

func (c *upConn) roundTrip(req *upRequest) (*upResponse, error) {
	if err := c.writeRequest(req); err != nil {
		return nil, &upError{stage: stageWrite, timeout: isTimeout(err), err: err}
	}
	for {
		resp, err := c.readHead(req.method)
		if err != nil {
			var bad *badResponse
			if errors.As(err, &bad) {
				return nil, err
			}
			return nil, &upError{stage: stageHead, timeout: isTimeout(err), err: err}
		}
		// 1xx answers precede the real one (103 Early Hints, a 100
		// Continue sent unasked); 101 would switch protocols, which the
		// gateway never asks for.
		if resp.status >= 100 && resp.status < 200 {
			if resp.status == http.StatusSwitchingProtocols {
				return nil, &badResponse{"101 Switching Protocols to a request that did not ask to upgrade"}
			}
			continue
		}
		return resp, nil
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (c *upConn) writeRequest(req *upRequest) error {
	w := c.bw
	w.WriteString(req.method)
	w.WriteByte(' ')
	w.WriteString(requestTarget(req.path, req.rawPath))
	if req.rawQuery != "" {
		w.WriteByte('?')
		w.WriteString(req.rawQuery)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	if req.host != "" {
		w.WriteString(req.host)
	} else {
		w.WriteString(req.addr)
	}
	w.WriteString("\r\n")
	f := req.fwd
	for _, kv := range req.extra {
		writeField(w, kv[0], kv[1])
	}
	for k, vs := range f.header {
		if !f.forwards(k) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	writeField(w, "X-Forwarded-For", f.xff)
	writeField(w, "X-Forwarded-Proto", f.proto)
	writeField(w, "X-Forwarded-Host", f.host)
	writeField(w, "X-Request-Id", f.rid)
	if f.mirror {
		writeField(w, HeaderMirror, "true")
	}
	if len(req.body) > 0 || methodHasBody(req.method) {
		w.WriteString("Content-Length: ")
		var num [20]byte
		w.Write(strconv.AppendInt(num[:0], int64(len(req.body)), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	if len(req.body) > 0 {
		w.Write(req.body)
	}
	return w.Flush()
}

func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(headerValue(v))
	w.WriteString("\r\n")
}

// headerValue keeps a header value on one line: the server that parsed
// the caller's request already refused CR and LF, so this only guards
// values the gateway composed itself.
func headerValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return v
}

func methodHasBody(m string) bool { return m == "POST" || m == "PUT" || m == "PATCH" }

// requestTarget is the origin-form path: rawPath when set, else path with
// whatever needs escaping escaped (usually nothing: "/score").
func requestTarget(path, rawPath string) string {
	if rawPath != "" {
		return rawPath
	}
	if path == "" {
		return "/"
	}
	for i := 0; i < len(path); i++ {
		if !pathSafe(path[i]) {
			return (&urlPath{path}).escaped()
		}
	}
	return path
}

func pathSafe(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-._~/!$&'()*+,;=:@", b) >= 0
}

type urlPath struct{ p string }

func (u *urlPath) escaped() string {
	var b strings.Builder
	for i := 0; i < len(u.p); i++ {
		if ch := u.p[i]; pathSafe(ch) {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

// upResponse is a replica's answer; its body is read from the connection
// as it arrives. Close it once: the connection goes back to the pool when
// the body was read to its end and the replica keeps it open.
type upResponse struct {
	status        int
	header        http.Header
	contentLength int64 // -1 when not known in advance
	chunked       bool
	keepAlive     bool

	c        *upConn
	u        *upstream
	stop     func() bool
	body     io.Reader
	done     bool // the body was read to its end
	failed   bool
	timeout  time.Duration // per read of the network after the head
	deadline bool          // the read deadline is being renewed
}

// readHead reads a status line and header section.
func (c *upConn) readHead(method string) (*upResponse, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return nil, &badResponse{"status line too long"}
		}
		return nil, err
	}
	r := &upResponse{c: c, contentLength: -1, keepAlive: true}
	line = trimEOL(line)
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return nil, &badResponse{fmt.Sprintf("status line %q", truncate(line))}
	}
	minor := line[7]
	if minor != '0' && minor != '1' {
		return nil, &badResponse{fmt.Sprintf("status line %q: not HTTP/1.0 or HTTP/1.1", truncate(line))}
	}
	code := line[9:12]
	if (len(line) > 12 && line[12] != ' ') || !isDigits(code) {
		return nil, &badResponse{fmt.Sprintf("status line %q", truncate(line))}
	}
	r.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if r.status < 100 {
		return nil, &badResponse{fmt.Sprintf("status %d", r.status)}
	}
	if minor == '0' {
		r.keepAlive = false // unless it says keep-alive, below
	}

	h := make(http.Header, 8)
	// One backing array for the values, and the previous response's values
	// reused when they repeat (a replica's Content-Type, Server, Date within
	// the second): most heads then cost no string allocations at all.
	vals := make([]string, 0, 8)
	prev := c.lastValues // rewritten in place: entry n is read before it is overwritten
	c.lastValues = c.lastValues[:0]
	total := 0
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				return nil, &badResponse{"a response header line is too long"}
			}
			return nil, err
		}
		total += len(line)
		if total > upMaxHeaderBytes {
			return nil, &badResponse{"response header section over 1 MiB"}
		}
		line = trimEOL(line)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, &badResponse{"obsolete header line folding"}
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, &badResponse{fmt.Sprintf("header line %q has no name", truncate(line))}
		}
		k := knownHeader(line[:i])
		if k == "" {
			name := string(line[:i])
			if !httpguts.ValidHeaderFieldName(name) {
				return nil, &badResponse{fmt.Sprintf("invalid header name %q", truncate(line[:i]))}
			}
			k = http.CanonicalHeaderKey(name)
		}
		value := bytes.TrimSpace(line[i+1:])
		if bytes.IndexByte(value, '\r') >= 0 || bytes.IndexByte(value, 0) >= 0 {
			return nil, &badResponse{fmt.Sprintf("header %s has a control character in its value", k)}
		}
		n := len(c.lastValues)
		var v string
		if n < len(prev) && string(value) == prev[n] {
			v = prev[n]
		} else {
			v = string(value)
		}
		c.lastValues = append(c.lastValues, v)
		if old := h[k]; old != nil {
			h[k] = append(old, v)
		} else {
			vals = append(vals, v)
			h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	r.header = h

	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(f)) {
			case "close":
				r.keepAlive = false
			case "keep-alive":
				if minor == '0' {
					r.keepAlive = true
				}
			}
		}
	}

	// The body's length, as RFC 9112 section 6.3 orders the rules.
	switch {
	case method == "HEAD" || r.status == http.StatusNoContent || r.status == http.StatusNotModified || r.status < 200:
		r.contentLength = 0
	case len(h["Transfer-Encoding"]) > 0:
		te := strings.ToLower(strings.TrimSpace(h["Transfer-Encoding"][len(h["Transfer-Encoding"])-1]))
		if te == "chunked" || strings.HasSuffix(te, ",chunked") || strings.HasSuffix(te, ", chunked") {
			r.chunked = true
		} else {
			r.keepAlive = false // read until the replica closes
		}
		// A length beside a transfer coding is ignored and must not be
		// passed on.
		delete(h, "Content-Length")
	case len(h["Content-Length"]) > 0:
		n, err := parseContentLength(h["Content-Length"])
		if err != nil {
			return nil, err
		}
		r.contentLength = n
	default:
		r.keepAlive = false // the body ends when the replica closes
	}
	switch {
	case r.contentLength == 0:
		r.body = http.NoBody
		r.done = true
	case r.chunked:
		r.body = httputil.NewChunkedReader(c.br)
	case r.contentLength > 0:
		r.body = &io.LimitedReader{R: c.br, N: r.contentLength}
	default:
		r.body = c.br
	}
	return r, nil
}

// knownHeader returns the canonical form of the fields nearly every model
// server sends, without allocating; "" for any other.
func knownHeader(b []byte) string {
	switch string(b) {
	case "Content-Type", "content-type":
		return "Content-Type"
	case "Content-Length", "content-length":
		return "Content-Length"
	case "Date", "date":
		return "Date"
	case "Server", "server":
		return "Server"
	case "Connection", "connection":
		return "Connection"
	case "Transfer-Encoding", "transfer-encoding":
		return "Transfer-Encoding"
	case "Keep-Alive", "keep-alive":
		return "Keep-Alive"
	}
	return ""
}

func parseContentLength(vs []string) (int64, error) {
	first := strings.TrimSpace(vs[0])
	for _, v := range vs[1:] {
		if strings.TrimSpace(v) != first {
			return 0, &badResponse{"conflicting Content-Length headers"}
		}
	}
	if strings.IndexByte(first, ',') >= 0 {
		// "10, 10" is one field listing the same length twice.
		parts := strings.Split(first, ",")
		first = strings.TrimSpace(parts[0])
		for _, p := range parts[1:] {
			if strings.TrimSpace(p) != first {
				return 0, &badResponse{"conflicting Content-Length values"}
			}
		}
	}
	if first == "" || !isDigits([]byte(first)) || len(first) > 18 {
		return 0, &badResponse{fmt.Sprintf("Content-Length %q", first)}
	}
	n, _ := strconv.ParseInt(first, 10, 64)
	return n, nil
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func trimEOL(b []byte) []byte {
	b = b[:len(b)-1]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// renewEach makes every read that waits on the network first push the
// read deadline d ahead: the replica may pause up to d between bytes.
func (r *upResponse) renewEach(d time.Duration) { r.timeout, r.deadline = d, true }

// Read reads the body. Errors other than io.EOF leave the connection
// unusable.
func (r *upResponse) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	if r.deadline && r.c.br.Buffered() == 0 {
		r.c.nc.SetReadDeadline(time.Now().Add(r.timeout))
	}
	n, err := r.body.Read(p)
	if err == io.EOF {
		switch {
		case r.chunked:
			err = r.readTrailer()
		case r.contentLength > 0:
			if lr := r.body.(*io.LimitedReader); lr.N > 0 {
				err = io.ErrUnexpectedEOF
			}
		}
		// Without a length or chunking, the replica's close is the end.
		if err == io.EOF {
			r.done = true
			return n, io.EOF
		}
	}
	if r.contentLength > 0 && err == nil {
		if lr := r.body.(*io.LimitedReader); lr.N == 0 {
			r.done = true
			return n, io.EOF
		}
	}
	if err != nil {
		r.failed = true
	}
	return n, err
}

// readTrailer consumes the trailer section after the last chunk; the
// gateway does not pass trailers on.
func (r *upResponse) readTrailer() error {
	total := 0
	for {
		line, err := r.c.br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		total += len(line)
		if total > upMaxHeaderBytes {
			return &badResponse{"trailer section over 1 MiB"}
		}
		if len(trimEOL(line)) == 0 {
			return io.EOF
		}
	}
}

// Close releases the connection: back to the pool when the whole body was
// read and the replica keeps the connection, closed otherwise.
func (r *upResponse) Close() error {
	if r.c == nil {
		return nil
	}
	c := r.c
	r.c = nil
	if !r.stop() || !r.done || r.failed || !r.keepAlive {
		// The caller's context fired (and poisoned the deadline), or the
		// connection is mid-body or closing.
		return c.nc.Close()
	}
	r.u.put(c, time.Now())
	return nil
}
