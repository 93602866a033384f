package gateway

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series. Label values are resolved
// once per snapshot into a labels value per deployment, so the request path
// only touches pre-bound counters.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	limited     *prometheus.CounterVec
	mirrors     *prometheus.CounterVec
	retries     *prometheus.CounterVec
	fetchErrors prometheus.Counter
	captures    *prometheus.CounterVec
	llmMetrics

	mu    sync.Mutex
	cache map[[3]string]*labels
}

// labels are the bound series of one workspace/endpoint/deployment. Each
// series is created on first use, so unused ones are not exported.
type labels struct {
	codes         [6]lazyCounter // by status / 100; [0] for anything else
	latency       lazyObserver
	limitedKey    lazyCounter
	limitedTeam   lazyCounter
	limitedConc   lazyCounter
	retries       lazyCounter
	mirrorOK      lazyCounter
	mirrorError   lazyCounter
	mirrorDropped lazyCounter
}

// lazyCounter is a child of a CounterVec bound on first use.
type lazyCounter struct {
	once sync.Once
	c    prometheus.Counter
	vec  *prometheus.CounterVec
	lvs  []string
}

func (l *lazyCounter) get() prometheus.Counter {
	l.once.Do(func() { l.c = l.vec.WithLabelValues(l.lvs...) })
	return l.c
}

func (l *lazyCounter) Inc() { l.get().Inc() }

type lazyObserver struct {
	once sync.Once
	o    prometheus.Observer
	vec  *prometheus.HistogramVec
	lvs  []string
}

func (l *lazyObserver) Observe(v float64) {
	l.once.Do(func() { l.o = l.vec.WithLabelValues(l.lvs...) })
	l.o.Observe(v)
}

var codeClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	ls := []string{"workspace", "endpoint", "deployment"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_requests_total",
			Help: "Scoring calls answered by the gateway, by endpoint, deployment and status class.",
		}, append(ls[:3:3], "code")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "plinth_gateway_request_duration_seconds",
			Help:    "Time to answer scoring calls, through the end of the response body.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, ls),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_rate_limited_total",
			Help: "Calls refused with 429, by the limit that refused them (key, team, concurrency).",
		}, []string{"workspace", "endpoint", "deployment", "limit"}),
		mirrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_mirror_requests_total",
			Help: "Mirrored copies by result: ok, error (failed or non-2xx), dropped (mirror saturated or without replicas).",
		}, append(ls[:3:3], "result")),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_upstream_retries_total",
			Help: "Calls sent again to another replica after a connection-level failure.",
		}, ls),
		fetchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plinth_gateway_snapshot_fetch_errors_total",
			Help: "Failed fetches of the route snapshot from the control plane (standalone gateway).",
		}),
		captures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_gateway_captures_total",
			Help: "Sampled request/response captures: sent, or dropped because the capture sink was saturated.",
		}, []string{"result"}),
		cache: map[[3]string]*labels{},
	}
	m.llmMetrics = newLLMMetrics(reg, g)
	if reg != nil {
		m.requests = registerOrReuse(reg, m.requests)
		m.duration = registerOrReuse(reg, m.duration)
		m.limited = registerOrReuse(reg, m.limited)
		m.mirrors = registerOrReuse(reg, m.mirrors)
		m.retries = registerOrReuse(reg, m.retries)
		m.fetchErrors = registerOrReuse(reg, m.fetchErrors)
		m.captures = registerOrReuse(reg, m.captures)
		if err := reg.Register(&loadCollector{g: g}); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
			g.log.Warn("gateway load series already registered by another gateway; this one's are not exported")
		}
	}
	return m
}

// labelsFor binds the series of one deployment ("" for calls refused
// before a deployment was chosen).
func (m *metrics) labelsFor(ws, ep, dep string) *labels {
	k := [3]string{ws, ep, dep}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.cache[k]; l != nil {
		return l
	}
	l := &labels{}
	l.latency.vec, l.latency.lvs = m.duration, []string{ws, ep, dep}
	for i, c := range codeClasses {
		l.codes[i].vec, l.codes[i].lvs = m.requests, []string{ws, ep, dep, c}
	}
	for c, limit := range map[*lazyCounter]string{&l.limitedKey: "key", &l.limitedTeam: "team", &l.limitedConc: "concurrency"} {
		c.vec, c.lvs = m.limited, []string{ws, ep, dep, limit}
	}
	for c, result := range map[*lazyCounter]string{&l.mirrorOK: "ok", &l.mirrorError: "error", &l.mirrorDropped: "dropped"} {
		c.vec, c.lvs = m.mirrors, []string{ws, ep, dep, result}
	}
	l.retries.vec, l.retries.lvs = m.retries, []string{ws, ep, dep}
	m.cache[k] = l
	return l
}

// forget drops the series of a deployment that left the snapshot.
func (m *metrics) forget(ws, ep, dep string) {
	m.mu.Lock()
	delete(m.cache, [3]string{ws, ep, dep})
	m.mu.Unlock()
	match := prometheus.Labels{"workspace": ws, "endpoint": ep, "deployment": dep}
	m.requests.DeletePartialMatch(match)
	m.duration.DeletePartialMatch(match)
	m.limited.DeletePartialMatch(match)
	m.mirrors.DeletePartialMatch(match)
	m.retries.DeletePartialMatch(match)
}

func (l *labels) count(status int) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	l.codes[c].Inc()
}

// loadCollector exports in-flight, queued and ready replicas per
// deployment from the live counters at scrape time, so the request path
// pays nothing for them.
type loadCollector struct{ g *Gateway }

var (
	inflightDesc = prometheus.NewDesc("plinth_gateway_requests_in_flight",
		"Calls being proxied to a deployment now (mirror copies included).", []string{"workspace", "endpoint", "deployment"}, nil)
	queuedDesc = prometheus.NewDesc("plinth_gateway_requests_queued",
		"Calls waiting for a scaled-to-zero deployment to start.", []string{"workspace", "endpoint", "deployment"}, nil)
	replicasDesc = prometheus.NewDesc("plinth_gateway_replicas_ready",
		"Ready replicas of a deployment in the gateway's route snapshot.", []string{"workspace", "endpoint", "deployment"}, nil)
	versionDesc = prometheus.NewDesc("plinth_gateway_snapshot_version",
		"Version of the route snapshot the gateway serves.", nil, nil)
)

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- queuedDesc
	ch <- replicasDesc
	ch <- versionDesc
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.g.table.Load()
	ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(t.snap.Version))
	for _, eps := range t.byWS {
		for _, ep := range eps {
			for _, rt := range ep.deployments {
				ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(rt.st.inflight.Load()), ep.ws, ep.name, rt.name)
				ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(rt.st.queued.Load()), ep.ws, ep.name, rt.name)
				ch <- prometheus.MustNewConstMetric(replicasDesc, prometheus.GaugeValue, float64(len(rt.replicas)), ep.ws, ep.name, rt.name)
			}
		}
	}
}

// registerOrReuse registers c, or returns the collector already registered
// under the same description (two gateways or meters on one registry).
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
