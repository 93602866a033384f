package h1

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The server's own cost per request, without sockets: b.N keep-alive
// requests shaped like the gateway's scoring calls (a 256-byte POST with a
// key) read from memory, answered by a handler that reads the body and
// writes a small JSON answer, as the gateway's model does.
func benchRequests(n int) []byte {
	body := strings.Repeat("x", 256)
	one := "POST /endpoints/bench/score HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUser-Agent: Go-http-client/1.1\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nAuthorization: Bearer bench-endpoint-key-0123456789abcdef\r\n" +
		"Content-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n" + body
	return bytes.Repeat([]byte(one), n)
}

var modelAnswer = []byte(`{"predictions":[0.5],"model":"bench"}`)

func benchHandler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(modelAnswer))}
	w.Write(modelAnswer)
}

// discardConn is a connection reading from memory and writing nowhere; it
// reports when it is closed.
type discardConn struct {
	fakeConn
	closed chan struct{}
	once   sync.Once
}

func (d *discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardConn) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func BenchmarkH1(b *testing.B) {
	reqs := benchRequests(b.N)
	s := &Server{Handler: http.HandlerFunc(benchHandler)}
	nc := &discardConn{fakeConn: fakeConn{in: bytes.NewReader(reqs)}, closed: make(chan struct{})}
	s.conns = map[*conn]struct{}{}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	b.ReportAllocs()
	b.ResetTimer()
	c.serve()
	<-nc.closed
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

func BenchmarkNetHTTP(b *testing.B) {
	reqs := benchRequests(b.N)
	nc := &discardConn{fakeConn: fakeConn{in: bytes.NewReader(reqs)}, closed: make(chan struct{})}
	ln := &oneConnListener{c: nc, done: make(chan struct{})}
	hs := &http.Server{Handler: http.HandlerFunc(benchHandler)}
	b.ReportAllocs()
	b.ResetTimer()
	go hs.Serve(ln)
	<-nc.closed
	b.StopTimer()
	close(ln.done)
	hs.Close()
}
