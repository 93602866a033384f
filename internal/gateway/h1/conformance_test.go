package h1

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// view is what a handler sees of a request.
type view struct {
	Method, Proto, Host, RequestURI string
	URL                             string // scheme, host, path, raw path, query, force query
	EscapedPath                     string
	Header                          http.Header
	ContentLength                   int64
	TransferEncoding                []string
	Close                           bool
	Body                            string
	BodyErr                         bool
	TLS                             bool
	RemoteHasPort                   bool
}

// recorder is the test handler: what it does depends on the path, and it
// records every request it sees.
type recorder struct {
	mu    sync.Mutex
	views []view
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v := view{
		Method: r.Method, Proto: r.Proto, Host: r.Host, RequestURI: r.RequestURI,
		URL:         fmt.Sprintf("%q %q %q %q %q %v %q", r.URL.Scheme, r.URL.Host, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.URL.ForceQuery, r.URL.Opaque),
		EscapedPath: r.URL.EscapedPath(), Header: r.Header.Clone(), ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, Close: r.Close, TLS: r.TLS != nil,
	}
	_, _, err := net.SplitHostPort(r.RemoteAddr)
	v.RemoteHasPort = err == nil
	if v.Header == nil {
		v.Header = http.Header{}
	}
	path := r.URL.Path
	if path != "/noread" {
		b, err := io.ReadAll(r.Body)
		v.Body, v.BodyErr = string(b), err != nil
	}
	rec.mu.Lock()
	rec.views = append(rec.views, v)
	rec.mu.Unlock()
	if v.BodyErr {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "body error\n")
		return
	}
	switch path {
	case "/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	case "/big":
		w.Write([]byte(strings.Repeat("x", 10000)))
	case "/cl":
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	case "/short":
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "hello")
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/badvalue":
		w.Header().Set("X-Evil", "a\r\nInjected: yes")
		io.WriteString(w, "ok")
	case "/panic":
		panic(http.ErrAbortHandler)
	default:
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok "+strconv.Itoa(len(v.Body))+"\n")
	}
}

// answer is what a client saw of one response.
type answer struct {
	Status        int
	ContentLength int64
	Chunked       bool
	Close         bool
	Body          string
	Injected      bool
}

type target struct {
	name string
	addr string
	rec  *recorder
}

func startBoth(t testing.TB) (netT, h1T target) {
	t.Helper()
	mk := func() (*http.Server, *recorder) {
		rec := &recorder{}
		return &http.Server{
			Handler:           rec,
			ReadHeaderTimeout: 2 * time.Second,
			ReadTimeout:       5 * time.Second,
			IdleTimeout:       5 * time.Second,
			MaxHeaderBytes:    64 << 10, // as the gateway has it
			ErrorLog:          nil,
		}, rec
	}
	hs, nrec := mk()
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln1)
	hs2, hrec := mk()
	s := FromHTTP(hs2)
	s.ErrorLog = quietLog()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln2)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return target{"net/http", ln1.Addr().String(), nrec}, target{"h1", ln2.Addr().String(), hrec}
}

// exchangeRaw sends raw (in parts, waiting for an interim answer between
// them when interim is set), half-closes, and reads every response until
// the server closes the connection.
func exchangeRaw(t testing.TB, addr string, parts []string, interim bool) []answer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	var out []answer
	methods := requestMethods(strings.Join(parts, ""))
	read := func() bool {
		method := "GET"
		if len(methods) > 0 {
			method = methods[0]
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a := answer{Status: resp.StatusCode, ContentLength: resp.ContentLength, Close: resp.Close,
			Chunked: len(resp.TransferEncoding) > 0, Body: string(b), Injected: resp.Header.Get("Injected") != ""}
		if resp.StatusCode >= 200 && len(methods) > 0 {
			methods = methods[1:]
		}
		out = append(out, a)
		return true
	}
	for i, p := range parts {
		if _, err := io.WriteString(nc, p); err != nil {
			break
		}
		if interim && i < len(parts)-1 && !read() {
			break
		}
	}
	nc.(*net.TCPConn).CloseWrite()
	for read() {
	}
	return out
}

// requestMethods guesses the method of each request in raw, so that the
// answer to HEAD is read without a body.
func requestMethods(raw string) []string {
	var ms []string
	for _, line := range strings.Split(raw, "\n") {
		for _, m := range []string{"GET ", "POST ", "HEAD ", "PUT ", "OPTIONS ", "CONNECT ", "get "} {
			if strings.HasPrefix(line, m) {
				ms = append(ms, strings.TrimSpace(m))
			}
		}
	}
	return ms
}

