// Command train is a small but real training program that logs to any MLflow
// tracking server, Plinth included, over the MLflow REST API with only Go's
// standard library. It trains logistic regression by mini-batch gradient
// descent and logs params, per-epoch metrics, tags, its input data set and
// the model (run artifact model/model.json, through the mlflow-artifacts proxy).
//
// Flags:
//
//	--data PATH          CSV file or directory of *.csv: a header, numeric features,
//	                     a 0/1 label last. In a directory train*.csv train and
//	                     test*.csv evaluate; with no test files 20% of the rows are
//	                     held out. Without --data: a synthetic set made from --seed.
//	--data-uri URI       the input data set's recorded source, e.g. data:transactions:3
//	                     (links the run to that Plinth data version); default: the path
//	--epochs N           passes over the training data (default 20)
//	--lr F               learning rate (default 0.1)
//	--l2 F               L2 penalty on the weights (default 0)
//	--batch-size N       mini-batch size (default 32)
//	--seed N             seed of the synthetic data, the split and the shuffling (default 1)
//	--out DIR            also write model.json and metrics.json to DIR
//	--register-model NAME  register the model (run artifact model/) as a new
//	                     version of the MLflow registered model NAME, made if missing
//	--sleep-per-epoch D  (hidden, for tests) sleep D after each epoch, like slow training
//
// Environment, read as MLflow's clients read it:
//
//	MLFLOW_TRACKING_URI     http(s) URL of the server (required), e.g. http://host/w/teamA
//	MLFLOW_TRACKING_TOKEN   bearer token; else MLFLOW_TRACKING_USERNAME/PASSWORD (basic auth)
//	MLFLOW_RUN_ID           log into this run and leave ending it to its owner (a job runner)
//	MLFLOW_EXPERIMENT_NAME  otherwise create a run in this experiment (made if missing),
//	MLFLOW_EXPERIMENT_ID    or in this one (default "0"), and end it when done
//	GIT_COMMIT              recorded as the tag mlflow.source.git.commit
//
// It prints one line per epoch. SIGTERM or SIGINT stops it after the current
// epoch; it logs the metrics it has (no model: it is not finished), marks a
// run it made KILLED, and exits 128+signal (143 for SIGTERM). Other
// failures exit 1 with the server's error_code and message; usage errors 2.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	data, dataURI, out string
	registerModel      string
	epochs, batchSize  int
	lr, l2             float64
	seed               uint64
	sleep              time.Duration
}

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

// run is the whole program; it returns the exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.data, "data", "", "CSV file or directory of CSVs, 0/1 label last (default: synthetic data)")
	fs.StringVar(&o.dataURI, "data-uri", "", "source URI recorded for the input data set (default: the --data path)")
	fs.IntVar(&o.epochs, "epochs", 20, "passes over the training data")
	fs.Float64Var(&o.lr, "lr", 0.1, "learning rate")
	fs.Float64Var(&o.l2, "l2", 0, "L2 penalty")
	fs.IntVar(&o.batchSize, "batch-size", 32, "mini-batch size")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the synthetic data, the split and the shuffling")
	fs.StringVar(&o.out, "out", "", "directory to write model.json and metrics.json to")
	fs.StringVar(&o.registerModel, "register-model", "", "register the model as a new version of this registered model")
	fs.DurationVar(&o.sleep, "sleep-per-epoch", 0, "")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: train [flags]\nTrains logistic regression and logs it to $MLFLOW_TRACKING_URI (auth: MLFLOW_TRACKING_TOKEN,\n",
			"or MLFLOW_TRACKING_USERNAME/PASSWORD), into MLFLOW_RUN_ID if set, else a run it makes and ends\n",
			"in MLFLOW_EXPERIMENT_NAME or MLFLOW_EXPERIMENT_ID (default 0). GIT_COMMIT is recorded.\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Usage == "" { // --sleep-per-epoch is a test hook, not shown
				return
			}
			if fmt.Fprintf(stderr, "  --%-11s %s", f.Name, f.Usage); f.DefValue != "" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.epochs < 1 || o.batchSize < 1 || !(o.lr > 0) || !(o.l2 >= 0) || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "train: want --epochs, --batch-size and --lr positive, --l2 >= 0, and no arguments")
		return 2
	}

	// A cancelled job gets SIGTERM: finish the epoch, log, leave promptly.
	// A second signal kills at once, as users expect of Ctrl-C.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sig atomic.Int32
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			sig.Store(int32(s.(syscall.Signal)))
			signal.Reset(syscall.SIGTERM, os.Interrupt)
			cancel()
		case <-ctx.Done():
		}
	}()

	done, err := train(ctx, o, getenv, stdout, stderr)
	if s := syscall.Signal(sig.Load()); s != 0 && errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "train: stopped by %v after %d epochs\n", s, done)
		return 128 + int(s)
	} else if err != nil {
		fmt.Fprintln(stderr, "train:", err)
		return 1
	}
	return 0
}

