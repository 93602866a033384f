package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// These tests use client-go's fake clientset, which stores objects but runs
// no controller: fakeCluster below stands in for the Job controller and the
// kubelet, just enough to move pods along. They test what the executor
// writes and how it reads states; the tests against a real API server
// (integration_test.go) test that the cluster agrees.

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var uidSeq atomic.Int64

// newFake returns a fake clientset that assigns UIDs and creation times as
// the API server would.
func newFake(objs ...runtime.Object) *fake.Clientset {
	c := fake.NewClientset(objs...)
	c.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject()); err == nil {
			if m.GetUID() == "" {
				m.SetUID(types.UID(fmt.Sprintf("uid-%d", uidSeq.Add(1))))
			}
			m.SetCreationTimestamp(metav1.Now())
		}
		return false, nil, nil
	})
	return c
}

func node(name string, cpu, mem string, gpus int64, lbl map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
	n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	if gpus > 0 {
		n.Status.Allocatable["nvidia.com/gpu"] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	return n
}

func newExec(t *testing.T, c *fake.Clientset, opts Options) *Executor {
	t.Helper()
	if opts.DefaultImage == "" {
		opts.DefaultImage = "busybox:1.36"
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 20 * time.Millisecond
	}
	e, err := New(ctxT(t), c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func getJob(t *testing.T, c *fake.Clientset, h executor.Handle) *batchv1.Job {
	t.Helper()
	job, err := c.BatchV1().Jobs(h.Data[dataNamespace]).Get(ctxT(t), h.Data[dataName], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, v := range c.Env {
		m[v.Name] = v.Value
	}
	return m
}

func TestJobFromSpec(t *testing.T) {
	c := newFake()
	e := newExec(t, c, Options{StartTimeout: -1, Namespace: "ml"})
	spec := executor.Spec{
		ID: "01jx5q-a1-n0", Shell: "python train.py", Image: "ghcr.io/acme/train:1",
		Env:       map[string]string{"PLINTH_WORKSPACE": "team-a", "PLINTH_JOB_ID": "01jx5q", "RANK": "0", "PORT": "1", "FOO": "bar"},
		Resources: executor.Resources{CPUs: 1.5, MemoryBytes: 2 << 30, DiskBytes: 10 << 30, GPUs: []string{"0", "1"}},
		Ports:     2,
	}
	h, err := e.Start(ctxT(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if h.ID != spec.ID || h.Backend != Backend || h.Data[dataKind] != "job" || h.Data[dataNamespace] != "ml" || h.Data[dataUID] == "" {
		t.Errorf("handle %+v", h)
	}
	if fmt.Sprint(h.Ports) != "[8000 8001]" {
		t.Errorf("ports %v", h.Ports)
	}
	job := getJob(t, c, h)
	if job.Name != "01jx5q-a1-n0" {
		t.Errorf("name %q", job.Name)
	}
	for k, v := range map[string]string{LabelWorkID: spec.ID, LabelWorkspace: "team-a", LabelJob: "01jx5q", LabelRank: "0", LabelManagedBy: "plinth", LabelTier: "standard"} {
		if job.Labels[k] != v || job.Spec.Template.Labels[k] != v {
			t.Errorf("label %s = %q / %q, want %q", k, job.Labels[k], job.Spec.Template.Labels[k], v)
		}
	}
	if job.Annotations[AnnotationWorkID] != spec.ID {
		t.Errorf("annotations %v", job.Annotations)
	}
	js := job.Spec
	if *js.BackoffLimit != 0 || *js.Completions != 1 || *js.Parallelism != 1 || *js.Suspend || js.PodFailurePolicy == nil {
		t.Errorf("job spec %+v", js)
	}
	ps := js.Template.Spec
	if ps.RestartPolicy != corev1.RestartPolicyNever || *ps.AutomountServiceAccountToken || *ps.EnableServiceLinks || *ps.TerminationGracePeriodSeconds != 30 {
		t.Errorf("pod spec %+v", ps)
	}
	ct := ps.Containers[0]
	if ct.Image != spec.Image || fmt.Sprint(ct.Command) != "[/bin/sh -c python train.py]" || len(ct.Args) != 0 {
		t.Errorf("container %+v", ct)
	}
	env := envOf(ct)
	if env["FOO"] != "bar" || env["LANG"] != DefaultLANG || env["PORT"] != "8000" || env["PORT_1"] != "8001" {
		t.Errorf("env %v", env)
	}
	if _, ok := env["CUDA_VISIBLE_DEVICES"]; ok {
		t.Errorf("GPU work must leave device visibility to the device plugin: %v", env)
	}
	lim := ct.Resources.Limits
	if lim.Cpu().MilliValue() != 1500 || lim.Memory().Value() != 2<<30 || lim.StorageEphemeral().Value() != 10<<30 {
		t.Errorf("limits %v", lim)
	}
	if g := lim["nvidia.com/gpu"]; g.Value() != 2 {
		t.Errorf("gpu limit %v", g)
	}
	if !equalResources(ct.Resources.Requests, lim) {
		t.Errorf("requests %v != limits %v", ct.Resources.Requests, lim)
	}
	if ct.WorkingDir != "/plinth/work" || len(ps.Volumes) != 1 || ps.Volumes[0].EmptyDir == nil || ps.Volumes[0].EmptyDir.SizeLimit.Value() != 10<<30 {
		t.Errorf("work dir %q volumes %+v", ct.WorkingDir, ps.Volumes)
	}
	if len(ct.Ports) != 2 || ct.Ports[1].ContainerPort != 8001 {
		t.Errorf("container ports %+v", ct.Ports)
	}

	// Argv is the whole argv; no GPU means no GPU visible; Dir is used as is.
	h, err = e.Start(ctxT(t), executor.Spec{ID: "argv", Command: []string{"sh", "-c", "exit $0", "42"}, Dir: "/srv"})
	if err != nil {
		t.Fatal(err)
	}
	ct = getJob(t, c, h).Spec.Template.Spec.Containers[0]
	env = envOf(ct)
	if fmt.Sprint(ct.Command) != "[sh -c exit $0 42]" || ct.WorkingDir != "/srv" || ct.Image != "busybox:1.36" ||
		env["CUDA_VISIBLE_DEVICES"] != "" || env["NVIDIA_VISIBLE_DEVICES"] != "void" {
		t.Errorf("container %+v env %v", ct, env)
	}
	if len(ct.Resources.Limits) != 0 {
		t.Errorf("no limits asked, got %v", ct.Resources.Limits)
	}
	if _, err := e.Start(ctxT(t), executor.Spec{ID: "argv", Command: []string{"true"}}); !fault.Is(err, fault.AlreadyExists) {
		t.Errorf("second Start with the same ID: %v", err)
	}
	if _, err := e.Start(ctxT(t), executor.Spec{ID: "rel", Command: []string{"true"}, Dir: "rel/dir"}); !fault.Is(err, fault.Invalid) {
		t.Errorf("relative Dir: %v", err)
	}
}

func equalResources(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v.Cmp(w) != 0 {
			return false
		}
	}
	return true
}

func TestImageRequired(t *testing.T) {
	e, err := New(ctxT(t), newFake(), Options{StartTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Start(ctxT(t), executor.Spec{ID: "noimage", Command: []string{"true"}})
	fe, ok := fault.As(err)
	if !ok || fe.Kind != fault.Invalid || fe.Field != "image" || !strings.Contains(err.Error(), "image") {
		t.Fatalf("Start without an image: %v", err)
	}
	if _, err := e.Start(ctxT(t), executor.Spec{ID: "bad id!", Command: []string{"true"}}); !fault.Is(err, fault.Invalid) {
		t.Errorf("invalid spec: %v", err)
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("Ab_c.", 25) + "xyz" // 128 characters, upper case and dots
	seen := map[string]string{}
	for _, id := range []string{"simple-1", "Simple-1", "simple.1", "simple_1", long, long[:127] + "Z", "replica-01jx5qa8d9f0k3m2n4p6r8t0vw"} {
		n := objectName(id)
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 || len(n) > 52 {
			t.Errorf("objectName(%q) = %q: %v", id, n, errs)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("IDs %q and %q share name %q", prev, id, n)
		}
		seen[n] = id
		if errs := validation.IsValidLabelValue(labelValue(id)); len(errs) > 0 {
			t.Errorf("labelValue(%q) = %q: %v", id, labelValue(id), errs)
		}
	}
	if objectName("simple-1") != "simple-1" || labelValue("simple-1") != "simple-1" {
		t.Error("a valid ID must name its objects as is")
	}
	s := serviceName("ws", "My_Endpoint", "blue")
	if errs := validation.IsDNS1035Label(s); len(errs) > 0 {
		t.Errorf("serviceName = %q: %v", s, errs)
	}
	if serviceName("ws2", "My_Endpoint", "blue") == s {
		t.Error("service names must differ per workspace")
	}

	// A long ID is found by its exact annotation, not its shortened label.
	c := newFake()
	e := newExec(t, c, Options{StartTimeout: -1})
	h, err := e.Start(ctxT(t), executor.Spec{ID: long, Command: []string{"true"}, Ports: 1})
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.Find(ctxT(t), long)
	if err != nil || f.ID != long || f.Data[dataUID] != h.Data[dataUID] || fmt.Sprint(f.Ports) != fmt.Sprint(h.Ports) {
		t.Errorf("Find(long) = %+v, %v; want %+v", f, err, h)
	}
	if _, err := e.Find(ctxT(t), long[:127]+"Z"); !fault.Is(err, fault.NotFound) {
		t.Errorf("Find of a never-started ID sharing a prefix: %v", err)
	}
}

func TestPools(t *testing.T) {
	gpuTaint := corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	spotTaint := corev1.Toleration{Key: "plinth.dev/spot", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	pools := []Pool{
		{Name: "cpu", NodeSelector: map[string]string{"pool": "cpu"}},
		{Name: "cpu-spot", Spot: true, NodeSelector: map[string]string{"pool": "cpu-spot"}, Tolerations: []corev1.Toleration{spotTaint}},
		{Name: "a100", GPU: true, SKUs: []string{"Standard_NC24ads_A100_v4"}, NodeSelector: map[string]string{"pool": "a100"}, Tolerations: []corev1.Toleration{gpuTaint}, Queue: "gpu-queue"},
	}
	c := newFake(
		node("n1", "8", "32Gi", 0, map[string]string{"pool": "cpu"}),
		node("n2", "4", "16Gi", 0, map[string]string{"pool": "cpu-spot"}),
		node("g1", "24", "220Gi", 1, map[string]string{"pool": "a100", "nvidia.com/gpu.product": "NVIDIA-A100"}),
		node("other", "64", "1Ti", 8, map[string]string{"pool": "not-ours"}),
	)
	e := newExec(t, c, Options{StartTimeout: -1, Pools: pools})
	caps := e.Capabilities()
	if caps.Backend != Backend || caps.CPUs != 36 || caps.MemoryBytes != (32+16+220)<<30 || len(caps.GPUs) != 1 || caps.GPUs[0].Name != "NVIDIA-A100" || !caps.CgroupLimits {
		t.Errorf("capabilities %+v", caps)
	}

	start := func(id string, env map[string]string, gpus ...string) (*batchv1.Job, error) {
		h, err := e.Start(ctxT(t), executor.Spec{ID: id, Command: []string{"true"}, Env: env, Resources: executor.Resources{GPUs: gpus}})
		if err != nil {
			return nil, err
		}
		return getJob(t, c, h), nil
	}
	job, err := start("cpu-work", nil)
	if err != nil || job.Spec.Template.Spec.NodeSelector["pool"] != "cpu" || len(job.Spec.Template.Spec.Tolerations) != 0 || job.Labels[LabelPool] != "cpu" {
		t.Errorf("CPU work: %v %+v", err, job)
	}
	job, err = start("spot-work", map[string]string{"PLINTH_JOB_TIER": "Spot"})
	if err != nil || job.Spec.Template.Spec.NodeSelector["pool"] != "cpu-spot" || job.Labels[LabelTier] != "spot" || len(job.Spec.Template.Spec.Tolerations) != 1 {
		t.Errorf("spot work: %v %+v", err, job)
	}
	job, err = start("gpu-work", map[string]string{"PLINTH_INSTANCE_TYPE": "Standard_NC24ads_A100_v4"}, "0")
	if err != nil {
		t.Fatal(err)
	}
	ps := job.Spec.Template.Spec
	if ps.NodeSelector["pool"] != "a100" || len(ps.Tolerations) != 1 || ps.Tolerations[0].Key != "nvidia.com/gpu" {
		t.Errorf("GPU work placed %v %v", ps.NodeSelector, ps.Tolerations)
	}
	// The pool's Kueue queue: created suspended, labelled for Kueue.
	if !*job.Spec.Suspend || job.Labels[KueueQueueLabel] != "gpu-queue" {
		t.Errorf("GPU pool queue: suspend %v labels %v", *job.Spec.Suspend, job.Labels)
	}
	if _, err := start("gpu-unknown-sku", map[string]string{"PLINTH_INSTANCE_TYPE": "Standard_ND96"}, "0"); !fault.Is(err, fault.FailedPrecondition) {
		t.Errorf("GPU work of a SKU no pool takes: %v", err)
	}
	if _, err := start("gpu-spot", map[string]string{"PLINTH_JOB_TIER": "spot", "PLINTH_INSTANCE_TYPE": "Standard_NC24ads_A100_v4"}, "0"); !fault.Is(err, fault.FailedPrecondition) {
		t.Errorf("spot GPU work without a spot GPU pool: %v", err)
	}
}

// fakeCluster plays the Job controller and the kubelet over a fake
// clientset: it makes one pod per unsuspended Job and moves pods along
// according to their command (see simulate). It stops with the test.
func fakeCluster(t *testing.T, c *fake.Clientset) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			jobs, err := c.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			for _, job := range jobs.Items {
				pods, _ := c.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
				if len(pods.Items) == 0 && !*job.Spec.Suspend && *job.Spec.Parallelism > 0 && len(job.Status.Conditions) == 0 {
					c.CoreV1().Pods(job.Namespace).Create(ctx, podFor(&job), metav1.CreateOptions{})
				}
				for _, p := range pods.Items {
					if simulate(&p) {
						c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
					}
				}
			}
		}
	}()
}

func podFor(job *batchv1.Job) *corev1.Pod {
	lbl := copyMap(job.Spec.Template.Labels)
	lbl[batchv1.ControllerUidLabel] = string(job.UID)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-abcde", Namespace: job.Namespace, Labels: lbl, Annotations: copyMap(job.Spec.Template.Annotations),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr(true)}}},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
	p.Spec.NodeName = "n1"
	return p
}

// simulate advances a pod one step, as a kubelet would: a new pod runs;
// "missing" cannot start; "exit N" exits N; a pod past its active deadline
// is killed with SIGTERM (exit 143). It reports whether the pod changed.
func simulate(p *corev1.Pod) bool {
	now := metav1.Now()
	ct := p.Spec.Containers[0]
	term := func(code int32, reason, msg string) {
		p.Status.Phase = corev1.PodFailed
		if code == 0 {
			p.Status.Phase = corev1.PodSucceeded
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, StartedAt: *p.Status.StartTime, FinishedAt: now}}}}
	}
	switch {
	case p.Status.Phase == "" && ct.Command[0] == "missing":
		// The runtime never starts it: it goes from pending to a
		// StartError termination, never through running.
		p.Status.StartTime = &now
		term(128, "StartError", `failed to create containerd task: exec: "missing": executable file not found in $PATH: unknown`)
	case p.Status.Phase == "":
		p.Status.Phase, p.Status.StartTime, p.Status.PodIP = corev1.PodRunning, &now, "10.1.2.3"
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		return true
	case p.Status.Phase != corev1.PodRunning:
		return false
	case p.Spec.ActiveDeadlineSeconds != nil:
		term(143, "Error", "")
	case len(ct.Command) == 3 && strings.HasPrefix(ct.Command[2], "exit "):
		var code int32
		fmt.Sscan(strings.TrimPrefix(ct.Command[2], "exit "), &code)
		term(code, "Error", "")
	default:
		return false
	}
	return true
}

func TestLifecycleFake(t *testing.T) {
	c := newFake(node("n1", "8", "32Gi", 0, nil))
	fakeCluster(t, c)
	e := newExec(t, c, Options{StartTimeout: 5 * time.Second})

	h, err := e.Start(ctxT(t), executor.Spec{ID: "exit3", Shell: "exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if h.Node != "10.1.2.3" || h.Data[dataPod] == "" || h.Data[dataNode] != "n1" {
		t.Errorf("handle after start %+v", h)
	}
	st, err := e.Wait(ctxT(t), h)
	if err != nil || st.State != executor.StateExited || st.ExitCode != 3 || st.Reason != "" {
		t.Errorf("Wait = %+v, %v", st, err)
	}
	if err := e.Stop(ctxT(t), h, time.Second); err != nil {
		t.Errorf("Stop of finished work: %v", err)
	}
	if st2, _ := e.Inspect(ctxT(t), h); st2.ExitCode != 3 || st2.Reason != "" {
		t.Errorf("Stop changed a finished status: %+v", st2)
	}

	// A command the image lacks fails Start, naming it, and frees the ID.
	_, err = e.Start(ctxT(t), executor.Spec{ID: "nocmd", Command: []string{"missing", "x"}})
	if !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), `"missing"`) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Start of a missing command: %v", err)
	}
	if _, err := e.Find(ctxT(t), "nocmd"); !fault.Is(err, fault.NotFound) {
		t.Errorf("a failed start left work behind: %v", err)
	}

	// Running work: Find, Remove refused, Stop, Inspect, Remove, Lost.
	h, err = e.Start(ctxT(t), executor.Spec{ID: "sleeper", Command: []string{"sleep", "1000"}, Ports: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := e.Inspect(ctxT(t), h); err != nil || st.State != executor.StateRunning || st.StartedAt.IsZero() {
		t.Errorf("Inspect of running work: %+v, %v", st, err)
	}
	f, err := e.Find(ctxT(t), "sleeper")
	if err != nil || f.Data[dataUID] != h.Data[dataUID] || fmt.Sprint(f.Ports) != "[8000]" || f.Node != h.Node {
		t.Errorf("Find = %+v, %v; want %+v", f, err, h)
	}
	wctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	if _, err := e.Wait(wctx, h); err != context.DeadlineExceeded {
		t.Errorf("Wait past its context: %v", err)
	}
	if err := e.Remove(ctxT(t), h); !fault.Is(err, fault.FailedPrecondition) {
		t.Errorf("Remove of running work: %v", err)
	}
	if err := e.Stop(ctxT(t), h, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err = e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateExited || st.Reason != executor.ReasonStopped || st.Signal != "SIGTERM" || st.ExitCode != 143 {
		t.Errorf("after Stop: %+v, %v", st, err)
	}
	job := getJob(t, c, h)
	var final executor.Status
	if err := json.Unmarshal([]byte(job.Annotations[AnnotationFinalStatus]), &final); err != nil || final.Reason != executor.ReasonStopped {
		t.Errorf("final status annotation %q: %v", job.Annotations[AnnotationFinalStatus], err)
	}
	if err := e.Stop(ctxT(t), h, time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := e.Remove(ctxT(t), h); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Find(ctxT(t), "sleeper"); !fault.Is(err, fault.NotFound) {
		t.Errorf("Find after Remove: %v", err)
	}
	if st, err := e.Inspect(ctxT(t), h); err != nil || st.State != executor.StateLost || st.Reason != executor.ReasonNotFound {
		t.Errorf("Inspect after Remove: %+v, %v", st, err)
	}
	if _, err := e.Logs(ctxT(t), h, executor.LogOptions{Stream: executor.StreamStdout}); !fault.Is(err, fault.FailedPrecondition) {
		t.Errorf("separate streams: %v", err)
	}
}

func TestKueueQueued(t *testing.T) {
	c := newFake(node("n1", "8", "32Gi", 0, nil))
	fakeCluster(t, c)
	e := newExec(t, c, Options{StartTimeout: 10 * time.Second, Queue: "team-a"})
	began := time.Now()
	h, err := e.Start(ctxT(t), executor.Spec{ID: "queued", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(began) > 5*time.Second {
		t.Errorf("Start waited %v for a queued Job", time.Since(began))
	}
	job := getJob(t, c, h)
	if !*job.Spec.Suspend || job.Labels[KueueQueueLabel] != "team-a" {
		t.Fatalf("job %+v", job.ObjectMeta)
	}
	st, err := e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateRunning || !strings.Contains(st.Message, "queued") {
		t.Errorf("queued work: %+v, %v", st, err)
	}
	if err := e.Stop(ctxT(t), h, time.Second); err != nil {
		t.Fatal(err)
	}
	job = getJob(t, c, h)
	if *job.Spec.Parallelism != 0 {
		t.Errorf("a stopped queued Job must never start: parallelism %d", *job.Spec.Parallelism)
	}
	st, err = e.Inspect(ctxT(t), h)
	if err != nil || st.State != executor.StateExited || st.Reason != executor.ReasonStopped || st.ExitCode != -1 {
		t.Errorf("stopped queued work: %+v, %v", st, err)
	}
	// Kueue admits it afterwards: still nothing runs.
	job.Spec.Suspend = ptr(false)
	if _, err := c.BatchV1().Jobs(job.Namespace).Update(ctxT(t), job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if pods, _ := e.pods(ctxT(t), job.Namespace, job.UID); len(pods) != 0 {
		t.Errorf("a stopped Job got pods after admission: %d", len(pods))
	}
}

func TestReplicaService(t *testing.T) {
	c := newFake()
	e := newExec(t, c, Options{StartTimeout: -1})
	env := map[string]string{"PLINTH_WORKSPACE": "ws", "PLINTH_ENDPOINT": "fraud", "PLINTH_DEPLOYMENT": "blue"}
	var hs []executor.Handle
	for _, rid := range []string{"r1", "r2"} {
		env["PLINTH_REPLICA"] = rid
		h, err := e.Start(ctxT(t), executor.Spec{ID: "replica-" + rid, Shell: "serve", Env: copyMap(env), Ports: 1})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	name := hs[0].Data[dataService]
	if name == "" || hs[1].Data[dataService] != name {
		t.Fatalf("replicas of one deployment must share a Service: %v %v", hs[0].Data, hs[1].Data)
	}
	svc, err := c.CoreV1().Services("default").Get(ctxT(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector[LabelEndpoint] != "fraud" || svc.Spec.Selector[LabelDeployment] != "blue" || svc.Spec.Ports[0].Port != 8000 {
		t.Errorf("service %+v", svc.Spec)
	}
	if len(svc.OwnerReferences) != 2 || svc.OwnerReferences[0].UID != types.UID(hs[0].Data[dataUID]) || svc.OwnerReferences[1].UID != types.UID(hs[1].Data[dataUID]) {
		t.Errorf("owners %+v", svc.OwnerReferences)
	}
	if f, err := e.Find(ctxT(t), "replica-r2"); err != nil || f.Data[dataService] != name {
		t.Errorf("Find of a replica: %+v, %v", f, err)
	}
	// A job (no endpoint) gets no Service.
	h, err := e.Start(ctxT(t), executor.Spec{ID: "plainjob", Shell: "serve", Ports: 1})
	if err != nil || h.Data[dataService] != "" {
		t.Errorf("plain job: %+v, %v", h, err)
	}
}

func TestStatusOf(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(90 * time.Second)
	job := func(mut func(*batchv1.Job)) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Labels: map[string]string{LabelTier: "standard"}, Annotations: map[string]string{}},
			Spec: batchv1.JobSpec{Suspend: ptr(false), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: containerName}}}}}}
		if mut != nil {
			mut(j)
		}
		return j
	}
	term := func(code int32, reason string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: containerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: metav1.NewTime(t0), FinishedAt: metav1.NewTime(t1)}}}
	}
	pod := func(phase corev1.PodPhase, cs *corev1.ContainerStatus, mut func(*corev1.Pod)) []corev1.Pod {
		p := corev1.Pod{Status: corev1.PodStatus{Phase: phase, StartTime: ptr(metav1.NewTime(t0))}}
		if cs != nil {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{*cs}
		}
		if mut != nil {
			mut(&p)
		}
		return []corev1.Pod{p}
	}
	disrupted := func(reason string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: reason})
		}
	}
	running := corev1.ContainerStatus{Name: containerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0)}}}
	spotJob := job(func(j *batchv1.Job) { j.Labels[LabelTier] = "spot" })
	final, _ := json.Marshal(executor.Status{State: executor.StateExited, ExitCode: 143, Signal: "SIGTERM", Reason: executor.ReasonStopped})

	for _, tc := range []struct {
		name        string
		job         *batchv1.Job
		pods        []corev1.Pod
		state       executor.State
		code        int
		reason, sig string
		msg         string
	}{
		{"running", job(nil), pod(corev1.PodRunning, &running, nil), executor.StateRunning, 0, "", "", ""},
		{"exit 0", job(nil), pod(corev1.PodSucceeded, ptr(term(0, "Completed")), nil), executor.StateExited, 0, "", "", ""},
		{"exit 3", job(nil), pod(corev1.PodFailed, ptr(term(3, "Error")), nil), executor.StateExited, 3, "", "", ""},
		{"SIGKILL", job(nil), pod(corev1.PodFailed, ptr(term(137, "Error")), nil), executor.StateExited, 137, executor.ReasonSignaled, "SIGKILL", ""},
		{"OOM", job(nil), pod(corev1.PodFailed, ptr(term(137, "OOMKilled")), nil), executor.StateExited, 137, executor.ReasonOOMKilled, "SIGKILL", ""},
		{"start error", job(nil), pod(corev1.PodFailed, ptr(term(128, "StartError")), nil), executor.StateExited, 128, executor.ReasonStartFailed, "", ""},
		{"preempted", job(nil), pod(corev1.PodFailed, ptr(term(143, "Error")), disrupted("PreemptionByScheduler")), executor.StateExited, 143, ReasonPreempted, "SIGTERM", ""},
		{"evicted by API", job(nil), pod(corev1.PodFailed, ptr(term(143, "Error")), disrupted("EvictionByEvictionAPI")), executor.StateExited, 143, ReasonEvicted, "SIGTERM", ""},
		{"spot node shut down", spotJob, pod(corev1.PodFailed, ptr(term(143, "Error")), disrupted("TerminationByKubelet")), executor.StateExited, 143, ReasonPreempted, "SIGTERM", ""},
		{"kubelet eviction, no container state", job(nil), pod(corev1.PodFailed, nil, func(p *corev1.Pod) { p.Status.Reason = "Evicted" }), executor.StateLost, 0, ReasonEvicted, "", ""},
		{"stopping", job(func(j *batchv1.Job) { j.Annotations[AnnotationStopRequested] = "x" }), pod(corev1.PodRunning, &running, nil), executor.StateRunning, 0, "", "", ""},
		{"stopped", job(nil), pod(corev1.PodFailed, ptr(term(143, "Error")), func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationStopRequested: "x"}
		}), executor.StateExited, 143, executor.ReasonStopped, "SIGTERM", ""},
		{"final status wins", job(func(j *batchv1.Job) { j.Annotations[AnnotationFinalStatus] = string(final) }), nil, executor.StateExited, 143, executor.ReasonStopped, "SIGTERM", ""},
		{"pod gone, job complete", job(func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		}), nil, executor.StateExited, 0, "", "", ""},
		{"no pod yet", spotJob.DeepCopy(), nil, executor.StateRunning, 0, "", "", "pending"},
		{"pod gone, job failed by disruption", job(func(j *batchv1.Job) {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonPodFailurePolicy,
				Message: "Pod default/j-x has condition DisruptionTarget matching FailJob rule at index 0"}}
		}), nil, executor.StateLost, 0, ReasonEvicted, "", ""},
		{"pod gone, stopped", job(func(j *batchv1.Job) { j.Annotations[AnnotationStopRequested] = "x" }), nil, executor.StateExited, -1, executor.ReasonStopped, "", ""},
		{"queued", job(func(j *batchv1.Job) { j.Spec.Suspend = ptr(true); j.Labels[KueueQueueLabel] = "q" }), nil, executor.StateRunning, 0, "", "", "queued"},
		{"unschedulable", job(nil), pod(corev1.PodPending, nil, func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available"}}
		}), executor.StateRunning, 0, "", "", "pending: Unschedulable: 0/3 nodes are available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := statusOf(tc.job, tc.pods, t1)
			if st.State != tc.state || st.ExitCode != tc.code || st.Reason != tc.reason || st.Signal != tc.sig || !strings.Contains(st.Message, tc.msg) {
				t.Errorf("status = %+v; want %s, code %d, reason %q, signal %q, message ~%q", st, tc.state, tc.code, tc.reason, tc.sig, tc.msg)
			}
			if st.State == executor.StateExited && st.EndedAt.Before(st.StartedAt) {
				t.Errorf("ended %v before it started %v", st.EndedAt, st.StartedAt)
			}
		})
	}

	// GPU seconds are devices × wall time.
	gj := job(func(j *batchv1.Job) {
		j.Spec.Template.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}
	})
	if st := statusOf(gj, pod(corev1.PodSucceeded, ptr(term(0, "Completed")), nil), t1); st.Usage.GPUSeconds != 180 {
		t.Errorf("GPU seconds = %v, want 180", st.Usage.GPUSeconds)
	}
}

