// Package kubernetes runs work items on a Kubernetes cluster through the
// executor contract: each work item (one rank of a job, one replica of an
// online deployment) is a batch/v1 Job of one pod, labelled so that a
// restarted control plane finds and adopts it.
//
// Why a Job per work item, for replicas too: the contract is one Start per
// process, and Plinth's own endpoint controller decides when each replica is
// started, drained, replaced or stopped. A Kubernetes Deployment would own
// its replicas and fight that controller (recreating what Plinth stops,
// rolling out on its own), so a replica is a one-pod Job instead, and the
// deployment gets a Service that selects its replicas' pods for in-cluster
// clients. A Job rather than a bare pod because the Job outlives its pod's
// processes as the durable record of the attempt: Stop writes the final
// status onto it, Kueue admits Jobs, and the Job's failure conditions keep
// a preemption visible after the pod is gone.
//
// Objects carry these labels: app.kubernetes.io/managed-by=plinth,
// plinth.dev/work-id (the Spec.ID, shortened with a hash when it is not a
// valid label value; the exact ID is in the plinth.dev/work-id annotation),
// and, from the well-known variables of Spec.Env that the job runner and the
// endpoint controller set, plinth.dev/workspace, plinth.dev/job,
// plinth.dev/rank, plinth.dev/endpoint, plinth.dev/deployment and
// plinth.dev/replica; plinth.dev/pool and plinth.dev/tier say where it runs.
//
// Limits: CPU and memory become equal requests and limits (Guaranteed QoS,
// enforced by the kubelet's cgroups), GPUs a count of the GPU extended
// resource (nvidia.com/gpu), disk the ephemeral-storage request and limit
// (enforced by kubelet eviction). Node pools per SKU and tier are chosen by
// node selectors and tolerations (Options.Pools): GPU nodes are tainted, and
// only GPU pools tolerate the taint, so they take only GPU work.
//
// What Kubernetes cannot give the contract: separate stdout and stderr
// streams (Logs answers fault.FailedPrecondition for them), CPU seconds and
// peak memory (Usage has only GPU seconds; the metrics API is not read), and
// a pending state: a pod waiting to be scheduled or a Job queued in Kueue is
// reported as StateRunning with a Message that says so, and Start returns
// for it without waiting for the process. Spec.Dir is a path inside the
// image (the local backend's host directories do not exist in a pod), and
// Handle.Node is the pod's IP, where its Ports are served.
//
// The ranks of a distributed job (WORLD_SIZE > 1 in Spec.Env) get
// MASTER_ADDR set to a headless Service that selects rank 0's pod, owned by
// every rank's Job.
//
// Work with a Spec.Stage (a job, whose code and inputs are on the control
// plane) gets an init container from Options.ToolsImage that copies the
// plinth binary into a shared volume; the work's container runs
// `plinth workload run` from there, which fetches through the API, runs the
// command and uploads the outputs (package workload).
//
// Permissions: in its namespace, jobs (create, get, list, update, patch,
// delete), pods (list, patch, delete), pods/log (get) and services
// (get, list, create, update); across the cluster, nodes (list) for
// Capabilities unless Options.Capacity is set.
package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/fault"
)

// Backend is the Handle.Backend of this executor.
const Backend = "kubernetes"

// Labels and annotations on the objects this executor creates.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedByValue  = "plinth"
	LabelWorkID     = "plinth.dev/work-id"
	LabelWorkspace  = "plinth.dev/workspace"
	LabelJob        = "plinth.dev/job"
	LabelRank       = "plinth.dev/rank"
	LabelEndpoint   = "plinth.dev/endpoint"
	LabelDeployment = "plinth.dev/deployment"
	LabelReplica    = "plinth.dev/replica"
	LabelPool       = "plinth.dev/pool"
	LabelTier       = "plinth.dev/tier"

	AnnotationWorkID        = "plinth.dev/work-id"
	AnnotationStopRequested = "plinth.dev/stop-requested"
	AnnotationFinalStatus   = "plinth.dev/final-status"

	// KueueQueueLabel names the Kueue LocalQueue a Job is submitted to.
	KueueQueueLabel = "kueue.x-k8s.io/queue-name"
)

