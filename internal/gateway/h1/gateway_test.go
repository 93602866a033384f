package h1_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/gateway"
	"github.com/plinth-dev/plinth/internal/gateway/h1"
)

// The gateway's own handler behind h1: what it needs of the request
// (remote address, host, headers, body, context) and of the writer
// (status, headers, flushing a stream event by event).
func TestGatewayOnH1(t *testing.T) {
	next := make(chan struct{})
	seen := make(chan http.Header, 4)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- r.Header.Clone()
		if r.URL.Path == "/score/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 2 {
				io.WriteString(w, "data: "+string(b)+"\n\n")
				w.(http.Flusher).Flush()
				if i == 0 {
					<-next
				}
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"echo":`+string(b)+`}`)
	}))
	defer model.Close()

	const key = "test-endpoint-key"
	sum := sha256.Sum256([]byte(key))
	g := gateway.New(gateway.Options{})
	defer g.Close()
	g.Update(&gateway.Snapshot{Version: 1, Endpoints: map[string]*gateway.Endpoint{
		"default/e": {
			Workspace: "default", Name: "e", AuthMode: "key", KeyHashes: []string{hex.EncodeToString(sum[:])},
			Traffic: map[string]int{"blue": 100},
			Deployments: map[string]*gateway.Deployment{"blue": {
				Name: "blue", ScoringPath: "/score", MaxConcurrentPerInstance: 10,
				Replicas: []gateway.Replica{{ID: "blue-0", Addr: strings.TrimPrefix(model.URL, "http://")}},
			}},
		},
	}})
	srv := h1.FromHTTP(g.Server(""))
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()

	req, _ := http.NewRequest("POST", base+"/endpoints/e/score", strings.NewReader(`[1,2]`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Ms-Client-Request-Id", "client-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"echo":[1,2]}` {
		t.Fatalf("score: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("X-Ms-Client-Request-Id") != "client-1" || resp.Header.Get("X-Plinth-Deployment") != "blue" {
		t.Fatalf("answer's header: %v", resp.Header)
	}
	h := <-seen
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != ln.Addr().String() || h.Get("X-Forwarded-Proto") != "http" || h.Get("Authorization") != "" {
		t.Fatalf("the model saw %v", h)
	}

	// A stream reaches the caller event by event.
	req, _ = http.NewRequest("POST", base+"/endpoints/e/score/stream", strings.NewReader(`"x"`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-seen
	events := bufio.NewReader(resp.Body)
	line, err := events.ReadString('\n')
	if err != nil || line != "data: \"x\"\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	close(next)
	rest, _ := io.ReadAll(events)
	resp.Body.Close()
	if string(rest) != "\ndata: \"x\"\n\n" {
		t.Fatalf("rest of the stream: %q", rest)
	}

	// Unauthenticated, unknown, oversized: the gateway's own answers.
	for _, c := range []struct {
		auth string
		path string
		want int
	}{{"", "/endpoints/e/score", 401}, {"Bearer " + key, "/endpoints/nope/score", 401}, {"", "/healthz", 200}} {
		req, _ := http.NewRequest("POST", base+c.path, strings.NewReader("{}"))
		if c.path == "/healthz" {
			req.Method = "GET"
		}
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", req.Method, c.path, resp.StatusCode, c.want)
		}
	}
}
