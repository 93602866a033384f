package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Keys of Handle.Data.
const (
	dataNamespace = "namespace"
	dataKind      = "kind"
	dataName      = "name"
	dataUID       = "uid"
	dataPod       = "pod"
	dataNode      = "node"
	dataService   = "service"
)

// ref is what a Handle says about the objects.
type ref struct {
	id, namespace, name string
	uid                 types.UID
}

func (e *Executor) refOf(h executor.Handle) (ref, error) {
	if h.Backend != Backend {
		return ref{}, fault.New(fault.Invalid, "handle %s is of backend %q, not %s", h.ID, h.Backend, Backend)
	}
	r := ref{id: h.ID, namespace: h.Data[dataNamespace], name: h.Data[dataName], uid: types.UID(h.Data[dataUID])}
	if r.namespace == "" {
		r.namespace = e.opts.Namespace
	}
	if r.name == "" {
		r.name = objectName(h.ID)
	}
	return r, nil
}

// Start implements executor.Executor: it creates the Job (and, for a
// replica, makes it an owner of its deployment's Service), then waits up to
// Options.StartTimeout for the pod to run so that a command or image that
// cannot run fails here, as the contract asks.
func (e *Executor) Start(ctx context.Context, spec executor.Spec) (executor.Handle, error) {
	if err := spec.Validate(); err != nil {
		return executor.Handle{}, err
	}
	p, err := e.buildJob(spec)
	if err != nil {
		return executor.Handle{}, err
	}
	e.maybeRefresh()
	jobs := e.client.BatchV1().Jobs(e.opts.Namespace)
	job, err := jobs.Create(ctx, p.job, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return executor.Handle{}, fault.New(fault.AlreadyExists, "work %q already exists (Job %s/%s)", spec.ID, e.opts.Namespace, p.job.Name)
	}
	if err != nil {
		return executor.Handle{}, apiFault(err, "creating Job %s/%s", e.opts.Namespace, p.job.Name)
	}
	r := ref{id: spec.ID, namespace: job.Namespace, name: job.Name, uid: job.UID}
	fail := func(err error) (executor.Handle, error) {
		// Leave nothing behind, and free the ID for a retry.
		if derr := e.purge(context.WithoutCancel(ctx), r); derr != nil {
			e.opts.Log.Warn("kubernetes executor: removing a failed start", "id", spec.ID, "err", derr)
		}
		return executor.Handle{}, err
	}
	if p.service != "" {
		if err := e.ensureService(ctx, job, p.service, func() *corev1.Service { return e.buildService(p.service, p.labels, p.ports) }); err != nil {
			return fail(apiFault(err, "adding work %s to Service %s/%s", spec.ID, e.opts.Namespace, p.service))
		}
	}
	if p.master != "" {
		if err := e.ensureService(ctx, job, p.master, func() *corev1.Service { return e.buildMasterService(p.master, p.labels) }); err != nil {
			return fail(apiFault(err, "adding work %s to Service %s/%s", spec.ID, e.opts.Namespace, p.master))
		}
	}
	var pod *corev1.Pod
	if e.opts.StartTimeout >= 0 {
		if pod, err = e.awaitStart(ctx, r, spec); err != nil {
			return fail(err)
		}
	}
	h := e.handleOf(job, pod)
	if p.service != "" {
		h.Data[dataService] = p.service
	}
	return h, nil
}

