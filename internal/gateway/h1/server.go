// Package h1 serves an http.Handler over HTTP/1.1 for the gateway's data
// plane, at a lower cost per request than net/http's server.
//
// net/http's server starts a background read for every request (so that it
// can tell when a caller leaves), parks it on the poller after a read that
// fails with EAGAIN, interrupts it with a deadline when the handler ends,
// and sets three to five read deadlines per request. On a gateway proxying
// small calls that bookkeeping costs more CPU than the handler. This server
// reads and answers each request on the connection's own goroutine, reuses
// the connection's buffers, sets a read deadline only when a request does
// not arrive whole, and notices callers that leave from write errors and
// from a sweep that peeks, without reading, at the sockets of requests that
// have been in their handler for a while.
//
// It is HTTP/1.1 and HTTP/1.0 only (no TLS, no HTTP/2, no Hijack). An
// Upgrade header is ignored and the request served as it stands, as RFC 9110
// allows and as net/http does for a handler that does not hijack (the
// gateway has no WebSocket path). It is stricter than net/http where the
// protocol lets a server choose: a request with both Content-Length and
// Transfer-Encoding, with more than one Content-Length, with
// Transfer-Encoding in HTTP/1.0, or with obsolete line folding is refused
// with 400, and one with more than MaxHeaderFields fields with 431. What it
// enforces and how it differs from net/http is listed in
// conformance_test.go, which runs the same raw requests against both.
package h1

import (
	"bufio"
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves one handler on listeners. Its zero value has no timeouts;
// set them as http.Server's are set.
type Server struct {
	// Handler serves every request but OPTIONS *; nil means
	// http.DefaultServeMux.
	Handler http.Handler
	// ReadHeaderTimeout bounds reading a request's head once its first byte
	// has arrived; zero means ReadTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading the whole request, body included, from its
	// first byte; zero means none.
	ReadTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a keep-alive
	// connection; zero means ReadTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and header fields together
	// (plus 4 KiB, as net/http allows); default http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the number of header fields; default 100.
	// More, or more bytes, are answered 431.
	MaxHeaderFields int
	// ErrorLog receives handler panics; nil means the log package's logger.
	ErrorLog *log.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sweeping  bool
	stopSweep chan struct{}
	closed    atomic.Bool // Shutdown or Close called
}

// FromHTTP returns a Server with hs's handler, read and idle timeouts,
// header limit and error log. The rest of hs does not carry over: there is
// no write timeout (responses may stream for long), no TLS, no HTTP/2 and
// no ConnState or BaseContext hooks.
func FromHTTP(hs *http.Server) *Server {
	return &Server{
		Handler:           hs.Handler,
		ReadHeaderTimeout: hs.ReadHeaderTimeout,
		ReadTimeout:       hs.ReadTimeout,
		IdleTimeout:       hs.IdleTimeout,
		MaxHeaderBytes:    hs.MaxHeaderBytes,
		ErrorLog:          hs.ErrorLog,
	}
}

const (
	defaultMaxHeaderFields = 100
	// headerSlack is what net/http allows beyond MaxHeaderBytes, kept so that
	// both servers accept the same heads.
	headerSlack     = 4096
	readBufferSize  = 4 << 10
	writeBufferSize = 4 << 10
	// sweepEvery is how often handlers are checked for callers that left;
	// a caller that leaves is noticed within two sweeps.
	sweepEvery = 100 * time.Millisecond
	// maxDiscard is how much of a request body the handler left unread is
	// read and dropped to keep the connection; beyond it the connection is
	// closed (net/http's figure).
	maxDiscard = 256 << 10
)

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes + headerSlack
	}
	return http.DefaultMaxHeaderBytes + headerSlack
}

func (s *Server) maxHeaderFields() int {
	if s.MaxHeaderFields > 0 {
		return s.MaxHeaderFields
	}
	return defaultMaxHeaderFields
}

