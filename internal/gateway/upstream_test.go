package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawReplica is a TCP server that answers each request it parses with
// bytes a test writes by hand, so the client meets exactly the responses
// RFC 9112 allows (and some it does not).
type rawReplica struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	reqs     []*http.Request
	bodies   []string
}

// newRawReplica serves answer(i, req) for the i-th request (counted over
// all connections); close says whether to close the connection after it.
func newRawReplica(t *testing.T, answer func(i int, r *http.Request) (raw string, close bool)) *rawReplica {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawReplica{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					s.mu.Lock()
					i := len(s.reqs)
					s.reqs = append(s.reqs, req)
					s.bodies = append(s.bodies, string(body))
					s.mu.Unlock()
					raw, closeAfter := answer(i, req)
					if raw == "hang" {
						io.Copy(io.Discard, nc)
						return
					}
					if _, err := io.WriteString(nc, raw); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *rawReplica) addr() string { return s.ln.Addr().String() }

func plainRequest(addr, path string) *upRequest {
	return &upRequest{method: "POST", addr: addr, path: path, fwd: &forwarding{header: http.Header{}, xff: "10.0.0.1", proto: "http", host: "gw", rid: "r1"}, body: []byte(`{"x":1}`)}
}

// roundTrip sends one request and reads the whole body.
func roundTrip(t *testing.T, u *upstream, req *upRequest) (*upResponse, string, error) {
	t.Helper()
	resp, err := u.send(context.Background(), req, time.Now().Add(5*time.Second))
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp)
	resp.Close()
	return resp, string(b), err
}

func TestUpstreamWritesTheRequest(t *testing.T) {
	s := newRawReplica(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	u := newUpstream(time.Second)
	defer u.closeIdle()
	in := http.Header{
		"Content-Type":    {"application/json"},
		"Authorization":   {"Bearer secret"},
		"Connection":      {"X-Hop, keep-alive"},
		"X-Hop":           {"drop me"},
		"Accept":          {"a/b", "c/d"},
		"X-Forwarded-For": {"ignored: f.xff is what is sent"},
	}
	req := &upRequest{method: "POST", addr: s.addr(), path: "/v1/a b", rawQuery: "q=1&r=%2F",
		fwd:  &forwarding{header: in, dropped: []string{"X-Hop", "Keep-Alive"}, xff: "1.2.3.4, 10.0.0.1", proto: "https", host: "api.example", rid: "rid-1", mirror: true},
		body: []byte("hello")}
	if _, body, err := roundTrip(t, u, req); err != nil || body != "ok" {
		t.Fatalf("round trip: %q, %v", body, err)
	}
	got := s.reqs[0]
	checks := map[string]string{
		"method":            got.Method,
		"target":            got.RequestURI,
		"host":              got.Host,
		"body":              s.bodies[0],
		"content-length":    got.Header.Get("Content-Length"),
		"content-type":      got.Header.Get("Content-Type"),
		"accept":            strings.Join(got.Header["Accept"], ","),
		"authorization":     got.Header.Get("Authorization"),
		"x-hop":             got.Header.Get("X-Hop"),
		"connection":        got.Header.Get("Connection"),
		"x-forwarded-for":   got.Header.Get("X-Forwarded-For"),
		"x-forwarded-proto": got.Header.Get("X-Forwarded-Proto"),
		"x-forwarded-host":  got.Header.Get("X-Forwarded-Host"),
		"x-request-id":      got.Header.Get("X-Request-Id"),
		"mirror":            got.Header.Get(HeaderMirror),
	}
	want := map[string]string{
		"method": "POST", "target": "/v1/a%20b?q=1&r=%2F", "host": s.addr(), "body": "hello",
		"content-length": "5", "content-type": "application/json", "accept": "a/b,c/d",
		"authorization": "", "x-hop": "", "connection": "",
		"x-forwarded-for": "1.2.3.4, 10.0.0.1", "x-forwarded-proto": "https", "x-forwarded-host": "api.example",
		"x-request-id": "rid-1", "mirror": "true",
	}
	for k, w := range want {
		if checks[k] != w {
			t.Errorf("%s = %q, want %q", k, checks[k], w)
		}
	}
}

func TestUpstreamFramings(t *testing.T) {
	cases := []struct {
		name, raw  string
		method     string
		body       string
		reused     bool // the connection serves the next request
		wantStatus int
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "POST", "hello", true, 200},
		{"chunked with extensions and trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n", "POST", "hello", true, 200},
		{"head carries no body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD", "", true, 200},
		{"204 carries no body", "HTTP/1.1 204 No Content\r\n\r\n", "POST", "", true, 204},
		{"early hints come first", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "POST", "ok", true, 200},
		{"close after the body", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", "POST", "ok", false, 200},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "POST", "ok", false, 200},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "POST", "ok", true, 200},
		{"repeated equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "POST", "ok", true, 200},
		{"lower-case names", "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nno", "POST", "no", true, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawReplica(t, func(i int, r *http.Request) (string, bool) {
				if i == 0 {
					return tc.raw, !tc.reused
				}
				return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false
			})
			u := newUpstream(time.Second)
			defer u.closeIdle()
			req := plainRequest(s.addr(), "/score")
			req.method = tc.method
			resp, body, err := roundTrip(t, u, req)
			if err != nil || body != tc.body || resp.status != tc.wantStatus {
				t.Fatalf("got %v %q, %v; want %d %q", resp, body, err, tc.wantStatus, tc.body)
			}
			if _, body, err := roundTrip(t, u, plainRequest(s.addr(), "/score")); err != nil || body != "next" {
				t.Fatalf("second call: %q, %v", body, err)
			}
			wantConns := int32(2)
			if tc.reused {
				wantConns = 1
			}
			if n := s.accepted.Load(); n != wantConns {
				t.Fatalf("%d connections, want %d", n, wantConns)
			}
		})
	}
}

func TestUpstreamReadsUntilClose(t *testing.T) {
	s := newRawReplica(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", true
	})
	u := newUpstream(time.Second)
	resp, body, err := roundTrip(t, u, plainRequest(s.addr(), "/"))
	if err != nil || body != "all of it" || resp.contentLength != -1 || resp.keepAlive {
		t.Fatalf("%q %v %+v", body, err, resp)
	}
}