// TestStagedWork: work with a Stage runs `plinth workload run` from the
// tools image's binary, shared through a volume, with the stage and the
// original command in its environment; without a tools image it is
// refused, naming the setting.
func TestStagedWork(t *testing.T) {
	stage := &executor.Stage{Server: "http://plinth:8080", TokenEnv: "MLFLOW_TRACKING_TOKEN",
		Fetch:  []executor.Fetch{{Kind: executor.FetchCode, Workspace: "team-a", Source: "sha256:ab", To: "/plinth/work/code"}},
		Upload: []executor.Upload{{From: "/plinth/work/outputs/model", To: "team-a/1/r/artifacts/outputs/model"}}}
	spec := executor.Spec{ID: "staged-a1-n0", Shell: "python train.py", Dir: "/plinth/work/code", Image: "python:3.12",
		Env: map[string]string{"MLFLOW_TRACKING_TOKEN": "plk_x"}, Stage: stage, Resources: executor.Resources{CPUs: 2, MemoryBytes: 4 << 30}}

	e := newExec(t, newFake(), Options{StartTimeout: -1})
	if _, err := e.Start(ctxT(t), spec); !fault.Is(err, fault.FailedPrecondition) || !strings.Contains(err.Error(), "--kube-tools-image") {
		t.Fatalf("staged work without a tools image: %v", err)
	}

	c := newFake()
	e = newExec(t, c, Options{StartTimeout: -1, ToolsImage: "ghcr.io/plinth-dev/plinth:1"})
	h, err := e.Start(ctxT(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	pod := getJob(t, c, h).Spec.Template.Spec
	if len(pod.InitContainers) != 1 {
		t.Fatalf("init containers: %+v", pod.InitContainers)
	}
	tools, main := pod.InitContainers[0], pod.Containers[0]
	if tools.Image != "ghcr.io/plinth-dev/plinth:1" || strings.Join(tools.Args, " ") != "workload install /plinth-tools/plinth" || len(tools.Command) != 0 {
		t.Errorf("tools container: %+v", tools)
	}
	if !tools.Resources.Limits.Cpu().Equal(*main.Resources.Limits.Cpu()) || !tools.Resources.Limits.Memory().Equal(*main.Resources.Limits.Memory()) {
		t.Errorf("the tools container's resources differ from the work's (the pod would lose Guaranteed QoS): %v vs %v", tools.Resources, main.Resources)
	}
	if strings.Join(main.Command, " ") != "/plinth-tools/plinth workload run" || main.Image != "python:3.12" || main.WorkingDir != "/plinth/work" {
		t.Errorf("work container: command %q image %s dir %s", main.Command, main.Image, main.WorkingDir)
	}
	mounts := map[string]string{}
	for _, m := range main.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["plinth-tools"] != "/plinth-tools" || mounts["work"] != "/plinth/work" {
		t.Errorf("mounts: %v", mounts)
	}
	var run executor.StagedRun
	for _, env := range main.Env {
		if env.Name == executor.StagedRunEnv {
			if err := json.Unmarshal([]byte(env.Value), &run); err != nil {
				t.Fatal(err)
			}
		}
	}
	if run.Shell != "python train.py" || run.Dir != "/plinth/work/code" || run.Server != stage.Server || len(run.Fetch) != 1 || len(run.Upload) != 1 {
		t.Errorf("staged run: %+v", run)
	}

	// A stage that names no token is refused before anything is created.
	bad := spec
	bad.ID, bad.Env = "staged-bad", map[string]string{}
	if _, err := e.Start(ctxT(t), bad); !fault.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "token_env") {
		t.Errorf("stage without its token: %v", err)
	}
}

// TestDistributedRanks: every rank of a distributed job is told rank 0's
// address as a headless Service's DNS name, which every rank's Job owns.
func TestDistributedRanks(t *testing.T) {
	c := newFake()
	e := newExec(t, c, Options{StartTimeout: -1, Namespace: "ml", DefaultImage: "pytorch:2"})
	var hs []executor.Handle
	for rank := range 2 {
		env := map[string]string{"PLINTH_WORKSPACE": "team-a", "PLINTH_JOB_ID": "01jdist", "RANK": fmt.Sprint(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
		h, err := e.Start(ctxT(t), executor.Spec{ID: fmt.Sprintf("01jdist-a1-n%d", rank), Shell: "torchrun train.py", Env: env})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	name := masterServiceName("team-a", "01jdist")
	for _, h := range hs {
		var addr string
		for _, env := range getJob(t, c, h).Spec.Template.Spec.Containers[0].Env {
			if env.Name == "MASTER_ADDR" {
				addr = env.Value
			}
		}
		if addr != name+".ml.svc" {
			t.Errorf("%s: MASTER_ADDR %q, want %s.ml.svc", h.ID, addr, name)
		}
	}
	svc, err := c.CoreV1().Services("ml").Get(ctxT(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses || svc.Spec.Selector[LabelRank] != "0" || svc.Spec.Selector[LabelJob] != "01jdist" {
		t.Errorf("master Service: %+v", svc.Spec)
	}
	if len(svc.OwnerReferences) != 2 {
		t.Errorf("the Service is owned by %d Jobs, want both ranks'", len(svc.OwnerReferences))
	}
	// A single-node job gets no such Service and keeps what it was given.
	h, err := e.Start(ctxT(t), executor.Spec{ID: "01jone-a1-n0", Shell: "python train.py", Env: map[string]string{"PLINTH_JOB_ID": "01jone", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range getJob(t, c, h).Spec.Template.Spec.Containers[0].Env {
		if env.Name == "MASTER_ADDR" && env.Value != "127.0.0.1" {
			t.Errorf("single node MASTER_ADDR %q", env.Value)
		}
	}
}
