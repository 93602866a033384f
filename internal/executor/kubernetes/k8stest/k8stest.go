//go:build linux

// Package k8stest starts a real Kubernetes control plane on loopback for
// tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// KWOK, which plays the kubelet of simulated nodes so that pods reach
// Running without containers. Certificates, keys and data live in the
// test's temporary directory; nothing listens beyond 127.0.0.1, and the
// simulated nodes and pods have loopback or never-contacted addresses.
//
// The binaries are built from the Go module proxy and cached by version by
// scripts/kubernetes-test-binaries.sh (about 17 CPU-minutes cold). Start
// skips the test when they are absent, unless PLINTH_TEST_KUBERNETES=1 and
// PLINTH_TEST_REQUIRE_ALL=1 are both set: the Kubernetes tests are opt-in
// (make test-kubernetes) because the cold build does not fit CI's budget.
//
// What KWOK simulates (Stages, see stages.go): a new pod on a KWOK node runs
// at once; a container whose command is "true" exits 0, and one whose
// environment has PLINTH_SIM_EXIT=N exits N (with PLINTH_SIM_REASON as the
// termination reason, e.g. OOMKilled); a pod past its activeDeadlineSeconds
// or being deleted ends as a process that obeys SIGTERM does (exit 143).
// Everything else (sleep, servers) runs until it is stopped. A container's
// log is the value of its PLINTH_SIM_LOG variable, served as the kubelet
// would (logs.go), following until the container ends. No command really
// runs, so there is no real output, exit code of a real program or usage.
package k8stest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plinth-dev/plinth/internal/testproc"
)

// Versions the binaries are built at; keep in step with
// scripts/kubernetes-test-binaries.sh, which names its cache after them.
const (
	KubernetesVersion = "1.35.4"
	EtcdVersion       = "3.6.16"
	KWOKVersion       = "0.8.0"
)

// Where KWOK gives pods their IPs: by default a range nothing here
// reaches; with LoopbackPods, loopback addresses (all of 127/8 is), on
// which a test may listen to play a pod's server.
const (
	PodCIDR         = "10.244.0.1/16"
	LoopbackPodCIDR = "127.100.0.1/16"
)

// Option changes the cluster Start starts.
type Option func(*options)

type options struct{ podCIDR string }

// LoopbackPods gives pods loopback IPs, so that a test can serve at a
// pod's address. The API server refuses loopback addresses in
// EndpointSlices, so Services of such a cluster have no endpoints.
func LoopbackPods() Option { return func(o *options) { o.podCIDR = LoopbackPodCIDR } }

// KWOKNodeAnnotation marks the nodes KWOK manages.
const KWOKNodeAnnotation = "kwok.x-k8s.io/node"

// Cluster is a running control plane.
type Cluster struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a clientset over Config.
	Client kubernetes.Interface
	// Dir holds certificates, kubeconfig, data and each component's log.
	Dir string
	// Version is the API server's /version gitVersion.
	Version string
}

// Binaries are the paths of what Start runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, KWOK string
	// KWOKStages is the stage directory shipped in the KWOK module
	// (kustomize/stage), copied beside the kwok binary.
	KWOKStages string
}

// CacheDir is where the build script caches binaries:
// $PLINTH_TEST_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/plinth-test.
func CacheDir() string {
	if d := os.Getenv("PLINTH_TEST_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "plinth-test")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "plinth-test")
}

// Locate finds the cached binaries, or says what is missing.
func Locate() (Binaries, error) {
	root := CacheDir()
	kube := filepath.Join(root, "kubernetes-v"+KubernetesVersion)
	etcd := filepath.Join(root, "etcd-v"+EtcdVersion)
	kwok := filepath.Join(root, "kwok-v"+KWOKVersion)
	b := Binaries{
		Etcd:              filepath.Join(etcd, "etcd"),
		APIServer:         filepath.Join(kube, "kube-apiserver"),
		ControllerManager: filepath.Join(kube, "kube-controller-manager"),
		Scheduler:         filepath.Join(kube, "kube-scheduler"),
		KWOK:              filepath.Join(kwok, "kwok"),
		KWOKStages:        filepath.Join(kwok, "stages"),
	}
	var missing []string
	for _, p := range []string{b.Etcd, b.APIServer, b.ControllerManager, b.Scheduler, b.KWOK, b.KWOKStages} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("missing %s (build them with scripts/kubernetes-test-binaries.sh)", strings.Join(missing, ", "))
	}
	return b, nil
}

