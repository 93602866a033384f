package kubernetes

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// toolsMount is where staged work finds the plinth binary.
const toolsMount = "/plinth-tools"

// DefaultLANG is set when Spec.Env has no LANG. PATH and HOME are left to
// the image (its ENV PATH) and the runtime (the image user's home): unlike
// the local backend we do not know the image's layout.
const DefaultLANG = "C.UTF-8"

// plan is everything Start derives from a spec before creating objects.
type plan struct {
	job     *batchv1.Job
	ports   []int
	service string // the deployment's Service, for replicas
	master  string // the headless Service naming rank 0, for distributed jobs
	labels  map[string]string
}

// buildJob turns a validated spec into its Job.
func (e *Executor) buildJob(spec executor.Spec) (plan, error) {
	image := spec.Image
	if image == "" {
		image = e.opts.DefaultImage
	}
	if image == "" {
		return plan{}, fault.InvalidField("image", "the kubernetes executor runs containers: set environment.image (no default image is configured)")
	}
	if spec.Dir != "" && !strings.HasPrefix(spec.Dir, "/") {
		return plan{}, fault.InvalidField("dir", "must be an absolute path inside the image, got %q", spec.Dir)
	}
	pl := e.opts.Place(spec)
	pool, err := e.pool(spec, pl)
	if err != nil {
		return plan{}, err
	}

	name := objectName(spec.ID)
	lbl := map[string]string{LabelManagedBy: ManagedByValue, LabelWorkID: labelValue(spec.ID)}
	for _, m := range envLabels {
		if v := spec.Env[m.env]; v != "" {
			lbl[m.label] = labelValue(v)
		}
	}
	lbl[LabelTier] = "standard"
	if pl.Spot {
		lbl[LabelTier] = "spot"
	}
	queue := e.opts.Queue
	if pool != nil {
		lbl[LabelPool] = labelValue(pool.Name)
		if pool.Queue != "" {
			queue = pool.Queue
		}
	}
	jobLabels := copyMap(lbl)
	if queue != "" {
		jobLabels[KueueQueueLabel] = queue
	}

	ports := make([]int, spec.Ports)
	for i := range ports {
		ports[i] = e.opts.BasePort + i
	}

	// The ranks of a distributed job find rank 0 by name: a headless
	// Service selecting its pod (the local backend's 127.0.0.1 means
	// nothing across pods).
	master := ""
	if n, _ := strconv.Atoi(spec.Env["WORLD_SIZE"]); n > 1 && spec.Env["PLINTH_JOB_ID"] != "" {
		master = masterServiceName(spec.Env["PLINTH_WORKSPACE"], spec.Env["PLINTH_JOB_ID"])
		spec.Env = copyMap(spec.Env)
		spec.Env["MASTER_ADDR"] = master + "." + e.opts.Namespace + ".svc"
	}

	c := corev1.Container{
		Name:  containerName,
		Image: image,
		Env:   containerEnv(spec, ports),
		// The last lines of output become the termination message of a
		// failed container, which Status.Message shows.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	}
	if spec.Stage != nil {
		// The tools init container leaves a copy of the plinth binary in
		// a shared volume; it fetches, runs the command, then uploads.
		if e.opts.ToolsImage == "" {
			return plan{}, fault.New(fault.FailedPrecondition, "this work fetches its files from the control plane, which needs the Plinth tools image (--kube-tools-image)")
		}
		run, err := json.Marshal(executor.StagedRun{Stage: *spec.Stage, Command: spec.Command, Shell: spec.Shell, Dir: spec.Dir})
		if err != nil {
			return plan{}, err
		}
		c.Command = []string{toolsMount + "/plinth", "workload", "run"}
		c.Env = append(c.Env, corev1.EnvVar{Name: executor.StagedRunEnv, Value: string(run)})
	} else if spec.Shell != "" {
		c.Command = []string{"/bin/sh", "-c", spec.Shell}
	} else {
		// The spec's argv is the whole argv: it replaces the image's
		// ENTRYPOINT as well as its CMD.
		c.Command = append([]string(nil), spec.Command...)
	}
	for i, p := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "p" + strconv.Itoa(i), ContainerPort: int32(p), Protocol: corev1.ProtocolTCP})
	}
	c.Resources = e.resources(spec.Resources)

	var volumes []corev1.Volume
	var initContainers []corev1.Container
	if spec.Stage != nil {
		volumes = append(volumes, corev1.Volume{Name: "plinth-tools", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		tools := corev1.VolumeMount{Name: "plinth-tools", MountPath: toolsMount}
		c.VolumeMounts = append(c.VolumeMounts, tools)
		initContainers = append(initContainers, corev1.Container{
			Name: "plinth-tools", Image: e.opts.ToolsImage, ImagePullPolicy: corev1.PullIfNotPresent,
			// The image's ENTRYPOINT is the plinth binary.
			Args:         []string{"workload", "install", toolsMount + "/plinth"},
			VolumeMounts: []corev1.VolumeMount{tools},
			// Equal to the work's, so the pod keeps its QoS class and asks
			// for nothing more (a pod requests the larger of the two).
			Resources: e.resources(spec.Resources),
		})
	}
	if spec.Dir == "" || spec.Stage != nil {
		ed := &corev1.EmptyDirVolumeSource{}
		if spec.Resources.DiskBytes > 0 {
			q := quantity(spec.Resources.DiskBytes)
			ed.SizeLimit = &q
		}
		volumes = append(volumes, corev1.Volume{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: ed}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "work", MountPath: e.opts.WorkDir})
		c.WorkingDir = e.opts.WorkDir
	} else {
		c.WorkingDir = spec.Dir
	}

	grace := int64(math.Ceil(e.opts.TerminationGrace.Seconds()))
	pod := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		InitContainers:                initContainers,
		Containers:                    []corev1.Container{c},
		Volumes:                       volumes,
		TerminationGracePeriodSeconds: &grace,
		// Service links would add variables for every Service in the
		// namespace; Spec.Env is meant to be the complete environment.
		EnableServiceLinks: ptr(false),
		// Work must not hold credentials to the cluster that runs it.
		AutomountServiceAccountToken: ptr(false),
		ServiceAccountName:           e.opts.ServiceAccount,
	}
	for _, s := range e.opts.ImagePullSecrets {
		pod.ImagePullSecrets = append(pod.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	if pool != nil {
		pod.NodeSelector = copyMap(pool.NodeSelector)
		pod.Tolerations = append([]corev1.Toleration(nil), pool.Tolerations...)
	}

	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: e.opts.Namespace, Labels: jobLabels,
			Annotations: map[string]string{AnnotationWorkID: spec.ID},
		},
		Spec: batchv1.JobSpec{
			Parallelism: ptr(int32(1)),
			Completions: ptr(int32(1)),
			// Plinth retries attempts itself, each under a new ID; a pod
			// the Job controller re-ran silently would be a second,
			// unrecorded attempt.
			BackoffLimit: ptr(int32(0)),
			// A disrupted pod (preempted, evicted, its node gone) fails
			// the Job with reason PodFailurePolicy, so the preemption stays
			// visible on the Job after the pod itself is deleted.
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action:          batchv1.PodFailurePolicyActionFailJob,
				OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
			}}},
			// Kueue admits a suspended Job by resuming it.
			Suspend: ptr(queue != ""),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl, Annotations: map[string]string{AnnotationWorkID: spec.ID}},
				Spec:       pod,
			},
		},
	}
	p := plan{job: job, ports: ports, labels: lbl, master: master}
	if spec.Ports > 0 && lbl[LabelEndpoint] != "" && lbl[LabelDeployment] != "" {
		p.service = serviceName(spec.Env["PLINTH_WORKSPACE"], spec.Env["PLINTH_ENDPOINT"], spec.Env["PLINTH_DEPLOYMENT"])
	}
	return p, nil
}

