//go:build linux

package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/plinth-dev/plinth/internal/client"
	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/kubernetes"
	"github.com/plinth-dev/plinth/internal/executor/kubernetes/k8stest"
	"github.com/plinth-dev/plinth/internal/jobs"
	"github.com/plinth-dev/plinth/internal/server"
)

// TestKubernetesServer runs Plinth's server on the Kubernetes executor
// against a real API server (KWOK plays the kubelet, so no container
// really runs; see k8stest): a job becomes a Job whose pod fetches its
// code through `plinth workload run` from the tools image, with the SKU's
// resources and Plinth's labels, and completes or is cancelled; an online
// deployment's replica is a pod behind a Service, and the gateway routes
// scoring calls to the pod's own address (a loopback IP here, where the
// test plays the model server).
func TestKubernetesServer(t *testing.T) {
	cl := k8stest.Start(t, k8stest.LoopbackPods())
	cl.AddNode(t, "cpu-0", k8stest.NodeOptions{CPU: "8", Memory: "32Gi"})
	dir := t.TempDir()
	skus := writeFile(t, filepath.Join(dir, "skus.yml"), "skus:\n  - name: k8s-small\n    family: standard-d\n    vcpus: 1\n    memory_gib: 2\n    price_per_hour: 0.36\n")
	cfg := server.Config{DataDir: dir, BootstrapKey: adminKey, SKUFile: skus, Executor: server.ExecutorKubernetes,
		AdvertiseURL: "http://plinth.plinth.svc:8080",
		Kubernetes: server.KubernetesConfig{Kubeconfig: filepath.Join(cl.Dir, "admin.kubeconfig"), Namespace: "default",
			Image: "python:3.12-slim", ToolsImage: "plinth:test", StartTimeout: 30 * time.Second}}
	e := startWith(t, cfg)
	if caps := e.srv.Executor.Capabilities(); caps.Backend != kubernetes.Backend || !caps.Remote || caps.CPUs != 8 {
		t.Fatalf("capabilities: %+v", caps)
	}
	c := client.New(e.url, e.admin)
	ctx := context.Background()
	jobsAPI := cl.Client.BatchV1().Jobs("default")

	// A job that runs until it is cancelled: its Job is as it should be.
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "code", "train.py"), "print('training')\n")
	file := writeFile(t, filepath.Join(src, "job.yml"), `type: command
name: k8s-train-1
code: ./code
command: python train.py --out ${{outputs.model}}
outputs:
  model:
    type: uri_folder
environment:
  image: registry.example/train:1
resources:
  instance_type: k8s-small
`)
	j := submit(t, c, "default", file)
	var spec *executor.StagedRun
	waitFor(t, "the job's Job", 30*time.Second, func() bool {
		list, err := jobsAPI.List(ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelJob + "=" + j.ID})
		if err != nil || len(list.Items) != 1 {
			return false
		}
		pod := list.Items[0].Spec.Template.Spec
		main := pod.Containers[0]
		if main.Image != "registry.example/train:1" || len(pod.InitContainers) != 1 || pod.InitContainers[0].Image != "plinth:test" {
			t.Fatalf("images: %+v / %+v", main, pod.InitContainers)
		}
		if strings.Join(main.Command, " ") != "/plinth-tools/plinth workload run" {
			t.Fatalf("command: %q", main.Command)
		}
		if cpu, mem := main.Resources.Limits.Cpu().String(), main.Resources.Limits.Memory().String(); cpu != "1" || mem != "2Gi" {
			t.Fatalf("resources: cpu %s memory %s", cpu, mem)
		}
		for _, env := range main.Env {
			switch env.Name {
			case executor.StagedRunEnv:
				spec = &executor.StagedRun{}
				if err := json.Unmarshal([]byte(env.Value), spec); err != nil {
					t.Fatal(err)
				}
			case "PATH":
				t.Fatalf("the server's PATH reached the pod: %s", env.Value)
			case "MLFLOW_TRACKING_URI":
				if env.Value != e.url && env.Value != cfg.AdvertiseURL {
					t.Fatalf("tracking URI %s", env.Value)
				}
			}
		}
		return spec != nil
	})
	if spec.Server == "" || len(spec.Fetch) != 1 || spec.Fetch[0].Kind != executor.FetchCode || spec.Dir != jobs.DefaultRemoteWorkDir+"/code" ||
		!strings.HasPrefix(spec.Shell, "python train.py --out "+jobs.DefaultRemoteWorkDir+"/outputs/model") || len(spec.Upload) != 1 {
		t.Fatalf("staged run: %+v", spec)
	}
	waitFor(t, "the job running", 30*time.Second, func() bool {
		got, err := c.GetJob(ctx, "default", j.ID)
		return err == nil && got.Status == jobs.StatusRunning
	})
	if _, err := c.CancelJob(ctx, "default", j.ID); err != nil {
		t.Fatal(err)
	}
	if done := waitJob(t, c, j.ID, time.Minute); done.Status != jobs.StatusCanceled {
		t.Fatalf("cancelled job: %s %s", done.Status, done.Reason)
	}

	// One that exits 0 on its own: its pod's log becomes the run's.
	file = writeFile(t, filepath.Join(src, "ok.yml"), `type: command
name: k8s-ok-1
command: echo done
environment_variables:
  PLINTH_SIM_EXIT: "0"
  PLINTH_SIM_LOG: "hello from the pod"
resources:
  instance_type: k8s-small
`)
	ok := submit(t, c, "default", file)
	done := waitJob(t, c, ok.ID, time.Minute)
	var logs strings.Builder
	_ = c.JobLogs(ctx, "default", ok.ID, false, &logs)
	if done.Status != jobs.StatusCompleted || !strings.Contains(logs.String(), "hello from the pod") {
		t.Fatalf("job: %s %s; logs %q", done.Status, done.Reason, logs.String())
	}

	// A distributed job: both ranks are told rank 0's address as the
	// name of a headless Service that selects it.
	file = writeFile(t, filepath.Join(src, "dist.yml"), `type: command
name: k8s-dist-1
command: torchrun train.py
environment_variables:
  PLINTH_SIM_EXIT: "0"
resources:
  instance_type: k8s-small
  instance_count: 2
`)
	dist := submit(t, c, "default", file)
	addrs := map[string]bool{}
	waitFor(t, "both ranks' Jobs", 30*time.Second, func() bool {
		list, err := jobsAPI.List(ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelJob + "=" + dist.ID})
		if err != nil || len(list.Items) != 2 {
			return len(addrs) > 0 // the ranks may already have ended
		}
		for _, jb := range list.Items {
			for _, env := range jb.Spec.Template.Spec.Containers[0].Env {
				if env.Name == "MASTER_ADDR" {
					addrs[env.Value] = true
				}
			}
		}
		return true
	})
	if len(addrs) != 1 || addrs["127.0.0.1"] {
		t.Fatalf("ranks' MASTER_ADDR: %v", addrs)
	}
	if done := waitJob(t, c, dist.ID, time.Minute); done.Status != jobs.StatusCompleted {
		t.Fatalf("distributed job: %s %s", done.Status, done.Reason)
	}

	// An online deployment: its replica's pod serves where the gateway
	// sends calls.
	startEndpoints(t, e)
	created := e.must(201, "POST", "/api/v1/workspaces/default/endpoints", e.admin, map[string]any{"name": "fraud"})
	key := created.body["keys"].(map[string]any)["primary_key"].(string)
	e.must(200, "PUT", "/api/v1/workspaces/default/endpoints/fraud/deployments/blue", e.admin, map[string]any{
		"command": "python serve.py", "environment": "registry.example/fraud-server:3", "instance_type": "k8s-small", "instance_count": 1,
		"readiness_probe": map[string]any{"period": 1, "failure_threshold": 60}})
	podIP := playReplicaPod(t, cl, "blue")
	waitReady(t, e, "blue", 1)
	svcs, err := cl.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{LabelSelector: kubernetes.LabelDeployment + "=blue"})
	if err != nil || len(svcs.Items) != 1 || svcs.Items[0].Spec.Selector[kubernetes.LabelEndpoint] != "fraud" {
		t.Fatalf("the deployment's Service: %v %+v", err, svcs)
	}
	e.must(200, "PATCH", "/api/v1/workspaces/default/endpoints/fraud", e.admin, map[string]any{"traffic": map[string]int{"blue": 100}})
	time.Sleep(300 * time.Millisecond)
	code, out, _, err := score(e.url+"/endpoints/fraud/score", key, `{"x":1}`)
	if err != nil || code != 200 || out["served_by"] != podIP {
		t.Fatalf("scoring through the gateway: %v %d %v", err, code, out)
	}
	if os.Getenv("PLINTH_TEST_VERBOSE") != "" {
		t.Logf("scored at pod %s: %v", podIP, out)
	}
}

