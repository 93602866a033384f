package kubernetes

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/plinth-dev/plinth/internal/executor"
)

// Container termination reasons the runtime reports when the process
// could not be started at all (containerd: StartError, Docker:
// ContainerCannotRun).
var startFailures = map[string]bool{"StartError": true, "ContainerCannotRun": true}

// Waiting reasons that will not resolve by waiting longer: the image is
// wrong or cannot be fetched. ErrImagePull is left out: it turns into
// ImagePullBackOff when it persists, and may be a passing registry error.
var imageFailures = map[string]bool{"ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true}

// statusOf derives the work's status from its Job and the Job's pods. It
// is the one place that reads Kubernetes state as executor states, so that
// Inspect, Wait, Stop and the adoption after a restart agree.
func statusOf(job *batchv1.Job, pods []corev1.Pod, now time.Time) executor.Status {
	if raw := job.Annotations[AnnotationFinalStatus]; raw != "" {
		var st executor.Status
		if json.Unmarshal([]byte(raw), &st) == nil && st.Done() {
			return st
		}
	}
	stopped := job.Annotations[AnnotationStopRequested] != ""
	gpus := gpuCount(job)
	pod := mainPod(pods)
	if pod != nil {
		if pod.Annotations[AnnotationStopRequested] != "" {
			stopped = true
		}
		// A terminating pod without a final state still runs: the kubelet
		// reports how it ended before the pod object goes.
		st := podStatus(pod, stopped, spot(job))
		st.Usage.GPUSeconds = gpuSeconds(gpus, st, now)
		return st
	}
	// No pod: it was never created, or it is gone.
	if c := condition(job, batchv1.JobComplete); c != nil {
		return executor.Status{State: executor.StateExited, StartedAt: startTime(job), EndedAt: c.LastTransitionTime.Time,
			Message: "the pod is gone; the Job completed"}
	}
	if c := condition(job, batchv1.JobFailed); c != nil {
		st := executor.Status{State: executor.StateLost, Reason: c.Reason, Message: c.Message, StartedAt: startTime(job), EndedAt: c.LastTransitionTime.Time}
		switch {
		case stopped:
			st = stoppedWithoutStatus(job, c.LastTransitionTime.Time)
		case c.Reason == batchv1.JobReasonPodFailurePolicy && strings.Contains(c.Message, string(corev1.DisruptionTarget)):
			st.Reason = disruptionReason("", spot(job))
		}
		return st
	}
	if stopped {
		return stoppedWithoutStatus(job, now)
	}
	st := executor.Status{State: executor.StateRunning, StartedAt: startTime(job)}
	if job.Spec.Suspend != nil && *job.Spec.Suspend {
		st.Message = "queued: the Job is suspended until Kueue admits it"
		if job.Labels[KueueQueueLabel] == "" {
			st.Message = "the Job is suspended"
		}
	} else {
		st.Message = "pending: the Job has not created its pod yet"
	}
	return st
}

// stoppedWithoutStatus is work that was stopped and whose pod vanished
// before it reported an exit status. The exit code is unknown: -1, which no
// process can exit with.
func stoppedWithoutStatus(job *batchv1.Job, at time.Time) executor.Status {
	return executor.Status{State: executor.StateExited, ExitCode: -1, Reason: executor.ReasonStopped,
		Message: "stopped; the pod was gone before it reported an exit status", StartedAt: startTime(job), EndedAt: at}
}

// podStatus reads one pod.
func podStatus(pod *corev1.Pod, stopped, spot bool) executor.Status {
	cs := containerStatus(pod)
	started := pod.CreationTimestamp.Time
	if pod.Status.StartTime != nil {
		started = pod.Status.StartTime.Time
	}
	disrupted, dmsg := disruption(pod)
	if cs != nil && cs.State.Terminated != nil {
		t := cs.State.Terminated
		st := executor.Status{State: executor.StateExited, ExitCode: int(t.ExitCode), StartedAt: t.StartedAt.Time, EndedAt: t.FinishedAt.Time,
			Message: strings.TrimSpace(t.Message)}
		if !known(t.StartedAt) {
			st.StartedAt = started
		}
		if st.EndedAt.IsZero() || st.EndedAt.Before(st.StartedAt) {
			st.EndedAt = st.StartedAt
		}
		switch {
		case t.Reason == "OOMKilled":
			st.Reason = executor.ReasonOOMKilled
			st.Signal = signalOf(t)
		case startFailures[t.Reason]:
			st.Reason = executor.ReasonStartFailed
		default:
			if st.Signal = signalOf(t); st.Signal != "" {
				st.Reason = executor.ReasonSignaled
			}
		}
		if stopped {
			st.Reason = executor.ReasonStopped
		} else if disrupted != "" && st.Reason != executor.ReasonOOMKilled {
			st.Reason = disruptionReason(disrupted, spot)
			st.Message = joinMsg(dmsg, st.Message)
		}
		return st
	}
	if podEnded(pod) {
		// Ended without a container state: evicted or deadline-killed
		// before the container started, deleted before it was scheduled,
		// or a kubelet that lost the record.
		st := executor.Status{State: executor.StateLost, Reason: pod.Status.Reason, Message: pod.Status.Message, StartedAt: started, EndedAt: started}
		if st.Message == "" && pod.DeletionTimestamp != nil {
			st.Message = "the pod was deleted before it ran"
		}
		switch {
		case stopped:
			st = executor.Status{State: executor.StateExited, ExitCode: -1, Reason: executor.ReasonStopped, StartedAt: started, EndedAt: started,
				Message: "stopped before the container reported an exit status"}
		case disrupted != "" || pod.Status.Reason == "Evicted":
			st.Reason = disruptionReason(disrupted, spot)
			st.Message = joinMsg(dmsg, pod.Status.Message)
		case pod.Status.Phase == corev1.PodSucceeded:
			st.State, st.Reason = executor.StateExited, ""
		}
		return st
	}
	st := executor.Status{State: executor.StateRunning, StartedAt: started}
	switch {
	case cs != nil && cs.State.Running != nil:
		if !cs.State.Running.StartedAt.IsZero() {
			st.StartedAt = cs.State.Running.StartedAt.Time
		}
	case cs != nil && cs.State.Waiting != nil:
		st.Message = joinMsg("pending: "+cs.State.Waiting.Reason, cs.State.Waiting.Message)
	default:
		if c := podCondition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse {
			st.Message = joinMsg("pending: "+c.Reason, c.Message)
		} else {
			st.Message = "pending"
		}
	}
	return st
}

// disruption returns the reason of the pod's DisruptionTarget condition:
// the API's record that the cluster, not the work, ended the pod.
func disruption(pod *corev1.Pod) (reason, message string) {
	if c := podCondition(pod, corev1.DisruptionTarget); c != nil && c.Status == corev1.ConditionTrue {
		return c.Reason, c.Message
	}
	return "", ""
}

// disruptionReason maps a DisruptionTarget reason to ours. On a spot pool
// every way of losing the node (kubelet shutdown, taint manager, pod GC) is
// the spot node being reclaimed: a preemption.
func disruptionReason(reason string, spot bool) string {
	if reason == "PreemptionByScheduler" || spot {
		return ReasonPreempted
	}
	return ReasonEvicted
}

func spot(job *batchv1.Job) bool { return job.Labels[LabelTier] == "spot" }

// mainPod picks the pod that tells the work's fate: the newest. With a
// backoff limit of 0 there is one, unless a replacement was racing a
// deletion.
func mainPod(pods []corev1.Pod) *corev1.Pod {
	if len(pods) == 0 {
		return nil
	}
	sorted := make([]*corev1.Pod, len(pods))
	for i := range pods {
		sorted[i] = &pods[i]
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		return sorted[i].CreationTimestamp.After(sorted[j].CreationTimestamp.Time)
	})
	return sorted[0]
}

func containerStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == containerName {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func condition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		c := &job.Status.Conditions[i]
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func startTime(job *batchv1.Job) time.Time {
	if job.Status.StartTime != nil {
		return job.Status.StartTime.Time
	}
	return job.CreationTimestamp.Time
}

func gpuCount(job *batchv1.Job) int64 {
	var n int64
	for _, c := range job.Spec.Template.Spec.Containers {
		for name, q := range c.Resources.Limits {
			if strings.HasSuffix(string(name), "/gpu") {
				n += q.Value()
			}
		}
	}
	return n
}

// gpuSeconds is GPU time allocated: devices × wall seconds so far.
func gpuSeconds(gpus int64, st executor.Status, now time.Time) float64 {
	if gpus == 0 || st.StartedAt.IsZero() {
		return 0
	}
	end := st.EndedAt
	if !st.Done() || end.IsZero() {
		end = now
	}
	return float64(gpus) * max(0, end.Sub(st.StartedAt).Seconds())
}

// signalOf names the signal that ended a container. Runtimes report a
// signal death as exit code 128+n, as shells do; the numbers are Linux's,
// the containers' kernel, whatever the control plane runs on.
func signalOf(t *corev1.ContainerStateTerminated) string {
	n := int(t.Signal)
	if n == 0 && t.ExitCode > 128 && t.ExitCode < 128+65 {
		n = int(t.ExitCode) - 128
	}
	if n <= 0 {
		return ""
	}
	if n < len(signalNames) && signalNames[n] != "" {
		return signalNames[n]
	}
	return "SIG" + strconv.Itoa(n)
}

var signalNames = [...]string{
	1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
	9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
	16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
	23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
	30: "SIGPWR", 31: "SIGSYS",
}

func joinMsg(a, b string) string {
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ": " + b
}

// known reports whether a container time was really recorded: runtimes
// report a container that never started with the Unix epoch, not a zero.
func known(t metav1.Time) bool { return !t.IsZero() && t.Unix() > 0 }
