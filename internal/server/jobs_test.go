package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/compute"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/server"
)

// jobEnv is a server whose catalogue prices local-cpu-small, so cost
// shows.
func jobEnv(t *testing.T) (*env, *client.Client) {
	t.Helper()
	dir := t.TempDir()
	skus := filepath.Join(dir, "skus.yml")
	if err := os.WriteFile(skus, []byte("skus:\n  - name: local-cpu-small\n    price_per_hour: 3.6\n  - name: tiny\n    family: local-cpu\n    vcpus: 1\n    memory_gib: 0.125\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startWith(t, server.Config{DataDir: dir, BootstrapKey: adminKey, SKUFile: skus})
	return e, client.New(e.url, e.admin)
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func submit(t *testing.T, c *client.Client, ws, file string) jobs.Job {
	t.Helper()
	j, err := c.SubmitJob(context.Background(), ws, file, client.SubmitOptions{})
	if err != nil {
		t.Fatalf("submitting %s: %v", file, err)
	}
	return j
}

func waitJob(t *testing.T, c *client.Client, id string, within time.Duration) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	j, err := c.WaitJob(ctx, "default", id)
	if err != nil {
		t.Fatalf("waiting for job %s: %v (last seen %s: %s)", id, err, j.Status, j.Reason)
	}
	return j
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// transactionsCSV is n rows of examples/train's input, one in five fraud.
func transactionsCSV(n int) string {
	var csv strings.Builder
	csv.WriteString("amount,hour,fraud\n")
	for i := range n {
		fraud := 0
		if i%5 == 0 {
			fraud = 1
		}
		fmt.Fprintf(&csv, "%d,%d,%d\n", 10+fraud*900+i%37, (i*7)%24, fraud)
	}
	return csv.String()
}

// TestJobTrainsWithMLflow runs examples/train, an unmodified MLflow-REST
// training program, as a job on serverless compute: it reads a data
// asset, logs into its own run with the run's token, writes an output
// that becomes a data version; its logs, usage and cost land on the run.
func TestJobTrainsWithMLflow(t *testing.T) {
	e, c := jobEnv(t)
	bin := filepath.Join(t.TempDir(), "train")
	build := exec.Command("go", "build", "-o", bin, "../../examples/train")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/train: %v\n%s", err, out)
	}
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "train.csv"), transactionsCSV(400))
	if _, err := c.UploadData(context.Background(), "default", "transactions", data, client.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "code", "README.md"), "training code\n")
	file := writeFile(t, filepath.Join(dir, "job.yml"), fmt.Sprintf(`$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
type: command
name: train-fraud-1
display_name: fraud logistic regression
experiment_name: fraud
code: ./code
command: >-
  %s --data ${{inputs.transactions}} --data-uri data:transactions:1 --epochs ${{inputs.epochs}}
  --out ${{outputs.model}} && test -f README.md
inputs:
  transactions:
    type: uri_folder
    path: data:transactions@latest
  epochs: 8
outputs:
  model:
    type: uri_folder
    name: fraud-model
environment_variables:
  GIT_COMMIT: 4be1f00
resources:
  instance_type: local-cpu-small
limits:
  timeout: 300
`, bin))
	j := submit(t, c, "default", file)
	if j.Status != jobs.StatusQueued || j.Compute != "serverless" || j.CodeDigest == "" {
		t.Fatalf("submitted: %+v", j)
	}
	done := waitJob(t, c, j.ID, 2*time.Minute)
	if done.Status != jobs.StatusCompleted {
		var logs strings.Builder
		_ = c.JobLogs(context.Background(), "default", j.ID, false, &logs)
		t.Fatalf("job ended %s: %s\n%s", done.Status, done.Reason, logs.String())
	}
	if done.Usage.CPUSeconds <= 0 || done.Usage.NodeSeconds <= 0 || done.Cost <= 0 || done.ExitCode == nil || *done.ExitCode != 0 {
		t.Fatalf("usage and cost: %+v cost %v", done.Usage, done.Cost)
	}

	ml := "/api/2.0/mlflow/"
	run := e.must(200, "GET", ml+"runs/get?run_id="+j.ID, e.admin, nil)
	raw := string(run.raw)
	for _, want := range []string{`"status":"FINISHED"`, `"key":"epochs","value":"8"`, `"key":"test_accuracy"`, `"key":"mlflow.source.git.commit","value":"4be1f00"`,
		`"key":"plinth.job.cost"`, `"key":"plinth.job.cpu_seconds"`, `\"uri\":\"data:transactions:1\"`} {
		if !strings.Contains(raw, want) {
			t.Errorf("run lacks %s: %s", want, raw)
		}
	}
	var logs strings.Builder
	if err := c.JobLogs(context.Background(), "default", j.ID, false, &logs); err != nil || !strings.Contains(logs.String(), "epoch 8/8") {
		t.Fatalf("logs: %v %q", err, logs.String())
	}
	arts := e.must(200, "GET", ml+"artifacts/list?run_id="+j.ID+"&path=outputs/model", e.admin, nil)
	if !strings.Contains(string(arts.raw), "model.json") {
		t.Fatalf("output not kept in the run's artifacts: %s", arts.raw)
	}
	out, err := c.GetDataVersion(context.Background(), "default", "fraud-model", "1")
	if err != nil || out.SourceRunID != j.ID || out.Storage != "artifact" {
		t.Fatalf("output registered as data: %v %+v", err, out)
	}
	lin := e.must(200, "GET", "/api/v1/workspaces/default/lineage?node=data:fraud-model:1&direction=up", e.admin, nil)
	if !edgeIn(lin.body, "data:transactions:1", "run:"+j.ID, "input") || !edgeIn(lin.body, "run:"+j.ID, "data:fraud-model:1", "output") {
		t.Fatalf("lineage of the output: %s", lin.raw)
	}
	// The run token is revoked when the job ends.
	keys := e.must(200, "GET", "/api/v1/keys", e.admin, nil)
	if strings.Contains(string(keys.raw), `"run_id":"`+j.ID+`"`) && !strings.Contains(string(keys.raw), "revoked_at") {
		t.Fatalf("the run token outlives the job: %s", keys.raw)
	}
	cost, err := c.Cost(context.Background(), "user", "1h")
	if err != nil || cost.Total <= 0 || len(cost.Rows) != 1 || cost.Rows[0].Key != "admin" {
		t.Fatalf("cost by user: %v %+v", err, cost)
	}
}