// handleOf builds the handle of job. Host (and Node, as before it) is the
// pod's IP, the address its ports are reached on: each pod has its own
// network namespace, so Ports are the same container ports for every pod.
func (e *Executor) handleOf(job *batchv1.Job, pod *corev1.Pod) executor.Handle {
	id := job.Annotations[AnnotationWorkID]
	h := executor.Handle{ID: id, Backend: Backend, Data: map[string]string{
		dataNamespace: job.Namespace, dataKind: "job", dataName: job.Name, dataUID: string(job.UID),
	}}
	for _, c := range job.Spec.Template.Spec.Containers {
		if c.Name != containerName {
			continue
		}
		for _, p := range c.Ports {
			h.Ports = append(h.Ports, int(p.ContainerPort))
		}
		if c.WorkingDir != "" {
			h.Dir = c.WorkingDir
		}
	}
	if pod != nil {
		h.Node, h.Host = pod.Status.PodIP, pod.Status.PodIP
		h.Data[dataPod] = pod.Name
		if pod.Spec.NodeName != "" {
			h.Data[dataNode] = pod.Spec.NodeName
		}
	}
	return h
}

// awaitStart waits until the pod runs (or already ended), returning it. A
// container that could not start, or an image that cannot be pulled, is
// fault.Invalid. Work that cannot run yet for reasons the cluster may
// resolve (queued in Kueue, unschedulable until the autoscaler adds a node,
// slow to pull) is accepted when it says so or when the timeout passes.
func (e *Executor) awaitStart(ctx context.Context, r ref, spec executor.Spec) (*corev1.Pod, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, e.opts.StartTimeout)
	defer cancel()
	var last *corev1.Pod
	err := e.poll(ctx, func() (bool, error) {
		job, pods, err := e.objects(ctx, r)
		if err != nil {
			return false, err
		}
		if job == nil {
			return false, fault.New(fault.Internal, "Job %s/%s vanished while starting", r.namespace, r.name)
		}
		if job.Spec.Suspend != nil && *job.Spec.Suspend {
			return true, nil // queued: admission may take hours
		}
		pod := mainPod(pods)
		if pod == nil {
			return false, nil
		}
		last = pod
		cs := containerStatus(pod)
		switch {
		case cs != nil && cs.State.Terminated != nil && startFailures[cs.State.Terminated.Reason]:
			return false, commandFault(spec, pod, cs.State.Terminated.Message)
		case cs != nil && cs.State.Waiting != nil && imageFailures[cs.State.Waiting.Reason]:
			return false, &fault.Error{Kind: fault.Invalid, Field: "image",
				Message: fmt.Sprintf("image %q cannot be used: %s: %s", pod.Spec.Containers[0].Image, cs.State.Waiting.Reason, cs.State.Waiting.Message)}
		case cs != nil && (cs.State.Running != nil || cs.State.Terminated != nil):
			return true, nil
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			return true, nil
		}
		if c := podCondition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true, nil
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil && parent.Err() == nil {
		return last, nil // our own StartTimeout passed: accepted as pending
	}
	return last, err
}

// commandFault reports a container that could not be started.
func commandFault(spec executor.Spec, pod *corev1.Pod, msg string) error {
	name := "/bin/sh"
	if len(spec.Command) > 0 {
		name = spec.Command[0]
	}
	low := strings.ToLower(msg)
	if strings.Contains(low, "not found") || strings.Contains(low, "no such file") {
		return &fault.Error{Kind: fault.Invalid, Field: "command",
			Message: fmt.Sprintf("command %q not found in image %s: %s", name, pod.Spec.Containers[0].Image, strings.TrimSpace(msg))}
	}
	return &fault.Error{Kind: fault.Invalid, Field: "command",
		Message: fmt.Sprintf("command %q cannot be started in image %s: %s", name, pod.Spec.Containers[0].Image, strings.TrimSpace(msg))}
}

// ensureService creates a Service shared by several Jobs (a deployment's
// replicas, a distributed job's ranks) or adds job to its owners, so that
// it goes with the last of them.
func (e *Executor) ensureService(ctx context.Context, job *batchv1.Job, name string, build func() *corev1.Service) error {
	svcs := e.client.CoreV1().Services(e.opts.Namespace)
	owner := jobOwner(job)
	return retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			svc = build()
			svc.OwnerReferences = []metav1.OwnerReference{owner}
			_, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if svc.DeletionTimestamp != nil {
			// The garbage collector is removing it (its last replica went);
			// wait for it to go and create it afresh.
			return apierrors.NewAlreadyExists(corev1.Resource("services"), name)
		}
		for _, o := range svc.OwnerReferences {
			if o.UID == job.UID {
				return nil
			}
		}
		svc.OwnerReferences = append(svc.OwnerReferences, owner)
		_, err = svcs.Update(ctx, svc, metav1.UpdateOptions{})
		return err
	})
}

