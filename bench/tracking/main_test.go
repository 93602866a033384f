package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMLflow implements just enough of MLflow's REST API 2.0 for the four
// scenarios, in memory, under a path prefix and behind a bearer token. It
// decodes requests strictly, so numbers sent as strings are rejected.
type fakeMLflow struct {
	prefix, token string

	mu       sync.Mutex
	exps     map[string]string // name -> id
	runs     map[string]*fakeRun
	nextID   int
	requests map[string]int // path -> count
}

type fakeRun struct {
	exp     string
	metrics map[string][]metric
	params  map[string]string
}

func newFake(prefix, token string) *fakeMLflow {
	return &fakeMLflow{prefix: prefix, token: token, exps: map[string]string{}, runs: map[string]*fakeRun{}, requests: map[string]int{}}
}

func mlflowError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error_code": code, "message": msg})
}

func (f *fakeMLflow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		mlflowError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "bad token")
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, f.prefix+apiPath)
	if !ok {
		mlflowError(w, http.StatusNotFound, "ENDPOINT_NOT_FOUND", "no such path "+r.URL.Path)
		return
	}
	f.mu.Lock()
	f.requests[path]++
	f.mu.Unlock()
	want := http.MethodPost
	if path == "/metrics/get-history" {
		want = http.MethodGet
	}
	if r.Method != want {
		mlflowError(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "method "+r.Method)
		return
	}
	decode := func(v any) bool {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			mlflowError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", err.Error())
			return false
		}
		return true
	}
	var out any = map[string]any{}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch path {
	case "/experiments/create":
		var m struct {
			Name string `json:"name"`
		}
		if !decode(&m) {
			return
		}
		if _, dup := f.exps[m.Name]; dup {
			mlflowError(w, http.StatusBadRequest, "RESOURCE_ALREADY_EXISTS", "experiment exists")
			return
		}
		f.nextID++
		id := strconv.Itoa(f.nextID)
		f.exps[m.Name] = id
		out = map[string]string{"experiment_id": id}
	case "/runs/create":
		var m struct {
			ExperimentID string `json:"experiment_id"`
			RunName      string `json:"run_name"`
			StartTime    int64  `json:"start_time"`
		}
		if !decode(&m) {
			return
		}
		if !slices.Contains(mapValues(f.exps), m.ExperimentID) {
			mlflowError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "no experiment")
			return
		}
		f.nextID++
		id := fmt.Sprintf("%032x", f.nextID)
		f.runs[id] = &fakeRun{exp: m.ExperimentID, metrics: map[string][]metric{}, params: map[string]string{}}
		out = map[string]any{"run": map[string]any{"info": map[string]any{"run_id": id, "run_uuid": id, "experiment_id": m.ExperimentID}}}
	case "/runs/log-metric":
		var m logMetricReq
		if !decode(&m) {
			return
		}
		run := f.runs[m.RunID]
		if run == nil {
			mlflowError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "no run")
			return
		}
		run.metrics[m.Key] = append(run.metrics[m.Key], metric{m.Key, m.Value, m.Timestamp, m.Step})
	case "/runs/log-batch":
		var m logBatchReq
		if !decode(&m) {
			return
		}
		run := f.runs[m.RunID]
		if run == nil {
			mlflowError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "no run")
			return
		}
		if len(m.Metrics) > 1000 {
			mlflowError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "too many metrics")
			return
		}
		for _, x := range m.Metrics {
			run.metrics[x.Key] = append(run.metrics[x.Key], x)
		}
		for _, p := range m.Params {
			run.params[p.Key] = p.Value
		}
	case "/metrics/get-history":
		q := r.URL.Query()
		run := f.runs[q.Get("run_id")]
		if run == nil {
			mlflowError(w, http.StatusNotFound, "RESOURCE_DOES_NOT_EXIST", "no run")
			return
		}
		max, err := strconv.Atoi(q.Get("max_results"))
		if err != nil || max < 1 || max > maxHistoryPage {
			mlflowError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "max_results")
			return
		}
		offset := 0
		if t := q.Get("page_token"); t != "" {
			offset, _ = strconv.Atoi(t)
		}
		all := slices.Clone(run.metrics[q.Get("metric_key")])
		slices.SortFunc(all, func(a, b metric) int { return int(a.Step - b.Step) })
		end := min(offset+max, len(all))
		page := all[min(offset, end):end]
		res := map[string]any{"metrics": page}
		if end < len(all) {
			res["next_page_token"] = strconv.Itoa(end)
		}
		out = res
	case "/runs/search":
		var m struct {
			ExperimentIDs []string `json:"experiment_ids"`
			Filter        string   `json:"filter"`
			OrderBy       []string `json:"order_by"`
			MaxResults    int      `json:"max_results"`
		}
		if !decode(&m) {
			return
		}
		if m.Filter != searchFilter || !slices.Equal(m.OrderBy, []string{searchOrderBy}) || len(m.ExperimentIDs) != 1 {
			mlflowError(w, http.StatusBadRequest, "INVALID_PARAMETER_VALUE", "the fake only knows the bench's search")
			return
		}
		type hit struct {
			id   string
			rmse float64
		}
		var hits []hit
		for id, run := range f.runs {
			ms := run.metrics["rmse"]
			if run.exp == m.ExperimentIDs[0] && len(ms) > 0 && ms[len(ms)-1].Value < 0.5 && run.params["model"] == "xgb" {
				hits = append(hits, hit{id, ms[len(ms)-1].Value})
			}
		}
		slices.SortFunc(hits, func(a, b hit) int {
			if a.rmse < b.rmse {
				return -1
			}
			if a.rmse > b.rmse {
				return 1
			}
			return strings.Compare(a.id, b.id)
		})
		var runs []any
		for _, h := range hits[:min(len(hits), m.MaxResults)] {
			run := f.runs[h.id]
			runs = append(runs, map[string]any{
				"info": map[string]any{"run_id": h.id, "run_uuid": h.id, "experiment_id": run.exp},
				"data": map[string]any{
					"metrics": []metric{run.metrics["rmse"][len(run.metrics["rmse"])-1]},
					"params":  []param{{"model", run.params["model"]}},
				},
			})
		}
		out = map[string]any{"runs": runs}
	default:
		mlflowError(w, http.StatusNotFound, "ENDPOINT_NOT_FOUND", "no endpoint "+path)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func mapValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