// train logs to a run, trains, and returns the number of epochs done.
func train(ctx context.Context, o options, getenv func(string) string, stdout, stderr io.Writer) (done int, err error) {
	mlf, err := newClient(getenv, stderr)
	if err != nil {
		return 0, err
	}
	d, err := loadData(o.data, o.seed)
	if err != nil {
		return 0, err
	}

	// With MLFLOW_RUN_ID the run belongs to whoever made it (the job runner
	// sets its status from our exit code); otherwise we make it and must end
	// it, or it would stay RUNNING for ever.
	runID, source := getenv("MLFLOW_RUN_ID"), "JOB"
	if runID == "" {
		source = "LOCAL"
		if runID, err = mlf.createRun(getenv); err != nil {
			return 0, err
		}
		defer func() {
			status := "FINISHED"
			if errors.Is(err, context.Canceled) {
				status = "KILLED"
			} else if err != nil {
				status = "FAILED"
			}
			err = cmp.Or(err, mlf.call("POST", "runs/update", map[string]any{"run_id": runID, "status": status, "end_time": time.Now().UnixMilli()}, nil))
		}()
	}
	fmt.Fprintf(stderr, "train: logging to run %s at %s\n", runID, mlf.base)
	var got struct {
		Run struct {
			Info struct {
				ArtifactURI string `json:"artifact_uri"`
			}
		} `json:"run"`
	}
	if err := mlf.call("GET", "runs/get?run_id="+url.QueryEscape(runID), nil, &got); err != nil {
		return 0, err
	}

	// Params and tags in one log-batch call, then the input data set.
	params := []kv{{"epochs", fmt.Sprint(o.epochs)}, {"lr", fmt.Sprint(o.lr)}, {"l2", fmt.Sprint(o.l2)},
		{"batch_size", fmt.Sprint(o.batchSize)}, {"n_features", fmt.Sprint(len(d.features))},
		{"n_train", fmt.Sprint(len(d.train.y))}, {"n_test", fmt.Sprint(len(d.test.y))}}
	tags := []kv{{"mlflow.source.name", filepath.Base(os.Args[0])}, {"mlflow.source.type", source}}
	if c := getenv("GIT_COMMIT"); c != "" {
		tags = append(tags, kv{"mlflow.source.git.commit", c})
	}
	if err := mlf.call("POST", "runs/log-batch", map[string]any{"run_id": runID, "params": params, "tags": tags}, nil); err != nil {
		return 0, err
	}
	src, _ := json.Marshal(map[string]string{"uri": cmp.Or(o.dataURI, d.source)})
	ds := map[string]string{"name": d.name, "digest": d.digest, "source_type": "local", "source": string(src)}
	if err := mlf.call("POST", "runs/log-inputs", map[string]any{"run_id": runID, "datasets": []any{
		map[string]any{"tags": []kv{{"mlflow.data.context", "training"}}, "dataset": ds}}}, nil); err != nil {
		return 0, err
	}

	// Metrics go in log-batch calls of at most MLflow's 1000: a fast loop
	// must not make a request per value, yet whoever watches a slow job
	// wants fresh numbers, so they are sent at most once a second.
	var pending []map[string]any
	var sent time.Time
	flush := func(force bool) error {
		for len(pending) > 0 && (force || len(pending) >= 1000 || time.Since(sent) >= time.Second) {
			n := min(len(pending), 1000)
			if err := mlf.call("POST", "runs/log-batch", map[string]any{"run_id": runID, "metrics": pending[:n]}, nil); err != nil {
				return err
			}
			pending, sent = pending[n:], time.Now()
		}
		return nil
	}
	m := newModel(d.train, o.seed)
	var final map[string]float64
	for done < o.epochs && ctx.Err() == nil {
		m.epoch(d.train, o)
		done++
		final = map[string]float64{"train_loss": m.loss(d.train), "test_loss": m.loss(d.test), "test_accuracy": m.accuracy(d.test)}
		fmt.Fprintf(stdout, "epoch %d/%d train_loss=%.4f test_loss=%.4f test_accuracy=%.4f\n",
			done, o.epochs, final["train_loss"], final["test_loss"], final["test_accuracy"])
		now := time.Now().UnixMilli()
		for _, k := range []string{"train_loss", "test_loss", "test_accuracy"} {
			pending = append(pending, map[string]any{"key": k, "value": final[k], "timestamp": now, "step": done})
		}
		if err := flush(false); err != nil {
			return done, err
		}
		if o.sleep > 0 && done < o.epochs {
			select {
			case <-ctx.Done():
			case <-time.After(o.sleep):
			}
		}
	}
	if err := flush(true); err != nil || done < o.epochs {
		return done, cmp.Or(err, context.Canceled) // cancelled: no model that looks finished
	}

	final["epochs"] = float64(done)
	modelJSON, _ := json.MarshalIndent(m.export(d.features, final), "", "  ")
	if o.out != "" {
		metricsJSON, _ := json.MarshalIndent(final, "", "  ")
		err := os.MkdirAll(o.out, 0o755)
		if err == nil {
			err = os.WriteFile(filepath.Join(o.out, "model.json"), modelJSON, 0o644)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(o.out, "metrics.json"), metricsJSON, 0o644)
		}
		if err != nil {
			return done, err
		}
	}

	// The MLflow client turns mlflow-artifacts:/<path> into the tracking URI,
	// its path kept (http://host/w/teamA), + /api/2.0/mlflow-artifacts/artifacts/<path>.
	u, err := url.Parse(got.Run.Info.ArtifactURI)
	if err != nil || u.Scheme != "mlflow-artifacts" || u.Host != "" {
		fmt.Fprintf(stderr, "train: warning: not uploading model/model.json: artifact URI %q is not mlflow-artifacts:/<path>\n", got.Run.Info.ArtifactURI)
		return done, nil
	}
	path := (&url.URL{Path: strings.Trim(u.Path, "/") + "/model/model.json"}).EscapedPath()
	if _, err = mlf.do("PUT", mlf.base+"/api/2.0/mlflow-artifacts/artifacts/"+path, modelJSON, "application/octet-stream"); err != nil {
		return done, err
	}
	if o.registerModel != "" {
		version, err := mlf.register(o.registerModel, runID)
		if err != nil {
			return done, err
		}
		fmt.Fprintf(stdout, "registered model %s version %s (runs:/%s/model)\n", o.registerModel, version, runID)
	}
	return done, nil
}

