package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/server"
)

const adminKey = "plk_test-admin-key-0123456789abcdef"

// The test binary doubles as the program: with TRAIN_TEST_MAIN=1 it runs
// main, so the tests run train as a real process (its own signal handling,
// its own exit code) without a separate `go build`.
func TestMain(m *testing.M) {
	if os.Getenv("TRAIN_TEST_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// startPlinth runs a real Plinth server over HTTP and returns its URL.
func startPlinth(t *testing.T) string {
	t.Helper()
	srv, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), BootstrapKey: adminKey}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL
}

// fetch calls url as the admin and returns the body; the answer must be 2xx.
func fetch(t *testing.T, method, url string, body any) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, url, res.StatusCode, raw)
	}
	return raw
}

// mlflow calls the MLflow API below base and decodes the JSON answer.
func mlflow(t *testing.T, base, method, endpoint string, body any) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(fetch(t, method, base+"/api/2.0/mlflow/"+endpoint, body), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// command prepares the program as a process with only the given MLflow
// environment (none inherited from whoever runs the tests).
func command(env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MLFLOW_") && !strings.HasPrefix(kv, "GIT_COMMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TRAIN_TEST_MAIN=1")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func runProgram(t *testing.T, env map[string]string, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := command(env, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("train %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// runRecord is what the tests read back about a run.
type runRecord struct {
	Run struct {
		Info struct {
			RunID       string `json:"run_id"`
			Status      string
			ArtifactURI string `json:"artifact_uri"`
		}
		Data struct {
			Params, Tags []kv
		}
		Inputs struct {
			DatasetInputs []struct {
				Tags    []kv
				Dataset struct {
					Name, Digest, Source string
					SourceType           string `json:"source_type"`
				}
			} `json:"dataset_inputs"`
		}
	}
}

func getRun(t *testing.T, base, id string) runRecord {
	t.Helper()
	var r runRecord
	if err := json.Unmarshal(fetch(t, "GET", base+"/api/2.0/mlflow/runs/get?run_id="+id, nil), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func asMap(kvs []kv) map[string]string {
	m := map[string]string{}
	for _, p := range kvs {
		m[p.Key] = p.Value
	}
	return m
}

// history returns a metric's values by step.
func history(t *testing.T, base, runID, key string) map[int]float64 {
	t.Helper()
	var h struct {
		Metrics []struct{ Step, Value float64 }
	}
	raw := fetch(t, "GET", base+"/api/2.0/mlflow/metrics/get-history?run_id="+runID+"&metric_key="+key, nil)
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	out := map[int]float64{}
	for _, m := range h.Metrics {
		out[int(m.Step)] = m.Value
	}
	return out
}

// artifact downloads a run artifact the way the MLflow client does.
func artifact(t *testing.T, base string, r runRecord, path string) []byte {
	t.Helper()
	root, ok := strings.CutPrefix(r.Run.Info.ArtifactURI, "mlflow-artifacts:/")
	if !ok {
		t.Fatalf("artifact URI %q", r.Run.Info.ArtifactURI)
	}
	return fetch(t, "GET", base+"/api/2.0/mlflow-artifacts/artifacts/"+strings.TrimLeft(root, "/")+"/"+path, nil)
}

var epochLine = regexp.MustCompile(`^epoch (\d+)/(\d+) train_loss=\d+\.\d{4} test_loss=\d+\.\d{4} test_accuracy=[01]\.\d{4}$`)

func TestStandaloneCreatesAndEndsItsRun(t *testing.T) {
	base := startPlinth(t)
	out := t.TempDir()
	env := map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": adminKey,
		"MLFLOW_EXPERIMENT_NAME": "fraud-baseline", "GIT_COMMIT": "0123abcd"}
	stdout, _ := runProgram(t, env, "--out", out)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 20 || !epochLine.MatchString(lines[0]) || !strings.HasPrefix(lines[19], "epoch 20/20 ") {
		t.Fatalf("stdout:\n%s", stdout)
	}
	// Again, with the experiment now there: the same seed gives the same model.
	runProgram(t, env)

	exp := mlflow(t, base, "GET", "experiments/get-by-name?experiment_name=fraud-baseline", nil)["experiment"].(map[string]any)
	runs := mlflow(t, base, "POST", "runs/search", map[string]any{"experiment_ids": []any{exp["experiment_id"]}})["runs"].([]any)
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	var models [][]byte
	for _, rr := range runs {
		r := getRun(t, base, rr.(map[string]any)["info"].(map[string]any)["run_id"].(string))
		id := r.Run.Info.RunID
		if r.Run.Info.Status != "FINISHED" {
			t.Errorf("run %s status %s, want FINISHED", id, r.Run.Info.Status)
		}
		want := map[string]string{"epochs": "20", "lr": "0.1", "l2": "0", "batch_size": "32", "n_features": "5", "n_train": "800", "n_test": "200"}
		if got := asMap(r.Run.Data.Params); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("params %v, want %v", got, want)
		}
		tags := asMap(r.Run.Data.Tags)
		if tags["mlflow.source.type"] != "LOCAL" || tags["mlflow.source.git.commit"] != "0123abcd" || tags["mlflow.source.name"] == "" {
			t.Errorf("tags %v", tags)
		}
		in := r.Run.Inputs.DatasetInputs
		if len(in) != 1 || in[0].Dataset.Name != "synthetic" || len(in[0].Dataset.Digest) != 16 || in[0].Dataset.SourceType != "local" ||
			in[0].Dataset.Source != `{"uri":"synthetic:seed=1"}` || asMap(in[0].Tags)["mlflow.data.context"] != "training" {
			t.Errorf("inputs %+v", in)
		}
		acc := history(t, base, id, "test_accuracy")
		if len(acc) != 20 || acc[1] == 0 || acc[20] <= 0.8 {
			t.Errorf("test_accuracy by step: %v; want steps 1-20 ending above 0.8", acc)
		}
		if n := len(history(t, base, id, "train_loss")); n != 20 {
			t.Errorf("%d train_loss values", n)
		}
		models = append(models, artifact(t, base, r, "model/model.json"))
	}
	if !bytes.Equal(models[0], models[1]) {
		t.Errorf("same seed, different models:\n%s\n%s", models[0], models[1])
	}
	local, err := os.ReadFile(filepath.Join(out, "model.json"))
	if err != nil || !bytes.Equal(local, models[0]) {
		t.Errorf("--out model.json (%v) differs from the artifact", err)
	}
	var model struct {
		NFeatures int `json:"n_features"`
		Weights   []float64
		Metrics   map[string]float64
	}
	if err := json.Unmarshal(local, &model); err != nil || model.NFeatures != 5 || len(model.Weights) != 5 || model.Metrics["test_accuracy"] <= 0.8 {
		t.Errorf("model.json: %v %+v", err, model)
	}
	if _, err := os.Stat(filepath.Join(out, "metrics.json")); err != nil {
		t.Error(err)
	}
}

// writeCSV writes rows of a linear rule over features of very different
// scales (which only trains well if features are standardised).
func writeCSV(t *testing.T, path string, rows int, seed float64) []byte {
	t.Helper()
	var b strings.Builder
	b.WriteString("amount,age,hour,is_fraud\n")
	for i := range rows {
		x := float64(i)*0.7548776662 + seed
		amount, age, hour := 1000*(x-float64(int(x))), 18+float64(i*37%60), float64(i*13%24)
		label := 0
		if amount/1000+0.4*(hour/24) > 0.7 {
			label = 1
		}
		fmt.Fprintf(&b, "%.2f,%g,%g,%d\n", amount, age, hour, label)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return []byte(b.String())
}

func TestJobModeLogsIntoTheGivenRunAndLeavesItRunning(t *testing.T) {
	base := startPlinth(t)
	fetch(t, "POST", base+"/api/v1/workspaces", map[string]any{"name": "teama"})
	ws := base + "/w/teama"
	runID := mlflow(t, ws, "POST", "runs/create", map[string]any{"experiment_id": "0"})["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)

	dir := filepath.Join(t.TempDir(), "transactions")
	os.Mkdir(dir, 0o755)
	train := writeCSV(t, filepath.Join(dir, "train.csv"), 400, 0.1)
	writeCSV(t, filepath.Join(dir, "test.csv"), 100, 0.3)
	env := map[string]string{"MLFLOW_TRACKING_URI": ws + "/", "MLFLOW_TRACKING_TOKEN": adminKey, "MLFLOW_RUN_ID": runID, "MLFLOW_EXPERIMENT_ID": "0"}
	stdout, _ := runProgram(t, env, "--data", dir, "--data-uri", "data:transactions:3", "--epochs", "30", "--lr", "0.5", "--batch-size", "16")

	r := getRun(t, ws, runID)
	if r.Run.Info.Status != "RUNNING" {
		t.Errorf("status %s: the job runner, not the program, ends the run", r.Run.Info.Status)
	}
	if p := asMap(r.Run.Data.Params); p["n_train"] != "400" || p["n_test"] != "100" || p["n_features"] != "3" || p["batch_size"] != "16" {
		t.Errorf("params %v", p)
	}
	if tags := asMap(r.Run.Data.Tags); tags["mlflow.source.type"] != "JOB" || tags["mlflow.source.git.commit"] != "" {
		t.Errorf("tags %v", tags)
	}
	sum := sha256.Sum256(train)
	if in := r.Run.Inputs.DatasetInputs; len(in) != 1 || in[0].Dataset.Name != "transactions" ||
		in[0].Dataset.Digest != hex.EncodeToString(sum[:])[:16] || in[0].Dataset.Source != `{"uri":"data:transactions:3"}` {
		t.Errorf("inputs %+v", in)
	}
	if acc := history(t, ws, runID, "test_accuracy"); len(acc) != 30 || acc[30] < 0.9 {
		t.Errorf("test_accuracy %v; stdout:\n%s", acc, stdout)
	}
	var model struct{ Features []string }
	if err := json.Unmarshal(artifact(t, ws, r, "model/model.json"), &model); err != nil || strings.Join(model.Features, ",") != "amount,age,hour" {
		t.Errorf("model artifact: %v %v", err, model)
	}
}

func TestSIGTERMStopsAfterTheEpochAndLogsWhatItHas(t *testing.T) {
	base := startPlinth(t)
	cmd := command(map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": adminKey},
		"--epochs", "100000", "--sleep-per-epoch", "20ms")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var printed atomic.Int32
	started, eof := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			if printed.Add(1) == 5 {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("no epochs printed; stderr:\n%s", stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-eof: // every line is read before Wait closes the pipe
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("still running 10s after SIGTERM")
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 143 {
		t.Fatalf("exit: %v, want code 143; stderr:\n%s", err, stderr.String())
	}

	runs := mlflow(t, base, "POST", "runs/search", map[string]any{"experiment_ids": []string{"0"}})["runs"].([]any)
	if len(runs) != 1 {
		t.Fatalf("%d runs", len(runs))
	}
	id := runs[0].(map[string]any)["info"].(map[string]any)["run_id"].(string)
	r := getRun(t, base, id)
	if r.Run.Info.Status != "KILLED" {
		t.Errorf("status %s, want KILLED", r.Run.Info.Status)
	}
	acc := history(t, base, id, "test_accuracy")
	if n := len(acc); n < 5 || n >= 100000 || int32(n) != printed.Load() {
		t.Errorf("%d test_accuracy values logged, %d epochs printed", n, printed.Load())
	}
	if !strings.Contains(stderr.String(), "stopped by terminated after") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

// TestFailures runs the program in-process: these end before any signal
// or training matters.
func TestFailures(t *testing.T) {
	base := startPlinth(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"bad key", map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": "plk_wrong"}, nil, 1, "HTTP 401 UNAUTHENTICATED"},
		{"unknown run", map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": adminKey, "MLFLOW_RUN_ID": "0123456789abcdef0123456789abcdef"}, nil, 1, "RESOURCE_DOES_NOT_EXIST"},
		{"unknown experiment", map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": adminKey, "MLFLOW_EXPERIMENT_ID": "999"}, nil, 1, "RESOURCE_DOES_NOT_EXIST"},
		{"no tracking URI", map[string]string{}, nil, 1, "MLFLOW_TRACKING_URI must be"},
		{"bad flag", map[string]string{}, []string{"--epochs", "0"}, 2, "want --epochs"},
		{"missing data", map[string]string{"MLFLOW_TRACKING_URI": base}, []string{"--data", "/nonexistent.csv"}, 1, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, func(k string) string { return tc.env[k] }, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
		})
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	defer func(b time.Duration) { backoff = b }(backoff)
	backoff = time.Millisecond
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case strings.HasSuffix(r.URL.Path, "/bad"):
			w.WriteHeader(400)
			io.WriteString(w, `{"error_code":"INVALID_PARAMETER_VALUE","message":"no"}`)
		case n <= 2:
			w.WriteHeader(503)
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	defer hs.Close()
	c, _ := newClient(func(k string) string { return map[string]string{"MLFLOW_TRACKING_URI": hs.URL}[k] }, io.Discard)
	var out struct{ OK bool }
	if err := c.call("POST", "good", map[string]int{}, &out); err != nil || !out.OK || calls.Load() != 3 {
		t.Errorf("err %v, out %v after %d calls; want success on the third", err, out, calls.Load())
	}
	calls.Store(0)
	err := c.call("POST", "bad", nil, nil)
	var e *apiError
	if !errors.As(err, &e) || e.Code != "INVALID_PARAMETER_VALUE" || e.Message != "no" || calls.Load() != 1 {
		t.Errorf("err %v after %d calls; want the server's error, not retried", err, calls.Load())
	}
}

func TestLoadDataSplitsAndChecks(t *testing.T) {
	dir := t.TempDir()
	writeCSV(t, filepath.Join(dir, "all.csv"), 50, 0)
	d, err := loadData(dir, 7)
	if err != nil || len(d.train.y) != 40 || len(d.test.y) != 10 || d.name != filepath.Base(dir) {
		t.Fatalf("%v: %d/%d rows", err, len(d.train.y), len(d.test.y))
	}
	os.WriteFile(filepath.Join(dir, "all.csv"), []byte("a,b,label\n1,2,0\n3,4,2\n"), 0o644)
	if _, err := loadData(dir, 7); err == nil || !strings.Contains(err.Error(), "all.csv:3: label 2 is not 0 or 1") {
		t.Errorf("err %v", err)
	}
	os.WriteFile(filepath.Join(dir, "all.csv"), []byte("a,b,label\n1,2,0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "more.csv"), []byte("a,c,label\n1,2,0\n"), 0o644)
	if _, err := loadData(dir, 7); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("err %v", err)
	}
}

func TestRegistersTheModel(t *testing.T) {
	base := startPlinth(t)
	env := map[string]string{"MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_TOKEN": adminKey}
	for want := 1; want <= 2; want++ {
		stdout, _ := runProgram(t, env, "--epochs", "2", "--register-model", "fraud")
		m := regexp.MustCompile(`(?m)^registered model fraud version (\d+) \(runs:/([0-9a-f]{32})/model\)$`).FindStringSubmatch(stdout)
		if m == nil || m[1] != fmt.Sprint(want) {
			t.Fatalf("stdout:\n%s", stdout)
		}
		v := mlflow(t, base, "GET", "model-versions/get?name=fraud&version="+m[1], nil)["model_version"].(map[string]any)
		if v["run_id"] != m[2] || v["source"] != "runs:/"+m[2]+"/model" {
			t.Errorf("version %s: %v", m[1], v)
		}
	}
}
