package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConcurrencyLimit(t *testing.T) {
	e := newEnv(t, Options{})
	release := make(chan struct{})
	var entered atomic.Int64
	m := newModel(t, "blue-0", func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-release
		io.WriteString(w, "ok")
	})
	// 1 replica × max 1 per instance × 2 = 2 in flight.
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), MaxConcurrentPerInstance: 1})))

	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.score("primary-key", "{}"); r.status != 200 {
				t.Errorf("held call: %d %s", r.status, r.body)
			}
		}()
	}
	waitFor(t, "two calls at the model", func() bool { return entered.Load() == 2 })
	if l := e.g.Load()["default/ep/blue"]; l.InFlight != 2 {
		t.Fatalf("load %+v", l)
	}
	r := e.score("primary-key", "{}")
	if r.status != 429 || r.errorCode(t) != "too_many_pending_requests" {
		t.Fatalf("third call: %d %s", r.status, r.body)
	}
	retryAfter(t, r)
	close(release)
	wg.Wait()
	if l := e.g.Load()["default/ep/blue"]; l.InFlight != 0 {
		t.Fatalf("load after %+v", l)
	}
	if got := testutil.ToFloat64(e.g.metrics.limited.WithLabelValues("default", "ep", "blue", "concurrency")); got != 1 {
		t.Fatalf("limited{concurrency} = %v", got)
	}
}

func TestRequestTimeoutIs408AndNotRetried(t *testing.T) {
	e := newEnv(t, Options{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // a server notices a caller leaving only once the body is read
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}
	a, b := newModel(t, "a", slow), newModel(t, "b", slow)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(a, b), RequestTimeout: 150 * time.Millisecond})))
	began := time.Now()
	r := e.score("primary-key", "{}")
	if r.status != 408 || r.errorCode(t) != "request_timeout" || !strings.Contains(string(r.body), "request_timeout_ms") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	if n := a.hits.Load() + b.hits.Load(); n != 1 {
		t.Fatalf("model saw the call %d times; a timeout must not be retried", n)
	}
}