func TestUpstreamRefusesMalformedResponses(t *testing.T) {
	long := strings.Repeat("a", upReadBuffer+10)
	cases := map[string]string{
		"not http":                 "SSH-2.0-OpenSSH\r\n\r\n",
		"status without digits":    "HTTP/1.1 2xx OK\r\n\r\n",
		"http/2 status line":       "HTTP/2.0 200 OK\r\n\r\n",
		"conflicting lengths":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"negative length":          "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"folded header":            "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 0\r\n\r\n",
		"header without a name":    "HTTP/1.1 200 OK\r\n: x\r\n\r\n",
		"space in a header name":   "HTTP/1.1 200 OK\r\nX A: x\r\n\r\n",
		"header line too long":     "HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\n\r\n",
		"switching protocols":      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"control byte in a value":  "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
		"status line without code": "HTTP/1.1\r\n\r\n",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			s := newRawReplica(t, func(int, *http.Request) (string, bool) { return raw, true })
			u := newUpstream(time.Second)
			_, _, err := roundTrip(t, u, plainRequest(s.addr(), "/"))
			var bad *badResponse
			if !errors.As(err, &bad) {
				t.Fatalf("err = %v, want a malformed response", err)
			}
		})
	}
}

func TestUpstreamShortBodyIsAnError(t *testing.T) {
	s := newRawReplica(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", true
	})
	u := newUpstream(time.Second)
	_, body, err := roundTrip(t, u, plainRequest(s.addr(), "/"))
	if !errors.Is(err, io.ErrUnexpectedEOF) || body != "half" {
		t.Fatalf("%q, %v", body, err)
	}
	s2 := newRawReplica(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true
	})
	if _, _, err := roundTrip(t, u, plainRequest(s2.addr(), "/")); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("broken chunked body: %v", err)
	}
}

// A replica may close a keep-alive connection at any time between
// requests (gunicorn and uvicorn do after a few seconds idle): the call
// must then go out on a new connection, not fail.
func TestUpstreamReplacesConnectionsTheReplicaClosed(t *testing.T) {
	for _, wait := range []time.Duration{0, upProbeAfter + 100*time.Millisecond} {
		t.Run(wait.String(), func(t *testing.T) {
			// Every response claims keep-alive, then the replica closes.
			s := newRawReplica(t, func(int, *http.Request) (string, bool) {
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
			})
			u := newUpstream(time.Second)
			defer u.closeIdle()
			for i := range 3 {
				if _, body, err := roundTrip(t, u, plainRequest(s.addr(), "/")); err != nil || body != "ok" {
					t.Fatalf("call %d: %q, %v", i, body, err)
				}
				time.Sleep(wait + 20*time.Millisecond) // the close reaches the client
			}
			if n := s.accepted.Load(); n != 3 {
				t.Fatalf("%d connections, want 3", n)
			}
		})
	}
}

func TestUpstreamDeadlineAndCallerLeaving(t *testing.T) {
	s := newRawReplica(t, func(int, *http.Request) (string, bool) { return "hang", false })
	u := newUpstream(time.Second)

	began := time.Now()
	_, err := u.send(context.Background(), plainRequest(s.addr(), "/"), time.Now().Add(150*time.Millisecond))
	var ue *upError
	if !errors.As(err, &ue) || !ue.timeout || ue.stage != stageHead {
		t.Fatalf("err = %#v, want a timeout reading the head", err)
	}
	if d := time.Since(began); d < 140*time.Millisecond || d > 2*time.Second {
		t.Fatalf("timed out after %v, want about 150ms", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	began = time.Now()
	_, err = u.send(ctx, plainRequest(s.addr(), "/"), time.Now().Add(time.Minute))
	if err == nil || ctx.Err() == nil || time.Since(began) > 5*time.Second {
		t.Fatalf("err = %v after %v, want an early end", err, time.Since(began))
	}
}

func TestUpstreamDialFailures(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	u := newUpstream(time.Second)
	_, err := u.send(context.Background(), plainRequest(addr, "/"), time.Now().Add(time.Second))
	var ue *upError
	if !errors.As(err, &ue) || ue.stage != stageDial || ue.timeout {
		t.Fatalf("refused: %#v", err)
	}
}

func TestUpstreamPoolKeepsConnectionsAcrossCalls(t *testing.T) {
	s := newRawReplica(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	u := newUpstream(time.Second)
	defer u.closeIdle()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, body, err := roundTrip(t, u, plainRequest(s.addr(), "/")); err != nil || body != "ok" {
					t.Errorf("%q %v", body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.accepted.Load(); n > 8 {
		t.Fatalf("%d connections for 8 concurrent callers", n)
	}
	// An abandoned body closes its connection rather than poison the pool.
	resp, err := u.send(context.Background(), plainRequest(s.addr(), "/"), time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	resp.Close()
	u.pool(s.addr()).mu.Lock()
	idle := len(u.pool(s.addr()).idle)
	u.pool(s.addr()).mu.Unlock()
	if idle > 8 {
		t.Fatalf("%d idle connections", idle)
	}
}