// Start starts a cluster for t, stopped when t ends, or skips t when the
// binaries are not built (see the package comment for when it fails
// instead).
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	o := options{podCIDR: PodCIDR}
	for _, opt := range opts {
		opt(&o)
	}
	bins, err := Locate()
	if err != nil {
		if os.Getenv("PLINTH_TEST_KUBERNETES") == "1" && os.Getenv("PLINTH_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("kubernetes test binaries: %v", err)
		}
		t.Skipf("kubernetes test binaries: %v", err)
	}
	dir := t.TempDir()
	c, stop, err := start(dir, bins, o)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	if err != nil {
		t.Fatalf("starting kubernetes: %v", err)
	}
	return c
}

// dumpLogs shows the end of each component's log when a test failed.
func dumpLogs(t testing.TB, dir string) {
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		b, err := os.ReadFile(filepath.Join(dir, name+".log"))
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("--- %s.log (end) ---\n%s", name, b)
	}
}

// process is one running component.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(dir, name, path string, args ...string) (*process, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The components must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin"}
	exited, err := testproc.Start(cmd)
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { <-exited; logf.Close(); close(p.done) }()
	return p, nil
}

func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start brings the control plane up in dir. stop ends whatever started,
// in reverse order, even when start failed.
func start(dir string, b Binaries, o options) (c *Cluster, stop func(), err error) {
	var procs []*process
	stop = func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}
	run := func(name, path string, args ...string) error {
		p, err := startProcess(dir, name, path, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) error {
		deadline := time.Now().Add(timeout)
		for !ok() {
			for _, p := range procs {
				if p.exited() {
					return fmt.Errorf("%s exited while waiting for %s (see %s.log)", p.name, what, filepath.Join(dir, p.name))
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}

	pki, err := writePKI(dir)
	if err != nil {
		return nil, stop, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, stop, err
	}
	etcdClient, etcdPeer, apiPort, kubeletPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4]

	// etcd without fsync: a test cluster's data is thrown away.
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	if err := run("etcd", b.Etcd, "--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return nil, stop, err
	}
	if err := waitFor("etcd", 60*time.Second, func() bool { return httpOK(http.DefaultClient, etcdURL+"/health") }); err != nil {
		return nil, stop, err
	}

	apiURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := run("kube-apiserver", b.APIServer,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+pki.serverCert, "--tls-private-key-file="+pki.serverKey,
		"--client-ca-file="+pki.caCert,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+pki.saPub, "--service-account-signing-key-file="+pki.saKey,
		// Addresses are only allocated from this range; no proxy sends
		// traffic to them.
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC",
		// On loopback the endpoint reconciler would publish 127.0.0.1 as
		// the kubernetes Service's endpoint, which it refuses to do.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		// Reach the simulated nodes' kubelet (the log server below) by
		// their loopback InternalIP, never by resolving their host names.
		"--kubelet-preferred-address-types=InternalIP",
		"--enable-priority-and-fairness=false", "--profiling=false", "--v=1"); err != nil {
		return nil, stop, err
	}
	cfg := &rest.Config{Host: apiURL, QPS: 200, Burst: 400,
		TLSClientConfig: rest.TLSClientConfig{CAFile: pki.caCert, CertFile: pki.adminCert, KeyFile: pki.adminKey}}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, stop, err
	}
	if err := waitFor("kube-apiserver /readyz", 120*time.Second, func() bool { return httpOK(hc, apiURL+"/readyz") }); err != nil {
		return nil, stop, err
	}
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(kubeconfigTemplate, apiURL, pki.caCert, pki.adminCert, pki.adminKey)), 0o600); err != nil {
		return nil, stop, err
	}

	// Neither serves HTTPS (--secure-port=0): tests need no metrics or
	// health endpoints from them, and that saves two ports and their certs.
	if err := run("kube-controller-manager", b.ControllerManager, "--kubeconfig="+kubeconfig,
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
		"--service-account-private-key-file="+pki.saKey, "--root-ca-file="+pki.caCert,
		"--controllers=*", "--concurrent-job-syncs=10", "--v=1"); err != nil {
		return nil, stop, err
	}
	if err := run("kube-scheduler", b.Scheduler, "--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0", "--v=1"); err != nil {
		return nil, stop, err
	}
	stages, err := writeStages(dir, b.KWOKStages)
	if err != nil {
		return nil, stop, err
	}
	if err := run("kwok", b.KWOK, "--kubeconfig="+kubeconfig, "--config="+stages,
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector="+KWOKNodeAnnotation+"=fake",
		// Loopback node addresses: should anything (the API server
		// proxying logs) dial a node, it stays on this machine.
		"--node-ip=127.0.0.1", "--cidr="+o.podCIDR,
		// Nodes advertise the log server's port as their kubelet's; KWOK's
		// own server (unused) stays on another loopback port.
		"--node-port="+strconv.Itoa(kubeletPort), "--server-address=127.0.0.1:"+strconv.Itoa(kwokPort)); err != nil {
		return nil, stop, err
	}

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, stop, err
	}
	stopLogs, err := serveLogs(client, pki, kubeletPort)
	if err != nil {
		return nil, stop, err
	}
	stopProcs := stop
	stop = func() { stopProcs(); stopLogs() }
	ctx := context.Background()
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		return nil, stop, err
	}
	// Pods are refused until the namespace's default service account
	// exists, which the controller manager creates.
	err = waitFor("the default service account", 60*time.Second, func() bool {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	if err != nil {
		return nil, stop, err
	}
	c = &Cluster{Config: cfg, Client: client, Dir: dir, Version: v.GitVersion}
	return c, stop, nil
}

const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`

func httpOK(c *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// freePorts finds n free loopback ports, held together so they differ.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NodeOptions describe a simulated node.
type NodeOptions struct {
	Labels map[string]string
	Taints []corev1.Taint
	// CPU and Memory are allocatable ("8", "32Gi"); defaults 8 and 32Gi.
	CPU, Memory string
	// GPUs is the count of nvidia.com/gpu.
	GPUs int64
}

// AddNode creates a node that KWOK manages and waits until it is Ready.
func (c *Cluster) AddNode(t testing.TB, name string, o NodeOptions) *corev1.Node {
	t.Helper()
	if o.CPU == "" {
		o.CPU = "8"
	}
	if o.Memory == "" {
		o.Memory = "32Gi"
	}
	lbl := map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}
	for k, v := range o.Labels {
		lbl[k] = v
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(o.CPU), corev1.ResourceMemory: resource.MustParse(o.Memory),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	if o.GPUs > 0 {
		res["nvidia.com/gpu"] = *resource.NewQuantity(o.GPUs, resource.DecimalSI)
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl, Annotations: map[string]string{KWOKNodeAnnotation: "fake"}},
		Spec:       corev1.NodeSpec{Taints: o.Taints},
		Status:     corev1.NodeStatus{Allocatable: res, Capacity: res},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating node %s: %v", name, err)
	}
	for {
		got, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil && nodeReady(got) {
			return got
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s did not become Ready: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			// The node lifecycle controller lifts its not-ready taint
			// soon after; until then nothing schedules there.
			for _, t := range n.Spec.Taints {
				if t.Key == "node.kubernetes.io/not-ready" {
					return false
				}
			}
			return true
		}
	}
	return false
}

// pki are the files of the test cluster's certificates and keys.
type pki struct {
	caCert, serverCert, serverKey, adminCert, adminKey, saKey, saPub string
	kubeletCert, kubeletKey                                          string
}

// writePKI makes a CA, the API server's serving certificate, an
// administrator's client certificate (group system:masters) and the
// service-account signing key pair.
func writePKI(dir string) (pki, error) {
	p := pki{
		caCert: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "apiserver.crt"), serverKey: filepath.Join(dir, "apiserver.key"),
		adminCert: filepath.Join(dir, "admin.crt"), adminKey: filepath.Join(dir, "admin.key"), saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"),
		kubeletCert: filepath.Join(dir, "kubelet.crt"), kubeletKey: filepath.Join(dir, "kubelet.key"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plinth-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writePEM(p.caCert, "CERTIFICATE", caDER); err != nil {
		return p, err
	}
	issue := func(certPath, keyPath string, tmpl *x509.Certificate) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyPath, "EC PRIVATE KEY", kder)
	}
	err = issue(p.serverCert, p.serverKey, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	})
	if err != nil {
		return p, err
	}
	err = issue(p.kubeletCert, p.kubeletKey, &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "kwok-kubelet"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	})
	if err != nil {
		return p, err
	}
	err = issue(p.adminCert, p.adminKey, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "plinth-test-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return p, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	kder, _ := x509.MarshalECPrivateKey(saKey)
	pder, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err := writePEM(p.saKey, "EC PRIVATE KEY", kder); err != nil {
		return p, err
	}
	return p, writePEM(p.saPub, "PUBLIC KEY", pder)
}

func writePEM(path, typ string, der []byte) error {
	var buf bytes.Buffer
	if err := pem.Encode(&buf, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}

// writeStages writes KWOK's configuration: the node stages shipped in its
// module (initialize at once, then heartbeat with a lease) and this
// package's pod stages.
func writeStages(dir, shipped string) (string, error) {
	var out bytes.Buffer
	for _, f := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"} {
		b, err := os.ReadFile(filepath.Join(shipped, f))
		if err != nil {
			return "", fmt.Errorf("KWOK's shipped stages: %w", err)
		}
		out.WriteString("---\n")
		out.Write(b)
		out.WriteString("\n")
	}
	out.WriteString(podStages)
	path := filepath.Join(dir, "kwok.yaml")
	return path, os.WriteFile(path, out.Bytes(), 0o600)
}
