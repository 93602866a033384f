package mlflowapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// v1 calls Plinth's own API as the admin.
func (m *mlflow) v1(path string) (int, map[string]any) {
	m.t.Helper()
	req, _ := http.NewRequest("GET", m.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var body map[string]any
	json.Unmarshal(raw, &body)
	return res.StatusCode, body
}

// TestLineageAndTrace follows data -> run -> model version both ways, and
// reads the version's traceability record.
func TestLineageAndTrace(t *testing.T) {
	eachDB(t, func(t *testing.T, m *mlflow) {
		run := m.ok("POST", "runs/create", map[string]any{"experiment_id": "0", "run_name": "train",
			"tags": []map[string]string{{"key": "mlflow.source.git.commit", "value": "9f2c1ab"}, {"key": "mlflow.source.name", "value": "train.py"}}})
		runID := dig(run.body, "run", "info", "run_id").(string)
		m.ok("POST", "runs/log-inputs", map[string]any{"run_id": runID, "datasets": []map[string]any{{
			"tags":    []map[string]string{{"key": "mlflow.data.context", "value": "training"}},
			"dataset": map[string]string{"name": "cards", "digest": "abc123", "source_type": "local", "source": "{\"uri\": \"/data/cards.csv\"}"}}}})
		m.ok("POST", "registered-models/create", map[string]any{"name": "fraud"})
		m.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "runs:/" + runID + "/model"})

		status, up := m.v1("/api/v1/workspaces/default/lineage?node=model:fraud:1&direction=up")
		if status != 200 {
			t.Fatalf("lineage up: %d %v", status, up)
		}
		edges := edgeSet(up)
		for _, want := range []string{"dataset:cards:abc123 -input-> run:" + runID, "run:" + runID + " -produced-> model:fraud:1"} {
			if !edges[want] {
				t.Errorf("lineage up lacks %s: %v", want, edges)
			}
		}
		status, down := m.v1("/api/v1/workspaces/default/lineage?node=dataset:cards:abc123&direction=down")
		if status != 200 || !edgeSet(down)["run:"+runID+" -produced-> model:fraud:1"] {
			t.Fatalf("lineage down: %d %v", status, down)
		}
		// Depth bounds the walk.
		_, shallow := m.v1("/api/v1/workspaces/default/lineage?node=dataset:cards:abc123&direction=down&depth=1")
		if edgeSet(shallow)["run:"+runID+" -produced-> model:fraud:1"] {
			t.Fatalf("depth=1 walked two steps: %v", shallow)
		}
		if status, _ := m.v1("/api/v1/workspaces/default/lineage?node=model:nope:1"); status != 404 {
			t.Fatalf("unknown node: %d", status)
		}
		if status, _ := m.v1("/api/v1/workspaces/default/lineage?node=banana"); status != 400 {
			t.Fatalf("bad node id: %d", status)
		}

		status, trace := m.v1("/api/v1/workspaces/default/models/fraud/versions/1/trace")
		if status != 200 {
			t.Fatalf("trace: %d %v", status, trace)
		}
		raw, _ := json.Marshal(trace)
		for _, want := range []string{`"registered_by":"admin"`, `"git_commit":"9f2c1ab"`, `"source":"train.py"`, `"context":"training"`, `"name":"cards"`, `"run_id":"` + runID + `"`} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("trace lacks %s: %s", want, raw)
			}
		}
	})
}

func edgeSet(g map[string]any) map[string]bool {
	out := map[string]bool{}
	edges, _ := g["edges"].([]any)
	for _, e := range edges {
		em := e.(map[string]any)
		out[em["from"].(string)+" -"+em["kind"].(string)+"-> "+em["to"].(string)] = true
	}
	return out
}
