package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/local"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/server"
	"github.com/plinth-dev/plinth/internal/workload"
)

// runnerEnv makes this test binary act as `plinth workload run`, the
// program a remote executor's containers start.
const runnerEnv = "PLINTH_TEST_WORKLOAD_RUNNER"

func TestMain(m *testing.M) {
	if os.Getenv(runnerEnv) == "1" {
		run, err := workload.FromEnv()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(workload.ExitStageFailed)
		}
		os.Exit((&workload.Runner{Run: run, Stdout: os.Stdout, Stderr: os.Stderr}).Exec(context.Background()))
	}
	os.Exit(m.Run())
}

// stagingExecutor is the local executor posing as a remote one: work that
// comes with a Stage runs under the workload runner, which must fetch
// everything through the API, as it would in a pod.
type stagingExecutor struct{ executor.Executor }

func (e stagingExecutor) Capabilities() executor.Capabilities {
	c := e.Executor.Capabilities()
	c.Remote = true
	return c
}

func (e stagingExecutor) Start(ctx context.Context, spec executor.Spec) (executor.Handle, error) {
	if spec.Stage == nil {
		return executor.Handle{}, fmt.Errorf("work for a remote executor came without a stage: %s", spec.ID)
	}
	if err := spec.Validate(); err != nil {
		return executor.Handle{}, err
	}
	raw, err := json.Marshal(executor.StagedRun{Stage: *spec.Stage, Command: spec.Command, Shell: spec.Shell, Dir: spec.Dir})
	if err != nil {
		return executor.Handle{}, err
	}
	env := maps.Clone(spec.Env)
	env[executor.StagedRunEnv], env[runnerEnv] = string(raw), "1"
	if _, ok := env["PATH"]; ok {
		return executor.Handle{}, fmt.Errorf("the server's PATH leaked into remote work")
	}
	env["PATH"] = os.Getenv("PATH") // the "image's" PATH
	self, _ := os.Executable()
	spec.Env, spec.Command, spec.Shell, spec.Dir, spec.Stage = env, []string{self}, "", "", nil
	return e.Executor.Start(ctx, spec)
}

// startStaging runs a server whose work goes through stagingExecutor, and
// returns it with the folder that plays the containers' /plinth/work.
func startStaging(t *testing.T) (*env, string) {
	t.Helper()
	dir := t.TempDir()
	exe, err := local.New(context.Background(), filepath.Join(dir, "executor"))
	if err != nil {
		t.Fatal(err)
	}
	e := startWith(t, server.Config{DataDir: dir, BootstrapKey: adminKey, ExecutorImpl: stagingExecutor{exe}})
	container := t.TempDir()
	e.srv.Jobs.RemoteWorkDir = container
	e.srv.Controller.RemoteModelDir = container
	return e, container
}

