package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/kubernetes"
	"github.com/plinth-dev/plinth/internal/executor/local"
)

// Executor backends a server can run work on.
const (
	ExecutorLocal      = "local"
	ExecutorKubernetes = "kubernetes"
)

// KubernetesConfig configures the Kubernetes executor.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; empty means the in-cluster
	// service account, else $KUBECONFIG.
	Kubeconfig string `json:"kubeconfig"`
	// Namespace holds the work's Jobs, pods and Services; default "default".
	Namespace string `json:"namespace"`
	// Image runs work whose environment names no image.
	Image string `json:"image"`
	// ToolsImage is the Plinth image, whose binary fetches jobs' code and
	// inputs inside their pods and uploads their outputs.
	ToolsImage     string `json:"tools_image"`
	ServiceAccount string `json:"service_account"`
	// Queue is the Kueue LocalQueue every Job is submitted to (created
	// suspended for Kueue to admit); empty means no Kueue.
	Queue string `json:"queue"`
	// Pools place work on node pools by SKU, GPU need and tier.
	Pools []KubernetesPool `json:"pools"`
	// PoolsFile is a YAML list of pools, read when Pools is empty.
	PoolsFile string `json:"pools_file"`
	// StartTimeout bounds how long a start waits for the pod to run.
	StartTimeout time.Duration `json:"start_timeout"`
}

// KubernetesPool is a node pool as configuration writes it.
type KubernetesPool struct {
	Name         string              `json:"name"`
	SKUs         []string            `json:"skus"`
	GPU          bool                `json:"gpu"`
	Spot         bool                `json:"spot"`
	NodeSelector map[string]string   `json:"node_selector"`
	Tolerations  []corev1.Toleration `json:"tolerations"`
	Queue        string              `json:"queue"`
}

// openExecutor starts the configured backend.
func (c Config) openExecutor(ctx context.Context, workDir string, log *slog.Logger) (executor.Executor, error) {
	if c.ExecutorImpl != nil {
		return c.ExecutorImpl, nil
	}
	switch c.Executor {
	case "", ExecutorLocal:
		e, err := local.New(ctx, filepath.Join(workDir, "executor"), local.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("starting the local executor: %w", err)
		}
		return e, nil
	case ExecutorKubernetes:
		return c.Kubernetes.open(ctx, log)
	}
	return nil, fmt.Errorf("executor %q: want %s or %s", c.Executor, ExecutorLocal, ExecutorKubernetes)
}

func (k KubernetesConfig) open(ctx context.Context, log *slog.Logger) (executor.Executor, error) {
	rc, err := k.restConfig()
	if err != nil {
		return nil, err
	}
	pools := k.Pools
	if len(pools) == 0 && k.PoolsFile != "" {
		raw, err := os.ReadFile(k.PoolsFile)
		if err != nil {
			return nil, fmt.Errorf("kubernetes pools: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &pools); err != nil {
			return nil, fmt.Errorf("kubernetes pools file %s: %w", k.PoolsFile, err)
		}
	}
	opts := kubernetes.Options{Namespace: k.Namespace, DefaultImage: k.Image, ToolsImage: k.ToolsImage, ServiceAccount: k.ServiceAccount,
		Queue: k.Queue, StartTimeout: k.StartTimeout, Log: log}
	for _, p := range pools {
		opts.Pools = append(opts.Pools, kubernetes.Pool{Name: p.Name, SKUs: p.SKUs, GPU: p.GPU, Spot: p.Spot, NodeSelector: p.NodeSelector,
			Tolerations: p.Tolerations, Queue: p.Queue})
	}
	e, err := kubernetes.NewForConfig(ctx, rc, opts)
	if err != nil {
		return nil, fmt.Errorf("starting the kubernetes executor: %w", err)
	}
	return e, nil
}

// restConfig finds the cluster: the kubeconfig named, else the pod's own
// service account, else $KUBECONFIG.
func (k KubernetesConfig) restConfig() (*rest.Config, error) {
	path := k.Kubeconfig
	if path == "" {
		rc, err := rest.InClusterConfig()
		if err == nil {
			return rc, nil
		}
		if path = os.Getenv("KUBECONFIG"); path == "" {
			return nil, fmt.Errorf("the kubernetes executor needs a cluster: not running in one (%v), and neither --kube-config nor $KUBECONFIG names a kubeconfig", err)
		}
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return rc, nil
}
