package gateway

import (
	"encoding/hex"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Snapshot is everything the gateway routes by; the control plane builds a
// new one on every change and the gateway swaps it atomically. A snapshot
// must not be changed once given to the gateway.
type Snapshot struct {
	// Version increases with every change; Follow applies only newer ones.
	Version int64 `json:"version"`
	// Endpoints are keyed by workspace + "/" + endpoint name.
	Endpoints map[string]*Endpoint `json:"endpoints"`
	// LLM routes the OpenAI-compatible API; nil = no models.
	LLM *LLM `json:"llm,omitempty"`
}

// Endpoint is one online endpoint: its credentials, limits and traffic
// split over its deployments.
type Endpoint struct {
	Workspace string `json:"workspace"`
	Name      string `json:"name"`
	// Team owns the endpoint: usage is charged to it and the team rate
	// limit is shared by all its endpoints.
	Team string `json:"team"`
	// AuthMode is "key" (endpoint keys or platform credentials; the
	// default) or "token" (platform credentials only; so is any other
	// value, such as Azure's aml_token and aad_token).
	AuthMode string `json:"auth_mode"`
	// KeyHashes are the hex SHA-256 of the endpoint's primary and
	// secondary keys (auth_mode key), in that order.
	KeyHashes []string `json:"key_hashes"`
	// Traffic maps deployment -> percent (sums to 100, or all 0).
	Traffic map[string]int `json:"traffic"`
	// Mirror maps deployment -> percent (≤ 50) of the weighted traffic
	// copied to it; never a deployment with live traffic.
	Mirror      map[string]int         `json:"mirror"`
	Deployments map[string]*Deployment `json:"deployments"`
	// RateLimitPerMinute limits each caller key; 0 = none.
	RateLimitPerMinute int `json:"rate_limit_per_minute"`
	// TeamRateLimitPerMinute limits the team across its keys; 0 = none.
	TeamRateLimitPerMinute int `json:"team_rate_limit_per_minute"`
}

// Deployment is one deployment of an endpoint: its ready replicas and its
// request settings (Azure ML request_settings).
type Deployment struct {
	Name string `json:"name"`
	// Replicas lists ready replicas only.
	Replicas []Replica `json:"replicas"`
	// ScoringPath is where "score" is forwarded, e.g. "/score" (the
	// default); sub-paths of score are appended to it.
	ScoringPath string `json:"scoring_path"`
	// RequestTimeout is request_timeout_ms; 0 means DefaultRequestTimeout.
	// In JSON, durations are nanoseconds.
	RequestTimeout time.Duration `json:"request_timeout"`
	// MaxConcurrentPerInstance is max_concurrent_requests_per_instance;
	// 0 means 1.
	MaxConcurrentPerInstance int `json:"max_concurrent_requests_per_instance"`
	// MaxQueueWait is max_queue_wait_ms: how long a call waits for a cold
	// start; 0 means DefaultMaxQueueWait.
	MaxQueueWait time.Duration `json:"max_queue_wait"`
	// ScaleToZero deployments may have no replicas; the gateway wakes them.
	ScaleToZero bool `json:"scale_to_zero"`
	// CaptureSampleRate is the fraction of calls whose request and
	// response go to Options.Capture; 0 = off.
	CaptureSampleRate float64 `json:"capture_sample_rate"`
}

// Replica is one ready model server.
type Replica struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // host:port
}

// Defaults for zero-valued deployment settings.
const (
	// DefaultRequestTimeout is Azure ML's default request_timeout_ms.
	DefaultRequestTimeout = 5000 * time.Millisecond
	// DefaultMaxQueueWait bounds a wait for a scaled-to-zero deployment to
	// start when MaxQueueWait is 0.
	DefaultMaxQueueWait = 30 * time.Second
	// DefaultScoringPath is where "score" goes when ScoringPath is empty.
	DefaultScoringPath = "/score"
)

// table is a compiled snapshot: what the request path reads.
type table struct {
	snap *Snapshot
	// byWS maps workspace -> endpoint name -> endpoint, so a lookup
	// needs no string concatenation.
	byWS map[string]map[string]*endpoint
	// next is closed when a newer table replaces this one.
	next chan struct{}
	llm  *llmTable
}

func (t *table) endpoint(ws, name string) *endpoint {
	return t.byWS[ws][name]
}

func (t *table) route(ws, name, dep string) *route {
	if ep := t.endpoint(ws, name); ep != nil {
		return ep.deployments[dep]
	}
	return nil
}

type endpointKey struct {
	sum      [32]byte
	id       string // "primary", "secondary", "key3", ...
	limitKey string // rate-limit bucket of this key
}

type weighted struct {
	cum int // cumulative weight, exclusive upper bound
	rt  *route
}

type mirrorTarget struct {
	rt  *route
	pct int
}