// TestJobFailuresHaveReasons: each way a job can go wrong ends in a clear
// status and reason, at submit time when it can never work.
func TestJobFailuresHaveReasons(t *testing.T) {
	e, c := jobEnv(t)
	dir := t.TempDir()
	job := func(name, body string) string {
		return writeFile(t, filepath.Join(dir, name+".yml"), "name: "+name+"\nresources:\n  instance_type: local-cpu-small\n"+body)
	}
	retried := submit(t, c, "default", job("fails-twice", "command: echo attempt $PLINTH_ATTEMPT; exit 3\nretries:\n  max: 1\n  backoff_seconds: 1\n"))
	missing := submit(t, c, "default", job("no-such-command", "command: no-such-command-xyz --flag\n"))
	hungry := submit(t, c, "default", writeFile(t, filepath.Join(dir, "hungry.yml"),
		"name: hungry\nresources:\n  instance_type: tiny\ncommand: python3 -c 'import time; x = bytearray(400 << 20); time.sleep(30)'\n"))
	end := waitJob(t, c, hungry.ID, time.Minute)
	if end.Status != jobs.StatusFailed || !strings.Contains(end.Reason, "exceeding its memory limit") {
		t.Fatalf("a job over its SKU's memory: %s: %s", end.Status, end.Reason)
	}
	// A full disk, as /dev/full answers every write: ENOSPC.
	full := submit(t, c, "default", job("disk-full", "command: dd if=/dev/zero of=/dev/full bs=4k count=1\n"))
	end = waitJob(t, c, full.ID, time.Minute)
	if end.Status != jobs.StatusFailed || !strings.Contains(end.Reason, "No space left on device") {
		t.Fatalf("a job whose disk is full: %s: %s", end.Status, end.Reason)
	}
	end = waitJob(t, c, retried.ID, time.Minute)
	if end.Status != jobs.StatusFailed || end.Attempt != 2 || !strings.Contains(end.Reason, "exit code 3") || !strings.Contains(end.Reason, "attempt 2") {
		t.Fatalf("retried job: %s attempt %d: %s", end.Status, end.Attempt, end.Reason)
	}
	end = waitJob(t, c, missing.ID, time.Minute)
	if end.Status != jobs.StatusFailed || !strings.Contains(end.Reason, "command was not found") || !strings.Contains(end.Reason, "no-such-command-xyz") {
		t.Fatalf("missing command: %s: %s", end.Status, end.Reason)
	}
	run := e.must(200, "GET", "/api/2.0/mlflow/runs/get?run_id="+missing.ID, e.admin, nil)
	if !strings.Contains(string(run.raw), `"status":"FAILED"`) {
		t.Fatalf("the run of a failed job: %s", run.raw)
	}

	for _, tc := range []struct{ body, want string }{
		{"command: echo ${{inputs.nope}}\n", "nope"},
		{"command: cat ${{inputs.d}}\ninputs:\n  d:\n    type: uri_file\n    path: data:never-uploaded:1\n", "never-uploaded"},
		{"command: 'true'\nresources:\n  instance_count: 9\n", "the job needs 9 vCPUs"},
		{"command: 'true'\ncompute: no-such-cluster\n", "compute no-such-cluster does not exist"},
	} {
		f := writeFile(t, filepath.Join(dir, "bad.yml"), "resources:\n  instance_type: local-cpu-small\n"+tc.body)
		if strings.Contains(tc.body, "compute:") {
			f = writeFile(t, filepath.Join(dir, "bad.yml"), tc.body)
		}
		if strings.Contains(tc.body, "instance_count") {
			f = writeFile(t, filepath.Join(dir, "bad.yml"), "command: 'true'\nresources:\n  instance_type: local-cpu-small\n  instance_count: 9\n")
		}
		_, err := c.SubmitJob(context.Background(), "default", f, client.SubmitOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("submitting %q: %v (want %q)", tc.body, err, tc.want)
		}
	}
}