// register makes the run's model/ artifacts a new version of a registered
// model, creating the model first if it is missing, as MLflow's
// register_model does; it returns the version number.
func (c *client) register(name, runID string) (string, error) {
	var e *apiError
	err := c.call("POST", "registered-models/create", map[string]string{"name": name}, nil)
	if err != nil && !(errors.As(err, &e) && e.Code == "RESOURCE_ALREADY_EXISTS") {
		return "", err
	}
	var got struct {
		ModelVersion struct {
			Version string `json:"version"`
		} `json:"model_version"`
	}
	err = c.call("POST", "model-versions/create", map[string]string{"name": name, "source": "runs:/" + runID + "/model", "run_id": runID}, &got)
	return got.ModelVersion.Version, err
}

// ---- MLflow REST client ----

type kv struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// client speaks the parts of MLflow's REST API that training needs.
type client struct {
	base string // the tracking URI, path kept: http://host/w/teamA
	auth func(*http.Request)
	http *http.Client
	warn io.Writer // where retries are reported
}

// apiError is an MLflow error answer: {"error_code": ..., "message": ...}.
type apiError struct {
	Method, URL string
	Status      int
	Code        string `json:"error_code"`
	Message     string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s: %s", e.Method, e.URL, e.Status, e.Code, e.Message)
}

