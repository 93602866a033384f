//go:build linux

package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/executortest"
	k8sexec "github.com/plinth-dev/plinth/internal/executor/kubernetes"
	"github.com/plinth-dev/plinth/internal/executor/kubernetes/k8stest"
	"github.com/plinth-dev/plinth/internal/fault"
)

// These tests run the executor against a real API server, controller
// manager and scheduler, with KWOK simulating the nodes' kubelets (see
// k8stest for what the simulation does). They are skipped unless the
// binaries are built: make test-kubernetes.

// simulated lists the conformance subtests that need a real process: their
// output, exit codes of real programs, signals it handles, or resource use.
// KWOK runs no process, so they cannot pass against it; the fake-cluster
// unit tests and the tests below cover the executor's side of each.
var simulated = map[string]string{
	"ExitNonZero":              "exit codes of real shell commands (TestKubernetes/ExitCodes simulates them)",
	"KilledBySignal":           "a shell killing itself",
	"EnvIsolation":             "reads the job's env output",
	"WorkingDir":               "reads pwd output",
	"Logs":                     "a shell's output (TestKubernetes/Logs serves simulated logs through the API server)",
	"LogsFollow":               "a shell's timed output (TestKubernetes/Logs follows simulated logs)",
	"StopTreeIgnoringTERM":     "a shell that ignores SIGTERM",
	"StopGraceful":             "a TERM handler's output",
	"StopFinishedIsIdempotent": "exit 5 from a shell",
	"CommandNotFound":          "KWOK cannot know which commands an image has (TestKubernetes/CommandNotFound simulates the runtime's answer)",
	"Ports":                    "reads the ports the job printed",
	"Usage":                    "CPU and memory use of a real process",
	"ConcurrentStarts":         "exit codes and output of real commands",
}

const (
	poolLabel = "plinth.test/pool"
	gpuTaint  = "nvidia.com/gpu"
	spotTaint = "plinth.test/spot"
)