type confCase struct {
	name string
	raw  string
	// parts, when set, are sent one by one (raw is ignored); interim waits
	// for an interim answer between them.
	parts   []string
	interim bool
	// want is the statuses h1 must answer, in order.
	want []int
	// differs, when set, says why net/http answers otherwise: h1 is checked
	// against want only.
	differs string
}

const host = "Host: example.com\r\n"

var confCases = []confCase{
	// Well formed.
	{name: "get", raw: "GET / HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "post content-length", raw: "POST /score HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Type: application/json\r\n\r\nhello", want: []int{200}},
	{name: "post chunked with extension and trailers", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", want: []int{200}},
	{name: "chunked upper case", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", want: []int{200}},
	{name: "pipelined three", raw: "GET /a HTTP/1.1\r\n" + host + "\r\nPOST /b HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nxyzGET /c?q=1 HTTP/1.1\r\n" + host + "\r\n", want: []int{200, 200, 200}},
	{name: "pipelined with chunked between", raw: "POST /a HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /b HTTP/1.1\r\n" + host + "\r\n", want: []int{200, 200}},
	{name: "http/1.0 no host", raw: "GET / HTTP/1.0\r\n\r\n", want: []int{200}},
	{name: "http/1.0 keep-alive twice", raw: "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", want: []int{200, 200}},
	{name: "http/1.0 stream ends with close", raw: "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n", want: []int{200}},
	{name: "connection close stops the pipeline", raw: "GET /a HTTP/1.1\r\n" + host + "Connection: close\r\n\r\nGET /b HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "head", raw: "HEAD / HTTP/1.1\r\n" + host + "\r\nGET /b HTTP/1.1\r\n" + host + "\r\n", want: []int{200, 200}},
	{name: "head of a stream", raw: "HEAD /stream HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "escaped path and query", raw: "GET /a%2Fb/c%20d?x=%41&y HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "path with odd characters", raw: "GET /a!b'c(d)*e HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "empty query", raw: "GET /a? HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "absolute form", raw: "GET http://other.example:8080/x?y=1 HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "options star", raw: "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "connect authority", raw: "CONNECT example.com:443 HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "leading empty line", raw: "\r\nGET / HTTP/1.1\r\n" + host + "\r\n", want: []int{200},
		differs: "net/http skips empty lines only after a POST; RFC 9112 §2.2 asks a server to skip them before any request"},
	{name: "bare LF line ends", raw: "GET / HTTP/1.1\n" + host[:len(host)-2] + "\nX-A: b\n\n", want: []int{200}},
	{name: "obs-text value", raw: "GET / HTTP/1.1\r\n" + host + "X-Name: caf\xe9\r\n\r\n", want: []int{200}},
	{name: "lower-case and repeated names", raw: "GET / HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nX-A: 2\r\nx-Long-NAME: v\r\n\r\n", want: []int{200}},
	{name: "white space around values", raw: "GET / HTTP/1.1\r\n" + host + "X-A: \t padded \t\r\nX-Empty:\r\n\r\n", want: []int{200}},
	{name: "pragma no-cache", raw: "GET / HTTP/1.1\r\n" + host + "Pragma: no-cache\r\n\r\n", want: []int{200}},
	{name: "upgrade ignored", raw: "GET / HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n", want: []int{200}},
	{name: "h2c upgrade ignored", raw: "GET / HTTP/1.1\r\n" + host + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", want: []int{200}},
	{name: "expect 100-continue", parts: []string{"POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n", "body"}, interim: true, want: []int{100, 200}},
	{name: "expect 100-continue chunked", parts: []string{"POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", "4\r\nbody\r\n0\r\n\r\n"}, interim: true, want: []int{100, 200}},
	{name: "expect 100-continue unread", raw: "POST /noread HTTP/1.1\r\n" + host + "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n", want: []int{200}},
	{name: "expect 100-continue http/1.0", raw: "POST / HTTP/1.0\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody", want: []int{200}},
	{name: "expect other", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nExpect: teapot\r\n\r\nbody", want: []int{417}},
	{name: "large body", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 100000\r\n\r\n" + strings.Repeat("b", 100000), want: []int{200}},
	{name: "unread body kept alive", raw: "POST /noread HTTP/1.1\r\n" + host + "Content-Length: 10\r\n\r\n0123456789GET /b HTTP/1.1\r\n" + host + "\r\n", want: []int{200, 200}},
	{name: "unread large body closes", raw: "POST /noread HTTP/1.1\r\n" + host + "Content-Length: 400000\r\n\r\n" + strings.Repeat("b", 400000) + "GET /b HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "zero length post", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n", want: []int{200}},
	{name: "get with body", raw: "GET / HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc", want: []int{200}},
	{name: "leading zeros in content-length", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 003\r\n\r\nabc", want: []int{200}},
	{name: "streamed response", raw: "GET /stream HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "big response chunked", raw: "GET /big HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "declared length", raw: "GET /cl HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "short response closes", raw: "GET /short HTTP/1.1\r\n" + host + "\r\nGET / HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "no content", raw: "GET /nocontent HTTP/1.1\r\n" + host + "\r\nGET / HTTP/1.1\r\n" + host + "\r\n", want: []int{204, 200}},
	{name: "header injection by handler", raw: "GET /badvalue HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "handler abort", raw: "GET /panic HTTP/1.1\r\n" + host + "\r\n", want: nil},

	// Malformed.
	{name: "request line without version", raw: "GET /\r\n" + host + "\r\n", want: []int{400}},
	{name: "request line with extra field", raw: "GET / HTTP/1.1 extra\r\n" + host + "\r\n", want: []int{400}},
	{name: "space in target", raw: "GET /a b HTTP/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "invalid method", raw: "G(T / HTTP/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "lower-case method", raw: "get / HTTP/1.1\r\n" + host + "\r\n", want: []int{200}},
	{name: "http/2.0 version", raw: "GET / HTTP/2.0\r\n" + host + "\r\n", want: []int{505}},
	{name: "malformed version", raw: "GET / HTTP/1.x\r\n" + host + "\r\n", want: []int{400}},
	{name: "not http", raw: "GET / FOO/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "control byte in target", raw: "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "bad escape in target", raw: "GET /%zz HTTP/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "relative target", raw: "GET a/b HTTP/1.1\r\n" + host + "\r\n", want: []int{400}},
	{name: "missing host", raw: "GET / HTTP/1.1\r\n\r\n", want: []int{400}},
	{name: "two hosts", raw: "GET / HTTP/1.1\r\n" + host + "Host: other.example\r\n\r\n", want: []int{400}},
	{name: "invalid host", raw: "GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", want: []int{400}},
	{name: "header without colon", raw: "GET / HTTP/1.1\r\n" + host + "NoColon\r\n\r\n", want: []int{400}},
	{name: "empty header name", raw: "GET / HTTP/1.1\r\n" + host + ": v\r\n\r\n", want: []int{400}},
	{name: "space before colon", raw: "GET / HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n", want: []int{400}},
	{name: "invalid name byte", raw: "GET / HTTP/1.1\r\n" + host + "X@A: b\r\n\r\n", want: []int{400}},
	{name: "NUL in value", raw: "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", want: []int{400}},
	{name: "bare CR in value", raw: "GET / HTTP/1.1\r\n" + host + "X-A: a\rInjected: b\r\n\r\n", want: []int{400}},
	{name: "leading white space before first header", raw: "GET / HTTP/1.1\r\n X-A: b\r\n" + host + "\r\n", want: []int{400}},
	{name: "obsolete line folding", raw: "GET / HTTP/1.1\r\n" + host + "X-A: b\r\n  c\r\n\r\n", want: []int{400},
		differs: "net/http joins folded lines; RFC 9112 §5.2 lets a server refuse them, and a proxy that joins differently would see another header"},
	{name: "truncated head", raw: "GET / HTTP/1.1\r\n" + host, want: []int{400}},

	// Smuggling.
	{name: "content-length and chunked", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n", want: []int{400},
		differs: "net/http lets Transfer-Encoding win (RFC 9112 §6.3 allows it); h1 refuses the request, as nginx does"},
	{name: "chunked and content-length", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", want: []int{400},
		differs: "as above, fields in the other order"},
	{name: "two different content-lengths", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", want: []int{400}},
	{name: "two equal content-lengths", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", want: []int{400},
		differs: "net/http keeps one of equal duplicates (RFC 9110 §8.6 allows either); h1 refuses them, as nginx does"},
	{name: "content-length list", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 3, 3\r\n\r\nabc", want: []int{400}},
	{name: "content-length with sign", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: +3\r\n\r\nabc", want: []int{400}},
	{name: "negative content-length", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", want: []int{400}},
	{name: "empty content-length", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", want: []int{400}},
	{name: "content-length overflow", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n", want: []int{400}},
	{name: "hex content-length", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x3\r\n\r\nabc", want: []int{400}},
	{name: "transfer-encoding list", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", want: []int{501}},
	{name: "transfer-encoding twice", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: []int{501}},
	{name: "transfer-encoding identity", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", want: []int{501}},
	{name: "transfer-encoding lookalike", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", want: []int{501}},
	{name: "transfer-encoding padded", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:  chunked \r\n\r\n0\r\n\r\n", want: []int{200}},
	{name: "transfer-encoding space before colon", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", want: []int{400}},
	{name: "transfer-encoding in http/1.0", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", want: []int{400},
		differs: "net/http ignores Transfer-Encoding in HTTP/1.0 and uses Content-Length; RFC 9112 §6.1 says the framing is then faulty, so h1 refuses it"},
	{name: "bad chunk size", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", want: []int{400}},
	{name: "chunk size overflow", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", want: []int{400}},
	{name: "chunk without CRLF after data", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", want: []int{400}},
	{name: "truncated chunked body", raw: "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nab", want: []int{400}},
	{name: "truncated content-length body", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 10\r\n\r\nabc", want: []int{400},
		differs: "both give the handler the error and close; h1 also says Connection: close in the answer"},
	{name: "body then pipelined request", raw: "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n" + host + "\r\n", want: []int{200, 200}},

	// Limits.
	{name: "huge header", raw: "GET / HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", want: []int{431}},
	{name: "header just under the limit", raw: "GET / HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 60<<10) + "\r\n\r\n", want: []int{200}},
	{name: "huge request line", raw: "GET /" + strings.Repeat("a", 80<<10) + " HTTP/1.1\r\n" + host + "\r\n", want: []int{431}},
	{name: "many headers", raw: "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: b\r\n", 150) + "\r\n", want: []int{431},
		differs: "net/http bounds only header bytes; h1 also bounds fields to 100 (Apache's default)"},
	{name: "100 headers", raw: "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: b\r\n", 99) + "\r\n", want: []int{200}},
}

func TestConformance(t *testing.T) {
	nt, ht := startBoth(t)
	for _, tc := range confCases {
		t.Run(tc.name, func(t *testing.T) {
			parts := tc.parts
			if parts == nil {
				parts = []string{tc.raw}
			}
			run := func(tg target) ([]answer, []view) {
				tg.rec.mu.Lock()
				tg.rec.views = nil
				tg.rec.mu.Unlock()
				a := exchangeRaw(t, tg.addr, parts, tc.interim)
				// A handler may still be recording after its answer went out.
				time.Sleep(5 * time.Millisecond)
				tg.rec.mu.Lock()
				defer tg.rec.mu.Unlock()
				return a, tg.rec.views
			}
			ha, hv := run(ht)
			if got := statuses(ha); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("h1 answered %v, want %v (%+v)", got, tc.want, ha)
			}
			for _, a := range ha {
				if a.Injected {
					t.Errorf("h1 let a handler's value add a header field")
				}
			}
			na, nv := run(nt)
			if tc.differs != "" {
				t.Logf("net/http answers %v: %s", statuses(na), tc.differs)
				return
			}
			if !reflect.DeepEqual(clean(ha), clean(na)) {
				t.Errorf("answers differ:\nh1:       %+v\nnet/http: %+v", clean(ha), clean(na))
			}
			if !reflect.DeepEqual(hv, nv) {
				t.Errorf("handler views differ:\nh1:       %+v\nnet/http: %+v", hv, nv)
			}
		})
	}
}

func statuses(as []answer) []int {
	var s []int
	for _, a := range as {
		s = append(s, a.Status)
	}
	return s
}

// clean keeps what both servers must agree on: refusals' texts are the
// servers' own.
func clean(as []answer) []answer {
	out := make([]answer, len(as))
	for i, a := range as {
		if a.Status >= 400 && a.Status != http.StatusBadRequest || a.Status == http.StatusBadRequest && a.Body != "body error\n" {
			a.Body, a.ContentLength, a.Chunked = "", 0, false
		}
		out[i] = a
	}
	return out
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
