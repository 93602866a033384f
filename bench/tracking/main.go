// Command tracking is a load generator for MLflow-compatible tracking
// servers. It speaks only MLflow's REST API 2.0 (/api/2.0/mlflow/...), so
// the same command measures Plinth and a real MLflow server side by side.
//
// Usage:
//
//	go run ./bench/tracking -url http://127.0.0.1:8080 -token $KEY
//	go run ./bench/tracking -url http://127.0.0.1:5000 -scenarios log-metric,search
//
// Scenarios: log-metric, log-batch, get-history, search (see README.md).
// Every scenario creates its own experiment, bench-<scenario>-<unix time>,
// and its own runs, so reruns against the same server never collide. Every
// loop is bounded both in count and in time, and all traffic goes to -url
// only (no proxy from the environment, no redirects followed).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names, in the order they run by default.
const (
	scLogMetric  = "log-metric"
	scLogBatch   = "log-batch"
	scGetHistory = "get-history"
	scSearch     = "search"
)

var allScenarios = []string{scLogMetric, scLogBatch, scGetHistory, scSearch}

const (
	apiPath = "/api/2.0/mlflow"

	// maxHistoryPage is MLflow's cap on metrics/get-history's max_results.
	maxHistoryPage = 25000
	// batchSize is how many metrics one log-batch request carries
	// (MLflow's limit is 1,000 metrics per request).
	batchSize = 1000
	// batchKeys x batchSteps metrics make one log-batch scenario request.
	batchKeys  = 10
	batchSteps = 100

	// maxTimedRequests bounds the requests of one time-bounded scenario
	// (and so the memory its latency samples take), whatever -duration.
	maxTimedRequests = 5_000_000
	// maxConsecutiveErrors stops a worker whose every request fails (a
	// wrong URL or token), rather than spinning for the whole -duration.
	maxConsecutiveErrors = 50
	// maxResponse bounds how much of one response body is kept.
	maxResponse = 64 << 20

	searchFilter  = "metrics.rmse < 0.5 and params.model = 'xgb'"
	searchOrderBy = "metrics.rmse ASC"
	searchMax     = 100
)

