// The manifests in this directory are tested where they live: this file
// checks them against the plinth command line (every flag a container
// passes exists, every PLINTH_ variable it is given is read, every Secret
// key and Service it names is there) in a plain `go test`; cluster_test.go
// applies them to a real API server under make test-kubernetes.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/plinth-dev/plinth/internal/cli"
)

// secretExample is applied first by an operator (filled in); kustomization
// leaves it out so that no placeholder secret is ever applied by -k.
const secretExample = "secret.example.yaml"

// manifests are the objects an operator applies: the secret example, then
// kustomization.yaml's resources in order, with its namespace.
type manifests struct {
	namespace string
	objects   []*unstructured.Unstructured
}

func loadManifests(t testing.TB) manifests {
	t.Helper()
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Namespace == "" || len(k.Resources) == 0 {
		t.Fatalf("kustomization.yaml names no namespace or no resources: %+v", k)
	}
	// Every manifest here is either a resource of the kustomization or the
	// secret example: none is forgotten.
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if f != "kustomization.yaml" && f != secretExample && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not in kustomization.yaml's resources", f)
		}
	}
	m := manifests{namespace: k.Namespace}
	for _, f := range append([]string{secretExample}, k.Resources...) {
		objs, err := readObjects(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		m.objects = append(m.objects, objs...)
	}
	// kubectl apply -f of a single file must give what apply -k gives:
	// every namespaced object states the kustomization's namespace.
	for _, o := range m.objects {
		if ns := o.GetNamespace(); ns != "" && ns != k.Namespace {
			t.Errorf("%s %s is in namespace %q, the kustomization's is %q", o.GetKind(), o.GetName(), ns, k.Namespace)
		}
	}
	return m
}

// readObjects decodes each YAML document of file, refusing duplicate keys.
func readObjects(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
			continue // a comment-only document
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
}

// find returns the object of that kind and name, or fails t.
func (m manifests) find(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range m.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
	return nil
}

func (m manifests) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// typed converts o into out, refusing fields the type does not have.
func typed(t testing.TB, o *unstructured.Unstructured, out any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

var gvkDeployment = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}