// resources turns the spec's limits into equal requests and limits:
// Guaranteed QoS, so that the work is the last to be evicted under node
// pressure and gets exactly what its SKU is billed for.
func (e *Executor) resources(r executor.Resources) corev1.ResourceRequirements {
	rl := corev1.ResourceList{}
	if r.CPUs > 0 {
		rl[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(math.Ceil(r.CPUs*1000)), resource.DecimalSI)
	}
	if r.MemoryBytes > 0 {
		rl[corev1.ResourceMemory] = quantity(r.MemoryBytes)
	}
	if r.DiskBytes > 0 {
		rl[corev1.ResourceEphemeralStorage] = quantity(r.DiskBytes)
	}
	if n := len(r.GPUs); n > 0 {
		// The scheduler and the device plugin pick the devices; the
		// spec's device names belong to Plinth's inventory, not the node.
		rl[e.opts.GPUResource] = *resource.NewQuantity(int64(n), resource.DecimalSI)
	}
	if len(rl) == 0 {
		return corev1.ResourceRequirements{}
	}
	return corev1.ResourceRequirements{Requests: rl, Limits: copyResources(rl)}
}

// containerEnv is Spec.Env with LANG defaulted and what the executor
// assigns (ports, GPU visibility) winning, sorted for stable objects.
func containerEnv(spec executor.Spec, ports []int) []corev1.EnvVar {
	env := make(map[string]string, len(spec.Env)+len(ports)+2)
	for k, v := range spec.Env {
		if k == "PORT" || strings.HasPrefix(k, "PORT_") {
			continue
		}
		env[k] = v
	}
	if _, ok := env["LANG"]; !ok {
		env["LANG"] = DefaultLANG
	}
	for i, p := range ports {
		if i == 0 {
			env["PORT"] = strconv.Itoa(p)
		} else {
			env["PORT_"+strconv.Itoa(i)] = strconv.Itoa(p)
		}
	}
	if len(spec.Resources.GPUs) == 0 {
		// CUDA images set NVIDIA_VISIBLE_DEVICES=all, which would show a
		// pod without a GPU request every GPU of its node; "void" hides
		// them, as the contract's "none means none" asks.
		env["CUDA_VISIBLE_DEVICES"] = ""
		env["NVIDIA_VISIBLE_DEVICES"] = "void"
	} else {
		// The device plugin sets the visible devices to those it
		// allocated; values of ours would name the wrong ones.
		delete(env, "CUDA_VISIBLE_DEVICES")
		delete(env, "NVIDIA_VISIBLE_DEVICES")
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]corev1.EnvVar, 0, len(keys))
	for _, k := range keys {
		out = append(out, corev1.EnvVar{Name: k, Value: env[k]})
	}
	return out
}