var models = []string{"xgb", "lgbm", "rf"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	url              string
	token            string
	scenarios        []string
	duration         time.Duration
	concurrency      int
	batchWorkers     int
	setupConcurrency int
	historyPoints    int
	searchRuns       int
	repeat           int
	timeout          time.Duration
	json             bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var scenarios string
	fs := flag.NewFlagSet("tracking", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench/tracking -url TRACKING_URI [flags]\n\n"+
			"Load generator for MLflow-compatible tracking servers (MLflow REST API 2.0 only).\n"+
			"Scenarios: %s.\n\nFlags:\n", strings.Join(allScenarios, ", "))
		fs.PrintDefaults()
	}
	fs.StringVar(&c.url, "url", "", "tracking URI, e.g. http://127.0.0.1:8080 or http://127.0.0.1:8080/w/teamA (path prefix kept)")
	fs.StringVar(&c.token, "token", "", "bearer token, sent as Authorization: Bearer (default $MLFLOW_TRACKING_TOKEN); empty sends no header")
	fs.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of the time-bounded scenarios (log-metric, log-batch)")
	fs.IntVar(&c.concurrency, "concurrency", 32, "goroutines (each with its own run) in log-metric")
	fs.IntVar(&c.batchWorkers, "batch-workers", 0, "goroutines in log-batch (0: min(4, -concurrency))")
	fs.IntVar(&c.setupConcurrency, "setup-concurrency", 0, "goroutines creating runs during setup (0: min(8, -concurrency))")
	fs.IntVar(&c.historyPoints, "history-points", 100000, "points of the metric read back in get-history")
	fs.IntVar(&c.searchRuns, "search-runs", 10000, "runs in the experiment searched in search")
	fs.IntVar(&c.repeat, "repeat", 50, "timed samples of the latency scenarios (get-history, search)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "timeout of one HTTP request")
	fs.BoolVar(&c.json, "json", false, "also print the results as JSON lines")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	tokenSet := false
	fs.Visit(func(f *flag.Flag) { tokenSet = tokenSet || f.Name == "token" })
	if !tokenSet {
		c.token = os.Getenv("MLFLOW_TRACKING_TOKEN")
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.url == "" {
		return c, errors.New("-url is required (e.g. -url http://127.0.0.1:8080)")
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("-url %q is not an http(s) URL", c.url)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return c, fmt.Errorf("-url %q: a tracking URI has no query or fragment", c.url)
	}
	if strings.Contains(u.Path, apiPath) {
		return c, fmt.Errorf("-url %q: give the tracking URI, without %s", c.url, apiPath)
	}
	for _, s := range strings.Split(scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" || slices.Contains(c.scenarios, s) {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return c, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
		c.scenarios = append(c.scenarios, s)
	}
	if len(c.scenarios) == 0 {
		return c, errors.New("-scenarios names no scenario")
	}
	if c.batchWorkers == 0 {
		c.batchWorkers = min(4, c.concurrency)
	}
	if c.setupConcurrency == 0 {
		c.setupConcurrency = min(8, c.concurrency)
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.concurrency < 1 || c.batchWorkers < 1 || c.setupConcurrency < 1:
		return c, errors.New("-concurrency, -batch-workers and -setup-concurrency must be at least 1")
	case c.historyPoints < 1 || c.searchRuns < 1 || c.repeat < 1:
		return c, errors.New("-history-points, -search-runs and -repeat must be at least 1")
	case c.timeout <= 0:
		return c, errors.New("-timeout must be positive")
	}
	return c, nil
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tracking:", err)
		return 2
	}
	b := newBench(cfg, stdout, stderr)
	defer b.client.hc.CloseIdleConnections()

	auth := "no token"
	if cfg.token != "" {
		auth = "bearer token"
	}
	fmt.Fprintf(stdout, "bench/tracking: url=%s (%s) scenarios=%s\n", cfg.url, auth, strings.Join(cfg.scenarios, ","))
	fmt.Fprintf(stdout, "  duration=%s concurrency=%d batch-workers=%d setup-concurrency=%d history-points=%d search-runs=%d repeat=%d\n",
		cfg.duration, cfg.concurrency, cfg.batchWorkers, cfg.setupConcurrency, cfg.historyPoints, cfg.searchRuns, cfg.repeat)
	fmt.Fprintf(stdout, "  client: %s %s/%s GOMAXPROCS=%d, started %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))

	var results []result
	var failed []string // scenarios that failed or saw errors
	for _, name := range cfg.scenarios {
		if ctx.Err() != nil {
			fmt.Fprintf(stdout, "%s: skipped (interrupted)\n", name)
			failed = append(failed, name)
			continue
		}
		fmt.Fprintf(stderr, "== %s\n", name)
		rs, err := b.scenario(ctx, name)
		results = append(results, rs...)
		bad := err != nil
		if err != nil {
			fmt.Fprintf(stdout, "%s: FAILED: %v\n", name, err)
		}
		for _, r := range rs {
			bad = bad || (r.Metric == "errors" && r.Value > 0)
		}
		if bad {
			failed = append(failed, name)
		}
	}

	fmt.Fprintln(stdout)
	printTable(stdout, results)
	if cfg.json {
		enc := json.NewEncoder(stdout)
		for _, r := range results {
			_ = enc.Encode(r)
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(stdout, "\nfailed or saw errors: %s (see above)\n", strings.Join(failed, ", "))
		return 1
	}
	return 0
}

// result is one row of the report.
type result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
}

func printTable(w io.Writer, rs []result) {
	rows := [][4]string{{"scenario", "metric", "value", "unit"}}
	for _, r := range rs {
		rows = append(rows, [4]string{r.Scenario, r.Metric, formatValue(r), r.Unit})
	}
	var width [4]int
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len(cell))
		}
	}
	for k, row := range rows {
		// Text left-aligned, numbers right-aligned.
		fmt.Fprintf(w, "%-*s  %-*s  %*s  %s\n", width[0], row[0], width[1], row[1], width[2], row[2], row[3])
		if k == 0 {
			fmt.Fprintf(w, "%s  %s  %s  %s\n", strings.Repeat("-", width[0]), strings.Repeat("-", width[1]),
				strings.Repeat("-", width[2]), strings.Repeat("-", width[3]))
		}
	}
}