// envRead lists the PLINTH_ variables each role reads, from the source
// that reads them, so that a variable added or renamed there is seen here.
func envRead(t testing.TB, files ...string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`"(PLINTH_[A-Z0-9_]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(filepath.Join("..", "..", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			out[string(m[1])] = true
		}
	}
	if len(out) == 0 {
		t.Fatalf("no PLINTH_ variables found in %v", files)
	}
	return out
}

// objectStoreEnv are the variables gocloud.dev's S3 and Azure Blob
// drivers read for credentials, which the Secret may carry.
var objectStoreEnv = regexp.MustCompile(`^(AWS_[A-Z_]+|AZURE_STORAGE_[A-Z_]+)$`)

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestManifestsMatchCLI checks each Deployment's container against the
// command it runs: `plinth server` and `plinth gateway` accept every flag
// and argument, every PLINTH_ variable it is given is one that role reads
// (or one its arguments refer to as $(NAME)), each $(NAME) is defined, each
// Secret key it refers to is in the secret example, the gateway's control
// plane URL is the API Service, and each Service targets a named port of
// the pods it selects.
func TestManifestsMatchCLI(t *testing.T) {
	m := loadManifests(t)
	reads := map[string]map[string]bool{
		"server":  envRead(t, "internal/cli/serve.go"),
		"gateway": envRead(t, "internal/cli/gateway.go", "internal/client/credentials.go"),
	}
	secrets := map[string]map[string]bool{}
	for _, o := range m.all("Secret") {
		var s corev1.Secret
		typed(t, o, &s)
		secrets[s.Name] = map[string]bool{}
		for k := range s.StringData {
			secrets[s.Name][k] = true
		}
		for k := range s.Data {
			secrets[s.Name][k] = true
		}
	}
	roles := map[string]bool{}
	deployments := m.all("Deployment")
	if len(deployments) == 0 {
		t.Fatal("no Deployments")
	}
	for _, o := range deployments {
		if o.GroupVersionKind() != gvkDeployment {
			t.Errorf("%s: %v, want %v", o.GetName(), o.GroupVersionKind(), gvkDeployment)
		}
		var d appsv1.Deployment
		typed(t, o, &d)
		for _, c := range d.Spec.Template.Spec.Containers {
			what := d.Name + "/" + c.Name
			if len(c.Command) > 0 {
				t.Errorf("%s: sets command %v; the image's entrypoint is plinth", what, c.Command)
			}
			if len(c.Args) == 0 {
				t.Errorf("%s: no arguments", what)
				continue
			}
			role := c.Args[0]
			roles[role] = true
			read, ok := reads[role]
			if !ok {
				t.Errorf("%s: runs plinth %s; want server or gateway", what, role)
				continue
			}
			// Defined variables, and where they come from.
			defined := map[string]bool{}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef == nil {
					t.Errorf("%s: envFrom other than a Secret: %+v", what, ef)
					continue
				}
				keys, ok := secrets[ef.SecretRef.Name]
				if !ok {
					t.Errorf("%s: envFrom Secret %s is not in %s", what, ef.SecretRef.Name, secretExample)
				}
				for k := range keys {
					defined[ef.Prefix+k] = true
					if !read[k] && !objectStoreEnv.MatchString(k) {
						t.Errorf("%s: Secret %s gives %s, which plinth %s does not read", what, ef.SecretRef.Name, k, role)
					}
				}
			}
			args := strings.Join(c.Args, " ")
			for _, e := range c.Env {
				defined[e.Name] = true
				referenced := strings.Contains(args, "$("+e.Name+")")
				if !read[e.Name] && !referenced && !objectStoreEnv.MatchString(e.Name) {
					t.Errorf("%s: sets %s, which plinth %s neither reads nor gets in its arguments", what, e.Name, role)
				}
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					if !secrets[ref.Name][ref.Key] {
						t.Errorf("%s: %s comes from key %s of Secret %s, which %s does not have", what, e.Name, ref.Key, ref.Name, secretExample)
					}
				}
			}
			for _, ref := range varRef.FindAllStringSubmatch(args, -1) {
				if !defined[ref[1]] {
					// Kubernetes would pass "$(NAME)" through literally.
					t.Errorf("%s: arguments refer to $(%s), which the container does not define", what, ref[1])
				}
			}
			checkFlags(t, what, c.Args)
			if role == "gateway" {
				checkControlPlane(t, m, what, c.Args)
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s: want HTTP readiness and liveness probes", what)
					continue
				}
				if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.HTTPGet.Port.String() }) {
					t.Errorf("%s: probe port %s is not a named port of the container", what, p.HTTPGet.Port.String())
				}
			}
		}
	}
	for _, want := range []string{"server", "gateway"} {
		if !roles[want] {
			t.Errorf("no Deployment runs plinth %s", want)
		}
	}
	checkServices(t, m)
}

// checkFlags parses args as the plinth binary would, without running the
// command: an unknown flag, a bad value or a stray argument fails.
func checkFlags(t *testing.T, what string, args []string) {
	t.Helper()
	// Values the kubelet would substitute: any non-empty string parses.
	args = slices.Clone(args)
	for i := range args {
		args[i] = varRef.ReplaceAllString(args[i], "redis://placeholder:6379/0")
	}
	root := cli.NewRoot(io.Discard, io.Discard)
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Errorf("%s: plinth has no command %q: %v", what, args[0], err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: plinth %s %v: %v", what, cmd.Name(), rest, err)
		return
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// flagValue is the value of --name in args (--name v or --name=v).
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// checkControlPlane: the gateway follows the API Service by its cluster
// DNS name, on a port that Service serves.
func checkControlPlane(t *testing.T, m manifests, what string, args []string) {
	t.Helper()
	raw := flagValue(args, "control-plane")
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Errorf("%s: --control-plane %q is not a URL", what, raw)
		return
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	name, rest, _ := strings.Cut(host, ".")
	ns, _, _ := strings.Cut(rest, ".")
	if ns != m.namespace {
		t.Errorf("%s: --control-plane host %s is not a Service in namespace %s", what, host, m.namespace)
	}
	var svc corev1.Service
	typed(t, m.find(t, "Service", name), &svc)
	n, _ := strconv.Atoi(port)
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == n }) {
		t.Errorf("%s: --control-plane port %s is not a port of Service %s", what, port, name)
	}
}

// checkServices: each Service selects the pods of one Deployment and
// targets ports those pods name.
func checkServices(t *testing.T, m manifests) {
	t.Helper()
	for _, o := range m.all("Service") {
		var svc corev1.Service
		typed(t, o, &svc)
		var target *appsv1.Deployment
		for _, d := range m.all("Deployment") {
			var dep appsv1.Deployment
			typed(t, d, &dep)
			if matches(svc.Spec.Selector, dep.Spec.Template.Labels) {
				if target != nil {
					t.Errorf("Service %s selects the pods of %s and %s", svc.Name, target.Name, dep.Name)
				}
				target = &dep
			}
		}
		if target == nil {
			t.Errorf("Service %s selects no Deployment's pods", svc.Name)
			continue
		}
		for _, p := range svc.Spec.Ports {
			found := false
			for _, c := range target.Spec.Template.Spec.Containers {
				for _, cp := range c.Ports {
					found = found || cp.Name == p.TargetPort.String() || strconv.Itoa(int(cp.ContainerPort)) == p.TargetPort.String()
				}
			}
			if !found {
				t.Errorf("Service %s targets port %s, which the pods of %s do not have", svc.Name, p.TargetPort.String(), target.Name)
			}
		}
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (m manifests) String() string {
	var b strings.Builder
	for _, o := range m.objects {
		fmt.Fprintf(&b, "%s %s/%s\n", o.GetKind(), o.GetNamespace(), o.GetName())
	}
	return b.String()
}