func pools() []k8sexec.Pool {
	return []k8sexec.Pool{
		{Name: "cpu", NodeSelector: map[string]string{poolLabel: "cpu"}},
		{Name: "cpu-spot", Spot: true, NodeSelector: map[string]string{poolLabel: "cpu-spot"},
			Tolerations: []corev1.Toleration{{Key: spotTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}},
		{Name: "gpu", GPU: true, NodeSelector: map[string]string{poolLabel: "gpu"},
			Tolerations: []corev1.Toleration{{Key: gpuTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// namespace makes a namespace for one test, ready for pods.
func namespace(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	got, err := c.CoreV1().Namespaces().Create(ctxT(t), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the namespace's default service account", func() bool {
		_, err := c.CoreV1().ServiceAccounts(got.Name).Get(ctxT(t), "default", metav1.GetOptions{})
		return err == nil
	})
	return got.Name
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKubernetes(t *testing.T) {
	cl := k8stest.Start(t)
	t.Logf("API server %s in %s", cl.Version, cl.Dir)
	if cl.Version != "v"+k8stest.KubernetesVersion {
		t.Errorf("API server reports %s, want v%s (the build's version ldflags)", cl.Version, k8stest.KubernetesVersion)
	}
	cl.AddNode(t, "cpu-0", k8stest.NodeOptions{Labels: map[string]string{poolLabel: "cpu"}})
	cl.AddNode(t, "cpu-1", k8stest.NodeOptions{Labels: map[string]string{poolLabel: "cpu"}})
	cl.AddNode(t, "spot-0", k8stest.NodeOptions{Labels: map[string]string{poolLabel: "cpu-spot"},
		Taints: []corev1.Taint{{Key: spotTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}})
	cl.AddNode(t, "gpu-0", k8stest.NodeOptions{CPU: "24", Memory: "220Gi", GPUs: 2,
		Labels: map[string]string{poolLabel: "gpu", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
		Taints: []corev1.Taint{{Key: gpuTaint, Value: "present", Effect: corev1.TaintEffectNoSchedule}}})

	newExec := func(t *testing.T, opts k8sexec.Options) *k8sexec.Executor {
		t.Helper()
		if opts.Namespace == "" {
			opts.Namespace = namespace(t, cl.Client)
		}
		if opts.DefaultImage == "" {
			opts.DefaultImage = "busybox:1.36"
		}
		if opts.Pools == nil {
			opts.Pools = pools()
		}
		opts.PollInterval = 200 * time.Millisecond
		opts.StartTimeout = 30 * time.Second
		e, err := k8sexec.NewForConfig(ctxT(t), cl.Config, opts)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	t.Run("Conformance", func(t *testing.T) {
		executortest.Run(t, func(t *testing.T) executor.Executor {
			name := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
			if why, ok := simulated[name]; ok {
				t.Skipf("needs a real process (%s); KWOK runs none", why)
			}
			return newExec(t, k8sexec.Options{})
		})
	})

	t.Run("ExitCodes", func(t *testing.T) {
		t.Parallel()
		e := newExec(t, k8sexec.Options{})
		for _, tc := range []struct {
			env         map[string]string
			code        int
			reason, sig string
		}{
			{map[string]string{"PLINTH_SIM_EXIT": "0"}, 0, "", ""},
			{map[string]string{"PLINTH_SIM_EXIT": "3"}, 3, "", ""},
			{map[string]string{"PLINTH_SIM_EXIT": "137"}, 137, executor.ReasonSignaled, "SIGKILL"},
			{map[string]string{"PLINTH_SIM_EXIT": "137", "PLINTH_SIM_REASON": "OOMKilled"}, 137, executor.ReasonOOMKilled, "SIGKILL"},
		} {
			h := executortest.Start(t, e, executor.Spec{Shell: "simulated", Env: tc.env, Resources: executor.Resources{CPUs: 0.5, MemoryBytes: 64 << 20}})
			st := executortest.Wait(t, e, h)
			if st.State != executor.StateExited || st.ExitCode != tc.code || st.Reason != tc.reason || st.Signal != tc.sig {
				t.Errorf("%v: status %+v; want exit %d, reason %q, signal %q", tc.env, st, tc.code, tc.reason, tc.sig)
			}
		}
	})

	t.Run("CommandNotFound", func(t *testing.T) {
		t.Parallel()
		// What containerd reports for a missing executable: the container
		// never starts, its state says StartError with the runtime's words.
		const name = "plinth-no-such-command-xyz"
		e := newExec(t, k8sexec.Options{})
		env := map[string]string{"PLINTH_SIM_EXIT": "128", "PLINTH_SIM_REASON": "StartError",
			"PLINTH_SIM_MESSAGE": `failed to create containerd task: exec: "` + name + `": executable file not found in $PATH: unknown`}
		id := executortest.ID(t)
		_, err := e.Start(ctxT(t), executor.Spec{ID: id, Command: []string{name, "arg"}, Env: env})
		if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("Start of a missing command: %v", err)
		}
		// The failed start left nothing: the ID is free at once.
		if _, err := e.Find(ctxT(t), id); !fault.Is(err, fault.NotFound) {
			t.Errorf("Find after a failed start: %v", err)
		}
		h := executortest.Start(t, e, executor.Spec{ID: id, Command: []string{"true"}})
		if st := executortest.Wait(t, e, h); st.ExitCode != 0 || st.State != executor.StateExited {
			t.Errorf("retry with the ID of a failed start: %+v", st)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		t.Parallel()
		e := newExec(t, k8sexec.Options{})
		// Finished work: the whole log, read through the API server from
		// the node's kubelet.
		h := executortest.Start(t, e, executor.Spec{Shell: "echo out1; echo out2", Env: map[string]string{"PLINTH_SIM_EXIT": "0", k8stest.SimLogEnv: "out1\nout2\n"}})
		executortest.Wait(t, e, h)
		if got := executortest.Output(t, e, h, executor.StreamCombined); got != "out1\nout2\n" {
			t.Errorf("log of finished work = %q", got)
		}
		if _, err := e.Logs(ctxT(t), h, executor.LogOptions{Stream: executor.StreamStdout}); !fault.Is(err, fault.FailedPrecondition) {
			t.Errorf("stdout alone: %v, want failed_precondition", err)
		}

		// Following running work ends when the work does.
		h = executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Env: map[string]string{k8stest.SimLogEnv: "a\nb\n"}})
		executortest.AwaitLine(t, e, h, "b")
		done := make(chan string, 1)
		go func() {
			r, err := e.Logs(ctxT(t), h, executor.LogOptions{Follow: true})
			if err != nil {
				done <- "error: " + err.Error()
				return
			}
			defer r.Close()
			b, err := io.ReadAll(r)
			if err != nil {
				done <- "read error: " + err.Error()
				return
			}
			done <- string(b)
		}()
		select {
		case got := <-done:
			t.Fatalf("the follower ended while the work runs: %q", got)
		case <-time.After(500 * time.Millisecond):
		}
		if err := e.Stop(ctxT(t), h, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-done:
			if got != "a\nb\n" {
				t.Errorf("followed %q, want a b", got)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the follower did not end with the work")
		}

		// A follower cut off by its context says so.
		h = executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Env: map[string]string{k8stest.SimLogEnv: "x\n"}})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r, err := e.Logs(ctx, h, executor.LogOptions{Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if !errors.Is(err, context.DeadlineExceeded) || string(b) != "x\n" {
			t.Errorf("follow past ctx: %q, %v; want x and DeadlineExceeded", b, err)
		}
	})

	t.Run("Pools", func(t *testing.T) {
		t.Parallel()
		e := newExec(t, k8sexec.Options{})
		caps := e.Capabilities()
		if caps.CPUs != 8+8+8+24 || len(caps.GPUs) != 2 || caps.GPUs[0].Name != "NVIDIA-A100-SXM4-80GB" {
			t.Errorf("capabilities %+v", caps)
		}
		nodeOf := func(spec executor.Spec) string {
			h := executortest.Start(t, e, spec)
			pod, err := cl.Client.CoreV1().Pods(h.Data["namespace"]).Get(ctxT(t), h.Data["pod"], metav1.GetOptions{})
			if err != nil {
				t.Fatalf("pod of %s: %v (handle %+v)", h.ID, err, h)
			}
			if h.Node == "" || h.Node != pod.Status.PodIP {
				t.Errorf("handle node %q, pod IP %q", h.Node, pod.Status.PodIP)
			}
			return pod.Spec.NodeName
		}
		for i := range 4 {
			if n := nodeOf(executor.Spec{Command: []string{"sleep", "1000"}, Resources: executor.Resources{CPUs: 1}}); !strings.HasPrefix(n, "cpu-") {
				t.Errorf("CPU work %d ran on %s", i, n)
			}
		}
		if n := nodeOf(executor.Spec{Command: []string{"sleep", "1000"}, Env: map[string]string{"PLINTH_JOB_TIER": "spot"}}); n != "spot-0" {
			t.Errorf("spot work ran on %s", n)
		}
		if n := nodeOf(executor.Spec{Command: []string{"sleep", "1000"}, Resources: executor.Resources{CPUs: 4, GPUs: []string{"0", "1"}}}); n != "gpu-0" {
			t.Errorf("GPU work ran on %s", n)
		}
		// A third GPU does not fit: the pod waits, Start still returns.
		h := executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Resources: executor.Resources{GPUs: []string{"2"}}})
		st, err := e.Inspect(ctxT(t), h)
		if err != nil || st.State != executor.StateRunning || !strings.Contains(st.Message, "Unschedulable") {
			t.Errorf("GPU work beyond the pool: %+v, %v", st, err)
		}
		if err := e.Stop(ctxT(t), h, time.Second); err != nil {
			t.Fatal(err)
		}
		if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped {
			t.Errorf("stopped pending work: %+v", st)
		}
	})

	t.Run("Preemption", func(t *testing.T) {
		t.Parallel()
		e := newExec(t, k8sexec.Options{})
		for _, tc := range []struct {
			tier, reason string
		}{{"spot", k8sexec.ReasonPreempted}, {"standard", k8sexec.ReasonEvicted}} {
			h := executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Env: map[string]string{"PLINTH_JOB_TIER": tc.tier}})
			// The eviction API is what a node drain, a spot-reclaim
			// handler or the descheduler calls; the API server adds the
			// DisruptionTarget condition.
			ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: h.Data["pod"], Namespace: h.Data["namespace"]}}
			if err := cl.Client.PolicyV1().Evictions(h.Data["namespace"]).Evict(ctxT(t), ev); err != nil {
				t.Fatalf("evicting %s: %v", h.Data["pod"], err)
			}
			st := executortest.Wait(t, e, h)
			if st.Reason != tc.reason {
				t.Errorf("%s work evicted: %+v, want reason %s", tc.tier, st, tc.reason)
			}
			// The Job failed by its pod failure policy, which keeps the
			// disruption visible once the pod is gone.
			eventually(t, "the Job's failure", func() bool {
				job, err := cl.Client.BatchV1().Jobs(h.Data["namespace"]).Get(ctxT(t), h.Data["name"], metav1.GetOptions{})
				return err == nil && hasCondition(job, batchv1.JobFailed, batchv1.JobReasonPodFailurePolicy)
			})
			if st2, err := e.Inspect(ctxT(t), h); err != nil || st2.Reason != tc.reason {
				t.Errorf("%s work after the pod is gone: %+v, %v", tc.tier, st2, err)
			}
		}
	})

	t.Run("AdoptionAfterRestart", func(t *testing.T) {
		t.Parallel()
		ns := namespace(t, cl.Client)
		first := newExec(t, k8sexec.Options{Namespace: ns})
		id := executortest.ID(t)
		h, err := first.Start(ctxT(t), executor.Spec{ID: id, Command: []string{"sleep", "1000"}, Ports: 2,
			Env: map[string]string{"PLINTH_WORKSPACE": "ws-1", "PLINTH_JOB_ID": "job-1", "RANK": "0"}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(h)
		// A new control plane: a new executor, the handle from storage,
		// and Find for the work whose handle was never stored.
		second := newExec(t, k8sexec.Options{Namespace: ns})
		var stored executor.Handle
		json.Unmarshal(raw, &stored)
		if st, err := second.Inspect(ctxT(t), stored); err != nil || st.State != executor.StateRunning {
			t.Fatalf("adopted Inspect: %+v, %v", st, err)
		}
		found, err := second.Find(ctxT(t), id)
		if err != nil || found.Data["uid"] != h.Data["uid"] || fmt.Sprint(found.Ports) != fmt.Sprint(h.Ports) || found.Node != h.Node {
			t.Fatalf("Find after restart = %+v, %v; want %+v", found, err, h)
		}
		jobs, err := cl.Client.BatchV1().Jobs(ns).List(ctxT(t), metav1.ListOptions{LabelSelector: "plinth.dev/workspace=ws-1,plinth.dev/job=job-1"})
		if err != nil || len(jobs.Items) != 1 {
			t.Errorf("jobs labelled with workspace and job: %v, %v", jobs, err)
		}
		if err := second.Stop(ctxT(t), found, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		st, err := first.Inspect(ctxT(t), h)
		if err != nil || st.State != executor.StateExited || st.Reason != executor.ReasonStopped || st.Signal != "SIGTERM" {
			t.Errorf("the first executor sees the second's Stop: %+v, %v", st, err)
		}
		if err := first.Remove(ctxT(t), h); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the Job and its pods to go", func() bool {
			_, err := cl.Client.BatchV1().Jobs(ns).Get(ctxT(t), h.Data["name"], metav1.GetOptions{})
			pods, _ := cl.Client.CoreV1().Pods(ns).List(ctxT(t), metav1.ListOptions{LabelSelector: "plinth.dev/work-id=" + id})
			return apierrors.IsNotFound(err) && len(pods.Items) == 0
		})
	})

	t.Run("Kueue", func(t *testing.T) {
		t.Parallel()
		// Kueue itself is not installed: the test admits the Job as Kueue
		// would, by resuming it.
		e := newExec(t, k8sexec.Options{Queue: "team-a"})
		began := time.Now()
		h := executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}})
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("Start of queued work took %v", d)
		}
		ns, name := h.Data["namespace"], h.Data["name"]
		job, err := cl.Client.BatchV1().Jobs(ns).Get(ctxT(t), name, metav1.GetOptions{})
		if err != nil || !*job.Spec.Suspend || job.Labels[k8sexec.KueueQueueLabel] != "team-a" {
			t.Fatalf("queued job: %+v, %v", job, err)
		}
		if st, err := e.Inspect(ctxT(t), h); err != nil || st.State != executor.StateRunning || !strings.Contains(st.Message, "queued") {
			t.Errorf("queued: %+v, %v", st, err)
		}
		admit := func(name string) {
			t.Helper()
			patch := []byte(`{"spec":{"suspend":false}}`)
			if _, err := cl.Client.BatchV1().Jobs(ns).Patch(ctxT(t), name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		admit(name)
		eventually(t, "the admitted Job's pod to run", func() bool {
			h2, err := e.Find(ctxT(t), h.ID)
			return err == nil && h2.Node != ""
		})
		if err := e.Stop(ctxT(t), h, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped || st.ExitCode != 143 {
			t.Errorf("admitted then stopped: %+v", st)
		}

		// Stopped while queued: it must not run when admitted later.
		h = executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}})
		if err := e.Stop(ctxT(t), h, time.Second); err != nil {
			t.Fatal(err)
		}
		admit(h.Data["name"])
		time.Sleep(2 * time.Second)
		pods, _ := cl.Client.CoreV1().Pods(ns).List(ctxT(t), metav1.ListOptions{LabelSelector: "plinth.dev/work-id=" + h.ID})
		if len(pods.Items) != 0 {
			t.Errorf("work stopped while queued got %d pods once admitted", len(pods.Items))
		}
		if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped {
			t.Errorf("stopped while queued: %+v", st)
		}
	})

	t.Run("ReplicaService", func(t *testing.T) {
		t.Parallel()
		e := newExec(t, k8sexec.Options{})
		var hs []executor.Handle
		for _, rid := range []string{"r1", "r2"} {
			env := map[string]string{"PLINTH_WORKSPACE": "ws", "PLINTH_ENDPOINT": "fraud", "PLINTH_DEPLOYMENT": "blue", "PLINTH_REPLICA": rid}
			hs = append(hs, executortest.Start(t, e, executor.Spec{ID: "replica-" + rid + "-" + executortest.ID(t)[:9], Shell: "serve", Env: env, Ports: 1}))
		}
		ns, svcName := hs[0].Data["namespace"], hs[0].Data["service"]
		if svcName == "" || hs[1].Data["service"] != svcName {
			t.Fatalf("handles %+v %+v", hs[0], hs[1])
		}
		// The endpoint-slice controller finds both replicas' pods through
		// the Service's selector.
		eventually(t, "both replicas in the Service's endpoints", func() bool {
			slices, err := cl.Client.DiscoveryV1().EndpointSlices(ns).List(ctxT(t), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svcName})
			if err != nil {
				return false
			}
			n := 0
			for _, s := range slices.Items {
				n += len(s.Endpoints)
			}
			return n == 2
		})
		for _, h := range hs {
			if err := e.Stop(ctxT(t), h, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := e.Remove(ctxT(t), h); err != nil {
				t.Fatal(err)
			}
		}
		// The garbage collector removes the Service with its last owner.
		eventually(t, "the Service to go with its last replica", func() bool {
			_, err := cl.Client.CoreV1().Services(ns).Get(ctxT(t), svcName, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
	})

	t.Run("LeastPrivilege", func(t *testing.T) {
		t.Parallel()
		// Exactly the permissions the package comment lists, for a service
		// account, and every operation through it.
		ns := namespace(t, cl.Client)
		rbac := cl.Client.RbacV1()
		ctx := ctxT(t)
		if _, err := cl.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "plinth"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "plinth", Namespace: ns}}
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "plinth-executor"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "get", "list", "update", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "create", "update"}},
		}}
		if _, err := rbac.Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "plinth-executor"}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "plinth-executor"}}
		if _, err := rbac.RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "plinth-nodes-" + ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}}}
		if _, err := rbac.ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name}}
		if _, err := rbac.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, err := cl.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "plinth", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := &rest.Config{Host: cl.Config.Host, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAFile: cl.Config.CAFile}}
		e, err := k8sexec.NewForConfig(ctx, cfg, k8sexec.Options{Namespace: ns, DefaultImage: "busybox:1.36", Pools: pools(), PollInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"PLINTH_WORKSPACE": "ws", "PLINTH_ENDPOINT": "ep", "PLINTH_DEPLOYMENT": "d", "PLINTH_REPLICA": "r", k8stest.SimLogEnv: "hello\n"}
		h := executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Env: env, Ports: 1})
		if _, err := e.Find(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
		executortest.AwaitLine(t, e, h, "hello")
		if err := e.Stop(ctx, h, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped {
			t.Errorf("stopped: %+v", st)
		}
		if err := e.Remove(ctx, h); err != nil {
			t.Fatal(err)
		}
		h = executortest.Start(t, e, executor.Spec{Command: []string{"true"}})
		if st := executortest.Wait(t, e, h); st.ExitCode != 0 {
			t.Errorf("true: %+v", st)
		}
	})

	t.Run("ImageRequired", func(t *testing.T) {
		t.Parallel()
		e, err := k8sexec.NewForConfig(ctxT(t), cl.Config, k8sexec.Options{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Start(ctxT(t), executor.Spec{ID: executortest.ID(t), Command: []string{"true"}}); !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "image") {
			t.Errorf("Start without an image: %v", err)
		}
	})
}

func hasCondition(job *batchv1.Job, t batchv1.JobConditionType, reason string) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue && c.Reason == reason {
			return true
		}
	}
	return false
}
