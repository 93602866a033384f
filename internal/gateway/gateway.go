package gateway

import (
	"context"
	"github.com/plinth-dev/plinth/internal/ratelimit"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Waker asks the control plane to start a scaled-to-zero deployment; it
// must not block.
type Waker interface {
	Wake(workspace, endpoint, deployment string)
}

// Load is what the autoscaler reads: requests in flight (and queued for a
// cold start) per deployment, now.
type Load struct {
	InFlight, Queued int
	Replicas         int // ready replicas in the snapshot
}

// Options configure a Gateway. Only Auth is needed to serve platform
// credentials; everything else has a default.
type Options struct {
	// Auth checks platform credentials; nil accepts endpoint keys only.
	Auth Authenticator
	// Waker starts scaled-to-zero deployments; may be nil (calls then wait
	// for the control plane to notice on its own).
	Waker Waker
	// Meter receives one Record per call; may be nil.
	Meter *Meter
	// Registry receives the gateway's Prometheus series; may be nil.
	Registry prometheus.Registerer
	// Log receives the access log (one line per call) and warnings.
	Log *slog.Logger
	// MaxBodyBytes bounds request bodies (413 beyond); default 100 MiB.
	MaxBodyBytes int64
	// Capture, when set, receives a sample of calls (CaptureSampleRate of
	// each deployment) with their request body and up to MaxCaptureBytes of
	// the response, asynchronously; nil = off.
	Capture func(ctx context.Context, r Record, req, resp []byte)

	// MirrorConcurrency bounds mirror copies in flight across all
	// endpoints; more are dropped (counted). Default 64.
	MirrorConcurrency int
	// ConnectTimeout bounds connecting to a replica; default 2 s.
	ConnectTimeout time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	// Counter holds the LLM limits' counters: ratelimit.NewRedis when
	// several gateways share limits; default one in memory.
	Counter ratelimit.Counter
	// LLMCacheBytes bounds the LLM response cache; default 64 MiB.
	LLMCacheBytes int
}

// Defaults of Options.
const (
	DefaultMaxBodyBytes      = 100 << 20
	DefaultMirrorConcurrency = 64
	DefaultConnectTimeout    = 2 * time.Second
	// MaxCaptureBytes is how much of a response a capture keeps.
	MaxCaptureBytes = 1 << 20
	// maxRetries is how many times a call is sent again after a
	// connection-level failure, each time to another replica.
	maxRetries = 2
	// ejectFor is how long a replica that failed to connect is skipped
	// while others remain.
	ejectFor = 2 * time.Second
)

// Gateway is the data plane handler. Create it with New, give it
// snapshots with Update or Follow, and serve it with Register or Server.
type Gateway struct {
	auth         Authenticator
	waker        Waker
	meter        *Meter
	log          *slog.Logger
	maxBody      int64
	capture      func(ctx context.Context, r Record, req, resp []byte)
	now          func() time.Time
	intn         func(int) int
	float        func() float64
	up           *upstream
	counter      ratelimit.Counter
	counterLocal bool // counter is in this process: settling costs no round trip
	llmCache     *llmCache
	limiter      *limiter
	metrics      *metrics
	unknown      *labels // series of calls to no known endpoint

	mirrorSem  chan struct{}
	captureSem chan struct{}

	table atomic.Pointer[table]
	ready atomic.Bool

	updMu     sync.Mutex
	states    map[string]*depState     // by workspace/endpoint/deployment; guarded by updMu
	llmStates map[string]*backendState // by LLM backend name; guarded by updMu
	endpoints map[string]bool          // workspace/endpoint in the snapshot; guarded by updMu
}

// New returns a gateway serving an empty snapshot (every endpoint unknown)
// until the first Update.
func New(o Options) *Gateway {
	g := &Gateway{
		auth:       o.Auth,
		waker:      o.Waker,
		meter:      o.Meter,
		log:        o.Log,
		maxBody:    o.MaxBodyBytes,
		capture:    o.Capture,
		now:        o.Now,
		intn:       rand.IntN,
		float:      rand.Float64,
		limiter:    newLimiter(),
		states:     map[string]*depState{},
		llmStates:  map[string]*backendState{},
		endpoints:  map[string]bool{},
		captureSem: make(chan struct{}, 16),
	}
	if g.log == nil {
		g.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if g.maxBody <= 0 {
		g.maxBody = DefaultMaxBodyBytes
	}
	if g.now == nil {
		g.now = time.Now
	}
	mc := o.MirrorConcurrency
	if mc <= 0 {
		mc = DefaultMirrorConcurrency
	}
	g.mirrorSem = make(chan struct{}, mc)
	ct := o.ConnectTimeout
	if ct <= 0 {
		ct = DefaultConnectTimeout
	}
	g.up = newUpstream(ct)
	g.counter = o.Counter
	if g.counter == nil {
		g.counter, g.counterLocal = ratelimit.NewMemory(), true
	}
	cb := o.LLMCacheBytes
	if cb <= 0 {
		cb = 64 << 20
	}
	g.llmCache = newLLMCache(cb)
	g.metrics = newMetrics(o.Registry, g)
	g.unknown = g.metrics.labelsFor("", "", "")
	g.table.Store(&table{snap: &Snapshot{}, byWS: map[string]map[string]*endpoint{}, next: make(chan struct{}), llm: g.compileLLM(nil)})
	return g
}

// Update swaps in a new snapshot atomically; calls in progress finish on
// the one they started with, and calls waiting for a cold start look at the
// new one. It applies s whatever its version (Follow is the one that skips
// older versions). Safe concurrently with serving.
func (g *Gateway) Update(s *Snapshot) {
	if s == nil {
		s = &Snapshot{}
	}
	g.updMu.Lock()
	defer g.updMu.Unlock()
	t := g.compile(s)
	old := g.table.Swap(t)
	close(old.next)
	g.ready.Store(true)
}

// Snapshot returns the snapshot being served; it must not be modified.
func (g *Gateway) Snapshot() *Snapshot {
	return g.table.Load().snap
}

// Load returns in-flight and queued calls per deployment, keyed
// workspace/endpoint/deployment, for every deployment in the snapshot.
func (g *Gateway) Load() map[string]Load {
	t := g.table.Load()
	out := map[string]Load{}
	for _, eps := range t.byWS {
		for _, ep := range eps {
			for _, rt := range ep.deployments {
				out[ep.key+"/"+rt.name] = Load{
					InFlight: int(rt.st.inflight.Load()),
					Queued:   int(rt.st.queued.Load()),
					Replicas: len(rt.replicas),
				}
			}
		}
	}
	return out
}

// Register adds the scoring routes to mux: /endpoints/{name}/... for
// workspace "default" and /w/{ws}/endpoints/{name}/....
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("POST /endpoints/{name}/score", g)
	mux.Handle("/endpoints/{name}/{path...}", g)
	mux.Handle("POST /w/{ws}/endpoints/{name}/score", g)
	mux.Handle("/w/{ws}/endpoints/{name}/{path...}", g)
	llm := http.HandlerFunc(g.serveOpenAI)
	mux.Handle("/openai/", llm)
	mux.Handle("/w/{ws}/openai/", llm)
}

// Server returns an HTTP server for a standalone gateway on addr: the
// scoring routes, GET /healthz, and GET /readyz (200 once a snapshot has
// arrived), with protections against slow clients: headers within 10 s,
// a whole request (100 MiB bodies included) within 5 minutes, idle
// keep-alive connections closed after 2 minutes, headers at most 64 KiB.
// There is no write timeout: responses may stream for long.
func (g *Gateway) Server(addr string) *http.Server {
	mux := http.NewServeMux()
	g.Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !g.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"waiting for the first route snapshot"}`)
			return
		}
		io.WriteString(w, `{"status":"ok","snapshot_version":`+strconv.FormatInt(g.Snapshot().Version, 10)+`}`)
	})
	return &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// Close closes idle connections to replicas.
func (g *Gateway) Close() {
	g.up.closeIdle()
}

// Follow keeps the gateway's snapshot current (standalone mode): fetch
// long-polls the control plane for the next snapshot newer than after (or
// returns the same one on its timeout). Only newer versions are applied;
// on errors the last good snapshot keeps serving and fetch is retried with
// exponential backoff (100 ms to 30 s, jittered). Follow returns when ctx
// ends.
func (g *Gateway) Follow(ctx context.Context, fetch func(ctx context.Context, after int64) (*Snapshot, error)) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 30 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		after := g.Snapshot().Version
		began := time.Now()
		s, err := fetch(ctx, after)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			g.metrics.fetchErrors.Inc()
			wait := backoff/2 + time.Duration(g.intn(int(backoff/2)+1))
			g.log.Warn("fetching the route snapshot failed; serving the last one", "version", after, "retry_in", wait, "error", err)
			if !sleep(ctx, wait) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		if s != nil && s.Version > after {
			g.Update(s)
			g.log.Info("route snapshot applied", "version", s.Version, "endpoints", len(s.Endpoints))
			continue
		}
		g.ready.Store(true)
		// A fetch that answers at once with nothing new is not long-polling:
		// do not spin on it.
		if time.Since(began) < 500*time.Millisecond && !sleep(ctx, time.Second) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
