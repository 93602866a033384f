package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const modelJSON = `{"type": "logistic_regression", "n_features": 2, "features": ["amount", "hour"],
  "weights": [2, -1], "bias": 0.5, "mean": [100, 12], "std": [50, 6]}`

func TestScores(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "model"), 0o755)
	os.WriteFile(filepath.Join(dir, "model", "model.json"), []byte(modelJSON), 0o644)
	m, _, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := handler(m, "blue")
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/", "", 200, `{"status":"ok"}`},
		{"GET", "/ready", "", 200, `{"status":"ok"}`},
		// z = 0.5 + 2*(300-100)/50 - (12-12)/6 = 8.5: p = 0.9998
		{"POST", "/score", `{"amount": 300, "hour": 12}`, 200, `{"deployment":"blue","predictions":[{"label":1,"probability":0.9998}]}`},
		{"POST", "/score", `{"data": [{"amount": 300, "hour": 12}, [0, 24]]}`, 200, `[{"label":1,"probability":0.9998},{"label":0,"probability":0.0041}]`},
		{"POST", "/score", `{"amount": 300}`, 400, `missing feature \"hour\"`},
		{"POST", "/score", `{"amount": 300, "hour": 1, "age": 3}`, 400, `unknown feature \"age\"`},
		{"POST", "/score", `{"data": [[1, 2, 3]]}`, 400, `row 0: a row of 3 values`},
		{"POST", "/score", `{"amount": "a lot", "hour": 1}`, 400, `feature \"amount\"`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d and %s", tc.method, tc.path, tc.body, rec.Code, rec.Body.String(), tc.code, tc.want)
		}
	}
	if rec := httptest.NewRecorder(); true {
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/score", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("GET /score: %d", rec.Code)
		}
	}
}

func TestLoadRefusesWhatItCannotServe(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := load(dir); err == nil || !strings.Contains(err.Error(), "no model.json") {
		t.Errorf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "model.json"), []byte(`{"type": "tree"}`), 0o644)
	if _, _, err := load(dir); err == nil || !strings.Contains(err.Error(), "not a logistic_regression") {
		t.Errorf("other model: %v", err)
	}
	if err := run(func(k string) string { return map[string]string{"PORT": "0"}[k] }); err == nil || !strings.Contains(err.Error(), "AZUREML_MODEL_DIR") {
		t.Errorf("no model dir: %v", err)
	}
}
