//go:build linux

package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/plinth-dev/plinth/internal/executor"
	"github.com/plinth-dev/plinth/internal/executor/executortest"
	k8sexec "github.com/plinth-dev/plinth/internal/executor/kubernetes"
	"github.com/plinth-dev/plinth/internal/executor/kubernetes/k8stest"
)

const fieldManager = "plinth-manifests-test"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func eventually(t *testing.T, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		done, state := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestManifestsOnKubernetes applies the manifests to a real API server (the
// operator's order: the filled-in secret example, then apply -k), which
// validates every field strictly; the controller manager and scheduler
// then run the server and gateway Deployments on KWOK nodes, their
// Services find the pods, and the HPA controller reaches the gateway's
// scale. Then the Kubernetes executor runs as the server's service account
// (impersonated): every operation of the contract succeeds with the
// manifests' RBAC, every permission granted is one it used, and what lies
// outside them is refused.
func TestManifestsOnKubernetes(t *testing.T) {
	if os.Getenv("PLINTH_TEST_KUBERNETES") != "1" {
		t.Skip("applies the manifests to a real API server; set PLINTH_TEST_KUBERNETES=1 (make test-kubernetes)")
	}
	m := loadManifests(t)
	cl := k8stest.Start(t)
	t.Logf("API server %s in %s", cl.Version, cl.Dir)
	for _, n := range []string{"node-0", "node-1"} {
		cl.AddNode(t, n, k8stest.NodeOptions{})
	}
	ns := m.namespace
	apply(t, cl, m)

	t.Run("Workloads", func(t *testing.T) { checkWorkloads(t, cl, m) })
	t.Run("Autoscaler", func(t *testing.T) { checkAutoscaler(t, cl, m) })
	t.Run("ExecutorRBAC", func(t *testing.T) { checkExecutorRBAC(t, cl, m, ns) })
}

// apply server-side-applies every object, namespaces first, with strict
// field validation: a misspelt or misplaced field is an error, not
// silently dropped.
func apply(t *testing.T, cl *k8stest.Cluster, m manifests) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cl.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cl.Client.Discovery()))
	applyOne := func(o *unstructured.Unstructured) error {
		gvk := o.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%v is not served: %w", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				o = o.DeepCopy()
				o.SetNamespace(m.namespace) // as kustomize's namespace does
			}
			ri = dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
		} else if o.GetNamespace() != "" {
			return fmt.Errorf("%s %s is cluster-scoped but names namespace %s", gvk.Kind, o.GetName(), o.GetNamespace())
		}
		data, err := o.MarshalJSON()
		if err != nil {
			return err
		}
		force := true
		_, err = ri.Patch(ctxT(t), o.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: fieldManager, Force: &force, FieldValidation: metav1.FieldValidationStrict})
		return err
	}
	ordered := slices.Clone(m.objects)
	slices.SortStableFunc(ordered, func(a, b *unstructured.Unstructured) int {
		return boolRank(b.GetKind() == "Namespace") - boolRank(a.GetKind() == "Namespace")
	})
	for _, o := range ordered {
		if err := applyOne(o); err != nil {
			t.Fatalf("applying %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	// The validation is strict indeed: the gateway with one field misspelt
	// is refused.
	bad := m.find(t, "Deployment", "plinth-gateway").DeepCopy()
	bad.SetName("plinth-strictness-probe")
	containers, _, _ := unstructured.NestedSlice(bad.Object, "spec", "template", "spec", "containers")
	containers[0].(map[string]any)["readinesProbe"] = map[string]any{"periodSeconds": int64(2)}
	unstructured.SetNestedSlice(bad.Object, containers, "spec", "template", "spec", "containers")
	if err := applyOne(bad); err == nil || !strings.Contains(err.Error(), "readinesProbe") {
		t.Fatalf("a misspelt field was not refused: %v", err)
	}
	t.Logf("applied %d objects:\n%s", len(m.objects), m)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkWorkloads: each Deployment's pods are created, scheduled onto KWOK
// nodes and Running, its Service's EndpointSlices list them, and only the
// server's pods carry a service account token.
func checkWorkloads(t *testing.T, cl *k8stest.Cluster, m manifests) {
	ctx := ctxT(t)
	for _, o := range m.all("Deployment") {
		var want appsv1.Deployment
		typed(t, o, &want)
		replicas := int32(1)
		if want.Spec.Replicas != nil {
			replicas = *want.Spec.Replicas
		}
		if replicas < 2 {
			t.Errorf("Deployment %s has %d replicas; both roles run several", want.Name, replicas)
		}
		sel := labels.SelectorFromSet(want.Spec.Selector.MatchLabels).String()
		var pods []corev1.Pod
		eventually(t, "the pods of "+want.Name+" to run", func() (bool, string) {
			d, err := cl.Client.AppsV1().Deployments(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			list, err := cl.Client.CoreV1().Pods(want.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				return false, err.Error()
			}
			pods = list.Items
			running := 0
			for _, p := range pods {
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
					running++
				}
			}
			state := fmt.Sprintf("deployment status %+v; %d pods, %d running", d.Status, len(pods), running)
			return d.Status.ReadyReplicas == replicas && d.Status.UpdatedReplicas == replicas && running == int(replicas), state
		})
		for _, p := range pods {
			node, err := cl.Client.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
			if err != nil || node.Annotations[k8stest.KWOKNodeAnnotation] == "" {
				t.Errorf("pod %s runs on %q, not a KWOK node: %v", p.Name, p.Spec.NodeName, err)
			}
			hasToken := slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return strings.HasPrefix(v.Name, "kube-api-access-") })
			wantSA := want.Spec.Template.Spec.ServiceAccountName
			if wantSA != "" {
				// The server: its executor talks to the API server as this
				// service account.
				if p.Spec.ServiceAccountName != wantSA || !hasToken {
					t.Errorf("pod %s: service account %q (token mounted: %v), want %s with its token", p.Name, p.Spec.ServiceAccountName, hasToken, wantSA)
				}
			} else if hasToken {
				t.Errorf("pod %s of %s has a service account token it never uses", p.Name, want.Name)
			}
		}
		t.Logf("%s: %d pods Running on KWOK nodes", want.Name, len(pods))
	}
	for _, o := range m.all("Service") {
		var svc corev1.Service
		typed(t, o, &svc)
		eventually(t, "the endpoints of Service "+svc.Name, func() (bool, string) {
			slices, err := cl.Client.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name})
			if err != nil {
				return false, err.Error()
			}
			ready, ports := 0, 0
			for _, s := range slices.Items {
				ports += len(s.Ports)
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready {
						ready++
					}
				}
			}
			// Two of each role; a port resolved for every Service port.
			return ready == 2 && ports >= len(svc.Spec.Ports), fmt.Sprintf("%d ready endpoints, %d ports: %+v", ready, ports, slices.Items)
		})
	}
}