func TestAllScenariosAgainstFake(t *testing.T) {
	fake := newFake("/w/teamA", "test-token")
	srv := httptest.NewServer(fake)
	defer srv.Close()

	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{
		"-url", srv.URL + "/w/teamA/", "-token", "test-token",
		"-duration", "1s", "-concurrency", "4",
		"-history-points", "30500", // a page of 25,000 and a partial one
		"-search-runs", "400", "-repeat", "3", "-json",
	}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("took %s\n%s", time.Since(start), out)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		`log-metric\s+throughput\s+\d+\s+req/s`,
		`log-metric\s+latency p99\s+[\d.]+\s+ms`,
		`log-metric\s+errors\s+0\s+count`,
		`log-batch\s+throughput\s+\d+\s+points/s`,
		`log-batch\s+latency p99\s+[\d.]+\s+ms`,
		`get-history\s+setup: throughput\s+\d+\s+points/s`,
		`get-history\s+pages per read\s+2\s+count`,
		`get-history\s+full read p95\s+[\d.]+\s+ms`,
		`search\s+setup: throughput\s+[\d.]+\s+runs/s`,
		`search\s+latency p95\s+[\d.]+\s+ms`,
		`search\s+errors\s+0\s+count`,
		`(?m)^\{"scenario":"search","metric":"latency p50","value":[\d.e+-]+,"unit":"ms"\}$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s", want)
		}
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.requests["/runs/log-metric"] == 0 || fake.requests["/runs/search"] != 4 {
		t.Errorf("requests = %v", fake.requests)
	}
}

func TestWrongTokenFailsFast(t *testing.T) {
	srv := httptest.NewServer(newFake("", "right"))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"-url", srv.URL, "-token", "wrong", "-duration", "5s"}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
	for _, sc := range allScenarios {
		if !strings.Contains(stdout.String(), sc+": FAILED: creating experiment") {
			t.Errorf("no failure line for %s in:\n%s", sc, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "HTTP 401") {
		t.Errorf("the error body is not shown:\n%s", stdout.String())
	}
}

func TestFlags(t *testing.T) {
	t.Setenv("MLFLOW_TRACKING_TOKEN", "from-env")
	c, err := parseFlags([]string{"-url", "http://h:1/w/x"}, &bytes.Buffer{})
	if err != nil || c.token != "from-env" || len(c.scenarios) != 4 || c.batchWorkers != 4 || c.setupConcurrency != 8 {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	c, err = parseFlags([]string{"-url", "http://h:1", "-token", "", "-scenarios", "search,log-metric,search", "-concurrency", "2"}, &bytes.Buffer{})
	if err != nil || c.token != "" || !slices.Equal(c.scenarios, []string{"search", "log-metric"}) || c.batchWorkers != 2 || c.setupConcurrency != 2 {
		t.Errorf("explicit: %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{},
		{"-url", "ftp://h"},
		{"-url", "http://h:1/api/2.0/mlflow"},
		{"-url", "http://h:1", "-scenarios", "nope"},
		{"-url", "http://h:1", "-repeat", "0"},
	} {
		if _, err := parseFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 95: 95, 99: 99, 100: 100, 0: 1} {
		if got := percentile(s, p); got != want {
			t.Errorf("p%g = %d, want %d", p, got, want)
		}
	}
	if percentile([]time.Duration{7}, 99) != 7 || percentile(nil, 50) != 0 {
		t.Error("edge cases")
	}
}