func formatValue(r result) string {
	switch {
	case r.Unit == "ms" || r.Unit == "s":
		return strconv.FormatFloat(r.Value, 'f', 2, 64)
	case r.Value == math.Trunc(r.Value) && math.Abs(r.Value) < 1e15:
		return strconv.FormatInt(int64(r.Value), 10)
	case math.Abs(r.Value) >= 100:
		return strconv.FormatFloat(r.Value, 'f', 0, 64)
	default:
		return strconv.FormatFloat(r.Value, 'f', 2, 64)
	}
}

// client sends MLflow REST calls to one tracking URI.
type client struct {
	base  string // tracking URI + /api/2.0/mlflow
	token string
	hc    *http.Client
}

// httpError is a response other than 200.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.status, e.body)
}

// send does one call and returns the whole response body; anything but
// 200 is an error. The body is always read to the end and closed, so the
// connection goes back to the pool.
func (c *client) send(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &httpError{resp.StatusCode, truncate(strings.TrimSpace(string(data)), 500)}
	}
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	return data, nil
}

// call marshals in, sends it and decodes the answer into out (if any).
func (c *client) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	data, err := c.send(ctx, method, path, query, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding %q: %w", method, path, truncate(string(data), 200), err)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

type bench struct {
	cfg    config
	client *client
	out    io.Writer // results and errors
	log    io.Writer // progress
}

func newBench(cfg config, out, log io.Writer) *bench {
	conns := max(cfg.concurrency, cfg.batchWorkers, cfg.setupConcurrency)
	tr := &http.Transport{
		Proxy: nil, // only ever talk to -url, whatever HTTP_PROXY says
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        2 * conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableCompression:  true,
	}
	hc := &http.Client{
		Transport: tr,
		Timeout:   cfg.timeout,
		// A redirect would send traffic elsewhere: report it instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &bench{
		cfg:    cfg,
		client: &client{base: strings.TrimRight(cfg.url, "/") + apiPath, token: cfg.token, hc: hc},
		out:    out,
		log:    log,
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, format+"\n", args...)
}

func (b *bench) scenario(ctx context.Context, name string) ([]result, error) {
	switch name {
	case scLogMetric:
		return b.logMetric(ctx)
	case scLogBatch:
		return b.logBatch(ctx)
	case scGetHistory:
		return b.getHistory(ctx)
	case scSearch:
		return b.search(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", name)
}

// --- MLflow messages ---------------------------------------------------

type metric struct {
	Key       string  `json:"key"`
	Value     float64 `json:"value"`
	Timestamp int64   `json:"timestamp"`
	Step      int64   `json:"step"`
}

type param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type logMetricReq struct {
	RunID     string  `json:"run_id"`
	Key       string  `json:"key"`
	Value     float64 `json:"value"`
	Timestamp int64   `json:"timestamp"`
	Step      int64   `json:"step"`
}

type logBatchReq struct {
	RunID   string   `json:"run_id"`
	Metrics []metric `json:"metrics,omitempty"`
	Params  []param  `json:"params,omitempty"`
}

// double is an MLflow double as it arrives on the wire: a number, or
// "NaN"/"Infinity"/"-Infinity" as strings.
type double float64

func (d *double) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*d = double(math.NaN())
	case `"Infinity"`:
		*d = double(math.Inf(1))
	case `"-Infinity"`:
		*d = double(math.Inf(-1))
	default:
		f, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return fmt.Errorf("bad double %s", b)
		}
		*d = double(f)
	}
	return nil
}