// Reasons this backend adds to executor's: the pod was taken away by the
// cluster rather than ending by itself.
const (
	// ReasonPreempted: a spot node was reclaimed or the scheduler preempted
	// the pod for higher-priority work.
	ReasonPreempted = "Preempted"
	// ReasonEvicted: the pod was evicted (eviction API, node pressure, a
	// node that went away).
	ReasonEvicted = "Evicted"
)

// containerName is the one container of every pod.
const containerName = "work"

// envLabels maps the variables that the job runner and the endpoint
// controller put in Spec.Env to labels. The contract has no field for them,
// and these variables are set for exactly the work they describe.
var envLabels = []struct{ env, label string }{
	{"PLINTH_WORKSPACE", LabelWorkspace},
	{"PLINTH_JOB_ID", LabelJob},
	{"RANK", LabelRank},
	{"PLINTH_ENDPOINT", LabelEndpoint},
	{"PLINTH_DEPLOYMENT", LabelDeployment},
	{"PLINTH_REPLICA", LabelReplica},
}

// Placement is what a work item asks of its node: the SKU and the tier.
type Placement struct {
	SKU  string
	Spot bool
}

// Pool is a set of nodes for some SKUs of one tier, told apart by node
// labels and taints.
type Pool struct {
	// Name is recorded in the plinth.dev/pool label.
	Name string
	// SKUs lists the SKU names placed here; empty takes any SKU whose GPU
	// need and tier match.
	SKUs []string
	// GPU pools take only work that asks for GPUs, and GPU work goes only
	// to GPU pools.
	GPU bool
	// Spot pools take only spot-tier work, and spot work goes only to them.
	Spot bool
	// NodeSelector and Tolerations steer the pods onto the pool's nodes
	// (its nodes' taints keep other work off).
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// Queue is the Kueue LocalQueue for this pool's work; it overrides
	// Options.Queue.
	Queue string
}

// Options configure New. The zero value works for a single-namespace
// cluster without pools or Kueue, given images in every Spec.
type Options struct {
	// Namespace holds every object; default "default".
	Namespace string
	// DefaultImage is used when Spec.Image is empty; when it is empty too,
	// Start refuses the spec (fault.Invalid naming image).
	DefaultImage string
	// Pools place work by SKU, GPU need and tier. With none, pods carry no
	// node selector or toleration.
	Pools []Pool
	// ToolsImage is the Plinth image (its ENTRYPOINT the plinth binary),
	// run as an init container of work that has a Spec.Stage to put
	// `plinth workload run` in the pod. Without it such work is refused.
	ToolsImage string
	// Place says which SKU and tier a spec asks for. The contract's Spec
	// has no such fields, so the default reads PLINTH_INSTANCE_TYPE and
	// PLINTH_JOB_TIER ("spot") from Spec.Env.
	Place func(executor.Spec) Placement
	// Queue, when set, submits every Job to this Kueue LocalQueue: created
	// suspended with the kueue.x-k8s.io/queue-name label, for Kueue to admit.
	Queue string
	// StartTimeout bounds how long Start waits for the pod to run, so that
	// a missing command or image fails Start. Work still pending after it
	// (pulling, unschedulable, queued) is returned as started. Default
	// 2 minutes; negative does not wait at all.
	StartTimeout time.Duration
	// TerminationGrace is each pod's terminationGracePeriodSeconds: the
	// longest grace Stop can give (a shorter one is enforced by deleting
	// the pod). Default 30 s.
	TerminationGrace time.Duration
	// BasePort is the first container port handed out; a pod has its own
	// IP, so every pod gets the same BasePort, BasePort+1, ... Default 8000.
	BasePort int
	// WorkDir is where a fresh, empty working directory (an emptyDir
	// volume) is mounted when Spec.Dir is empty. Default /plinth/work.
	WorkDir string
	// GPUResource is the extended resource GPUs are counted in; default
	// nvidia.com/gpu.
	GPUResource corev1.ResourceName
	// ServiceAccount runs the pods; "" is the namespace's default. Its
	// token is never mounted.
	ServiceAccount   string
	ImagePullSecrets []string
	// Capacity, when set, is reported by Capabilities instead of the sum
	// of the pools' nodes (an autoscaled cluster has more than it shows).
	Capacity *executor.Capabilities
	// PollInterval is the longest pause between two looks at the cluster
	// in Wait, Stop and Logs (they back off up to it). Default 2 s.
	PollInterval time.Duration
	Log          *slog.Logger
}

