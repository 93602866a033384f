package mlflowapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/store"
	"github.com/plinth-dev/plinth/internal/store/storetest"
)

const adminKey = "plk_mlflow-test-admin-key-0123456789"

// mlflow is a running Plinth spoken to as an MLflow client would.
type mlflow struct {
	t    testing.TB
	srv  *server.Server
	url  string
	key  string
	base string // "" for the default workspace, "/w/name" for another
}

func start(t testing.TB, d store.Dialect) *mlflow {
	t.Helper()
	cfg := server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey}
	if d == store.Postgres {
		cfg.Database = storetest.PostgresURL(t)
	}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return &mlflow{t: t, srv: srv, url: hs.URL, key: adminKey}
}

func eachDB(t *testing.T, fn func(t *testing.T, m *mlflow)) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { fn(t, start(t, d)) })
	}
}

type answer struct {
	status int
	raw    string
	body   map[string]any
}

func (a answer) code() string { s, _ := a.body["error_code"].(string); return s }

// call sends method to /api/2.0/mlflow/<path>; body is JSON-encoded unless
// it is a string, sent as is.
func (m *mlflow) call(method, path string, body any) answer {
	m.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, m.url+m.base+"/api/2.0/mlflow/"+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if m.key != "" {
		req.Header.Set("Authorization", "Bearer "+m.key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func (m *mlflow) ok(method, path string, body any) answer {
	m.t.Helper()
	a := m.call(method, path, body)
	if a.status != 200 {
		m.t.Fatalf("%s %s: %d %s", method, path, a.status, a.raw)
	}
	return a
}

// fails checks an MLflow error answer: status, error_code, and a part of
// the message.
func (m *mlflow) fails(status int, code, says, method, path string, body any) {
	m.t.Helper()
	a := m.call(method, path, body)
	msg, _ := a.body["message"].(string)
	if a.status != status || a.code() != code || !strings.Contains(msg, says) {
		m.t.Errorf("%s %s %v: got %d %s, want %d %s mentioning %q", method, path, body, a.status, a.raw, status, code, says)
	}
}

func (m *mlflow) createRun(expID string) string {
	m.t.Helper()
	a := m.ok("POST", "runs/create", map[string]any{"experiment_id": expID, "start_time": 1700000000000})
	return a.body["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
}

func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestExperiments(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		// Every workspace starts with experiment 0, "Default".
		def := m.ok("GET", "experiments/get?experiment_id=0", nil)
		if dig(def.body, "experiment", "name") != "Default" || dig(def.body, "experiment", "artifact_location") != "mlflow-artifacts:/default/0" {
			t.Fatalf("default experiment: %s", def.raw)
		}
		created := m.ok("POST", "experiments/create", map[string]any{"name": "fraud", "tags": []map[string]string{{"key": "team", "value": "risk"}}})
		if created.raw != "{\"experiment_id\":\"1\"}\n" {
			t.Fatalf("create: %q", created.raw)
		}
		m.fails(400, "RESOURCE_ALREADY_EXISTS", "Experiment 'fraud' already exists.", "POST", "experiments/create", map[string]any{"name": "fraud"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'", "POST", "experiments/create", map[string]any{})
		m.fails(400, "INVALID_PARAMETER_VALUE", "maximum length of 500", "POST", "experiments/create", map[string]any{"name": strings.Repeat("x", 501)})
		// A proxied artifact location must stay inside this workspace.
		m.fails(400, "INVALID_PARAMETER_VALUE", "must be under mlflow-artifacts:/default/", "POST", "experiments/create",
			map[string]any{"name": "sneaky", "artifact_location": "mlflow-artifacts:/other-team/1"})

		got := m.ok("GET", "experiments/get?experiment_id=1", nil)
		exp := got.body["experiment"].(map[string]any)
		for k, want := range map[string]any{"experiment_id": "1", "name": "fraud", "artifact_location": "mlflow-artifacts:/default/1", "lifecycle_stage": "active"} {
			if exp[k] != want {
				t.Errorf("experiment %s = %v, want %v", k, exp[k], want)
			}
		}
		if _, ok := exp["creation_time"].(float64); !ok {
			t.Errorf("creation_time is not a JSON number: %s", got.raw)
		}
		if dig(exp, "tags", 0, "key") != "team" {
			t.Errorf("tags: %s", got.raw)
		}
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "No Experiment with id=99 exists", "GET", "experiments/get?experiment_id=99", nil)
		m.fails(400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'experiment_id'", "GET", "experiments/get", nil)
		byName := m.ok("GET", "experiments/get-by-name?experiment_name=fraud", nil)
		if dig(byName.body, "experiment", "experiment_id") != "1" {
			t.Fatalf("get-by-name: %s", byName.raw)
		}
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "Could not find experiment with name 'nope'", "GET", "experiments/get-by-name?experiment_name=nope", nil)

		m.ok("POST", "experiments/update", map[string]any{"experiment_id": "1", "new_name": "fraud-v2"})
		m.ok("POST", "experiments/set-experiment-tag", map[string]any{"experiment_id": "1", "key": "owner", "value": "ml"})
		m.ok("POST", "experiments/delete-experiment-tag", map[string]any{"experiment_id": "1", "key": "team"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "No tag with name: team", "POST", "experiments/delete-experiment-tag", map[string]any{"experiment_id": "1", "key": "team"})
		got = m.ok("GET", "experiments/get?experiment_id=1", nil)
		if dig(got.body, "experiment", "name") != "fraud-v2" || dig(got.body, "experiment", "tags", 0, "key") != "owner" || dig(got.body, "experiment", "tags", 1) != nil {
			t.Fatalf("after update: %s", got.raw)
		}

		m.ok("POST", "experiments/create", map[string]any{"name": "churn"})
		// Search: GET and POST forms, filter, order, paging, view types.
		s := m.ok("POST", "experiments/search", map[string]any{"filter": "name LIKE 'fraud%'", "max_results": 10})
		if n := len(s.body["experiments"].([]any)); n != 1 {
			t.Fatalf("search by name: %s", s.raw)
		}
		s = m.ok("GET", "experiments/search?max_results=2&order_by=name+ASC", nil)
		if dig(s.body, "experiments", 0, "name") != "Default" || s.body["next_page_token"] == nil {
			t.Fatalf("page 1: %s", s.raw)
		}
		s2 := m.ok("GET", "experiments/search?max_results=2&order_by=name+ASC&page_token="+s.body["next_page_token"].(string), nil)
		if dig(s2.body, "experiments", 0, "name") != "churn" && dig(s2.body, "experiments", 0, "name") != "fraud-v2" {
			t.Fatalf("page 2: %s", s2.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "", "POST", "experiments/search", map[string]any{"filter": "name =="})

		m.ok("POST", "experiments/delete", map[string]any{"experiment_id": "2"})
		active := m.ok("POST", "experiments/search", map[string]any{})
		deleted := m.ok("POST", "experiments/search", map[string]any{"view_type": "DELETED_ONLY"})
		all := m.ok("POST", "experiments/search", map[string]any{"view_type": "ALL"})
		if len(active.body["experiments"].([]any)) != 2 || len(deleted.body["experiments"].([]any)) != 1 || len(all.body["experiments"].([]any)) != 3 {
			t.Fatalf("view types: %s | %s | %s", active.raw, deleted.raw, all.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "Cannot delete the default experiment", "POST", "experiments/delete", map[string]any{"experiment_id": "0"})
		m.ok("POST", "experiments/restore", map[string]any{"experiment_id": "2"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "not deleted", "POST", "experiments/restore", map[string]any{"experiment_id": "2"})
	})
}

func TestRunsAndLogging(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		created := m.ok("POST", "runs/create", map[string]any{"experiment_id": "0", "run_name": "baseline", "user_id": "alice", "start_time": 1700000000000,
			"tags": []map[string]string{{"key": "mlflow.source.git.commit", "value": "abc123"}}})
		info := dig(created.body, "run", "info").(map[string]any)
		runID := info["run_id"].(string)
		if len(runID) != 32 || info["run_uuid"] != runID || info["status"] != "RUNNING" || info["run_name"] != "baseline" ||
			info["artifact_uri"] != "mlflow-artifacts:/default/0/"+runID+"/artifacts" || info["start_time"] != float64(1700000000000) {
			t.Fatalf("run info: %s", created.raw)
		}
		if _, ok := info["end_time"]; ok {
			t.Errorf("end_time present on a running run: %s", created.raw)
		}
		if created.body["run"].(map[string]any)["inputs"] == nil {
			t.Errorf("run lacks inputs: %s", created.raw)
		}

		m.ok("POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "loss", "value": 0.5, "timestamp": 1700000000100, "step": 1})
		m.ok("POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "loss", "value": 0.25, "timestamp": "1700000000200", "step": "2"})
		m.ok("POST", "runs/log-metric", map[string]any{"run_uuid": runID, "key": "nan", "value": "NaN", "timestamp": 1, "step": 0})
		m.ok("POST", "runs/log-metric", `{"run_id":"`+runID+`","key":"inf","value":Infinity,"timestamp":1}`)
		m.ok("POST", "runs/log-parameter", map[string]any{"run_id": runID, "key": "lr", "value": "0.01"})
		m.ok("POST", "runs/log-parameter", map[string]any{"run_id": runID, "key": "lr", "value": "0.01"}) // same value: fine
		m.fails(400, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed", "POST", "runs/log-parameter", map[string]any{"run_id": runID, "key": "lr", "value": "0.02"})
		m.ok("POST", "runs/set-tag", map[string]any{"run_id": runID, "key": "stage", "value": "dev"})
		// Plinth's own provenance tags cannot be forged or removed.
		m.fails(400, "INVALID_PARAMETER_VALUE", "reserved", "POST", "runs/set-tag", map[string]any{"run_id": runID, "key": "plinth.principal", "value": "mallory"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "reserved", "POST", "runs/delete-tag", map[string]any{"run_id": runID, "key": "plinth.keyId"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "reserved", "POST", "runs/create", map[string]any{"experiment_id": "0", "tags": []map[string]string{{"key": "plinth.principal", "value": "mallory"}}})
		m.ok("POST", "runs/delete-tag", map[string]any{"run_id": runID, "key": "stage"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "No tag with name: stage", "POST", "runs/delete-tag", map[string]any{"run_id": runID, "key": "stage"})

		got := m.ok("GET", "runs/get?run_id="+runID, nil)
		data := dig(got.body, "run", "data").(map[string]any)
		metrics := map[string]any{}
		for _, mm := range data["metrics"].([]any) {
			metrics[mm.(map[string]any)["key"].(string)] = mm
		}
		if dig(metrics["loss"], "value") != 0.25 || dig(metrics["loss"], "step") != float64(2) {
			t.Errorf("latest loss: %v", metrics["loss"])
		}
		if dig(metrics["nan"], "value") != "NaN" {
			t.Errorf("NaN metric comes back as %v, want \"NaN\"", dig(metrics["nan"], "value"))
		}
		if dig(metrics["inf"], "value") != 1.7976931348623157e308 {
			t.Errorf("+Inf comes back as %v, want 1.7976931348623157e+308", dig(metrics["inf"], "value"))
		}
		if !strings.Contains(got.raw, `"key":"lr","value":"0.01"`) {
			t.Errorf("params: %s", got.raw)
		}
		tags := map[string]string{}
		for _, tg := range data["tags"].([]any) {
			tags[tg.(map[string]any)["key"].(string)] = tg.(map[string]any)["value"].(string)
		}
		for k, want := range map[string]string{"mlflow.runName": "baseline", "mlflow.source.git.commit": "abc123", "plinth.principal": "admin", "mlflow.user": "alice"} {
			if tags[k] != want {
				t.Errorf("tag %s = %q, want %q (tags %v)", k, tags[k], want, tags)
			}
		}
		if tags["plinth.keyId"] == "" {
			t.Errorf("run does not record the creating key: %v", tags)
		}

		// log-batch: all or nothing, duplicates dropped, limits enforced.
		batch := map[string]any{"run_id": runID,
			"metrics": []map[string]any{{"key": "acc", "value": 0.9, "timestamp": 5, "step": 1}, {"key": "acc", "value": 0.9, "timestamp": 5, "step": 1}},
			"params":  []map[string]any{{"key": "depth", "value": "3"}},
			"tags":    []map[string]any{{"key": "phase", "value": "train"}}}
		m.ok("POST", "runs/log-batch", batch)
		hist := m.ok("GET", "metrics/get-history?run_id="+runID+"&metric_key=acc", nil)
		if n := len(hist.body["metrics"].([]any)); n != 1 {
			t.Fatalf("duplicate point kept: %s", hist.raw)
		}
		bad := map[string]any{"run_id": runID,
			"metrics": []map[string]any{{"key": "acc", "value": 0.95, "timestamp": 6, "step": 2}},
			"params":  []map[string]any{{"key": "depth", "value": "4"}}}
		m.fails(400, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed", "POST", "runs/log-batch", bad)
		hist = m.ok("GET", "metrics/get-history?run_id="+runID+"&metric_key=acc", nil)
		if n := len(hist.body["metrics"].([]any)); n != 1 {
			t.Fatalf("a refused batch left a metric behind: %s", hist.raw)
		}
		tooMany := make([]map[string]any, 1001)
		for i := range tooMany {
			tooMany[i] = map[string]any{"key": "k", "value": 1, "timestamp": i, "step": i}
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "at most 1000 metrics", "POST", "runs/log-batch", map[string]any{"run_id": runID, "metrics": tooMany})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Duplicate parameter keys", "POST", "runs/log-batch", map[string]any{"run_id": runID,
			"params": []map[string]any{{"key": "p", "value": "1"}, {"key": "p", "value": "2"}}})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Invalid metric name", "POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "../etc", "value": 1, "timestamp": 1})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Param value", "POST", "runs/log-parameter", map[string]any{"run_id": runID, "key": "long", "value": strings.Repeat("v", 6001)})
		m.fails(400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'timestamp'", "POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "x", "value": 1})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "Run with id=nope not found", "POST", "runs/log-metric", map[string]any{"run_id": "nope", "key": "x", "value": 1, "timestamp": 1})

		// log-model and log-inputs.
		model := `{"artifact_path":"model","flavors":{"python_function":{}},"utc_time_created":"2026-01-01 00:00:00","run_id":"` + runID + `"}`
		m.ok("POST", "runs/log-model", map[string]any{"run_id": runID, "model_json": model})
		m.fails(400, "INVALID_PARAMETER_VALUE", "is not a valid JSON", "POST", "runs/log-model", map[string]any{"run_id": runID, "model_json": "{"})
		m.ok("POST", "runs/log-inputs", map[string]any{"run_id": runID, "datasets": []map[string]any{{
			"tags":    []map[string]string{{"key": "mlflow.data.context", "value": "training"}},
			"dataset": map[string]string{"name": "cards", "digest": "d41d8cd9", "source_type": "local", "source": "{\"uri\": \"/data/cards.csv\"}"}}}})
		got = m.ok("GET", "runs/get?run_id="+runID, nil)
		if dig(got.body, "run", "inputs", "dataset_inputs", 0, "dataset", "name") != "cards" ||
			dig(got.body, "run", "inputs", "dataset_inputs", 0, "tags", 0, "value") != "training" {
			t.Fatalf("inputs: %s", got.raw)
		}
		if !strings.Contains(got.raw, `mlflow.log-model.history`) {
			t.Fatalf("log-model left no history tag: %s", got.raw)
		}

		// update, delete, restore.
		upd := m.ok("POST", "runs/update", map[string]any{"run_id": runID, "status": "FINISHED", "end_time": 1700000001000, "run_name": "final"})
		if dig(upd.body, "run_info", "status") != "FINISHED" || dig(upd.body, "run_info", "end_time") != float64(1700000001000) || dig(upd.body, "run_info", "run_name") != "final" {
			t.Fatalf("update: %s", upd.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "status", "POST", "runs/update", map[string]any{"run_id": runID, "status": "DONE"})
		m.ok("POST", "runs/delete", map[string]any{"run_id": runID})
		m.fails(400, "INVALID_PARAMETER_VALUE", "must be in the 'active' state", "POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "x", "value": 1, "timestamp": 1})
		if dig(m.ok("GET", "runs/get?run_id="+runID, nil).body, "run", "info", "lifecycle_stage") != "deleted" {
			t.Fatal("deleted run is not marked deleted")
		}
		m.ok("POST", "runs/restore", map[string]any{"run_id": runID})
		m.ok("POST", "runs/log-metric", map[string]any{"run_id": runID, "key": "x", "value": 1, "timestamp": 1})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "POST", "runs/create", map[string]any{"experiment_id": "42"})
	})
}

func TestSearchRunsAndHistory(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		var ids []string
		for i := range 5 {
			id := m.createRun("0")
			ids = append(ids, id)
			m.ok("POST", "runs/log-batch", map[string]any{"run_id": id,
				"metrics": []map[string]any{{"key": "rmse", "value": float64(i) / 10, "timestamp": 1, "step": 0}},
				"params":  []map[string]any{{"key": "model", "value": []string{"xgb", "lgbm"}[i%2]}}})
		}
		s := m.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}, "filter": "metrics.rmse < 0.25 and params.model = 'xgb'",
			"order_by": []string{"metrics.rmse DESC"}})
		runs := s.body["runs"].([]any)
		if len(runs) != 2 || dig(runs[0], "info", "run_id") != ids[2] || dig(runs[1], "info", "run_id") != ids[0] {
			t.Fatalf("search: %s", s.raw)
		}
		g := m.ok("GET", "runs/search?experiment_ids=0&max_results=2&order_by=metrics.rmse", nil)
		if len(g.body["runs"].([]any)) != 2 || g.body["next_page_token"] == nil {
			t.Fatalf("GET search page: %s", g.raw)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "", "POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}, "filter": "metrics.rmse <"})
		m.fails(400, "INVALID_PARAMETER_VALUE", "max_results", "POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}, "max_results": 50001})

		// History with pagination.
		id := ids[0]
		points := make([]map[string]any, 0, 1000)
		for i := range 1000 {
			points = append(points, map[string]any{"key": "curve", "value": float64(i), "timestamp": 1000 + i, "step": i})
		}
		m.ok("POST", "runs/log-batch", map[string]any{"run_id": id, "metrics": points})
		var got []any
		token := ""
		for pages := 0; ; pages++ {
			h := m.ok("GET", fmt.Sprintf("metrics/get-history?run_id=%s&metric_key=curve&max_results=300&page_token=%s", id, token), nil)
			got = append(got, h.body["metrics"].([]any)...)
			next, _ := h.body["next_page_token"].(string)
			if next == "" {
				break
			}
			token = next
		}
		if len(got) != 1000 || dig(got[999], "step") != float64(999) {
			t.Fatalf("history: %d points", len(got))
		}
		// Bulk interval: sampled steps, always the first and last.
		b := m.ok("GET", "metrics/get-history-bulk-interval?run_ids="+id+"&run_ids="+ids[1]+"&metric_key=curve&max_results=10", nil)
		ms := b.body["metrics"].([]any)
		if len(ms) < 10 || len(ms) > 12 || dig(ms, 0, "run_id") != id || dig(ms, len(ms)-1, "step") != float64(999) {
			t.Fatalf("bulk interval: %d points %s", len(ms), b.raw[:min(300, len(b.raw))])
		}
		bulk := m.ok("GET", "metrics/get-history-bulk?run_id="+id+"&run_id="+ids[1]+"&metric_key=curve&max_results=1500", nil)
		if n := len(bulk.body["metrics"].([]any)); n != 1000 || dig(bulk.body, "metrics", 0, "run_id") == nil {
			t.Fatalf("bulk history: %d points", n)
		}
		m.fails(400, "INVALID_PARAMETER_VALUE", "must specify a metric_key", "GET", "metrics/get-history-bulk?run_id="+id, nil)
		m.fails(400, "INVALID_PARAMETER_VALUE", "both must be specified", "GET", "metrics/get-history-bulk-interval?run_ids="+id+"&metric_key=curve&start_step=3", nil)
	})
}

func TestWorkspacesAndAccess(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		admin := *m
		// Another workspace, reached under /w/{name}, with its own Default.
		req, _ := http.NewRequest("POST", m.url+"/api/v1/workspaces", strings.NewReader(`{"name":"team-a"}`))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 201 {
			t.Fatalf("creating workspace: %v %v", err, res.Status)
		}
		teamA := admin
		teamA.base = "/w/team-a"
		teamA.ok("POST", "experiments/create", map[string]any{"name": "only-in-a"})
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "GET", "experiments/get-by-name?experiment_name=only-in-a", nil)
		runA := teamA.createRun("1")
		// A run of another workspace does not exist from here.
		m.fails(404, "RESOURCE_DOES_NOT_EXIST", "", "GET", "runs/get?run_id="+runA, nil)
		nowhere := admin
		nowhere.base = "/w/nowhere"
		nowhere.fails(404, "RESOURCE_DOES_NOT_EXIST", "Workspace 'nowhere' does not exist", "GET", "experiments/get?experiment_id=0", nil)

		// No key: 401 in MLflow's shape; a Reader searches but cannot log.
		anon := admin
		anon.key = ""
		anon.fails(401, "UNAUTHENTICATED", "MLFLOW_TRACKING_TOKEN", "GET", "experiments/get?experiment_id=0", nil)
		reader := admin
		reader.key = principalKey(t, m, "rita", "Reader", "default")
		reader.ok("POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}})
		reader.fails(403, "PERMISSION_DENIED", "", "POST", "runs/create", map[string]any{"experiment_id": "0"})
		ds := admin
		ds.key = principalKey(t, m, "dana", "DataScientist", "default")
		run := ds.createRun("0")
		ds.ok("POST", "runs/log-metric", map[string]any{"run_id": run, "key": "x", "value": 1, "timestamp": 1})
		// Basic auth with the key as password works too.
		breq, _ := http.NewRequest("GET", m.url+"/api/2.0/mlflow/runs/get?run_id="+run, nil)
		breq.SetBasicAuth("dana", ds.key)
		bres, err := http.DefaultClient.Do(breq)
		if err != nil || bres.StatusCode != 200 {
			t.Fatalf("basic auth: %v %v", err, bres.Status)
		}
		// ajax-api serves the same.
		areq, _ := http.NewRequest("GET", m.url+"/ajax-api/2.0/mlflow/runs/get?run_id="+run, nil)
		areq.Header.Set("Authorization", "Bearer "+ds.key)
		ares, err := http.DefaultClient.Do(areq)
		if err != nil || ares.StatusCode != 200 {
			t.Fatalf("ajax-api: %v %v", err, ares.Status)
		}
		// Writes are audited per request; refused ones too.
		var n int
		m.srv.DB().Read().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM audit_log WHERE action = 'run.log-metric' AND principal = 'dana'`).Scan(&n)
		if n != 1 {
			t.Errorf("log-metric audit records: %d", n)
		}
		m.srv.DB().Read().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM audit_log WHERE action = 'run.create' AND principal = 'rita' AND result = 'permission_denied'`).Scan(&n)
		if n != 1 {
			t.Errorf("refused run.create audit records: %d", n)
		}
	})
}

func principalKey(t *testing.T, m *mlflow, name, role, ws string) string {
	t.Helper()
	do := func(path, body string) map[string]any {
		req, _ := http.NewRequest("POST", m.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 201 {
			t.Fatalf("POST %s: %v %v", path, err, res.Status)
		}
		defer res.Body.Close()
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return out
	}
	do("/api/v1/principals", `{"name":"`+name+`"}`)
	do("/api/v1/workspaces/"+ws+"/role-assignments", `{"principal":"`+name+`","role":"`+role+`"}`)
	return do("/api/v1/keys", `{"name":"k","principal":"`+name+`"}`)["secret"].(string)
}

// TestDeletedWorkspaceTakesItsArtifacts uploads through the artifact
// proxy, force-deletes the workspace and recreates one of the same name:
// the old files must be gone.
func TestDeletedWorkspaceTakesItsArtifacts(t *testing.T) {
	m := start(t, store.SQLite)
	send := func(method, path, body string) int {
		req, _ := http.NewRequest(method, m.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := send("POST", "/api/v1/workspaces", `{"name":"short-lived"}`); s != 201 {
		t.Fatalf("create workspace: %d", s)
	}
	const file = "/api/2.0/mlflow-artifacts/artifacts/short-lived/0/run/artifacts/secret.txt"
	if s := send("PUT", file, "top secret"); s != 200 {
		t.Fatalf("upload: %d", s)
	}
	if s := send("GET", file, ""); s != 200 {
		t.Fatalf("download before delete: %d", s)
	}
	if s := send("DELETE", "/api/v1/workspaces/short-lived?force=true", ""); s != 204 {
		t.Fatalf("delete workspace: %d", s)
	}
	if s := send("POST", "/api/v1/workspaces", `{"name":"short-lived"}`); s != 201 {
		t.Fatalf("recreate workspace: %d", s)
	}
	if s := send("GET", file, ""); s != 404 {
		t.Fatalf("the old workspace's file is still served: %d", s)
	}
}