// TestStagedJob runs examples/train as a job on an executor whose work
// cannot see the server's files: the runner fetches the code snapshot and
// the data input with the run token, the command runs with paths inside
// its own directory, and the output is uploaded into the run's artifacts
// and registered as data, exactly as on the local executor.
func TestStagedJob(t *testing.T) {
	e, container := startStaging(t)
	c := client.New(e.url, e.admin)

	bin := filepath.Join(t.TempDir(), "train")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/train").CombinedOutput(); err != nil {
		t.Fatalf("building examples/train: %v\n%s", err, out)
	}
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "train.csv"), transactionsCSV(200))
	if _, err := c.UploadData(context.Background(), "default", "transactions", data, client.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "code", "check.sh"), "test -f \"$1/train.csv\" && pwd > \"$2\"\n")
	file := writeFile(t, filepath.Join(src, "job.yml"), fmt.Sprintf(`type: command
name: staged-train-1
experiment_name: fraud
code: ./code
command: >-
  sh check.sh ${{inputs.transactions}} ${{outputs.where}} &&
  %s --data ${{inputs.transactions}} --epochs 3 --out ${{outputs.model}}
inputs:
  transactions:
    type: uri_folder
    path: data:transactions@latest
outputs:
  model:
    type: uri_folder
    name: staged-model
  where:
    type: uri_file
resources:
  instance_type: local-cpu-small
limits:
  timeout: 300
`, bin))
	j := submit(t, c, "default", file)
	done := waitJob(t, c, j.ID, 2*time.Minute)
	var logs strings.Builder
	_ = c.JobLogs(context.Background(), "default", j.ID, false, &logs)
	if done.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %s\n%s", done.Status, done.Reason, logs.String())
	}
	if !strings.Contains(logs.String(), "plinth workload: fetched 2 inputs") || !strings.Contains(logs.String(), "epoch 3/3") {
		t.Fatalf("logs do not show the staging and the training:\n%s", logs.String())
	}
	// The command ran in the container's code folder, not the server's.
	where := e.must(200, "GET", "/api/2.0/mlflow-artifacts/artifacts/"+strings.TrimPrefix(runArtifactRoot(t, e, j.ID), "mlflow-artifacts:/")+"/outputs/where", e.admin, nil)
	if got := strings.TrimSpace(string(where.raw)); got != filepath.Join(container, "code") {
		t.Fatalf("the command ran in %q, want %q", got, filepath.Join(container, "code"))
	}
	arts := e.must(200, "GET", "/api/2.0/mlflow/artifacts/list?run_id="+j.ID+"&path=outputs/model", e.admin, nil)
	if !strings.Contains(string(arts.raw), "model.json") {
		t.Fatalf("output not uploaded into the run's artifacts: %s", arts.raw)
	}
	out, err := c.GetDataVersion(context.Background(), "default", "staged-model", "1")
	if err != nil || out.SourceRunID != j.ID {
		t.Fatalf("output registered as data: %v %+v", err, out)
	}
	run := e.must(200, "GET", "/api/2.0/mlflow/runs/get?run_id="+j.ID, e.admin, nil)
	if !strings.Contains(string(run.raw), `"key":"test_accuracy"`) || !strings.Contains(string(run.raw), `"status":"FINISHED"`) {
		t.Fatalf("the run: %s", run.raw)
	}

	// Run artifacts as inputs: a folder and a single file.
	reuse := writeFile(t, filepath.Join(src, "reuse.yml"), fmt.Sprintf(`type: command
name: staged-reuse-1
command: test -f ${{inputs.model}}/model.json && test "$(cat ${{inputs.where}})" = %q
inputs:
  model:
    type: uri_folder
    path: runs:/%s/outputs/model
  where:
    type: uri_file
    path: runs:/%s/outputs/where
resources:
  instance_type: local-cpu-small
`, filepath.Join(container, "code"), j.ID, j.ID))
	jr := submit(t, c, "default", reuse)
	if got := waitJob(t, c, jr.ID, time.Minute); got.Status != jobs.StatusCompleted {
		logs.Reset()
		_ = c.JobLogs(context.Background(), "default", jr.ID, false, &logs)
		t.Fatalf("job reading run artifacts: %s %s\n%s", got.Status, got.Reason, logs.String())
	}

	// A failing command uploads nothing and keeps its exit code.
	bad := writeFile(t, filepath.Join(src, "bad.yml"), `type: command
name: staged-bad-1
command: echo partial > ${{outputs.out}}/x.txt; exit 3
outputs:
  out:
    type: uri_folder
    name: never
resources:
  instance_type: local-cpu-small
`)
	jb := submit(t, c, "default", bad)
	failed := waitJob(t, c, jb.ID, time.Minute)
	if failed.Status != jobs.StatusFailed || failed.ExitCode == nil || *failed.ExitCode != 3 {
		t.Fatalf("failing job: %s %v %s", failed.Status, failed.ExitCode, failed.Reason)
	}
	if _, err := c.GetDataVersion(context.Background(), "default", "never", "1"); err == nil {
		t.Fatal("a failed job's output was registered")
	}
}

