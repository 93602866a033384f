package gateway

import (
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// llmTable is the compiled LLM part of a snapshot.
type llmTable struct {
	models   map[string]*llmModel
	backends map[string]*llmBackend
	teams    map[string]*LLMTeamLimits
	wsTeams  map[string]string
	names    []string // model names, sorted, for GET /models
}

type llmModel struct {
	cfg    *LLMModel
	groups [][]llmTarget // by ascending priority
	// maxInCost and maxOutCost are the dearest prices in the pool, so a
	// budget is charged the most a call can cost before a backend is chosen.
	maxInCost, maxOutCost float64
	mirror                *llmModel
}

type llmTarget struct {
	b      *llmBackend
	model  string // the backend's name for the model
	weight int
}

// llmBackend is a compiled backend: where and how to call it.
type llmBackend struct {
	cfg      *LLMBackend
	tls      bool
	addr     string // host:port
	host     string // Host header
	basePath string // without a trailing "/"
	ws, ep   string // StyleEndpoint: the endpoint
	timeout  time.Duration
	st       *backendState
}

// backendState is a backend's health; it outlives snapshots.
type backendState struct {
	coolUntil atomic.Int64 // unix nanos: answered 429, skip until then

	mu       sync.Mutex
	failures int       // consecutive
	openedAt time.Time // zero: closed
	probing  bool      // half-open: one call is testing the backend
}

// Circuit breaker settings: after breakerFailures consecutive failures a
// backend is skipped for breakerCooldown, then one call probes it.
const (
	breakerFailures = 5
	breakerCooldown = 30 * time.Second
)

// admit says whether a call may go to the backend now; a half-open
// breaker admits a single probe.
func (s *backendState) admit(now time.Time) bool {
	if now.UnixNano() < s.coolUntil.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openedAt.IsZero() {
		return true
	}
	if now.Sub(s.openedAt) < breakerCooldown || s.probing {
		return false
	}
	s.probing = true
	return true
}

// usable is admit without taking the probe: for filtering candidates.
func (s *backendState) usable(now time.Time) bool {
	if now.UnixNano() < s.coolUntil.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openedAt.IsZero() || (now.Sub(s.openedAt) >= breakerCooldown && !s.probing)
}

// succeeded closes the breaker.
func (s *backendState) succeeded() (closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	closed = !s.openedAt.IsZero()
	s.failures, s.openedAt, s.probing = 0, time.Time{}, false
	return closed
}

// failed counts a failure and reports whether the breaker opened now.
func (s *backendState) failed(now time.Time) (opened bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures++
	if s.probing || (s.openedAt.IsZero() && s.failures >= breakerFailures) {
		s.openedAt, s.probing = now, false
		return true
	}
	return false
}

// released gives back a probe that ended without a verdict (the caller
// left, or the backend was rate limited).
func (s *backendState) released() {
	s.mu.Lock()
	s.probing = false
	s.mu.Unlock()
}

func (s *backendState) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.openedAt.IsZero()
}

// compileLLM builds the LLM table, reusing the state of backends that
// survive. Called with g.updMu held.
func (g *Gateway) compileLLM(l *LLM) *llmTable {
	t := &llmTable{models: map[string]*llmModel{}, backends: map[string]*llmBackend{}, teams: map[string]*LLMTeamLimits{}, wsTeams: map[string]string{}}
	if l == nil {
		return t
	}
	for team, lim := range l.Teams {
		t.teams[team] = lim
	}
	for ws, team := range l.WorkspaceTeams {
		t.wsTeams[ws] = team
	}
	keep := map[string]bool{}
	for name, cfg := range l.Backends {
		b := &llmBackend{cfg: cfg, timeout: cfg.Timeout}
		if b.timeout <= 0 {
			b.timeout = DefaultLLMTimeout
		}
		if cfg.Style == StyleEndpoint {
			b.ws, b.ep, _ = strings.Cut(cfg.BaseURL, "/")
		} else {
			u, err := url.Parse(cfg.BaseURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				g.log.Warn("LLM backend has an unusable base URL; skipped", "backend", name, "base_url", cfg.BaseURL)
				continue
			}
			b.tls = u.Scheme == "https"
			b.host = u.Host
			b.addr = u.Host
			if u.Port() == "" {
				port := "80"
				if b.tls {
					port = "443"
				}
				b.addr = net.JoinHostPort(u.Hostname(), port)
			}
			b.basePath = strings.TrimSuffix(u.EscapedPath(), "/")
		}
		st := g.llmStates[name]
		if st == nil {
			st = &backendState{}
			g.llmStates[name] = st
		}
		b.st = st
		keep[name] = true
		t.backends[name] = b
	}
	for name := range g.llmStates {
		if !keep[name] {
			delete(g.llmStates, name)
		}
	}
	for name, cfg := range l.Models {
		m := &llmModel{cfg: cfg}
		byPrio := map[int][]llmTarget{}
		for _, tg := range cfg.Pool {
			b := t.backends[tg.Backend]
			if b == nil {
				continue
			}
			w := tg.Weight
			if w <= 0 {
				w = 1
			}
			um := tg.Model
			if um == "" {
				um = name
			}
			byPrio[tg.Priority] = append(byPrio[tg.Priority], llmTarget{b: b, model: um, weight: w})
			m.maxInCost = max(m.maxInCost, b.cfg.InputCostPer1K)
			m.maxOutCost = max(m.maxOutCost, b.cfg.OutputCostPer1K)
		}
		prios := make([]int, 0, len(byPrio))
		for p := range byPrio {
			prios = append(prios, p)
		}
		sort.Ints(prios)
		for _, p := range prios {
			m.groups = append(m.groups, byPrio[p])
		}
		t.models[name] = m
		t.names = append(t.names, name)
	}
	for _, m := range t.models {
		if mm := m.cfg.MirrorModel; mm != "" && mm != m.cfg.Name && m.cfg.MirrorPercent > 0 {
			m.mirror = t.models[mm]
		}
	}
	sort.Strings(t.names)
	return t
}

// pickTarget chooses by weight among the targets of group that are not
// excluded and can take a call now.
func pickTarget(group []llmTarget, exclude map[*llmBackend]bool, now time.Time, intn func(int) int) (llmTarget, bool) {
	total := 0
	for _, t := range group {
		if !exclude[t.b] && t.b.st.usable(now) {
			total += t.weight
		}
	}
	if total == 0 {
		return llmTarget{}, false
	}
	x := intn(total)
	for _, t := range group {
		if exclude[t.b] || !t.b.st.usable(now) {
			continue
		}
		if x < t.weight {
			return t, true
		}
		x -= t.weight
	}
	return llmTarget{}, false
}