// buildService is the deployment's Service: it selects the pods of every
// replica of the deployment, for clients inside the cluster. Plinth's own
// gateway keeps routing to each replica's pod address, since it splits
// traffic and drains replicas itself.
func (e *Executor) buildService(name string, lbl map[string]string, ports []int) *corev1.Service {
	sel := map[string]string{LabelManagedBy: ManagedByValue}
	for _, k := range []string{LabelWorkspace, LabelEndpoint, LabelDeployment} {
		if v, ok := lbl[k]; ok {
			sel[k] = v
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.opts.Namespace, Labels: copyMap(sel)},
		Spec:       corev1.ServiceSpec{Selector: sel, Type: corev1.ServiceTypeClusterIP},
	}
	for i, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: "p" + strconv.Itoa(i), Port: int32(p), TargetPort: intstr.FromInt32(int32(p)), Protocol: corev1.ProtocolTCP,
		})
	}
	return svc
}

// buildMasterService is a distributed job's headless Service: its DNS name
// resolves to rank 0's pod as soon as the pod has an IP (not only once it
// is ready: rank 0 listens only after the others are expected to dial).
func (e *Executor) buildMasterService(name string, lbl map[string]string) *corev1.Service {
	sel := map[string]string{LabelManagedBy: ManagedByValue, LabelJob: lbl[LabelJob], LabelRank: "0"}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.opts.Namespace,
			Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelJob: lbl[LabelJob]}},
		Spec: corev1.ServiceSpec{Selector: sel, ClusterIP: corev1.ClusterIPNone, PublishNotReadyAddresses: true},
	}
}

// jobOwner makes job an owner of a dependent object. The garbage collector
// deletes a dependent once all its owners are gone, which is how the
// deployment's Service goes away with its last replica.
func jobOwner(job *batchv1.Job) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID}
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyResources(rl corev1.ResourceList) corev1.ResourceList {
	out := make(corev1.ResourceList, len(rl))
	for k, v := range rl {
		out[k] = v.DeepCopy()
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// seconds rounds d up to whole seconds, at least 1: a grace of 0 would
// force-delete the pod object while its containers still run.
func seconds(d time.Duration) int64 { return max(1, int64(math.Ceil(d.Seconds()))) }