// int64s is an MLflow int64 as it arrives on the wire: protobuf JSON
// allows a number or a string.
type int64s int64

func (n *int64s) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(strings.Trim(string(b), `"`), 10, 64)
	if err != nil {
		return fmt.Errorf("bad int64 %s", b)
	}
	*n = int64s(v)
	return nil
}

// createExperiment makes bench-<scenario>-<unix time>, with a suffix if
// that name is taken (two runs in one second).
func (b *bench) createExperiment(ctx context.Context, scenario string) (string, error) {
	name := fmt.Sprintf("bench-%s-%d", scenario, time.Now().Unix())
	for i := 0; i < 5; i++ {
		try := name
		if i > 0 {
			try = fmt.Sprintf("%s-%d", name, i+1)
		}
		var out struct {
			ExperimentID string `json:"experiment_id"`
		}
		err := b.client.call(ctx, http.MethodPost, "/experiments/create", nil, map[string]string{"name": try}, &out)
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusBadRequest && strings.Contains(he.body, "RESOURCE_ALREADY_EXISTS") {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("creating experiment %s: %w", try, err)
		}
		if out.ExperimentID == "" {
			return "", fmt.Errorf("creating experiment %s: no experiment_id in the answer", try)
		}
		b.logf("%s: experiment %s (id %s)", scenario, try, out.ExperimentID)
		return out.ExperimentID, nil
	}
	return "", fmt.Errorf("creating experiment %s: name taken", name)
}

func (b *bench) createRun(ctx context.Context, expID, name string) (string, error) {
	var out struct {
		Run struct {
			Info struct {
				RunID   string `json:"run_id"`
				RunUUID string `json:"run_uuid"`
			} `json:"info"`
		} `json:"run"`
	}
	in := map[string]any{"experiment_id": expID, "run_name": name, "start_time": time.Now().UnixMilli()}
	if err := b.client.call(ctx, http.MethodPost, "/runs/create", nil, in, &out); err != nil {
		return "", err
	}
	id := out.Run.Info.RunID
	if id == "" {
		id = out.Run.Info.RunUUID
	}
	if id == "" {
		return "", errors.New("runs/create: no run_id in the answer")
	}
	return id, nil
}

// createRuns makes n runs with -setup-concurrency goroutines; setup(i, id)
// (if not nil) runs after run i is created. It stops at the first error.
func (b *bench) createRuns(ctx context.Context, expID, prefix string, n int, setup func(i int, runID string) error) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range min(b.cfg.setupConcurrency, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id, err := b.createRun(ctx, expID, fmt.Sprintf("%s-%d", prefix, i))
				if err == nil && setup != nil {
					err = setup(i, id)
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("setting up run %d: %w", i, err); cancel() })
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return ids, firstErr
}

// --- measurements ------------------------------------------------------

// errorLog counts errors and keeps the first one.
type errorLog struct {
	mu    sync.Mutex
	n     int
	first error
}

func (e *errorLog) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if e.first == nil {
		e.first = err
	}
}

func (e *errorLog) report(w io.Writer, scenario string) {
	if e.n > 0 {
		fmt.Fprintf(w, "%s: %d error(s); first: %v\n", scenario, e.n, e.first)
	}
}

// percentile is the nearest-rank percentile p (0-100) of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencyRows sorts samples and reports the percentiles ps.
func latencyRows(scenario, prefix string, samples []time.Duration, ps ...float64) []result {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	var rs []result
	for _, p := range ps {
		rs = append(rs, result{scenario, fmt.Sprintf("%sp%g", prefix, p), ms(percentile(samples, p)), "ms"})
	}
	return rs
}

