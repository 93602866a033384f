// Command serve is a model server for the model that examples/train makes:
// it loads model.json from the model directory Plinth gives a deployment's
// replicas and scores rows over HTTP, with only Go's standard library. It
// follows Plinth's serving contract (any process that serves HTTP on $PORT),
// so a deployment runs it as its command:
//
//	name: blue
//	endpoint_name: fraud
//	model: models:/fraud/1
//	command: exec /path/to/serve
//	instance_type: local-cpu-small
//
// Environment:
//
//	PORT                the port to listen on (required; Plinth sets it)
//	AZUREML_MODEL_DIR   the model's files (Plinth sets it and MODEL_DIR to the
//	                    registered version's artifacts); model.json is looked
//	                    for there and in its subdirectories
//	PLINTH_DEPLOYMENT   named in every answer, so a traffic split is visible
//
// Routes (Plinth's defaults for a deployment's routes):
//
//	GET  /        liveness: 200 while the process serves
//	GET  /ready   readiness: 200 once the model is loaded (it is loaded before
//	              the server listens, so always)
//	POST /score   {"amount": 950, "hour": 3, "age": 30} scores one row; {"data":
//	              [row, ...]} scores many, each row an object of feature values
//	              or an array in the model's feature order. The answer is
//	              {"deployment": "blue", "predictions": [{"label": 1,
//	              "probability": 0.97}]}. A missing, unknown or non-numeric
//	              feature is a 400 naming it.
//
// SIGTERM and SIGINT stop it gracefully: calls in flight finish first.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// model is model.json as examples/train writes it: logistic regression on
// standardised features.
type model struct {
	Type      string    `json:"type"`
	Features  []string  `json:"features"`
	Weights   []float64 `json:"weights"`
	Bias      float64   `json:"bias"`
	Mean      []float64 `json:"mean"`
	Std       []float64 `json:"std"`
	NFeatures int       `json:"n_features"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("serve: ")
	if err := run(os.Getenv); err != nil {
		log.Fatal(err)
	}
}

func run(getenv func(string) string) error {
	dir := cmp.Or(getenv("AZUREML_MODEL_DIR"), getenv("MODEL_DIR"))
	if dir == "" {
		return errors.New("no model directory: set AZUREML_MODEL_DIR or MODEL_DIR (Plinth sets both for a deployment with a model)")
	}
	port := getenv("PORT")
	if port == "" {
		return errors.New("PORT is not set: the port to listen on")
	}
	m, path, err := load(dir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", port))
	if err != nil {
		return err
	}
	log.Printf("%s with features %v from %s; listening on %s", m.Type, m.Features, path, ln.Addr())

	srv := &http.Server{Handler: handler(m, getenv("PLINTH_DEPLOYMENT")), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// load finds model.json in dir or below it and checks it.
func load(dir string) (*model, string, error) {
	var path string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "model.json" {
			path = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("looking for model.json: %w", err)
	}
	if path == "" {
		return nil, "", fmt.Errorf("no model.json in %s: deploy a model registered by examples/train", dir)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var m model
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	k := len(m.Features)
	if m.Type != "logistic_regression" || k == 0 || len(m.Weights) != k || len(m.Mean) != k || len(m.Std) != k {
		return nil, "", fmt.Errorf("%s: not a logistic_regression model with one weight, mean and std per feature", path)
	}
	return &m, path, nil
}

// probability is sigmoid(bias + sum_j weights[j]*(x[j]-mean[j])/std[j]).
func (m *model) probability(x []float64) float64 {
	z := m.Bias
	for j, v := range x {
		z += m.Weights[j] * (v - m.Mean[j]) / m.Std[j]
	}
	return 1 / (1 + math.Exp(-z))
}

// row turns one input row (an object of feature values, or an array in
// feature order) into the feature vector.
func (m *model) row(raw json.RawMessage) ([]float64, error) {
	var arr []float64
	if json.Unmarshal(raw, &arr) == nil {
		if len(arr) != len(m.Features) {
			return nil, fmt.Errorf("a row of %d values; the model takes %d: %v", len(arr), len(m.Features), m.Features)
		}
		return arr, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, errors.New("a row is an object of feature values or an array of numbers")
	}
	x := make([]float64, len(m.Features))
	for j, f := range m.Features {
		v, ok := obj[f]
		if !ok {
			return nil, fmt.Errorf("missing feature %q (the model takes %v)", f, m.Features)
		}
		if err := json.Unmarshal(v, &x[j]); err != nil {
			return nil, fmt.Errorf("feature %q: %s is not a number", f, v)
		}
		delete(obj, f)
	}
	for f := range obj {
		return nil, fmt.Errorf("unknown feature %q (the model takes %v)", f, m.Features)
	}
	return x, nil
}

type prediction struct {
	Label       int     `json:"label"`
	Probability float64 `json:"probability"`
}

func handler(m *model, deployment string) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	mux.HandleFunc("GET /{$}", ok)
	mux.HandleFunc("GET /ready", ok)
	mux.HandleFunc("POST /score", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
		if err != nil {
			reply(w, http.StatusRequestEntityTooLarge, map[string]string{"error": err.Error()})
			return
		}
		var batch struct {
			Data []json.RawMessage `json:"data"`
		}
		rows := []json.RawMessage{body}
		if json.Unmarshal(body, &batch) == nil && batch.Data != nil {
			rows = batch.Data
		}
		out := make([]prediction, 0, len(rows))
		for i, raw := range rows {
			x, err := m.row(raw)
			if err != nil {
				if len(rows) > 1 || batch.Data != nil {
					err = fmt.Errorf("row %d: %w", i, err)
				}
				reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			p := m.probability(x)
			label := 0
			if p >= 0.5 {
				label = 1
			}
			out = append(out, prediction{Label: label, Probability: math.Round(p*1e4) / 1e4})
		}
		reply(w, http.StatusOK, map[string]any{"deployment": deployment, "predictions": out})
	})
	return mux
}

func reply(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