// objects returns the Job of r (nil when it is gone, being deleted, or a
// different Job under the same name) and its pods.
func (e *Executor) objects(ctx context.Context, r ref) (*batchv1.Job, []corev1.Pod, error) {
	job, err := e.client.BatchV1().Jobs(r.namespace).Get(ctx, r.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, apiFault(err, "reading Job %s/%s", r.namespace, r.name)
	}
	if r.uid != "" && job.UID != r.uid || job.DeletionTimestamp != nil {
		return nil, nil, nil
	}
	pods, err := e.pods(ctx, r.namespace, job.UID)
	return job, pods, err
}

// pods lists the pods a Job controls (the controller-uid label the Job
// controller sets, which no other Job's pods can carry).
func (e *Executor) pods(ctx context.Context, namespace string, uid types.UID) ([]corev1.Pod, error) {
	sel := labels.Set{batchv1.ControllerUidLabel: string(uid)}.String()
	list, err := e.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, apiFault(err, "listing the pods of Job uid %s", uid)
	}
	return list.Items, nil
}

// Inspect implements executor.Executor. Work whose Job is gone is Lost;
// pods it left behind (an orphaning delete) are deleted then.
func (e *Executor) Inspect(ctx context.Context, h executor.Handle) (executor.Status, error) {
	r, err := e.refOf(h)
	if err != nil {
		return executor.Status{}, err
	}
	job, pods, err := e.objects(ctx, r)
	if err != nil {
		return executor.Status{}, err
	}
	if job == nil {
		if r.uid != "" {
			if err := e.deletePods(ctx, r, seconds(e.opts.TerminationGrace)); err != nil {
				e.opts.Log.Warn("kubernetes executor: deleting the pods of lost work", "id", h.ID, "err", err)
			}
		}
		return executor.Status{State: executor.StateLost, Reason: executor.ReasonNotFound,
			Message: fmt.Sprintf("Job %s/%s no longer exists", r.namespace, r.name)}, nil
	}
	return statusOf(job, pods, time.Now()), nil
}

// Wait implements executor.Executor. It polls with backoff rather than
// watching: a watch can drop and must then be re-listed anyway, and one
// Inspect per poll keeps a single reading of the cluster's state.
func (e *Executor) Wait(ctx context.Context, h executor.Handle) (executor.Status, error) {
	var st executor.Status
	err := e.poll(ctx, func() (bool, error) {
		var err error
		st, err = e.Inspect(ctx, h)
		return err == nil && st.Done(), err
	})
	if err != nil {
		return executor.Status{}, err
	}
	return st, nil
}

// poll calls f until it reports done or fails, backing off from 50 ms to
// Options.PollInterval. It returns ctx's error when ctx ends first.
func (e *Executor) poll(ctx context.Context, f func() (bool, error)) error {
	delay := 50 * time.Millisecond
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, e.opts.PollInterval)
	}
}