// checkAutoscaler: the HPA targets the gateway Deployment, and the HPA
// controller reads its scale (AbleToScale); there is no metrics server,
// so it never scales.
func checkAutoscaler(t *testing.T, cl *k8stest.Cluster, m manifests) {
	ctx := ctxT(t)
	hpas := m.all("HorizontalPodAutoscaler")
	if len(hpas) != 1 {
		t.Fatalf("%d HorizontalPodAutoscalers, want one for the gateway", len(hpas))
	}
	var want autoscalingv2.HorizontalPodAutoscaler
	typed(t, hpas[0], &want)
	var gw appsv1.Deployment
	typed(t, m.find(t, "Deployment", "plinth-gateway"), &gw)
	ref := want.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != gw.Name || want.Namespace != gw.Namespace {
		t.Errorf("HPA %s targets %+v in %s, want the gateway Deployment %s/%s", want.Name, ref, want.Namespace, gw.Namespace, gw.Name)
	}
	if min := want.Spec.MinReplicas; min == nil || *min < 2 || *min > want.Spec.MaxReplicas || gw.Spec.Replicas == nil || *gw.Spec.Replicas < *min {
		t.Errorf("HPA replicas %v..%d, gateway Deployment %v", want.Spec.MinReplicas, want.Spec.MaxReplicas, gw.Spec.Replicas)
	}
	for _, mt := range want.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
			// Utilization is of the request: every container must make one.
			for _, c := range gw.Spec.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[mt.Resource.Name]; !ok {
					t.Errorf("HPA scales on %s utilization; container %s requests no %s", mt.Resource.Name, c.Name, mt.Resource.Name)
				}
			}
		}
	}
	eventually(t, "the HPA controller to reach the gateway's scale", func() (bool, string) {
		h, err := cl.Client.AutoscalingV2().HorizontalPodAutoscalers(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range h.Status.Conditions {
			if c.Type == autoscalingv2.AbleToScale && c.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", h.Status)
	})
}

// permission is one RBAC verb on one resource (with its subresource) in
// one namespace ("" for cluster-scoped resources; "*" for a grant that
// holds in every namespace).
type permission struct {
	group, resource, verb, namespace string
}

func (p permission) String() string {
	g := p.group
	if g == "" {
		g = "core"
	}
	where := "namespace " + p.namespace
	switch p.namespace {
	case "":
		where = "cluster-scoped"
	case "*":
		where = "every namespace"
	}
	return fmt.Sprintf("%s %s/%s (%s)", p.verb, g, p.resource, where)
}

func (g permission) covers(p permission) bool {
	return g.group == p.group && g.resource == p.resource && g.verb == p.verb && (g.namespace == "*" || g.namespace == p.namespace)
}

// grants are the permissions the manifests' bindings give a service
// account. Wildcards are refused: a minimal role names what it grants.
func grants(t *testing.T, m manifests, ns, sa string) []permission {
	t.Helper()
	rulesOf := func(kind, name string) []rbacv1.PolicyRule {
		switch kind {
		case "Role":
			var r rbacv1.Role
			typed(t, m.find(t, kind, name), &r)
			return r.Rules
		case "ClusterRole":
			var r rbacv1.ClusterRole
			typed(t, m.find(t, kind, name), &r)
			return r.Rules
		}
		t.Fatalf("a binding refers to a %s", kind)
		return nil
	}
	bound := func(subjects []rbacv1.Subject, bindingNS string) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			sns := s.Namespace
			if sns == "" {
				sns = bindingNS
			}
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && sns == ns
		})
	}
	var out []permission
	add := func(rules []rbacv1.PolicyRule, scope string) {
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("a rule grants non-resource URLs %v", r.NonResourceURLs)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if g == "*" || res == "*" || v == "*" {
							t.Errorf("a rule grants the wildcard: %+v", r)
						}
						out = append(out, permission{g, res, v, scope})
					}
				}
			}
		}
	}
	for _, o := range m.all("RoleBinding") {
		var b rbacv1.RoleBinding
		typed(t, o, &b)
		if bound(b.Subjects, b.Namespace) {
			add(rulesOf(b.RoleRef.Kind, b.RoleRef.Name), b.Namespace)
		}
	}
	for _, o := range m.all("ClusterRoleBinding") {
		var b rbacv1.ClusterRoleBinding
		typed(t, o, &b)
		if bound(b.Subjects, "") {
			add(rulesOf("ClusterRole", b.RoleRef.Name), "*")
		}
	}
	return out
}

