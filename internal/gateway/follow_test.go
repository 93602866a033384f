package gateway

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestFollowKeepsLastSnapshotOnErrors(t *testing.T) {
	e := newEnv(t, Options{})
	m := newModel(t, "blue-0", nil)
	v1 := snap(1, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)}))
	second := keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)})
	second.Name = "ep2"
	v2 := snap(2, keyEndpoint(&Deployment{Name: "blue", Replicas: replicas(m)}), second)

	type step struct {
		s   *Snapshot
		err error
	}
	script := []step{
		{v1, nil},
		{nil, errors.New("control plane down")},
		{nil, errors.New("control plane down")},
		{v1, nil}, // long-poll timeout: same version
		{v2, nil},
		{snap(1), nil}, // a lagging control-plane replica: ignored
	}
	var mu sync.Mutex
	var afters []int64
	i := 0
	probe := make(chan int64, 16)
	fetch := func(ctx context.Context, after int64) (*Snapshot, error) {
		mu.Lock()
		afters = append(afters, after)
		n := i
		i++
		mu.Unlock()
		if n >= len(script) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if n == 3 {
			// While the control plane was down, the last good snapshot served.
			probe <- e.g.Snapshot().Version
			time.Sleep(600 * time.Millisecond) // a real long poll
		}
		return script[n].s, script[n].err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.g.Follow(ctx, fetch); close(done) }()
	if v := <-probe; v != 1 {
		t.Fatalf("version during outage %d", v)
	}
	if r := e.score("primary-key", "{}"); r.status != 200 {
		t.Fatalf("serving during outage: %d", r.status)
	}
	waitFor(t, "script played", func() bool { mu.Lock(); defer mu.Unlock(); return i > len(script) })
	cancel()
	<-done
	if v := e.g.Snapshot().Version; v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if r := e.call("POST", "/endpoints/ep2/score", "primary-key", "{}"); r.status != 200 {
		t.Fatalf("new endpoint: %d %s", r.status, r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []int64{0, 1, 1, 1, 1, 2, 2}
	for k := range want {
		if afters[k] != want[k] {
			t.Fatalf("fetch after= %v, want %v", afters, want)
		}
	}
}

func TestReadyz(t *testing.T) {
	g := New(Options{})
	srv := g.Server("127.0.0.1:0")
	if srv.ReadHeaderTimeout == 0 || srv.IdleTimeout == 0 || srv.MaxHeaderBytes == 0 || srv.ReadTimeout == 0 {
		t.Fatalf("server without slow-client protections: %+v", srv)
	}
	rec := httptest.NewRecorder()
	srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 {
		t.Fatalf("ready before a snapshot: %d", rec.Code)
	}
	g.Update(snap(3))
	rec = httptest.NewRecorder()
	srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Fatalf("readyz %d", rec.Code)
	}
}