// Stop implements executor.Executor. A running pod is ended by setting its
// activeDeadlineSeconds, so the kubelet sends SIGTERM and, after the pod's
// grace, SIGKILL while the pod object stays, with its exit status and
// logs. When Stop's own grace is shorter than the pod's and the pod still
// runs, it is deleted with that grace instead. Pods that never started are
// deleted. The request is recorded on the Job and the pod first, so that a
// control plane that dies during Stop still reads the work as stopped; the
// final status is written onto the Job last.
func (e *Executor) Stop(ctx context.Context, h executor.Handle, grace time.Duration) error {
	r, err := e.refOf(h)
	if err != nil {
		return err
	}
	job, pods, err := e.objects(ctx, r)
	if err != nil || job == nil {
		return err
	}
	if statusOf(job, pods, time.Now()).Done() {
		return nil
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationStopRequested: now}}}
	if job.Spec.Suspend != nil && *job.Spec.Suspend || mainPod(pods) == nil {
		// Nothing runs yet: make sure nothing will, even if Kueue admits
		// the Job after this.
		patch["spec"] = map[string]any{"parallelism": 0}
	}
	if job.Annotations[AnnotationStopRequested] == "" || patch["spec"] != nil {
		if err := e.patchJob(ctx, r, patch); err != nil {
			return err
		}
	}

	start := time.Now()
	for i := range pods {
		if err := e.stopPod(ctx, &pods[i], now, grace); err != nil {
			return err
		}
	}
	// Wait for every pod to end, escalating to a delete when grace runs out.
	escalated := false
	err = e.poll(ctx, func() (bool, error) {
		pods, err := e.pods(ctx, r.namespace, r.uid)
		if err != nil {
			return false, err
		}
		running := 0
		for i := range pods {
			if !podEnded(&pods[i]) {
				running++
			}
		}
		if running > 0 && !escalated && time.Since(start) > grace && grace < e.opts.TerminationGrace {
			escalated = true
			for i := range pods {
				if !podEnded(&pods[i]) {
					if err := e.deletePod(ctx, &pods[i], 1); err != nil {
						return false, err
					}
				}
			}
		}
		return running == 0, nil
	})
	if err != nil {
		return err
	}
	return e.recordFinal(ctx, r)
}

// stopPod ends one pod: see Stop.
func (e *Executor) stopPod(ctx context.Context, pod *corev1.Pod, now string, grace time.Duration) error {
	if podEnded(pod) {
		return nil
	}
	if pod.Status.StartTime == nil || pod.Spec.NodeName == "" {
		return e.deletePod(ctx, pod, seconds(grace))
	}
	// The deadline counts from the pod's start; one already past makes
	// the kubelet kill the pod at once.
	deadline := max(1, int64(time.Since(pod.Status.StartTime.Time).Seconds()))
	if pod.Spec.ActiveDeadlineSeconds != nil && *pod.Spec.ActiveDeadlineSeconds < deadline {
		deadline = *pod.Spec.ActiveDeadlineSeconds // it may only decrease
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{AnnotationStopRequested: now}},
		"spec":     map[string]any{"activeDeadlineSeconds": deadline},
	})
	_, err := e.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return apiFault(err, "stopping pod %s/%s", pod.Namespace, pod.Name)
	}
	return nil
}

func (e *Executor) deletePod(ctx context.Context, pod *corev1.Pod, graceSeconds int64) error {
	err := e.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &graceSeconds, Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return apiFault(err, "deleting pod %s/%s", pod.Namespace, pod.Name)
	}
	return nil
}

// deletePods deletes the pods of r's Job one by one (a role that may
// delete pods need not be granted deletecollection).
func (e *Executor) deletePods(ctx context.Context, r ref, graceSeconds int64) error {
	pods, err := e.pods(ctx, r.namespace, r.uid)
	if err != nil {
		return err
	}
	for i := range pods {
		if err := e.deletePod(ctx, &pods[i], graceSeconds); err != nil {
			return err
		}
	}
	return nil
}

// podEnded: no process of the pod runs (its container terminated, or the
// pod reached a final phase, or it is being deleted without ever having
// been bound to a node, so no kubelet ever ran it; such a pod can linger
// under the Job's tracking finalizer until the pod GC marks it failed).
func podEnded(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return true
	}
	if pod.DeletionTimestamp != nil && pod.Spec.NodeName == "" {
		return true
	}
	cs := containerStatus(pod)
	return cs != nil && cs.State.Terminated != nil
}