// recorder notes the permission each API request needs and whether the
// API server refused it.
type recorder struct {
	mu      sync.Mutex
	used    map[permission]int
	refused []string
	other   []string
}

func (r *recorder) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		p, ok := permissionOf(req)
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case !ok:
			r.other = append(r.other, req.Method+" "+req.URL.Path)
		default:
			r.used[p]++
			if err == nil && resp.StatusCode == http.StatusForbidden {
				r.refused = append(r.refused, p.String()+": "+req.Method+" "+req.URL.RequestURI())
			}
		}
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// permissionOf maps a resource request to the RBAC verb and resource the
// API server authorizes it as (the request-info rules of kube-apiserver,
// for the shapes client-go sends).
func permissionOf(req *http.Request) (permission, bool) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	var p permission
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		p.group, parts = parts[1], parts[3:]
	default:
		return p, false
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		p.namespace, parts = parts[1], parts[2:]
	}
	name := ""
	p.resource = parts[0]
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		p.resource += "/" + parts[2]
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case name != "":
			p.verb = "get"
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
			p.verb = "watch"
		default:
			p.verb = "list"
		}
	case http.MethodPost:
		p.verb = "create"
	case http.MethodPut:
		p.verb = "update"
	case http.MethodPatch:
		p.verb = "patch"
	case http.MethodDelete:
		p.verb = "delete"
		if name == "" {
			p.verb = "deletecollection"
		}
	default:
		return p, false
	}
	return p, true
}