func runArtifactRoot(t *testing.T, e *env, runID string) string {
	t.Helper()
	r := e.must(200, "GET", "/api/2.0/mlflow/runs/get?run_id="+runID, e.admin, nil)
	info, _ := r.body["run"].(map[string]any)["info"].(map[string]any)
	uri, _ := info["artifact_uri"].(string)
	if uri == "" {
		t.Fatalf("no artifact_uri: %s", r.raw)
	}
	return uri
}

// TestStagedReplicaModel serves a registered model from a replica whose
// files are not on the server: the replica's runner fetches the model,
// nested folders included, with a token of its own (a run token bound to no
// run, so it cannot write), which is revoked when the replica stops.
func TestStagedReplicaModel(t *testing.T) {
	e, container := startStaging(t)
	startEndpoints(t, e)
	script := writeFile(t, filepath.Join(t.TempDir(), "serve.py"), modelServer)

	run := e.must(200, "POST", "/api/2.0/mlflow/runs/create", e.admin, map[string]any{"experiment_id": "0"})
	info := run.body["run"].(map[string]any)["info"].(map[string]any)
	art := strings.TrimPrefix(info["artifact_uri"].(string), "mlflow-artifacts:/")
	e.must(200, "PUT", "/api/2.0/mlflow-artifacts/artifacts/"+art+"/model/MLmodel", e.admin, "flavors: {}\n")
	e.must(200, "PUT", "/api/2.0/mlflow-artifacts/artifacts/"+art+"/model/weights/w.bin", e.admin, "0123")
	e.must(200, "POST", "/api/2.0/mlflow/registered-models/create", e.admin, map[string]any{"name": "fraud"})
	e.must(200, "POST", "/api/2.0/mlflow/model-versions/create", e.admin, map[string]any{"name": "fraud", "source": "runs:/" + info["run_id"].(string) + "/model"})

	created := e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "fraud", "traffic": map[string]int{}})
	key := created.body["keys"].(map[string]any)["primary_key"].(string)
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/blue", e.admin, map[string]any{
		"command": "exec python3 " + script, "instance_type": "local-cpu-small", "model": "models:/fraud/1",
		"readiness_probe": map[string]any{"period": 1, "failure_threshold": 30}})
	waitReady(t, e, "blue", 1)
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 100}})
	time.Sleep(300 * time.Millisecond)
	code, out, _, err := score(e.url+"/endpoints/fraud/score", key, `{}`)
	if err != nil || code != 200 || fmt.Sprint(out["model"]) != "[MLmodel weights]" {
		t.Fatalf("scoring the staged model: %v %d %v", err, code, out)
	}
	if b, err := os.ReadFile(filepath.Join(container, "weights", "w.bin")); err != nil || string(b) != "0123" {
		t.Fatalf("the model's nested file: %v %q", err, b)
	}

	// The replica has one token, and it dies with the replica.
	keys := e.must(200, "GET", "/api/v1/keys", e.admin, nil)
	var live int
	for _, k := range keys.body["keys"].([]any) {
		k := k.(map[string]any)
		if strings.HasPrefix(fmt.Sprint(k["run_id"]), "replica-") && k["revoked_at"] == nil {
			live++
		}
	}
	if live != 1 {
		t.Fatalf("%d live replica tokens, want 1: %s", live, keys.raw)
	}
	e.must(204, "DELETE", "/api/v1/workspaces/default/endpoints/fraud", e.admin, nil)
	waitFor(t, "the replica's token revoked", 20*time.Second, func() bool {
		keys := e.must(200, "GET", "/api/v1/keys", e.admin, nil)
		for _, k := range keys.body["keys"].([]any) {
			k := k.(map[string]any)
			if strings.HasPrefix(fmt.Sprint(k["run_id"]), "replica-") && k["revoked_at"] == nil {
				return false
			}
		}
		return true
	})
}