// processesOf lists live processes whose environment names the job.
func processesOf(jobID string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil {
			continue
		}
		if strings.Contains(string(env), "PLINTH_JOB_ID="+jobID+"\x00") {
			stat, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
			if !strings.Contains(string(stat), ") Z ") {
				out = append(out, d.Name())
			}
		}
	}
	return out
}

// TestJobCancelAndTimeoutKillTheTree: a job whose processes ignore
// SIGTERM and fork children is gone, all of it, after a cancel or its
// timeout.
func TestJobCancelAndTimeoutKillTheTree(t *testing.T) {
	_, c := jobEnv(t)
	dir := t.TempDir()
	stubborn := "command: trap '' TERM; sleep 300 & sleep 300 & echo started; wait\nresources:\n  instance_type: local-cpu-small\n"
	j := submit(t, c, "default", writeFile(t, filepath.Join(dir, "cancel.yml"), "name: stubborn\n"+stubborn))
	waitFor(t, "the job's processes", 30*time.Second, func() bool { return len(processesOf(j.ID)) >= 3 })
	if _, err := c.CancelJob(context.Background(), "default", j.ID); err != nil {
		t.Fatal(err)
	}
	end := waitJob(t, c, j.ID, time.Minute)
	if end.Status != jobs.StatusCanceled {
		t.Fatalf("canceled job: %s: %s", end.Status, end.Reason)
	}
	if left := processesOf(j.ID); len(left) > 0 {
		t.Fatalf("processes left after cancel: %v", left)
	}
	timed := submit(t, c, "default", writeFile(t, filepath.Join(dir, "timeout.yml"), "name: slow\nlimits:\n  timeout: 1\n"+stubborn))
	end = waitJob(t, c, timed.ID, time.Minute)
	if end.Status != jobs.StatusFailed || !strings.Contains(end.Reason, "timed out after 1s") {
		t.Fatalf("timed-out job: %s: %s", end.Status, end.Reason)
	}
	if left := processesOf(timed.ID); len(left) > 0 {
		t.Fatalf("processes left after the timeout: %v", left)
	}
}