func (s *Server) headerTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return s.ReadTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadTimeout
}

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// ListenAndServe listens on the TCP address addr and serves it.
func (s *Server) ListenAndServe(addr string) error {
	if s.closed.Load() {
		return http.ErrServerClosed
	}
	if addr == "" {
		addr = ":http"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln and serves each on a goroutine of its
// own until Shutdown or Close; it then returns http.ErrServerClosed. ln is
// closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	if !s.sweeping {
		s.sweeping = true
		s.stopSweep = make(chan struct{})
		go s.sweep(s.stopSweep)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closed.Load() {
				return http.ErrServerClosed
			}
			if !errors.Is(err, net.ErrClosed) {
				// Out of descriptors or another transient failure: wait, as
				// net/http does, rather than spin or stop serving.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logf("h1: Accept error: %v; retrying in %v", err, backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// progress finish (their connections close after the response), and
// returns once every connection is closed or ctx ends, as
// http.Server.Shutdown does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if s.closeIdle() {
			s.endSweep()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			wait = min(2*wait, 500*time.Millisecond)
			t.Reset(wait)
		}
	}
}

// Close closes the listeners and every connection now.
func (s *Server) Close() error {
	s.beginClose()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeNow()
	}
	s.endSweep()
	return nil
}

func (s *Server) beginClose() {
	s.mu.Lock()
	s.closed.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
}

func (s *Server) endSweep() {
	s.mu.Lock()
	if s.sweeping {
		close(s.stopSweep)
		s.sweeping = false
	}
	s.mu.Unlock()
}

// closeIdle closes connections waiting for a request (and new ones that sat
// for 5 s without one, as net/http does); it reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	var idle []*conn
	now := time.Now().Unix()
	for c := range s.conns {
		switch st := c.state.Load(); {
		case st == stateIdle, st == stateNew && now-c.accepted > 5:
			if c.state.CompareAndSwap(st, stateClosed) {
				idle = append(idle, c)
			}
		}
	}
	left := len(s.conns)
	s.mu.Unlock()
	for _, c := range idle {
		c.closeNow()
	}
	return left == 0
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// sweep checks, every sweepEvery, the connections whose handler has been
// running since the last sweep, and cancels the request of any whose caller
// closed or reset its connection. A peek does not consume bytes, so a
// request body or a pipelined request still waiting is left alone.
func (s *Server) sweep(stop chan struct{}) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	var long []*exchange
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		long = long[:0]
		s.mu.Lock()
		for c := range s.conns {
			x := c.cur.Load()
			if x != nil && x == c.seen {
				long = append(long, x)
			}
			c.seen = x
		}
		s.mu.Unlock()
		for _, x := range long {
			if x.c.peerGone() {
				x.cancel()
			}
		}
		clear(long)
	}
}

// Connection states, for Shutdown.
const (
	stateNew int32 = iota
	stateIdle
	stateActive
	stateClosed
)

// conn is one client connection, served by one goroutine.
type conn struct {
	srv      *Server
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	remote   string
	accepted int64 // unix seconds
	state    atomic.Int32
	ctx      context.Context

	// rdl is the read deadline in force; rdlIdle says it was set for
	// waiting between requests.
	rdl     time.Time
	rdlIdle bool

	// head accumulates a request head; spans are its lines.
	head  []byte
	spans []span
	// stage holds response bytes not yet framed: a body that may still get a
	// Content-Length, or the next chunk.
	stage []byte
	// hdr is the response header map, cleared and reused per request.
	hdr http.Header
	// werr and rerr are the first errors writing to and reading from the
	// connection.
	werr, rerr error

	// cur is the request in its handler, for the sweep; seen is what the
	// sweep saw last time (only the sweep touches it, under srv.mu).
	cur  atomic.Pointer[exchange]
	seen *exchange

	// mu orders closing the socket after the sweep's peeks at its
	// descriptor, so that a peek never reaches a reused descriptor.
	mu     sync.Mutex
	closed bool
	fd     int // -1 when the socket cannot be peeked
}

type span struct{ start, end int32 }

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:      s,
		nc:       nc,
		remote:   nc.RemoteAddr().String(),
		accepted: time.Now().Unix(),
		ctx:      context.Background(),
		hdr:      make(http.Header, 8),
		fd:       rawFD(nc),
	}
	c.br = bufio.NewReaderSize(readerFunc(c.read), readBufferSize)
	c.bw = bufio.NewWriterSize(writerFunc(c.write), writeBufferSize)
	return c
}

// writerFunc lets the buffered writer report write errors to the
// connection, which cancels the request: a caller that left is noticed at
// the first write that fails.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (c *conn) read(p []byte) (int, error) {
	n, err := c.nc.Read(p)
	if err != nil && c.rerr == nil {
		c.rerr = err
	}
	return n, err
}