// timedLoad runs workers goroutines; each calls next(worker, i) for i =
// 0, 1, ... to get a request body, sends it to path and times the call,
// until -duration has passed, maxTimedRequests are spent, the context
// ends or maxConsecutiveErrors calls in a row failed. Bodies are built
// before the clock starts for each call.
func (b *bench) timedLoad(ctx context.Context, scenario, path string, workers int, next func(worker, i int) ([]byte, error)) (ok int, elapsed time.Duration, lat []time.Duration, errs *errorLog) {
	errs = &errorLog{}
	perWorker := max(1, maxTimedRequests/workers)
	samples := make([][]time.Duration, workers)
	start := time.Now()
	deadline := start.Add(b.cfg.duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(b.cfg.timeout))
	defer cancel()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1024)
			streak := 0
			for i := 0; i < perWorker && ctx.Err() == nil && time.Now().Before(deadline); i++ {
				body, err := next(w, i)
				if err != nil {
					errs.add(err)
					return
				}
				t0 := time.Now()
				_, err = b.client.send(ctx, http.MethodPost, path, nil, body)
				d := time.Since(t0)
				if err != nil {
					errs.add(fmt.Errorf("POST %s: %w", path, err))
					if streak++; streak >= maxConsecutiveErrors {
						errs.add(fmt.Errorf("worker %d stopped after %d failures in a row", w, streak))
						break
					}
					continue
				}
				streak = 0
				local = append(local, d)
			}
			samples[w] = local
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	for _, s := range samples {
		ok += len(s)
		lat = append(lat, s...)
	}
	b.logf("%s: %d requests in %s", scenario, ok, elapsed.Round(time.Millisecond))
	return ok, elapsed, lat, errs
}

// --- scenarios ---------------------------------------------------------

// logMetric: -concurrency goroutines, each with its own run, sending
// single runs/log-metric calls for -duration.
func (b *bench) logMetric(ctx context.Context) ([]result, error) {
	const sc = scLogMetric
	exp, err := b.createExperiment(ctx, sc)
	if err != nil {
		return nil, err
	}
	n := b.cfg.concurrency
	b.logf("%s: creating %d runs", sc, n)
	runs, err := b.createRuns(ctx, exp, sc, n, nil)
	if err != nil {
		return nil, err
	}
	b.logf("%s: %d goroutines for %s", sc, n, b.cfg.duration)
	ok, elapsed, lat, errs := b.timedLoad(ctx, sc, "/runs/log-metric", n, func(w, i int) ([]byte, error) {
		return json.Marshal(logMetricReq{
			RunID:     runs[w],
			Key:       "loss",
			Value:     1 / float64(i+1),
			Timestamp: time.Now().UnixMilli(),
			Step:      int64(i),
		})
	})
	errs.report(b.out, sc)
	rs := []result{
		{sc, "goroutines", float64(n), "count"},
		{sc, "requests", float64(ok), "count"},
		{sc, "throughput", float64(ok) / elapsed.Seconds(), "req/s"},
	}
	rs = append(rs, latencyRows(sc, "latency ", lat, 50, 95, 99)...)
	rs = append(rs, result{sc, "errors", float64(errs.n), "count"})
	return rs, firstErrIfNone(ok, errs)
}

// firstErrIfNone fails a scenario in which no request succeeded.
func firstErrIfNone(ok int, errs *errorLog) error {
	if ok == 0 && errs.first != nil {
		return fmt.Errorf("no request succeeded; first error: %w", errs.first)
	}
	if ok == 0 {
		return errors.New("no request was sent")
	}
	return nil
}

