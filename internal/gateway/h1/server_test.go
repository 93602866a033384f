package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve starts s with h on a loopback port and returns its address.
func serve(t *testing.T, s *Server, h http.Handler) string {
	t.Helper()
	s.Handler = h
	if s.ErrorLog == nil {
		s.ErrorLog = quietLog()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc, bufio.NewReader(nc)
}

// An SSE handler's Flush puts each event on the wire before the next one
// exists.
func TestFlushSendsEachEvent(t *testing.T) {
	next := make(chan struct{})
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			io.WriteString(w, "data: event\n\n")
			w.(http.Flusher).Flush()
			if i < 2 {
				<-next
			}
		}
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("a flushed response of unknown length is not chunked: %v", resp.TransferEncoding)
	}
	events := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := events.ReadString('\n')
		if err != nil || line != "data: event\n" {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		events.ReadString('\n')
		if i < 2 {
			next <- struct{}{}
		}
	}
	if rest, err := io.ReadAll(events); err != nil || len(rest) != 0 {
		t.Fatalf("after the events: %q %v", rest, err)
	}
}

// A caller that closes its connection while the handler waits (for a
// model, say) cancels the request's context.
func TestCallerLeavingCancelsWaitingHandler(t *testing.T) {
	cancelled := make(chan time.Duration, 1)
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		began := time.Now()
		select {
		case <-r.Context().Done():
			cancelled <- time.Since(began)
		case <-time.After(5 * time.Second):
			cancelled <- -1
		}
	}))
	nc, _ := dial(t, addr)
	io.WriteString(nc, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	time.Sleep(50 * time.Millisecond)
	nc.Close()
	if d := <-cancelled; d < 0 || d > time.Second {
		t.Fatalf("context cancelled after %v (-1: never)", d)
	}
}

// A caller that leaves in the middle of a long stream cancels it too.
func TestCallerLeavingCancelsStream(t *testing.T) {
	ended := make(chan error, 1)
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		deadline := time.After(5 * time.Second)
		for {
			io.WriteString(w, "data: x\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				ended <- nil
				return
			case <-deadline:
				ended <- errors.New("never cancelled")
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
}

// The request's context ends when the handler returns, as net/http's does.
func TestContextEndsWithHandler(t *testing.T) {
	got := make(chan context.Context, 1)
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Context()
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	ctx := <-got
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
		t.Fatal("context still alive after the handler returned")
	}
}

// Slow-loris: a head that does not arrive within ReadHeaderTimeout ends
// the connection; so does an idle keep-alive connection after IdleTimeout.
func TestTimeouts(t *testing.T) {
	addr := serve(t, &Server{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	nc, br := dial(t, addr)
	began := time.Now()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n")
	for range 3 {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(nc, "X-Drip: 1\r\n")
	}
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("a slow head was answered (%q)", b)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("slow head cut after %v", d)
	}

	nc, br = dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("an idle connection got bytes")
	}
	if d := time.Since(began); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("idle connection closed after %v, want about 300ms", d)
	}
}

// Requests in a row on one connection keep it open, though each takes
// longer than the idle timeout's slack.
func TestBusyConnectionStaysOpen(t *testing.T) {
	addr := serve(t, &Server{IdleTimeout: 200 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
	}))
	nc, br := dial(t, addr)
	for i := range 20 {
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(br, nil); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown closes idle connections, refuses new ones, lets a request in
// progress finish with Connection: close, and then returns.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{}
	addr := serve(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle, idleBR := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(idleBR, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy, busyBR := dial(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := idleBR.ReadByte(); err == nil {
		t.Fatal("idle connection not closed")
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in progress", err)
	default:
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.SetDeadline(time.Now().Add(time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			t.Error("a connection made after Shutdown was served")
		}
		c.Close()
	}
	close(release)
	resp, err := http.ReadResponse(busyBR, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "done" || !resp.Close {
		t.Fatalf("in-flight answer %q, close %v", body, resp.Close)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// Shutdown gives up when its context ends, as http.Server's does.
func TestShutdownContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	s := &Server{}
	addr := serve(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	nc, _ := dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
}

// A handler's panic is logged, its connection closed, and the server goes
// on serving.
func TestPanic(t *testing.T) {
	var logBuf syncBuffer
	addr := serve(t, &Server{ErrorLog: log.New(&logBuf, "", 0)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Fatal("a panicking handler's request was answered")
	}
	nc, br = dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a panic: %v %v", resp, err)
	}
	if !strings.Contains(logBuf.String(), "boom") {
		t.Errorf("panic not logged: %q", logBuf.String())
	}
}

// A handler aborting a chunked response leaves it visibly incomplete.
func TestAbortedStreamIsIncomplete(t *testing.T) {
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("an aborted chunked response read as complete")
	}
}

// Writes beyond a declared Content-Length fail; a 204 has no body.
func TestResponseLengthRules(t *testing.T) {
	errs := make(chan error, 2)
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/204" {
			w.WriteHeader(http.StatusNoContent)
			_, err := w.Write([]byte("x"))
			errs <- err
			return
		}
		w.Header().Set("Content-Length", "3")
		w.Write([]byte("abc"))
		_, err := w.Write([]byte("d"))
		errs <- err
	}))
	nc, br := dial(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /204 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []struct {
		status int
		body   string
		err    error
	}{{200, "abc", http.ErrContentLength}, {204, "", http.ErrBodyNotAllowed}} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want.status || string(b) != want.body {
			t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, want.status, want.body)
		}
		if err := <-errs; !errors.Is(err, want.err) {
			t.Fatalf("write error %v, want %v", err, want.err)
		}
	}
}

// Many connections and pipelined requests at once, for the race detector.
func TestConcurrentPipelines(t *testing.T) {
	addr := serve(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			var req bytes.Buffer
			for j := range 20 {
				body := strings.Repeat(string(rune('a'+i)), j)
				req.WriteString("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
			}
			go nc.Write(req.Bytes())
			br := bufio.NewReader(nc)
			for j := range 20 {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				if want := strings.Repeat(string(rune('a'+i)), j); string(b) != want {
					t.Errorf("conn %d answer %d: %q, want %q", i, j, b, want)
				}
			}
		})
	}
	wg.Wait()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