// recordFinal writes the work's final status onto its Job, once: pods may
// be deleted later (by a node's loss, or Remove), the Job keeps what
// Inspect reports.
func (e *Executor) recordFinal(ctx context.Context, r ref) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		job, pods, err := e.objects(ctx, r)
		if err != nil || job == nil || job.Annotations[AnnotationFinalStatus] != "" {
			return err
		}
		st := statusOf(job, pods, time.Now())
		if !st.Done() {
			return nil
		}
		raw, _ := json.Marshal(st)
		if job.Annotations == nil {
			job.Annotations = map[string]string{}
		}
		job.Annotations[AnnotationFinalStatus] = string(raw)
		_, err = e.client.BatchV1().Jobs(r.namespace).Update(ctx, job, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

func (e *Executor) patchJob(ctx context.Context, r ref, patch map[string]any) error {
	raw, _ := json.Marshal(patch)
	_, err := e.client.BatchV1().Jobs(r.namespace).Patch(ctx, r.name, types.MergePatchType, raw, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return apiFault(err, "stopping Job %s/%s", r.namespace, r.name)
	}
	return nil
}

// Find implements executor.Executor.
func (e *Executor) Find(ctx context.Context, id string) (executor.Handle, error) {
	if err := executor.ValidateID(id); err != nil {
		return executor.Handle{}, err
	}
	sel := labels.Set{LabelWorkID: labelValue(id)}.String()
	list, err := e.client.BatchV1().Jobs(e.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return executor.Handle{}, apiFault(err, "looking up work %s", id)
	}
	for i := range list.Items {
		job := &list.Items[i]
		if job.Annotations[AnnotationWorkID] != id || job.DeletionTimestamp != nil {
			continue
		}
		pods, err := e.pods(ctx, job.Namespace, job.UID)
		if err != nil {
			return executor.Handle{}, err
		}
		h := e.handleOf(job, mainPod(pods))
		if lbl := job.Spec.Template.Labels; lbl[LabelEndpoint] != "" && len(h.Ports) > 0 {
			for _, o := range e.ownedServices(ctx, job) {
				h.Data[dataService] = o
			}
		}
		return h, nil
	}
	return executor.Handle{}, fault.New(fault.NotFound, "no work with ID %q", id)
}

// ownedServices names the Services job is an owner of.
func (e *Executor) ownedServices(ctx context.Context, job *batchv1.Job) []string {
	sel := labels.Set{LabelManagedBy: ManagedByValue, LabelEndpoint: job.Spec.Template.Labels[LabelEndpoint]}.String()
	list, err := e.client.CoreV1().Services(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range list.Items {
		for _, o := range s.OwnerReferences {
			if o.UID == job.UID {
				out = append(out, s.Name)
			}
		}
	}
	return out
}

// Remove implements executor.Executor. The Job is deleted in the
// foreground: it stays until its pods are gone, so the ID is not free while
// a pod of it still holds its node's resources. The deployment's Service
// goes with its last owner, by garbage collection.
func (e *Executor) Remove(ctx context.Context, h executor.Handle) error {
	r, err := e.refOf(h)
	if err != nil {
		return err
	}
	job, pods, err := e.objects(ctx, r)
	if err != nil || job == nil {
		return err
	}
	if st := statusOf(job, pods, time.Now()); !st.Done() {
		return fault.New(fault.FailedPrecondition, "work %s is still running; stop it first", h.ID)
	}
	return e.deleteJob(ctx, r, metav1.DeletePropagationForeground)
}

func (e *Executor) deleteJob(ctx context.Context, r ref, prop metav1.DeletionPropagation) error {
	opts := metav1.DeleteOptions{PropagationPolicy: &prop}
	if r.uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &r.uid}
	}
	err := e.client.BatchV1().Jobs(r.namespace).Delete(ctx, r.name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return apiFault(err, "deleting Job %s/%s", r.namespace, r.name)
	}
	return nil
}