// logBatch: -batch-workers goroutines, each with its own run, sending
// runs/log-batch with 10 keys x 100 steps per request for -duration.
func (b *bench) logBatch(ctx context.Context) ([]result, error) {
	const sc = scLogBatch
	exp, err := b.createExperiment(ctx, sc)
	if err != nil {
		return nil, err
	}
	n := b.cfg.batchWorkers
	runs, err := b.createRuns(ctx, exp, sc, n, nil)
	if err != nil {
		return nil, err
	}
	b.logf("%s: %d goroutines for %s, %d metrics per request", sc, n, b.cfg.duration, batchKeys*batchSteps)
	keys := make([]string, batchKeys)
	for k := range keys {
		keys[k] = fmt.Sprintf("m%d", k)
	}
	bufs := make([][]metric, n)
	ok, elapsed, lat, errs := b.timedLoad(ctx, sc, "/runs/log-batch", n, func(w, i int) ([]byte, error) {
		if bufs[w] == nil {
			bufs[w] = make([]metric, 0, batchKeys*batchSteps)
		}
		batch := bufs[w][:0]
		ts := time.Now().UnixMilli()
		for _, k := range keys {
			for s := range batchSteps {
				step := int64(i)*batchSteps + int64(s) // unique per request
				batch = append(batch, metric{Key: k, Value: float64(step%997) / 997, Timestamp: ts, Step: step})
			}
		}
		bufs[w] = batch
		return json.Marshal(logBatchReq{RunID: runs[w], Metrics: batch})
	})
	errs.report(b.out, sc)
	points := ok * batchKeys * batchSteps
	rs := []result{
		{sc, "goroutines", float64(n), "count"},
		{sc, "requests", float64(ok), "count"},
		{sc, "metric points", float64(points), "count"},
		{sc, "throughput", float64(points) / elapsed.Seconds(), "points/s"},
		{sc, "request rate", float64(ok) / elapsed.Seconds(), "req/s"},
	}
	rs = append(rs, latencyRows(sc, "latency ", lat, 50, 99)...)
	rs = append(rs, result{sc, "errors", float64(errs.n), "count"})
	return rs, firstErrIfNone(ok, errs)
}

// getHistory: log -history-points points of one metric to one run with
// log-batch, then time -repeat reads of the whole history.
func (b *bench) getHistory(ctx context.Context) ([]result, error) {
	const sc = scGetHistory
	const key = "history"
	points := b.cfg.historyPoints
	exp, err := b.createExperiment(ctx, sc)
	if err != nil {
		return nil, err
	}
	runID, err := b.createRun(ctx, exp, sc)
	if err != nil {
		return nil, err
	}

	// Setup: sequential log-batch calls of 1,000 points each.
	b.logf("%s: logging %d points", sc, points)
	reqs := 0
	setupStart := time.Now()
	buf := make([]metric, 0, batchSize)
	base := time.Now().UnixMilli()
	for done := 0; done < points; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := buf[:0]
		for s := done; s < min(done+batchSize, points); s++ {
			batch = append(batch, metric{Key: key, Value: math.Sin(float64(s) / 100), Timestamp: base + int64(s), Step: int64(s)})
		}
		body, err := json.Marshal(logBatchReq{RunID: runID, Metrics: batch})
		if err != nil {
			return nil, err
		}
		if _, err := b.client.send(ctx, http.MethodPost, "/runs/log-batch", nil, body); err != nil {
			return nil, fmt.Errorf("setup: POST /runs/log-batch after %d points: %w", done, err)
		}
		done += len(batch)
		reqs++
	}
	setupTime := time.Since(setupStart)
	rs := []result{
		{sc, "setup: points logged", float64(points), "count"},
		{sc, "setup: log-batch requests", float64(reqs), "count"},
		{sc, "setup: time", setupTime.Seconds(), "s"},
		{sc, "setup: throughput", float64(points) / setupTime.Seconds(), "points/s"},
	}

	page := min(points, maxHistoryPage)
	maxPages := points/page + 2 // bound on a server that never stops paging
	read := func() (n, pages int, err error) {
		token := ""
		for pages < maxPages {
			q := url.Values{"run_id": {runID}, "metric_key": {key}, "max_results": {strconv.Itoa(page)}}
			if token != "" {
				q.Set("page_token", token)
			}
			var out struct {
				Metrics []struct {
					Key  string `json:"key"`
					Step int64s `json:"step"`
				} `json:"metrics"`
				NextPageToken string `json:"next_page_token"`
			}
			data, err := b.client.send(ctx, http.MethodGet, "/metrics/get-history", q, nil)
			if err != nil {
				return n, pages, fmt.Errorf("GET /metrics/get-history: %w", err)
			}
			if err := json.Unmarshal(data, &out); err != nil {
				return n, pages, fmt.Errorf("decoding get-history: %w", err)
			}
			pages++
			n += len(out.Metrics)
			for _, m := range out.Metrics {
				if m.Key != key {
					return n, pages, fmt.Errorf("get-history returned a metric %q", m.Key)
				}
			}
			if out.NextPageToken == "" {
				return n, pages, nil
			}
			token = out.NextPageToken
		}
		return n, pages, fmt.Errorf("get-history still paging after %d pages", pages)
	}

	errs := &errorLog{}
	check := func(n, pages int, err error) bool {
		if err == nil && n != points {
			err = fmt.Errorf("read %d points in %d page(s), want %d", n, pages, points)
		}
		if err != nil {
			errs.add(err)
			return false
		}
		return true
	}
	b.logf("%s: reading the history %d times (max_results=%d)", sc, b.cfg.repeat, page)
	check(read()) // warm-up, not timed
	var lat []time.Duration
	pagesPerRead := 0
	for i := 0; i < b.cfg.repeat && ctx.Err() == nil; i++ {
		t0 := time.Now()
		n, pages, err := read()
		d := time.Since(t0)
		if check(n, pages, err) {
			lat = append(lat, d)
			pagesPerRead = pages
		}
	}
	errs.report(b.out, sc)
	rs = append(rs,
		result{sc, "reads", float64(len(lat)), "count"},
		result{sc, "pages per read", float64(pagesPerRead), "count"},
	)
	rs = append(rs, latencyRows(sc, "full read ", lat, 50, 95)...)
	if len(lat) > 0 {
		rs = append(rs, result{sc, "read throughput at p50", float64(points) / percentile(lat, 50).Seconds(), "points/s"})
	}
	rs = append(rs, result{sc, "errors", float64(errs.n), "count"})
	return rs, firstErrIfNone(len(lat), errs)
}