// checkExecutorRBAC runs the Kubernetes executor as the server's service
// account through every operation of the contract, then compares what it
// needed with what the manifests grant, both ways.
func checkExecutorRBAC(t *testing.T, cl *k8stest.Cluster, m manifests, ns string) {
	var server appsv1.Deployment
	typed(t, m.find(t, "Deployment", "plinth-server"), &server)
	sa := server.Spec.Template.Spec.ServiceAccountName
	if sa == "" {
		t.Fatal("the server runs as the namespace's default service account; give it its own")
	}
	m.find(t, "ServiceAccount", sa)
	granted := grants(t, m, ns, sa)
	if len(granted) == 0 {
		t.Fatalf("nothing is granted to service account %s", sa)
	}
	user := "system:serviceaccount:" + ns + ":" + sa
	asServer := func(rec *recorder) *rest.Config {
		cfg := rest.CopyConfig(cl.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		if rec != nil {
			cfg.WrapTransport = rec.wrap
		}
		return cfg
	}
	// Work pods run as the namespace's default service account, which
	// the controller manager creates.
	eventually(t, "the default service account of "+ns, func() (bool, string) {
		_, err := cl.Client.CoreV1().ServiceAccounts(ns).Get(ctxT(t), "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})

	rec := &recorder{used: map[permission]int{}}
	e, err := k8sexec.NewForConfig(ctxT(t), asServer(rec), k8sexec.Options{Namespace: ns, DefaultImage: "busybox:1.36",
		PollInterval: 200 * time.Millisecond, StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("the executor as %s: %v", user, err)
	}
	ctx := ctxT(t)

	// Two replicas of an online deployment: the first creates the
	// deployment's Service, the second joins it.
	var replicas []executor.Handle
	for _, r := range []string{"r1", "r2"} {
		env := map[string]string{"PLINTH_WORKSPACE": "ws", "PLINTH_ENDPOINT": "fraud", "PLINTH_DEPLOYMENT": "blue", "PLINTH_REPLICA": r,
			k8stest.SimLogEnv: "serving " + r + "\n"}
		replicas = append(replicas, executortest.Start(t, e, executor.Spec{Command: []string{"serve"}, Env: env, Ports: 1,
			Resources: executor.Resources{CPUs: 0.5, MemoryBytes: 64 << 20}}))
	}
	if replicas[0].Data["service"] == "" || replicas[1].Data["service"] != replicas[0].Data["service"] {
		t.Fatalf("replicas do not share a Service: %+v %+v", replicas[0], replicas[1])
	}
	// Recover: a handle found again by ID, as after a restart.
	if found, err := e.Find(ctx, replicas[0].ID); err != nil || found.Data["uid"] != replicas[0].Data["uid"] {
		t.Fatalf("Find(%s) = %+v, %v", replicas[0].ID, found, err)
	}
	if st, err := e.Inspect(ctx, replicas[0]); err != nil || st.State != executor.StateRunning {
		t.Fatalf("Inspect of a running replica: %+v, %v", st, err)
	}
	executortest.AwaitLine(t, e, replicas[0], "serving r1")
	for _, h := range replicas {
		if err := e.Stop(ctx, h, 20*time.Second); err != nil {
			t.Fatalf("Stop(%s): %v", h.ID, err)
		}
		if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped {
			t.Errorf("stopped replica: %+v", st)
		}
		if err := e.Remove(ctx, h); err != nil {
			t.Fatalf("Remove(%s): %v", h.ID, err)
		}
	}

	// A job's work item that ends by itself.
	h := executortest.Start(t, e, executor.Spec{Command: []string{"true"}, Env: map[string]string{"PLINTH_WORKSPACE": "ws", "PLINTH_JOB_ID": "job-1", "RANK": "0"}})
	if st := executortest.Wait(t, e, h); st.State != executor.StateExited || st.ExitCode != 0 {
		t.Errorf("true: %+v", st)
	}
	if err := e.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}

	// Work that fits no node: Stop deletes its pending pod.
	h = executortest.Start(t, e, executor.Spec{Command: []string{"sleep", "1000"}, Resources: executor.Resources{CPUs: 64}})
	if st, err := e.Inspect(ctx, h); err != nil || !strings.Contains(st.Message, "Unschedulable") {
		t.Errorf("work beyond every node: %+v, %v", st, err)
	}
	if err := e.Stop(ctx, h, time.Second); err != nil {
		t.Fatal(err)
	}
	if st := executortest.Wait(t, e, h); st.Reason != executor.ReasonStopped {
		t.Errorf("stopped pending work: %+v", st)
	}
	if err := e.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}

	// Sufficient: nothing the executor asked for was refused.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.refused {
		t.Errorf("refused to the executor: %s", r)
	}
	if len(rec.other) > 0 {
		t.Errorf("requests outside the resource API: %v", rec.other)
	}
	// Minimal: every grant was used, and every use is granted.
	var used []string
	for p, n := range rec.used {
		used = append(used, fmt.Sprintf("%s ×%d", p, n))
		if !slices.ContainsFunc(granted, func(g permission) bool { return g.covers(p) }) {
			t.Errorf("the executor needs %s, which the manifests do not grant %s", p, sa)
		}
	}
	slices.Sort(used)
	t.Logf("the executor's requests as %s:\n  %s", user, strings.Join(used, "\n  "))
	for _, g := range granted {
		if !slicesContainsKey(rec.used, g.covers) {
			t.Errorf("the manifests grant %s %s, which the executor never used", sa, g)
		}
	}

	// What lies outside: the configuration's Secret, other namespaces,
	// workloads other than Jobs, pods directly, nodes one by one, and the
	// ways to more rights.
	cs, err := kubernetes.NewForConfig(asServer(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.all("Secret") {
		_, err := cs.CoreV1().Secrets(ns).Get(ctx, s.GetName(), metav1.GetOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s read Secret %s: %v, want forbidden", sa, s.GetName(), err)
		}
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "intruder"}, Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}}}}}
	if _, err := cs.BatchV1().Jobs("default").Create(ctx, job, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s created a Job in namespace default: %v, want forbidden", sa, err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "intruder"}, Spec: job.Spec.Template.Spec}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s created a pod directly: %v, want forbidden", sa, err)
	}
	if _, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s listed Deployments: %v, want forbidden", sa, err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "node-0", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s read a node: %v, want forbidden", sa, err)
	}
	// The executor itself, pointed at another namespace, is refused there.
	other, err := k8sexec.NewForConfig(ctx, asServer(nil), k8sexec.Options{Namespace: "default", DefaultImage: "busybox:1.36", StartTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Start(ctx, executor.Spec{ID: executortest.ID(t), Command: []string{"true"}}); !apierrors.IsForbidden(err) {
		t.Errorf("the executor as %s started work in namespace default: %v, want forbidden", sa, err)
	}
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Namespace: ns, Verb: "create", Resource: "pods", Subresource: "exec"},
		{Namespace: ns, Verb: "create", Resource: "serviceaccounts", Subresource: "token"},
		{Namespace: ns, Verb: "list", Resource: "secrets"},
		{Namespace: ns, Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"},
		{Namespace: ns, Verb: "update", Group: "rbac.authorization.k8s.io", Resource: "roles"},
		{Namespace: ns, Verb: "patch", Group: "apps", Resource: "deployments", Subresource: "scale"},
		{Namespace: ns, Verb: "delete", Resource: "services"},
		{Verb: "delete", Resource: "nodes"},
		{Verb: "create", Resource: "namespaces"},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}
		got, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed {
			t.Errorf("%s may %s %s/%s %s in %q", sa, ra.Verb, ra.Group, ra.Resource, ra.Subresource, ra.Namespace)
		}
	}
}

func slicesContainsKey(m map[permission]int, f func(permission) bool) bool {
	for p := range m {
		if f(p) {
			return true
		}
	}
	return false
}