// purge removes a Job that failed to start, and waits until its name is
// free: the contract lets the caller retry the same ID at once. The Job
// goes first (background propagation frees the name at once); its pods are
// deleted directly too rather than left to the garbage collector.
func (e *Executor) purge(ctx context.Context, r ref) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.deleteJob(ctx, r, metav1.DeletePropagationBackground); err != nil {
		return err
	}
	if r.uid != "" {
		if err := e.deletePods(ctx, r, 1); err != nil {
			return err
		}
	}
	return e.poll(ctx, func() (bool, error) {
		_, err := e.client.BatchV1().Jobs(r.namespace).Get(ctx, r.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// Logs implements executor.Executor: the container's log through the API
// server, which interleaves stdout and stderr as the runtime recorded them
// and cannot separate them.
func (e *Executor) Logs(ctx context.Context, h executor.Handle, opts executor.LogOptions) (io.ReadCloser, error) {
	if opts.Stream != executor.StreamCombined {
		return nil, fault.New(fault.FailedPrecondition, "the kubernetes executor keeps only the combined log")
	}
	r, err := e.refOf(h)
	if err != nil {
		return nil, err
	}
	var pod *corev1.Pod
	err = e.poll(ctx, func() (bool, error) {
		job, pods, err := e.objects(ctx, r)
		if err != nil {
			return false, err
		}
		if job == nil {
			return false, fault.New(fault.NotFound, "work %s: Job %s/%s no longer exists", h.ID, r.namespace, r.name)
		}
		pod = mainPod(pods)
		if !opts.Follow || statusOf(job, pods, time.Now()).Done() {
			return true, nil
		}
		// Following: wait for the container to start, since the API
		// answers a waiting container's log with an error.
		cs := (*corev1.ContainerStatus)(nil)
		if pod != nil {
			cs = containerStatus(pod)
		}
		return cs != nil && (cs.State.Running != nil || cs.State.Terminated != nil), nil
	})
	if err != nil {
		return nil, err
	}
	if pod == nil || !containerStarted(pod) {
		return io.NopCloser(strings.NewReader("")), nil // never ran: no output
	}
	rc, err := e.client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: containerName, Follow: opts.Follow}).Stream(ctx)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return io.NopCloser(strings.NewReader("")), nil // the pod went meanwhile
		}
		return nil, apiFault(err, "reading the log of pod %s/%s", pod.Namespace, pod.Name)
	}
	return &ctxReader{ctx: ctx, rc: rc}, nil
}

func containerStarted(pod *corev1.Pod) bool {
	cs := containerStatus(pod)
	return cs != nil && (cs.State.Running != nil || cs.State.Terminated != nil && known(cs.State.Terminated.StartedAt))
}

// ctxReader reports the context's own error when a follower is cut off by
// it, whatever error the transport wraps it in, as the contract asks.
type ctxReader struct {
	ctx context.Context
	rc  io.ReadCloser
}

func (r *ctxReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF && r.ctx.Err() != nil {
		return n, r.ctx.Err()
	}
	return n, err
}

func (r *ctxReader) Close() error { return r.rc.Close() }

// apiFault classifies an API error for Plinth's callers.
func apiFault(err error, format string, args ...any) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	kind := fault.Internal
	switch {
	case apierrors.IsNotFound(err):
		kind = fault.NotFound
	case apierrors.IsAlreadyExists(err):
		kind = fault.AlreadyExists
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		kind = fault.Invalid
	case apierrors.IsForbidden(err):
		// Quota refusals arrive as Forbidden; RBAC ones too, but those are
		// the operator's to fix, and the message says which.
		if strings.Contains(err.Error(), "exceeded quota") {
			kind = fault.ResourceExhausted
		} else {
			kind = fault.FailedPrecondition
		}
	case apierrors.IsServerTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsTooManyRequests(err),
		apierrors.IsTimeout(err), apierrors.IsInternalError(err):
		kind = fault.Unavailable
	case apierrors.IsConflict(err):
		kind = fault.FailedPrecondition
	}
	return fault.Wrap(kind, err, format, args...)
}