func TestModelErrorIs424(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"detail":"model not loaded"}`)
	})
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))
	r := e.score("primary-key", "{}")
	if r.status != 424 || r.header.Get(HeaderModelStatus) != "503" || r.header.Get("ms-azureml-model-error-statuscode") != "503" {
		t.Fatalf("%d %v", r.status, r.header)
	}
	if string(r.body) != `{"detail":"model not loaded"}` || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("body %q", r.body)
	}
	if m.hits.Load() != 1 {
		t.Fatalf("model answered yet the call was retried: %d hits", m.hits.Load())
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, Options{MaxBodyBytes: 1024})
	m := newModel(t, "blue-0", nil)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))
	if r := e.score("primary-key", strings.Repeat("x", 1024)); r.status != 200 || len(r.seen(t).Body) != 1024 {
		t.Fatalf("at the limit: %d", r.status)
	}
	if r := e.score("primary-key", strings.Repeat("x", 1025)); r.status != 413 || r.errorCode(t) != "request_too_large" {
		t.Fatalf("over the limit: %d %s", r.status, r.body)
	}
	// Without Content-Length (chunked) too.
	req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/ep/score", io.MultiReader(strings.NewReader(strings.Repeat("y", 4000))))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer primary-key")
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Fatalf("chunked over the limit: %d", res.StatusCode)
	}
	if m.hits.Load() != 1 {
		t.Fatalf("model hits %d", m.hits.Load())
	}
}

func TestNoReplicas503(t *testing.T) {
	e := newEnv(t, Options{})
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue"})))
	r := e.score("primary-key", "{}")
	if r.status != 503 || r.errorCode(t) != "unavailable" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	retryAfter(t, r)
}

// Weighted routing prefers a deployment that can serve over one that has
// no replicas (during a rollout) rather than failing its share.
func TestWeightedRoutingSkipsDeploymentWithoutReplicas(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)}, &Deployment{Name: "green"})
	ep.Traffic = map[string]int{"blue": 50, "green": 50}
	e.g.Update(snap(1, ep))
	for i := 0; i < 50; i++ {
		if r := e.score("primary-key", "{}"); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
}

// A replica killed under steady load: callers see no failure, because
// calls that failed at the connection level are sent to another replica.
func TestReplicaKilledUnderLoadLosesNoCalls(t *testing.T) {
	e := newEnv(t, Options{})
	h := func(id string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			time.Sleep(2 * time.Millisecond)
			io.WriteString(w, id)
		}
	}
	ms := []*model{newModel(t, "r0", h("r0")), newModel(t, "r1", h("r1")), newModel(t, "r2", h("r2"))}
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(ms...), MaxConcurrentPerInstance: 16})))

	ctx, cancel := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				r := e.score("primary-key", `{"x":[1,2,3]}`)
				if r.status == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
					t.Errorf("call failed: %d %v %s", r.status, r.err, r.body)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	// kill -9: the listener goes and every connection, idle or busy, is cut.
	ms[1].srv.Listener.Close()
	ms[1].srv.CloseClientConnections()
	killedAt := ms[1].hits.Load()
	time.Sleep(300 * time.Millisecond)
	// The controller notices and drops the replica from the snapshot.
	e.g.Update(snap(2, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(ms[0], ms[2]), MaxConcurrentPerInstance: 16})))
	time.Sleep(200 * time.Millisecond)
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed", failed.Load(), ok.Load()+failed.Load())
	}
	if killedAt == 0 || ok.Load() < 50 {
		t.Fatalf("load too light to mean anything: killed replica had %d hits, %d calls", killedAt, ok.Load())
	}
	t.Logf("%d calls, %d retries", ok.Load(), int(testutil.ToFloat64(e.g.metrics.retries.WithLabelValues("default", "ep", "blue"))))
}

// dyingModel reads the request and drops the connection without answering:
// a replica that crashed mid-request.
func dyingModel(t *testing.T, id string) *model {
	return newModel(t, id, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.(*net.TCPConn).SetLinger(0) // RST, like a killed process
		conn.Close()
	})
}

func TestReplicaDyingMidRequestIsRetried(t *testing.T) {
	e := newEnv(t, Options{})
	bad, good := dyingModel(t, "bad"), newModel(t, "good", nil)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(bad, good), MaxConcurrentPerInstance: 4})))
	for i := 0; i < 20; i++ {
		r := e.score("primary-key", `{"i":1}`)
		if r.status != 200 || r.seen(t).Replica != "good" || r.seen(t).Body != `{"i":1}` {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the dying replica was never tried")
	}
	// Only dying replicas: 502 after trying each once.
	bad2 := dyingModel(t, "bad2")
	e.g.Update(snap(2, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(bad, bad2)})))
	before := bad.hits.Load() + bad2.hits.Load()
	r := e.score("primary-key", "{}")
	if r.status != 502 || r.errorCode(t) != "bad_gateway" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if n := bad.hits.Load() + bad2.hits.Load() - before; n != 2 {
		t.Fatalf("tried %d times, want each replica once", n)
	}
}

// A response that breaks after it began is never retried, and the caller
// sees a broken response, not a short one that looks complete.
func TestResponseBrokenMidwayIsNotRetried(t *testing.T) {
	e := newEnv(t, Options{})
	for _, chunked := range []bool{false, true} {
		half := func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			conn, buf, _ := http.NewResponseController(w).Hijack()
			if chunked {
				buf.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			} else {
				buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
			}
			buf.Flush()
			time.Sleep(20 * time.Millisecond)
			conn.Close()
		}
		a, b := newModel(t, "a", half), newModel(t, "b", half)
		e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(a, b)})))
		r := e.score("primary-key", "{}")
		if r.err == nil {
			t.Fatalf("chunked=%v: caller got a complete-looking response: %d %q", chunked, r.status, r.body)
		}
		if n := a.hits.Load() + b.hits.Load(); n != 1 {
			t.Fatalf("chunked=%v: sent %d times after a response began", chunked, n)
		}
	}
}

func TestConnectionRefusedIsRetried(t *testing.T) {
	e := newEnv(t, Options{})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	good := newModel(t, "good", nil)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: []Replica{{ID: "dead", Addr: dead}, good.replica()}})))
	for i := 0; i < 10; i++ {
		if r := e.score("primary-key", "{}"); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	e.g.Update(snap(2, keyEndpoint(&Deployment{Name: "blue", Replicas: []Replica{{ID: "dead", Addr: dead}}})))
	if r := e.score("primary-key", "{}"); r.status != 502 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestMirrorNeverAffectsCallers(t *testing.T) {
	for _, kind := range []string{"hangs", "fails", "down"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, Options{MirrorConcurrency: 8})
			live := newModel(t, "live", nil)
			var shadowRep Replica
			var shadow *model
			switch kind {
			case "hangs":
				shadow = newModel(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
					io.ReadAll(r.Body)
					select {
					case <-time.After(10 * time.Second):
					case <-r.Context().Done():
					}
				})
				shadowRep = shadow.replica()
			case "fails":
				shadow = newModel(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get(HeaderMirror) != "true" {
						t.Error("mirror copy not marked")
					}
					io.ReadAll(r.Body)
					w.WriteHeader(500)
				})
				shadowRep = shadow.replica()
			case "down":
				l, _ := net.Listen("tcp", "127.0.0.1:0")
				shadowRep = Replica{ID: "shadow", Addr: l.Addr().String()}
				l.Close()
			}
			ep := keyEndpoint(
				&Deployment{Name: "blue", Replicas: replicas(live), MaxConcurrentPerInstance: 64},
				&Deployment{Name: "shadow", Replicas: []Replica{shadowRep}, MaxConcurrentPerInstance: 64, RequestTimeout: 2 * time.Second},
			)
			ep.Traffic = map[string]int{"blue": 100}
			ep.Mirror = map[string]int{"shadow": 50}
			meter := NewMeter(func(context.Context, []Record) error { return nil }, 100000, 100, time.Hour, nil, nil)
			e.g.meter = meter
			e.g.Update(snap(1, ep))

			const workers, per = 4, 100
			lat := make([]time.Duration, 0, workers*per)
			var mu sync.Mutex
			parallel(workers, func(int) {
				for i := 0; i < per; i++ {
					began := time.Now()
					r := e.score("primary-key", `{"a":1}`)
					d := time.Since(began)
					if r.status != 200 || r.seen(t).Replica != "live" {
						t.Errorf("caller got %d %s", r.status, r.body)
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
			slices.Sort(lat)
			// A caller held up by the mirror would wait for its 2 s timeout
			// (or its 10 s hang): no call may come near that. The median
			// shows callers are not slowed in general; the bounds leave room
			// for a loaded, shared machine running with -race.
			p50, worst := lat[len(lat)/2], lat[len(lat)-1]
			if worst >= 1500*time.Millisecond || p50 > 100*time.Millisecond {
				t.Fatalf("callers with a mirror that %s: p50 %v, slowest %v", kind, p50, worst)
			}
			l := e.g.metrics.labelsFor("default", "ep", "shadow")
			waitFor(t, "mirror copies to settle", func() bool {
				return e.g.Load()["default/ep/shadow"].InFlight == 0 || kind == "hangs"
			})
			okN, errN, dropN := testutil.ToFloat64(l.mirrorOK.get()), testutil.ToFloat64(l.mirrorError.get()), testutil.ToFloat64(l.mirrorDropped.get())
			total := okN + errN + dropN
			// Binomial(400, 0.5): mean 200, sd 10.
			if total < 150 || total > 250 {
				t.Fatalf("mirror decisions %v (ok %v error %v dropped %v), want about 200", total, okN, errN, dropN)
			}
			switch kind {
			case "fails":
				if errN != total || shadow.hits.Load() != int64(total) {
					t.Fatalf("errors %v of %v, shadow hits %d", errN, total, shadow.hits.Load())
				}
			case "hangs":
				if dropN == 0 {
					t.Fatalf("a hanging mirror never saturated: ok %v error %v", okN, errN)
				}
				if n := e.g.Load()["default/ep/shadow"].InFlight; n > 8 {
					t.Fatalf("%d mirror copies in flight, bound is 8", n)
				}
			case "down":
				if errN == 0 {
					t.Fatal("no mirror errors counted for a mirror that is down")
				}
			}
		})
	}
}

func TestMirrorRateAndMetering(t *testing.T) {
	e := newEnv(t, Options{})
	var mu sync.Mutex
	var recs []Record
	meter := NewMeter(func(_ context.Context, b []Record) error {
		mu.Lock()
		recs = append(recs, b...)
		mu.Unlock()
		return nil
	}, 10000, 50, 10*time.Millisecond, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { meter.Run(ctx); close(done) }()
	e.g.meter = meter
	live, shadow := newModel(t, "live", nil), newModel(t, "shadow", nil)
	ep := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(live), MaxConcurrentPerInstance: 8},
		&Deployment{Name: "green", Replicas: replicas(shadow), MaxConcurrentPerInstance: 8})
	ep.Traffic = map[string]int{"blue": 100}
	ep.Mirror = map[string]int{"green": 20}
	e.g.Update(snap(1, ep))
	const n = 1000
	for i := 0; i < n; i++ {
		if r := e.score("primary-key", "{}"); r.status != 200 {
			t.Fatalf("%d", r.status)
		}
	}
	// Pinned calls are not mirrored.
	for i := 0; i < 100; i++ {
		e.score("primary-key", "{}", HeaderDeployment, "blue")
	}
	waitFor(t, "mirror copies", func() bool { return e.g.Load()["default/ep/green"].InFlight == 0 })
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	// Binomial(1000, 0.2): mean 200, sd 12.6.
	if h := shadow.hits.Load(); h < 150 || h > 250 {
		t.Fatalf("mirror got %d of %d, want about 200", h, n)
	}
	var mirrored, callers int
	mu.Lock()
	defer mu.Unlock()
	for _, r := range recs {
		if r.Mirrored {
			mirrored++
			if r.Deployment != "green" || r.Status != 200 || r.Team != "team-a" || r.KeyID != "primary" {
				t.Fatalf("mirror record %+v", r)
			}
		} else {
			callers++
			if r.Deployment != "blue" || r.Replica != "live" || r.Principal != EndpointKeyPrincipal || r.RequestID == "" || r.RequestBytes != 2 || r.ResponseBytes == 0 {
				t.Fatalf("caller record %+v", r)
			}
		}
	}
	if mirrored != int(shadow.hits.Load()) || callers != n+100 {
		t.Fatalf("metered %d mirror copies (model saw %d) and %d calls", mirrored, shadow.hits.Load(), callers)
	}
}

type fakeWaker struct {
	calls atomic.Int64
	wake  func()
}

func (w *fakeWaker) Wake(ws, ep, dep string) {
	w.calls.Add(1)
	if w.wake != nil {
		go w.wake()
	}
}

func TestScaleFromZero(t *testing.T) {
	waker := &fakeWaker{}
	e := newEnv(t, Options{Waker: waker})
	m := newModel(t, "blue-0", nil)
	cold := keyEndpoint(&Deployment{Name: "blue", ScaleToZero: true, MaxQueueWait: 5 * time.Second, MaxConcurrentPerInstance: 1})
	warm := keyEndpoint(&Deployment{Name: "blue", ScaleToZero: true, MaxQueueWait: 5 * time.Second, MaxConcurrentPerInstance: 1, Replicas: replicas(m)})
	e.g.Update(snap(1, cold))
	started := make(chan struct{})
	waker.wake = func() { <-started; e.g.Update(snap(2, warm)) }

	// Five callers arrive at once; one replica with room for two takes
	// them all, in turn.
	results := make([]resp, 5)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		parallel(5, func(i int) { results[i] = e.score("primary-key", "{}") })
	}()
	waitFor(t, "callers queued", func() bool { return e.g.Load()["default/ep/blue"].Queued == 5 })
	close(started)
	wg.Wait()
	for i, r := range results {
		if r.status != 200 {
			t.Fatalf("caller %d: %d %s", i, r.status, r.body)
		}
	}
	if n := waker.calls.Load(); n != 1 {
		t.Fatalf("Wake called %d times for one burst", n)
	}
	if l := e.g.Load()["default/ep/blue"]; l.Queued != 0 || l.InFlight != 0 {
		t.Fatalf("load after: %+v", l)
	}

	// A deployment that does not start in time: 503 with Retry-After.
	short := keyEndpoint(&Deployment{Name: "blue", ScaleToZero: true, MaxQueueWait: 100 * time.Millisecond})
	waker.wake = nil
	e.g.Update(snap(3, short))
	r := e.score("primary-key", "{}")
	if r.status != 503 || !strings.Contains(string(r.body), "did not start") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	retryAfter(t, r)
	if n := waker.calls.Load(); n != 2 {
		t.Fatalf("Wake called %d times in all, want 2", n)
	}
}

func TestStreamingResponse(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "llm", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: token%d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), RequestTimeout: time.Second})))
	req, _ := http.NewRequest("POST", e.srv.URL+"/endpoints/ep/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("Authorization", "Bearer primary-key")
	began := time.Now()
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: token0\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	if first := time.Since(began); first > 150*time.Millisecond {
		t.Fatalf("first event after %v: not streamed", first)
	}
	rest, _ := io.ReadAll(br)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("rest %q", rest)
	}
	// Total time (about 600 ms) exceeded nothing: the timeout is per
	// silence, not per response.
	if total := time.Since(began); total < 500*time.Millisecond {
		t.Fatalf("total %v", total)
	}
}

func TestConnectTimeoutIs504(t *testing.T) {
	e := newEnv(t, Options{ConnectTimeout: time.Nanosecond})
	m := newModel(t, "blue-0", nil)
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))
	r := e.score("primary-key", "{}")
	if r.status != 504 || r.errorCode(t) != "upstream_timeout" || r.header.Get(HeaderAzureDeployment) != "blue" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	if m.hits.Load() != 0 {
		t.Fatal("model reached")
	}
}

func TestCapture(t *testing.T) {
	type captured struct {
		rec       Record
		req, resp string
	}
	got := make(chan captured, 10)
	e := newEnv(t, Options{Capture: func(ctx context.Context, r Record, req, resp []byte) {
		got <- captured{r, string(req), string(resp)}
	}})
	m := newModel(t, "blue-0", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		io.WriteString(w, "[0.25]")
	})
	e.g.Update(snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m), CaptureSampleRate: 1})))
	if r := e.score("primary-key", `{"x":1}`); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	select {
	case c := <-got:
		if c.req != `{"x":1}` || c.resp != "[0.25]" || c.rec.Deployment != "blue" || c.rec.Status != 200 {
			t.Fatalf("%+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing captured")
	}
	// Sample rate 0: nothing.
	e.g.Update(snap(2, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})))
	e.score("primary-key", `{"x":1}`)
	select {
	case c := <-got:
		t.Fatalf("captured with rate 0: %+v", c)
	case <-time.After(50 * time.Millisecond):
	}
}

func FuzzSplitPath(f *testing.F) {
	for _, p := range []string{"/endpoints/ep/score", "/w/ws/endpoints/ep/v1/x%2Fy", "/w//endpoints/a", "/endpoints/", "/endpoints/a%zz/score"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ws, name, sub, ok := splitPath(p)
		if !ok {
			return
		}
		if ws == "" || name == "" {
			t.Fatalf("%q: ws %q name %q", p, ws, name)
		}
		path, raw := upstreamPath("/score", sub)
		if !strings.HasPrefix(path, "/") || (raw != "" && !strings.HasPrefix(raw, "/")) {
			t.Fatalf("%q: upstream path %q raw %q", p, path, raw)
		}
	})
}