var _ executor.Executor = (*Executor)(nil)

// Executor runs work items as Kubernetes Jobs. Create it with New.
type Executor struct {
	client kubernetes.Interface
	opts   Options

	mu         sync.Mutex
	caps       executor.Capabilities
	capsAt     time.Time
	refreshing atomic.Bool
}

// NewForConfig is New with a client made from cfg.
func NewForConfig(ctx context.Context, cfg *rest.Config, opts Options) (*Executor, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return New(ctx, client, opts)
}

// New returns an executor that runs work through client. It reads the
// cluster's nodes once for Capabilities; an executor made later over the
// same namespace adopts the work of an earlier one.
func New(ctx context.Context, client kubernetes.Interface, opts Options) (*Executor, error) {
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.Place == nil {
		opts.Place = placeFromEnv
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.TerminationGrace <= 0 {
		opts.TerminationGrace = 30 * time.Second
	}
	if opts.BasePort == 0 {
		opts.BasePort = 8000
	}
	if opts.BasePort < 1 || opts.BasePort+executor.MaxPorts > 65536 {
		return nil, fault.InvalidField("base_port", "must leave room for %d ports below 65536, got %d", executor.MaxPorts, opts.BasePort)
	}
	if opts.WorkDir == "" {
		opts.WorkDir = "/plinth/work"
	}
	if opts.GPUResource == "" {
		opts.GPUResource = "nvidia.com/gpu"
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	for i, p := range opts.Pools {
		if p.Name == "" {
			return nil, fault.InvalidField("pools", "pool %d has no name", i)
		}
	}
	e := &Executor{client: client, opts: opts}
	if err := e.Refresh(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func placeFromEnv(s executor.Spec) Placement {
	return Placement{SKU: s.Env["PLINTH_INSTANCE_TYPE"], Spot: strings.EqualFold(s.Env["PLINTH_JOB_TIER"], "spot")}
}

// Capabilities implements executor.Executor: the nodes of the pools as last
// read (Start refreshes the reading in the background when it is over a
// minute old).
func (e *Executor) Capabilities() executor.Capabilities {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.caps
	c.GPUs = append([]executor.GPU(nil), c.GPUs...)
	return c
}

// capabilityReason says which limits hold and how; Kubernetes enforces
// them all, disk included, but by eviction rather than a hard cap.
const capabilityReason = "the kubelet enforces CPU and memory limits with cgroups; GPUs are allocated whole by the device plugin; " +
	"disk (ephemeral-storage) is enforced by evicting the pod, not by a hard cap"

// Refresh rereads the nodes that Capabilities describes.
func (e *Executor) Refresh(ctx context.Context) error {
	if e.opts.Capacity != nil {
		c := *e.opts.Capacity
		c.Backend, c.Remote = Backend, true
		e.mu.Lock()
		e.caps, e.capsAt = c, time.Now()
		e.mu.Unlock()
		return nil
	}
	nodes, err := e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fault.Wrap(fault.Unavailable, err, "listing the cluster's nodes")
	}
	c := executor.Capabilities{Backend: Backend, CgroupLimits: true, CgroupReason: capabilityReason, Remote: true}
	var cpuMilli int64
	for _, n := range nodes.Items {
		if n.Spec.Unschedulable || !e.inSomePool(n) {
			continue
		}
		a := n.Status.Allocatable
		cpuMilli += a.Cpu().MilliValue()
		c.MemoryBytes += a.Memory().Value()
		gpus := a[e.opts.GPUResource]
		product := n.Labels["nvidia.com/gpu.product"]
		if product == "" {
			product = string(e.opts.GPUResource)
		}
		for i := range gpus.Value() {
			// Devices are allocated by count, not by name; the UUID only
			// has to be unique and say where the device is.
			c.GPUs = append(c.GPUs, executor.GPU{Index: len(c.GPUs), UUID: fmt.Sprintf("%s/%d", n.Name, i), Name: product})
		}
	}
	c.CPUs = int(cpuMilli / 1000)
	e.mu.Lock()
	e.caps, e.capsAt = c, time.Now()
	e.mu.Unlock()
	return nil
}

// maybeRefresh rereads the nodes in the background when the last reading
// is stale, so that Capabilities (which cannot fail or block) follows an
// autoscaled cluster.
func (e *Executor) maybeRefresh() {
	e.mu.Lock()
	stale := time.Since(e.capsAt) > time.Minute
	e.mu.Unlock()
	if !stale || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer e.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Refresh(ctx); err != nil {
			e.opts.Log.Warn("kubernetes executor: reading nodes", "err", err)
		}
	}()
}

func (e *Executor) inSomePool(n corev1.Node) bool {
	if len(e.opts.Pools) == 0 {
		return true
	}
	for _, p := range e.opts.Pools {
		if labels.SelectorFromSet(p.NodeSelector).Matches(labels.Set(n.Labels)) {
			return true
		}
	}
	return false
}

// pool picks the pool for a spec, or nil when no pools are configured.
func (e *Executor) pool(spec executor.Spec, pl Placement) (*Pool, error) {
	if len(e.opts.Pools) == 0 {
		return nil, nil
	}
	gpu := len(spec.Resources.GPUs) > 0
	for i := range e.opts.Pools {
		p := &e.opts.Pools[i]
		if p.GPU != gpu || p.Spot != pl.Spot {
			continue
		}
		if len(p.SKUs) == 0 || pl.SKU != "" && contains(p.SKUs, pl.SKU) {
			return p, nil
		}
	}
	tier := "standard"
	if pl.Spot {
		tier = "spot"
	}
	kind := "CPU"
	if gpu {
		kind = "GPU"
	}
	return nil, fault.New(fault.FailedPrecondition, "no %s node pool takes SKU %q in the %s tier", kind, pl.SKU, tier)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// objectName turns a work ID into the Job's name. IDs allow upper case,
// '_' and '.', and up to 128 characters; names are lower-case DNS labels,
// and a Job's name must leave room for the pod-name suffix and fit the
// 63-character job-name label. An ID that is not already such a name gets
// a hash suffix, so distinct IDs keep distinct names.
func objectName(id string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, id)
	if s == id && len(s) <= 52 && len(validation.IsDNS1123Label(s)) == 0 {
		return s
	}
	return hashed(s, id, 52)
}

// hashed is prefix (cut to fit limit with the suffix) + "-" + a hash of key.
func hashed(prefix, key string, limit int) string {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:5])
	if len(prefix) > limit-len(h)-1 {
		prefix = prefix[:limit-len(h)-1]
	}
	prefix = strings.Trim(prefix, "-_.")
	if prefix == "" {
		return "w" + h
	}
	return prefix + "-" + h
}

// labelValue makes v a valid label value (63 characters of letters, digits,
// '-', '_', '.', alphanumeric at both ends), with a hash when it must change.
func labelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) == 0 {
		return v
	}
	s := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, v)
	return hashed(s, v, 63)
}

// serviceName names a deployment's Service: a DNS-1035 label (it must
// start with a letter) unique per workspace, endpoint and deployment.
func serviceName(workspace, endpoint, deployment string) string {
	return hashed(objectName("ep-"+endpoint+"-"+deployment), workspace+"/"+endpoint+"/"+deployment, 63)
}

// masterServiceName names a distributed job's headless Service.
func masterServiceName(workspace, job string) string {
	return hashed(objectName("job-"+job), workspace+"/"+job, 63)
}

// quantity formats n bytes for a resource list.
func quantity(n int64) resource.Quantity { return *resource.NewQuantity(n, resource.BinarySI) }