// retries and backoff bound how long a flaky server is waited for.
var retries, backoff = 3, 500 * time.Millisecond

func newClient(getenv func(string) string, warn io.Writer) (*client, error) {
	base := strings.TrimRight(getenv("MLFLOW_TRACKING_URI"), "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("MLFLOW_TRACKING_URI must be the http(s) URL of a tracking server, not %q", base)
	}
	c := &client{base: base, auth: func(*http.Request) {}, http: &http.Client{Timeout: 2 * time.Minute}, warn: warn}
	if tok := getenv("MLFLOW_TRACKING_TOKEN"); tok != "" {
		c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	} else if user, pass := getenv("MLFLOW_TRACKING_USERNAME"), getenv("MLFLOW_TRACKING_PASSWORD"); user != "" {
		c.auth = func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	return c, nil
}

// call sends in as JSON to an endpoint below /api/2.0/mlflow/ and decodes
// the answer into out unless it is nil.
func (c *client) call(method, endpoint string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: %w", method, endpoint, err)
		}
	}
	raw, err := c.do(method, c.base+"/api/2.0/mlflow/"+endpoint, body, "application/json")
	if err == nil && out != nil {
		if err = json.Unmarshal(raw, out); err != nil {
			err = fmt.Errorf("%s %s: decoding the answer: %w", method, endpoint, err)
		}
	}
	return err
}

// do sends a request, retrying what may succeed later: failures to connect
// or to read the answer (a server restarting), 429 and 5xx. Anything else
// is the caller's mistake, returned at once as an *apiError. Requests
// ignore the signal's context on purpose: after SIGTERM the program still
// logs what it has; the client's timeout bounds them.
func (c *client) do(method, u string, body []byte, contentType string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", contentType)
		}
		c.auth(req)
		var raw []byte
		res, err := c.http.Do(req)
		if err == nil {
			raw, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		if err == nil && res.StatusCode < 300 {
			return raw, nil
		}
		wait, transient := backoff<<attempt, err != nil
		if err == nil {
			e := &apiError{Method: method, URL: u, Status: res.StatusCode}
			if json.Unmarshal(raw, e) != nil || e.Code == "" { // not MLflow's error shape: say what came
				e.Code, e.Message = "(no error_code)", strings.TrimSpace(string(raw))
			}
			err, transient = e, res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500
			if s, _ := strconv.Atoi(res.Header.Get("Retry-After")); s > 0 {
				wait = min(time.Duration(s)*time.Second, time.Minute) // the server knows best, within reason
			}
		}
		if !transient || attempt >= retries {
			return nil, err
		}
		fmt.Fprintf(c.warn, "train: %v; retrying in %v\n", err, wait)
		time.Sleep(wait)
	}
}

// createRun makes a run as the MLflow client does without MLFLOW_RUN_ID: in
// MLFLOW_EXPERIMENT_NAME (created if missing), else MLFLOW_EXPERIMENT_ID,
// else the Default experiment "0".
func (c *client) createRun(getenv func(string) string) (string, error) {
	type experiment struct {
		ID string `json:"experiment_id"`
	}
	exp := experiment{cmp.Or(getenv("MLFLOW_EXPERIMENT_ID"), "0")}
	if name := getenv("MLFLOW_EXPERIMENT_NAME"); name != "" {
		var got struct{ Experiment experiment }
		var e *apiError
		err := c.call("GET", "experiments/get-by-name?experiment_name="+url.QueryEscape(name), nil, &got)
		exp = got.Experiment
		if errors.As(err, &e) && e.Code == "RESOURCE_DOES_NOT_EXIST" {
			err = c.call("POST", "experiments/create", map[string]string{"name": name}, &exp)
			if errors.As(err, &e) && e.Code == "RESOURCE_ALREADY_EXISTS" { // another process won the race
				return c.createRun(getenv)
			}
		}
		if err != nil {
			return "", err
		}
	}
	var run struct {
		Run struct {
			Info struct {
				RunID string `json:"run_id"`
			}
		} `json:"run"`
	}
	err := c.call("POST", "runs/create", map[string]any{"experiment_id": exp.ID,
		"start_time": time.Now().UnixMilli(), "user_id": getenv("USER")}, &run)
	return run.Run.Info.RunID, err
}
