package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"reflect"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
)

// fakeConn is a connection whose caller sends in and reads what the server
// writes from out.
type fakeConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (f *fakeConn) Read(p []byte) (int, error)       { return f.in.Read(p) }
func (f *fakeConn) Write(p []byte) (int, error)      { return f.out.Write(p) }
func (f *fakeConn) Close() error                     { return nil }
func (f *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }
func (f *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000} }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzReadRequest feeds arbitrary bytes to the request parser. Whatever it
// accepts must be well formed (no field that could split a header when
// forwarded, one framing, a valid host), must be accepted alike by
// net/http's parser (h1 is the stricter), and must be seen alike.
func FuzzReadRequest(f *testing.F) {
	for _, tc := range confCases {
		if tc.raw != "" && len(tc.raw) < 2048 {
			f.Add([]byte(tc.raw))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := &Server{MaxHeaderBytes: 2048, ErrorLog: quietLog()}
		fc := &fakeConn{in: bytes.NewReader(raw)}
		c := newConn(s, fc)
		for i := 0; i < 4; i++ {
			x, err := c.readRequest()
			if err != nil {
				c.refuse(err)
				if fc.out.Len() > 0 {
					if _, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(fc.out.Bytes())), nil); err != nil {
						t.Fatalf("refusal is not a response: %v %q", err, fc.out.Bytes())
					}
				}
				return
			}
			r := x.req
			checkRequest(t, r)
			if i == 0 {
				compareWithNet(t, raw, r)
			}
			c.cur.Store(x)
			io.Copy(io.Discard, r.Body)
			c.cur.Store(nil)
			x.finish()
			x.cancel()
			clear(c.hdr)
			if x.closeAfter {
				return
			}
		}
	})
}

func checkRequest(t *testing.T, r *http.Request) {
	t.Helper()
	if !validToken(r.Method) {
		t.Fatalf("method %q", r.Method)
	}
	for k, vs := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) || k != http.CanonicalHeaderKey(k) {
			t.Fatalf("header name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("header value %q", v)
			}
		}
	}
	if _, ok := r.Header["Host"]; ok {
		t.Fatal("Host left in the header")
	}
	if _, ok := r.Header["Transfer-Encoding"]; ok {
		t.Fatal("Transfer-Encoding left in the header")
	}
	if r.Host != "" && !httpguts.ValidHostHeader(r.Host) {
		t.Fatalf("host %q", r.Host)
	}
	switch {
	case r.ContentLength == -1:
		if !reflect.DeepEqual(r.TransferEncoding, []string{"chunked"}) || r.Header["Content-Length"] != nil {
			t.Fatalf("chunked with %v, Content-Length %v", r.TransferEncoding, r.Header["Content-Length"])
		}
	case r.ContentLength < -1:
		t.Fatalf("length %d", r.ContentLength)
	case len(r.Header["Content-Length"]) > 1:
		t.Fatal("two Content-Lengths accepted")
	}
}

// compareWithNet parses raw with net/http's parser (after the empty lines
// h1 skips) and compares what a handler would see.
func compareWithNet(t *testing.T, raw []byte, r *http.Request) {
	t.Helper()
	nr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(bytes.TrimLeft(raw, "\r\n"))))
	if err != nil {
		t.Fatalf("h1 accepted what net/http refuses (%v): %q", err, raw)
	}
	delete(nr.Header, "Host")
	if len(nr.Header) == 0 {
		nr.Header = http.Header{}
	}
	if nr.Method != r.Method || nr.RequestURI != r.RequestURI || nr.URL.String() != r.URL.String() ||
		nr.URL.EscapedPath() != r.URL.EscapedPath() || nr.Host != r.Host || nr.ContentLength != r.ContentLength ||
		nr.Close != r.Close || nr.ProtoMinor != r.ProtoMinor || !reflect.DeepEqual(nr.Header, r.Header) {
		t.Fatalf("seen differently:\nnet/http: %s %q %q host %q len %d close %v 1.%d %v\nh1:       %s %q %q host %q len %d close %v 1.%d %v",
			nr.Method, nr.RequestURI, nr.URL, nr.Host, nr.ContentLength, nr.Close, nr.ProtoMinor, nr.Header,
			r.Method, r.RequestURI, r.URL, r.Host, r.ContentLength, r.Close, r.ProtoMinor, r.Header)
	}
}