// TestClusterScalesAndQuota: a cluster grows to its maximum under queued
// demand and back to zero when idle; a quota keeps a job queued, with
// the reason shown, until it has room.
func TestClusterScalesAndQuota(t *testing.T) {
	e, c := jobEnv(t)
	one := 0
	two := 2
	if _, err := c.CreateCompute(context.Background(), "default", computeInput("cpu", &one, &two, 1)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var ids []string
	for i := range 3 {
		j := submit(t, c, "default", writeFile(t, filepath.Join(dir, fmt.Sprintf("j%d.yml", i)), fmt.Sprintf("name: burst-%d\ncompute: cpu\ncommand: sleep 2\n", i)))
		ids = append(ids, j.ID)
	}
	var mu sync.Mutex
	maxNodes := 0
	var sawWaiting string
	waitFor(t, "all three jobs to end", time.Minute, func() bool {
		t, _ := c.GetCompute(context.Background(), "default", "cpu")
		mu.Lock()
		maxNodes = max(maxNodes, len(t.Nodes))
		mu.Unlock()
		ended := 0
		for _, id := range ids {
			j, _ := c.GetJob(context.Background(), "default", id)
			if jobs.Terminal(j.Status) {
				ended++
			}
			if j.Status == jobs.StatusQueued && strings.Contains(j.Reason, "at most 2 nodes") {
				sawWaiting = j.Reason
			}
		}
		return ended == 3
	})
	if maxNodes != 2 || sawWaiting == "" {
		t.Fatalf("the cluster went up to %d nodes (want 2), waiting reason seen: %q", maxNodes, sawWaiting)
	}
	for _, id := range ids {
		if j, _ := c.GetJob(context.Background(), "default", id); j.Status != jobs.StatusCompleted {
			t.Fatalf("job %s: %s %s", j.Name, j.Status, j.Reason)
		}
	}
	waitFor(t, "the idle nodes to go down", 30*time.Second, func() bool {
		t, _ := c.GetCompute(context.Background(), "default", "cpu")
		return len(t.Nodes) == 0
	})

	// Quota: one vCPU of local-cpu for the workspace.
	vcpus, gpus := 1, 0
	if _, err := c.SetQuota(context.Background(), "default", "local-cpu", &vcpus, &gpus); err != nil {
		t.Fatal(err)
	}
	first := submit(t, c, "default", writeFile(t, filepath.Join(dir, "q1.yml"), "name: quota-1\ncompute: cpu\ncommand: sleep 2\n"))
	second := submit(t, c, "default", writeFile(t, filepath.Join(dir, "q2.yml"), "name: quota-2\ncompute: cpu\ncommand: 'true'\n"))
	waitFor(t, "the second job to wait for quota", 20*time.Second, func() bool {
		j, _ := c.GetJob(context.Background(), "default", second.ID)
		return j.Status == jobs.StatusQueued && strings.Contains(j.Reason, "quota: workspace")
	})
	if end := waitJob(t, c, second.ID, time.Minute); end.Status != jobs.StatusCompleted {
		t.Fatalf("admitted after quota freed: %s %s", end.Status, end.Reason)
	}
	waitJob(t, c, first.ID, time.Minute)
	costs := e.must(200, "GET", "/api/v1/cost?by=compute&since=1h", e.admin, nil)
	if !strings.Contains(string(costs.raw), `"key":"default/cpu"`) {
		t.Fatalf("cost by compute: %s", costs.raw)
	}
	// A job that could never fit the quota is refused at once.
	_, err := c.SubmitJob(context.Background(), "default", writeFile(t, filepath.Join(dir, "q3.yml"), "name: quota-3\ncompute: cpu\ncommand: 'true'\nresources:\n  instance_count: 2\n"), client.SubmitOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than the workspace's whole quota") {
		t.Fatalf("never-fitting job: %v", err)
	}
}

func computeInput(name string, minN, maxN *int, idleSeconds int) compute.TargetInput {
	d := compute.Duration(idleSeconds)
	return compute.TargetInput{Name: name, Size: "local-cpu-small", MinInstances: minN, MaxInstances: maxN, IdleTime: &d}
}

// TestDistributedJob runs a job on two nodes: one process each, told its
// rank and the world size, each with its own log kept on the run.
func TestDistributedJob(t *testing.T) {
	e, c := jobEnv(t)
	j := submit(t, c, "default", writeFile(t, filepath.Join(t.TempDir(), "ddp.yml"),
		"name: ddp\nresources:\n  instance_type: local-cpu-small\n  instance_count: 2\ncommand: echo rank=$RANK of $WORLD_SIZE\n"))
	if end := waitJob(t, c, j.ID, time.Minute); end.Status != jobs.StatusCompleted || end.Usage.NodeSeconds <= 0 {
		t.Fatalf("distributed job: %s %s %+v", end.Status, end.Reason, end.Usage)
	}
	for file, want := range map[string]string{"user_logs/std_log.txt": "rank=0 of 2", "user_logs/std_log_1.txt": "rank=1 of 2"} {
		r := e.must(200, "GET", "/api/2.0/mlflow-artifacts/artifacts/default/0/"+j.ID+"/artifacts/"+file, e.admin, nil)
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("%s: %q, want %q", file, r.raw, want)
		}
	}
}