type endpoint struct {
	ws, name, team string
	key            string // ws + "/" + name
	tokenOnly      bool
	keys           []endpointKey
	rateLimit      int
	teamLimit      int
	teamLimitKey   string
	platformPrefix string // ws/name + separator, prefix of platform key buckets
	deployments    map[string]*route
	live           []weighted // weighted deployments that can serve now
	all            []weighted // every weighted deployment
	mirrors        []mirrorTarget
	m              *labels // series with deployment ""
}

// pick chooses a deployment by weight, preferring those that can serve.
func (e *endpoint) pick(n func(int) int) *route {
	w := e.live
	if len(w) == 0 {
		w = e.all
	}
	if len(w) == 0 {
		return nil
	}
	x := n(w[len(w)-1].cum)
	for i := range w {
		if x < w[i].cum {
			return w[i].rt
		}
	}
	return w[len(w)-1].rt
}

// route is a compiled deployment.
type route struct {
	ep          *endpoint
	name        string
	nameHdr     []string // {name}, shared by response headers
	scoringPath string
	timeout     time.Duration
	queueWait   time.Duration
	scaleToZero bool
	capture     float64
	limit       int64 // in-flight limit: 2 × max concurrent × replicas
	replicas    []*replica
	st          *depState
	m           *labels
}

type replica struct {
	id, addr string
	st       *replicaState
}

// depState is a deployment's live counters; it outlives snapshots.
type depState struct {
	inflight atomic.Int64
	queued   atomic.Int64
	waking   atomic.Bool
	rr       atomic.Uint32
	replicas map[string]*replicaState // guarded by Gateway.updMu
}

type replicaState struct {
	outstanding atomic.Int64
	downUntil   atomic.Int64 // unix nanos; skip while in the future
}

// compile turns a snapshot into a table, reusing the live state of
// deployments and replicas that survive. Called with g.updMu held.
func (g *Gateway) compile(s *Snapshot) *table {
	t := &table{snap: s, byWS: map[string]map[string]*endpoint{}, next: make(chan struct{})}
	seen := map[string]bool{}   // deployments
	seenEP := map[string]bool{} // endpoints
	for key, src := range s.Endpoints {
		if src == nil {
			continue
		}
		ws, name := src.Workspace, src.Name
		if ws == "" || name == "" {
			kws, kname, ok := strings.Cut(key, "/")
			if !ok {
				kws, kname = "default", key
			}
			if ws == "" {
				ws = kws
			}
			if name == "" {
				name = kname
			}
		}
		ep := &endpoint{
			ws: ws, name: name, team: src.Team, key: ws + "/" + name,
			tokenOnly:   src.AuthMode != "" && src.AuthMode != "key",
			rateLimit:   src.RateLimitPerMinute,
			teamLimit:   src.TeamRateLimitPerMinute,
			deployments: make(map[string]*route, len(src.Deployments)),
		}
		ep.platformPrefix = ep.key + "\x00p\x00"
		seenEP[ep.key] = true
		g.endpoints[ep.key] = true
		if ep.team != "" {
			ep.teamLimitKey = "team\x00" + ep.team
		} else {
			ep.teamLimitKey = "team\x00\x00" + ep.key
		}
		ep.m = g.metrics.labelsFor(ws, name, "")
		if !ep.tokenOnly {
			for i, h := range src.KeyHashes {
				b, err := hex.DecodeString(strings.TrimSpace(h))
				if err != nil || len(b) != 32 {
					g.log.Warn("ignoring malformed endpoint key hash", "endpoint", ep.key, "index", i)
					continue
				}
				k := endpointKey{id: keyName(i), limitKey: ep.key + "\x00k\x00" + hex.EncodeToString(b)}
				copy(k.sum[:], b)
				ep.keys = append(ep.keys, k)
			}
		}
		for dname, d := range src.Deployments {
			if d == nil {
				continue
			}
			if dname == "" {
				dname = d.Name
			}
			skey := ep.key + "/" + dname
			seen[skey] = true
			rt := g.compileRoute(ep, dname, d, skey)
			ep.deployments[dname] = rt
		}
		// Weighted lists in name order, so a table is deterministic.
		names := make([]string, 0, len(src.Traffic))
		for d, pct := range src.Traffic {
			if pct > 0 {
				names = append(names, d)
			}
		}
		sort.Strings(names)
		for _, d := range names {
			rt := ep.deployments[d]
			if rt == nil {
				g.log.Warn("traffic names an unknown deployment; its share goes to the others", "endpoint", ep.key, "deployment", d)
				continue
			}
			pct := src.Traffic[d]
			ep.all = append(ep.all, weighted{cum: cumOf(ep.all) + pct, rt: rt})
			if len(rt.replicas) > 0 || rt.scaleToZero {
				ep.live = append(ep.live, weighted{cum: cumOf(ep.live) + pct, rt: rt})
			}
		}
		mnames := make([]string, 0, len(src.Mirror))
		for d, pct := range src.Mirror {
			if pct > 0 {
				mnames = append(mnames, d)
			}
		}
		sort.Strings(mnames)
		for _, d := range mnames {
			rt := ep.deployments[d]
			if rt == nil {
				g.log.Warn("mirror names an unknown deployment; ignored", "endpoint", ep.key, "deployment", d)
				continue
			}
			pct := min(src.Mirror[d], 100)
			ep.mirrors = append(ep.mirrors, mirrorTarget{rt: rt, pct: pct})
		}
		if t.byWS[ws] == nil {
			t.byWS[ws] = map[string]*endpoint{}
		}
		t.byWS[ws][name] = ep
	}
	// Forget deployments that are gone, and their series.
	for skey := range g.states {
		if !seen[skey] {
			delete(g.states, skey)
			ws, rest, _ := strings.Cut(skey, "/")
			name, dep, _ := strings.Cut(rest, "/")
			g.metrics.forget(ws, name, dep)
		}
	}
	for key := range g.endpoints {
		if !seenEP[key] {
			delete(g.endpoints, key)
			ws, name, _ := strings.Cut(key, "/")
			g.metrics.forget(ws, name, "")
		}
	}
	t.llm = g.compileLLM(s.LLM)
	return t
}