// playReplicaPod waits for the one pod of a deployment's replica to get
// its (loopback) IP and serves there, on the executor's first port, as
// the model server would: it answers with the address it serves at.
func playReplicaPod(t *testing.T, cl *k8stest.Cluster, deployment string) string {
	t.Helper()
	var podIP string
	waitFor(t, "the replica's pod IP", 30*time.Second, func() bool {
		pods, err := cl.Client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: kubernetes.LabelDeployment + "=" + deployment})
		if err != nil || len(pods.Items) != 1 {
			return false
		}
		podIP = pods.Items[0].Status.PodIP
		return podIP != ""
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP, "8000"))
	if err != nil {
		t.Fatalf("playing the pod's server at %s: %v", podIP, err)
	}
	pod := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"served_by":%q,"path":%q}`, podIP, r.URL.Path)
	})}
	go pod.Serve(ln)
	t.Cleanup(func() { pod.Close() })
	return podIP
}

// runServer starts a server over real HTTP with its scheduler and endpoint
// controller, and returns its URL and a stop that ends it the way a
// restart does: the work it started keeps running.
func runServer(t *testing.T, cfg server.Config) (string, *server.Server, func()) {
	t.Helper()
	srv, err := server.New(context.Background(), cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	srv.Jobs.SetTrackingURL(hs.URL)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); srv.Jobs.Run(ctx) }()
	go func() { defer wg.Done(); srv.RunEndpoints(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			hs.Close()
			srv.Close()
		})
	}
	t.Cleanup(stop)
	return hs.URL, srv, stop
}

// TestKubernetesServerRestartAdopts restarts the server while a job and an
// online deployment run on Kubernetes: the new server adopts the Jobs it
// finds (same UIDs, nothing recreated), keeps routing to the replica's
// pod, and can still cancel the job.
func TestKubernetesServerRestartAdopts(t *testing.T) {
	cl := k8stest.Start(t, k8stest.LoopbackPods())
	cl.AddNode(t, "cpu-0", k8stest.NodeOptions{CPU: "8", Memory: "32Gi"})
	dir := t.TempDir()
	skus := writeFile(t, filepath.Join(dir, "skus.yml"), "skus:\n  - name: k8s-small\n    family: standard-d\n    vcpus: 1\n    memory_gib: 2\n")
	cfg := server.Config{DataDir: dir, BootstrapKey: adminKey, SKUFile: skus, Executor: server.ExecutorKubernetes,
		Kubernetes: server.KubernetesConfig{Kubeconfig: filepath.Join(cl.Dir, "admin.kubeconfig"), Namespace: "default",
			Image: "python:3.12-slim", ToolsImage: "plinth:test", StartTimeout: 30 * time.Second}}
	ctx := context.Background()
	url, _, stop := runServer(t, cfg)
	c := client.New(url, adminKey)

	file := writeFile(t, filepath.Join(t.TempDir(), "job.yml"), "type: command\nname: long-1\ncommand: sleep 3600\nresources:\n  instance_type: k8s-small\n")
	j, err := c.SubmitJob(ctx, "default", file, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job running", 30*time.Second, func() bool {
		got, err := c.GetJob(ctx, "default", j.ID)
		return err == nil && got.Status == jobs.StatusRunning
	})
	uids := func(selector string) []string {
		list, err := cl.Client.BatchV1().Jobs("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, jb := range list.Items {
			out = append(out, string(jb.UID))
		}
		return out
	}
	jobUIDs := uids(kubernetes.LabelJob + "=" + j.ID)

	call := func(method, u, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	if code, out := call("POST", url+"/api/v1/workspaces/default/endpoints", `{"name":"fraud"}`); code != 201 {
		t.Fatalf("creating the endpoint: %d %v", code, out)
	}
	if code, out := call("PUT", url+"/api/v1/workspaces/default/endpoints/fraud/deployments/blue",
		`{"command":"python serve.py","environment":"registry.example/fraud:1","instance_type":"k8s-small","readiness_probe":{"period":1,"failure_threshold":60}}`); code != 200 {
		t.Fatalf("creating the deployment: %d %v", code, out)
	}
	podIP := playReplicaPod(t, cl, "blue")
	ready := func(u string) bool {
		_, out := call("GET", u+"/api/v1/workspaces/default/endpoints/fraud/deployments/blue", "")
		reps, _ := out["replicas"].([]any)
		return len(reps) == 1 && reps[0].(map[string]any)["state"] == "ready"
	}
	waitFor(t, "the replica ready", 60*time.Second, func() bool { return ready(url) })
	if code, out := call("PATCH", url+"/api/v1/workspaces/default/endpoints/fraud", `{"traffic":{"blue":100}}`); code != 200 {
		t.Fatalf("traffic: %d %v", code, out)
	}
	replicaUIDs := uids(kubernetes.LabelDeployment + "=blue")

	// The restart.
	stop()
	url2, _, _ := runServer(t, cfg)
	c2 := client.New(url2, adminKey)
	waitFor(t, "the new server routing to the adopted replica", 30*time.Second, func() bool {
		code, out := call("POST", url2+"/endpoints/fraud/score", `{}`)
		return code == 200 && out["served_by"] == podIP
	})
	time.Sleep(3 * time.Second) // a few rounds of the scheduler and the controller
	if got, err := c2.GetJob(ctx, "default", j.ID); err != nil || got.Status != jobs.StatusRunning || got.Attempt != 1 {
		t.Fatalf("the job after the restart: %v %s attempt %d %s", err, got.Status, got.Attempt, got.Reason)
	}
	if after := uids(kubernetes.LabelJob + "=" + j.ID); fmt.Sprint(after) != fmt.Sprint(jobUIDs) {
		t.Fatalf("the job's Kubernetes Jobs were %v, now %v: recreated", jobUIDs, after)
	}
	if after := uids(kubernetes.LabelDeployment + "=blue"); fmt.Sprint(after) != fmt.Sprint(replicaUIDs) || !ready(url2) {
		t.Fatalf("the replica's Jobs were %v, now %v (ready %v): recreated", replicaUIDs, after, ready(url2))
	}
	if _, err := c2.CancelJob(ctx, "default", j.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the adopted job cancelled", time.Minute, func() bool {
		got, err := c2.GetJob(ctx, "default", j.ID)
		return err == nil && got.Status == jobs.StatusCanceled
	})
	call("DELETE", url2+"/api/v1/workspaces/default/endpoints/fraud", "")
}
