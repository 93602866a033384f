package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// llmMetrics are the Prometheus series of the OpenAI-compatible API. Model
// and backend names come from the operator's configuration, so their
// number is bounded.
type llmMetrics struct {
	llmRequests   *prometheus.CounterVec
	llmLatency    *prometheus.HistogramVec
	llmTTFT       *prometheus.HistogramVec
	llmTokens     *prometheus.CounterVec
	llmCost       *prometheus.CounterVec
	llmSpillovers *prometheus.CounterVec
	llmRetries    *prometheus.CounterVec
	llmUpstream   *prometheus.CounterVec
	llmMirror     *prometheus.CounterVec
	llmLimited    *prometheus.CounterVec
	llmLimitErrs  prometheus.Counter
	llmCacheHits  *prometheus.CounterVec
}

func newLLMMetrics(reg prometheus.Registerer, g *Gateway) llmMetrics {
	m := llmMetrics{
		llmRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_requests_total",
			Help: "Calls to the OpenAI-compatible API by model, answering backend and status class.",
		}, []string{"model", "backend", "code"}),
		llmLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "plinth_llm_request_duration_seconds",
			Help:    "Time to answer calls to the OpenAI-compatible API, through the end of the answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"model"}),
		llmTTFT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "plinth_llm_time_to_first_token_seconds",
			Help:    "Streamed calls: time from the call's arrival to the first content chunk sent to the caller.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"model", "backend"}),
		llmTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_tokens_total",
			Help: "Tokens by model, backend and kind (prompt, completion), as the backends reported them (estimated when they did not).",
		}, []string{"model", "backend", "kind"}),
		llmCost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_cost_total",
			Help: "What the tokens cost at the backends' prices, in the platform's currency.",
		}, []string{"model", "backend"}),
		llmSpillovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_spillovers_total",
			Help: "Calls answered by a backend outside the model's first priority group.",
		}, []string{"model", "backend"}),
		llmRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_retries_total",
			Help: "Tries after the first, by model and the backend tried.",
		}, []string{"model", "backend"}),
		llmUpstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_upstream_responses_total",
			Help: "Answers from backends by status (429s and failures included, whether or not the caller saw them).",
		}, []string{"model", "backend", "status"}),
		llmMirror: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_mirror_requests_total",
			Help: "Shadow copies to mirror models by result: ok, error, dropped.",
		}, []string{"model", "result"}),
		llmLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_limited_total",
			Help: "Calls refused by a limit: rpm_key, tpm_key, rpm_team, tpm_team, tokens_day, tokens_month, budget_day, budget_month, backend.",
		}, []string{"limit"}),
		llmLimitErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plinth_llm_limit_errors_total",
			Help: "Calls let through unlimited because the limit counters could not be reached.",
		}),
		llmCacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plinth_llm_cache_total",
			Help: "Response cache lookups by result: hit, miss.",
		}, []string{"model", "result"}),
	}
	if reg != nil {
		m.llmRequests = registerOrReuse(reg, m.llmRequests)
		m.llmLatency = registerOrReuse(reg, m.llmLatency)
		m.llmTTFT = registerOrReuse(reg, m.llmTTFT)
		m.llmTokens = registerOrReuse(reg, m.llmTokens)
		m.llmCost = registerOrReuse(reg, m.llmCost)
		m.llmSpillovers = registerOrReuse(reg, m.llmSpillovers)
		m.llmRetries = registerOrReuse(reg, m.llmRetries)
		m.llmUpstream = registerOrReuse(reg, m.llmUpstream)
		m.llmMirror = registerOrReuse(reg, m.llmMirror)
		m.llmLimited = registerOrReuse(reg, m.llmLimited)
		m.llmLimitErrs = registerOrReuse(reg, m.llmLimitErrs)
		m.llmCacheHits = registerOrReuse(reg, m.llmCacheHits)
		reg.Register(&breakerCollector{g: g}) // a second gateway in one process exports none; harmless
	}
	return m
}

var breakerDesc = prometheus.NewDesc("plinth_llm_backend_breaker_open",
	"1 while a backend's circuit breaker is open (the backend is skipped), else 0.", []string{"backend"}, nil)

// breakerCollector reports breaker states at scrape time.
type breakerCollector struct{ g *Gateway }

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- breakerDesc }

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for name, b := range c.g.table.Load().llm.backends {
		v := 0.0
		if b.st.open() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, v, name)
	}
}