func cumOf(w []weighted) int {
	if len(w) == 0 {
		return 0
	}
	return w[len(w)-1].cum
}

func keyName(i int) string {
	switch i {
	case 0:
		return "primary"
	case 1:
		return "secondary"
	}
	return "key" + itoa(i+1)
}

func (g *Gateway) compileRoute(ep *endpoint, name string, d *Deployment, skey string) *route {
	st := g.states[skey]
	if st == nil {
		st = &depState{replicas: map[string]*replicaState{}}
		g.states[skey] = st
	}
	rt := &route{
		ep: ep, name: name, nameHdr: []string{name}, st: st,
		scoringPath: d.ScoringPath,
		timeout:     d.RequestTimeout,
		queueWait:   d.MaxQueueWait,
		scaleToZero: d.ScaleToZero,
		capture:     d.CaptureSampleRate,
		m:           g.metrics.labelsFor(ep.ws, ep.name, name),
	}
	if rt.scoringPath == "" {
		rt.scoringPath = DefaultScoringPath
	} else if rt.scoringPath[0] != '/' {
		rt.scoringPath = "/" + rt.scoringPath
	}
	rt.scoringPath = strings.TrimSuffix(rt.scoringPath, "/")
	if rt.timeout <= 0 {
		rt.timeout = DefaultRequestTimeout
	}
	if rt.queueWait <= 0 {
		rt.queueWait = DefaultMaxQueueWait
	}
	live := map[string]bool{}
	for _, r := range d.Replicas {
		if r.Addr == "" {
			continue
		}
		rkey := r.ID + "@" + r.Addr
		if live[rkey] {
			continue
		}
		live[rkey] = true
		rs := st.replicas[rkey]
		if rs == nil {
			rs = &replicaState{}
			st.replicas[rkey] = rs
		}
		rt.replicas = append(rt.replicas, &replica{id: r.ID, addr: r.Addr, st: rs})
	}
	for rkey := range st.replicas {
		if !live[rkey] {
			delete(st.replicas, rkey)
		}
	}
	perInstance := int64(d.MaxConcurrentPerInstance)
	if perInstance <= 0 {
		perInstance = 1
	}
	rt.limit = 2 * perInstance * int64(len(rt.replicas))
	if len(rt.replicas) > 0 {
		// Replicas are here: the next cold start needs a new wake.
		st.waking.Store(false)
	}
	return rt
}

// pickReplica returns the replica with the fewest outstanding requests,
// skipping those in tried and, while others remain, those recently
// unreachable; ties go round-robin.
func (rt *route) pickReplica(tried []*replica, now int64) *replica {
	n := len(rt.replicas)
	if n == 0 {
		return nil
	}
	start := int(rt.st.rr.Add(1) % uint32(n))
	var best, bestDown *replica
	var bestLoad, bestDownLoad int64
	for i := 0; i < n; i++ {
		r := rt.replicas[(start+i)%n]
		if contains(tried, r) {
			continue
		}
		load := r.st.outstanding.Load()
		if r.st.downUntil.Load() > now {
			if bestDown == nil || load < bestDownLoad {
				bestDown, bestDownLoad = r, load
			}
			continue
		}
		if best == nil || load < bestLoad {
			best, bestLoad = r, load
		}
	}
	if best == nil {
		return bestDown
	}
	return best
}

func contains(rs []*replica, r *replica) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}