// search: -search-runs runs with metric rmse and param model, then time
// -repeat runs/search calls with a filter and an order, checking answers.
func (b *bench) search(ctx context.Context) ([]result, error) {
	const sc = scSearch
	n := b.cfg.searchRuns
	exp, err := b.createExperiment(ctx, sc)
	if err != nil {
		return nil, err
	}
	// Run i's values depend only on i, so they are the same whatever the
	// setup concurrency.
	type runValues struct {
		rmse  float64
		model string
	}
	values := make([]runValues, n)
	for i := range values {
		r := rand.New(rand.NewPCG(0x5eed, uint64(i)))
		values[i] = runValues{r.Float64(), models[r.IntN(len(models))]}
	}
	b.logf("%s: creating %d runs with %d goroutines", sc, n, min(b.cfg.setupConcurrency, n))
	start := time.Now()
	ids, err := b.createRuns(ctx, exp, sc, n, func(i int, runID string) error {
		ts := time.Now().UnixMilli()
		return b.client.call(ctx, http.MethodPost, "/runs/log-batch", nil, logBatchReq{
			RunID:   runID,
			Metrics: []metric{{Key: "rmse", Value: values[i].rmse, Timestamp: ts, Step: 0}},
			Params:  []param{{Key: "model", Value: values[i].model}},
		}, nil)
	})
	setupTime := time.Since(start)
	if err != nil {
		return nil, err
	}
	rs := []result{
		{sc, "setup: runs", float64(n), "count"},
		{sc, "setup: time", setupTime.Seconds(), "s"},
		{sc, "setup: throughput", float64(n) / setupTime.Seconds(), "runs/s"},
		{sc, "setup: request rate", float64(2*n) / setupTime.Seconds(), "req/s"},
	}

	// What a correct server answers: the matching runs' rmse, ascending.
	byID := make(map[string]runValues, n)
	var want []float64
	for i, id := range ids {
		byID[id] = values[i]
		if values[i].rmse < 0.5 && values[i].model == "xgb" {
			want = append(want, values[i].rmse)
		}
	}
	slices.Sort(want)
	want = want[:min(len(want), searchMax)]

	body, err := json.Marshal(map[string]any{
		"experiment_ids": []string{exp},
		"filter":         searchFilter,
		"order_by":       []string{searchOrderBy},
		"max_results":    searchMax,
	})
	if err != nil {
		return nil, err
	}
	type searchResp struct {
		Runs []struct {
			Info struct {
				RunID        string `json:"run_id"`
				ExperimentID string `json:"experiment_id"`
			} `json:"info"`
			Data struct {
				Metrics []struct {
					Key   string `json:"key"`
					Value double `json:"value"`
				} `json:"metrics"`
				Params []param `json:"params"`
			} `json:"data"`
		} `json:"runs"`
	}
	check := func(data []byte) error {
		var out searchResp
		if err := json.Unmarshal(data, &out); err != nil {
			return fmt.Errorf("decoding runs/search: %w", err)
		}
		if len(out.Runs) != len(want) {
			return fmt.Errorf("runs/search returned %d runs, want %d", len(out.Runs), len(want))
		}
		prev := math.Inf(-1)
		for k, r := range out.Runs {
			rmse, model := math.NaN(), ""
			for _, m := range r.Data.Metrics {
				if m.Key == "rmse" {
					rmse = float64(m.Value)
				}
			}
			for _, p := range r.Data.Params {
				if p.Key == "model" {
					model = p.Value
				}
			}
			switch v, known := byID[r.Info.RunID]; {
			case r.Info.ExperimentID != exp:
				return fmt.Errorf("result %d: run %s is in experiment %s, not %s", k, r.Info.RunID, r.Info.ExperimentID, exp)
			case !(rmse < 0.5) || model != "xgb":
				return fmt.Errorf("result %d: run %s (rmse=%v, model=%q) does not match %q", k, r.Info.RunID, rmse, model, searchFilter)
			case rmse < prev:
				return fmt.Errorf("result %d: rmse %v after %v: not sorted by %s", k, rmse, prev, searchOrderBy)
			case !known || v.rmse != rmse || v.model != model:
				return fmt.Errorf("result %d: run %s has rmse=%v model=%q, logged %v %q", k, r.Info.RunID, rmse, model, v.rmse, v.model)
			case rmse != want[k]:
				return fmt.Errorf("result %d: rmse %v, want %v (the %d-th smallest matching)", k, rmse, want[k], k+1)
			}
			prev = rmse
		}
		return nil
	}

	errs := &errorLog{}
	searchOnce := func() (time.Duration, bool) {
		t0 := time.Now()
		data, err := b.client.send(ctx, http.MethodPost, "/runs/search", nil, body)
		d := time.Since(t0)
		if err == nil {
			err = check(data)
		} else {
			err = fmt.Errorf("POST /runs/search: %w", err)
		}
		if err != nil {
			errs.add(err)
			return d, false
		}
		return d, true
	}
	b.logf("%s: %d searches (%d matching runs in the first page)", sc, b.cfg.repeat, len(want))
	searchOnce() // warm-up, not timed
	var lat []time.Duration
	for i := 0; i < b.cfg.repeat && ctx.Err() == nil; i++ {
		if d, ok := searchOnce(); ok {
			lat = append(lat, d)
		}
	}
	errs.report(b.out, sc)
	rs = append(rs,
		result{sc, "searches", float64(len(lat)), "count"},
		result{sc, "runs per answer", float64(len(want)), "count"},
	)
	rs = append(rs, latencyRows(sc, "latency ", lat, 50, 95)...)
	rs = append(rs, result{sc, "errors", float64(errs.n), "count"})
	return rs, firstErrIfNone(len(lat), errs)
}