func (c *conn) write(p []byte) (int, error) {
	if c.werr != nil {
		return 0, c.werr
	}
	n, err := c.nc.Write(p)
	if err != nil {
		c.werr = err
		if x := c.cur.Load(); x != nil {
			x.cancel()
		}
	}
	return n, err
}

func (c *conn) closeNow() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.nc.Close()
	}
	c.mu.Unlock()
}

// peerGone reports whether the caller closed or reset the connection.
func (c *conn) peerGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fd < 0 {
		return false
	}
	return peekClosed(c.fd)
}

// setReadDeadline sets the read deadline unless it is already t.
func (c *conn) setReadDeadline(t time.Time, idle bool) {
	if !t.Equal(c.rdl) {
		c.nc.SetReadDeadline(t)
		c.rdl = t
	}
	c.rdlIdle = idle
}

func (c *conn) serve() {
	s := c.srv
	defer func() {
		if x := c.cur.Load(); x != nil {
			x.cancel()
		}
		if err := recover(); err != nil && err != http.ErrAbortHandler {
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			s.logf("h1: panic serving %v: %v\n%s", c.remote, err, buf)
		}
		// Bytes of a response already framed go out: a response cut short
		// stays visibly incomplete (no final chunk, or fewer bytes than its
		// Content-Length).
		if c.werr == nil {
			c.bw.Flush()
		}
		c.state.Store(stateClosed)
		c.closeNow()
		s.forget(c)
	}()
	idle := s.idleTimeout()
	for {
		if c.br.Buffered() == 0 {
			if !c.state.CompareAndSwap(stateActive, stateIdle) && c.state.Load() != stateNew {
				return
			}
			if s.closed.Load() {
				return
			}
			if idle > 0 {
				// A deadline set for the same wait a moment ago is kept rather
				// than moved on every request: idle connections close between
				// idle-slack and idle.
				now := time.Now()
				slack := min(idle/10, time.Second)
				if !c.rdlIdle || c.rdl.Sub(now) < idle-slack {
					c.setReadDeadline(now.Add(idle), true)
				}
			} else if !c.rdl.IsZero() {
				c.setReadDeadline(time.Time{}, false)
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		}
		if st := c.state.Load(); st == stateClosed || !c.state.CompareAndSwap(st, stateActive) {
			return
		}
		x, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		if !c.serveRequest(x) {
			return
		}
	}
}

// serveRequest runs the handler for x and finishes its response; it
// reports whether the connection may carry another request.
func (c *conn) serveRequest(x *exchange) bool {
	c.cur.Store(x)
	if x.req.RequestURI == "*" && x.req.Method == "OPTIONS" {
		// As net/http: the server's own answer, not the handler's.
		x.header["Content-Length"] = []string{"0"}
	} else if h := c.srv.Handler; h != nil {
		h.ServeHTTP(x, x.req)
	} else {
		http.DefaultServeMux.ServeHTTP(x, x.req)
	}
	c.cur.Store(nil)
	x.finish()
	x.cancel()
	clear(c.hdr)
	if x.closeAfter || c.werr != nil || c.srv.closed.Load() {
		if x.lingerOnClose {
			c.lingerClose()
		}
		return false
	}
	return true
}

// lingerClose stops writing and reads what the caller still sends for a
// short while before closing, so that closing with unread bytes does not
// reset the connection before the caller has read the answer.
func (c *conn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	c.bw.Flush()
	cw, ok := c.nc.(closeWriter)
	if !ok {
		return
	}
	cw.CloseWrite()
	c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var buf [4 << 10]byte
	for n := 0; n < maxDiscard; {
		m, err := c.nc.Read(buf[:])
		n += m
		if err != nil {
			return
		}
	}
}

// refuse answers a request refused before its handler (nothing for a
// connection that ended or timed out), and lingers so the caller can read
// the answer before the connection closes.
func (c *conn) refuse(err error) {
	var se *statusError
	if !errors.As(err, &se) || c.werr != nil {
		return
	}
	text := strconv.Itoa(se.code) + " " + http.StatusText(se.code) + ": " + se.text
	bw := c.bw
	bw.WriteString(statusLine(true, se.code))
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(text)))
	bw.WriteString("\r\n\r\n")
	bw.WriteString(text)
	c.lingerClose()
}
