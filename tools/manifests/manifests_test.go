package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kueue "sigs.k8s.io/kueue/apis/kueue/v1beta2"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// These tests read YAML outside the tools module, and go test's result cache
// does not recheck files outside the module root: after editing only YAML,
// run them with -count=1 or a cached pass is reported.

// builds lists every kustomization in the repository with what it must
// render. TestEveryKustomizationIsListed keeps the list complete.
var builds = []struct {
	dir       string
	namespace string // "" for a base, which leaves namespaces to overlays
	kinds     []string
}{
	{dir: ".", namespace: "gmini-dev", kinds: overlayKinds("PersistentVolumeClaim")},
	{dir: "overlays/dev", namespace: "gmini-dev", kinds: overlayKinds("PersistentVolumeClaim")},
	{dir: "overlays/prod", namespace: "gmini", kinds: overlayKinds("PodDisruptionBudget", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy",
		"LocalQueue", "Role", "RoleBinding")}, // the last three: k8s/components/queue
	{dir: "k8s/base", kinds: []string{"Deployment", "Service", "ServiceAccount"}},
	{dir: "k8s/runner", kinds: []string{"CronJob", "Role", "RoleBinding", "ServiceAccount"}},
	{dir: "k8s/auth", kinds: []string{"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding"}},
	{dir: "k8s/policy", kinds: []string{"NetworkPolicy", "NetworkPolicy"}},
	{dir: "k8s/queue", kinds: []string{"ClusterQueue", "ResourceFlavor"}},
}

// components are the Kustomize Components: not buildable alone, each is
// rendered through the overlays that use it (queue_test.go).
var components = []string{"k8s/components/queue", "k8s/components/webhooks"}

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "ClusterQueue": true, "ResourceFlavor": true}

// overlayKinds are what every overlay renders, plus its own extra kinds.
// The NetworkPolicies: the runner's, the backend's, and where the backend
// reaches the API server (policy_test.go).
func overlayKinds(extra ...string) []string {
	kinds := append([]string{"CronJob", "Deployment", "Namespace", "Role", "RoleBinding", "Service", "ServiceAccount", "ServiceAccount",
		"NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "ResourceQuota"}, extra...)
	sort.Strings(kinds)
	return kinds
}

// overlays are the deployable environments and what differs between them.
var overlays = []struct {
	dir           string
	namespace     string
	backendImage  string
	runnerImage   string
	pullPolicy    corev1.PullPolicy // "" means left to the API server default
	replicas      int32
	ttlAfterFinal int32
	queue         bool // uses k8s/components/queue
}{
	{
		dir: "overlays/dev", namespace: "gmini-dev",
		backendImage: "gmini-backend:dev", runnerImage: "gmini-runner:dev",
		pullPolicy: corev1.PullIfNotPresent, replicas: 1, ttlAfterFinal: 60,
	},
	{
		dir: "overlays/prod", namespace: "gmini",
		backendImage: "ghcr.io/gmini-dev/gmini-backend:v0.1.0", runnerImage: "ghcr.io/gmini-dev/gmini-runner:v0.1.0",
		replicas: 2, ttlAfterFinal: 3600, queue: true,
	},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	return l.Root
}

// render builds dir, relative to the repository root unless absolute.
func render(t *testing.T, dir string) []byte {
	t.Helper()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot(t), dir)
	}
	out, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func splitDocs(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("split YAML stream: %v", err)
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}

// strictDecoder rejects unknown and duplicate fields, so a misspelled field
// fails here instead of being silently dropped by the API server.
// Kueue's kinds decode into Kueue's own Go types, of the version
// tools/kueue builds.
func strictDecoder() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, kueue.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

// typed renders dir and decodes every object strictly into its k8s.io/api type.
func typed(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	dec := strictDecoder()
	var objs []runtime.Object
	for _, doc := range splitDocs(t, render(t, dir)) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: decode strictly:\n%s\nerror: %v", dir, doc, err)
		}
		if _, ok := obj.(runtime.Unstructured); ok {
			t.Fatalf("%s: %s has no typed Go struct in client-go's scheme", dir, gvk)
		}
		objs = append(objs, obj)
	}
	return objs
}

func only[T runtime.Object](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok && o.(metav1.Object).GetName() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T named %q, found %d", zero, name, len(found))
	}
	return found[0]
}

func TestEveryKustomizationBuilds(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			objs, err := Objects(filepath.Join(repoRoot(t), b.dir))
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
				if b.namespace != "" && !clusterScoped[o.GetKind()] && o.GetNamespace() != b.namespace {
					t.Errorf("%s %s is in namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), b.namespace)
				}
				if b.namespace == "" && o.GetNamespace() != "" {
					t.Errorf("base %s %s sets namespace %q; namespaces belong to overlays", o.GetKind(), o.GetName(), o.GetNamespace())
				}
			}
			sort.Strings(kinds)
			if !slices.Equal(kinds, b.kinds) {
				t.Errorf("kinds = %v, want %v", kinds, b.kinds)
			}
			if docs := splitDocs(t, render(t, b.dir)); len(docs) != len(objs) {
				t.Errorf("Render gave %d documents, Objects %d objects", len(docs), len(objs))
			}
			// Applied one by one in this order, the Namespace must come first
			// and ServiceAccounts before the workloads that run as them.
			if b.namespace != "" && objs[0].GetKind() != "Namespace" {
				t.Errorf("first object is %s %s, want the Namespace", objs[0].GetKind(), objs[0].GetName())
			}
			lastSA, firstWorkload := -1, len(objs)
			for i, o := range objs {
				switch o.GetKind() {
				case "ServiceAccount":
					lastSA = i
				case "Deployment", "CronJob":
					firstWorkload = min(firstWorkload, i)
				}
			}
			if lastSA > firstWorkload {
				t.Errorf("a ServiceAccount comes after a workload (positions %d > %d)", lastSA, firstWorkload)
			}
		})
	}
}

// A kustomization nobody builds in a test can break unnoticed.
func TestEveryKustomizationIsListed(t *testing.T) {
	root := repoRoot(t)
	var found []string
	if _, err := os.Stat(filepath.Join(root, "kustomization.yaml")); err == nil {
		found = append(found, ".")
	}
	for _, top := range []string{"k8s", "overlays"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch d.Name() {
			case "kustomization.yaml", "kustomization.yml", "Kustomization":
				rel, err := filepath.Rel(root, filepath.Dir(path))
				if err != nil {
					return err
				}
				found = append(found, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	for _, b := range builds {
		listed = append(listed, b.dir)
	}
	listed = append(listed, components...)
	sort.Strings(found)
	sort.Strings(listed)
	if !slices.Equal(found, listed) {
		t.Errorf("kustomizations on disk %v, listed in builds %v", found, listed)
	}
}

func TestRootRendersDevOverlay(t *testing.T) {
	root, dev := render(t, "."), render(t, "overlays/dev")
	if !bytes.Equal(root, dev) {
		t.Errorf("root kustomization renders differently from overlays/dev:\n--- root\n%s\n--- overlays/dev\n%s", root, dev)
	}
}

func TestObjectsDecodeStrictly(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			if got := typed(t, b.dir); len(got) != len(b.kinds) {
				t.Errorf("decoded %d objects, want %d", len(got), len(b.kinds))
			}
		})
	}
}

// Proves the strict decoder used above is strict: the same document with one
// field misspelled decodes leniently but fails strictly.
func TestStrictDecodingCatchesMisspelledField(t *testing.T) {
	var deployment []byte
	for _, doc := range splitDocs(t, render(t, "k8s/base")) {
		if bytes.Contains(doc, []byte("kind: Deployment")) {
			deployment = doc
		}
	}
	if !bytes.Contains(deployment, []byte("readinessProbe:")) {
		t.Fatal("no Deployment with a readinessProbe in k8s/base")
	}
	misspelled := bytes.Replace(deployment, []byte("readinessProbe:"), []byte("readynessProbe:"), 1)

	lenient := serializer.NewCodecFactory(scheme.Scheme).UniversalDeserializer()
	if _, _, err := lenient.Decode(misspelled, nil, nil); err != nil {
		t.Fatalf("lenient decode failed, so this test proves nothing: %v", err)
	}
	_, _, err := strictDecoder().Decode(misspelled, nil, nil)
	if err == nil || !runtime.IsStrictDecodingError(err) || !strings.Contains(err.Error(), "readynessProbe") {
		t.Errorf("strict decode of misspelled field: err = %v, want a strict decoding error naming readynessProbe", err)
	}
}

func containersOf(t *testing.T, objs []runtime.Object) map[string]corev1.Container {
	t.Helper()
	out := map[string]corev1.Container{}
	for _, ps := range podSpecs(objs) {
		for _, c := range ps.spec.Containers {
			out[c.Name] = c
		}
	}
	return out
}

func TestImagesPerEnvironment(t *testing.T) {
	seen := map[string]string{}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			cs := containersOf(t, typed(t, o.dir))
			for name, want := range map[string]string{"backend": o.backendImage, "runner": o.runnerImage} {
				c, ok := cs[name]
				if !ok {
					t.Fatalf("no container %q", name)
				}
				if c.Image != want {
					t.Errorf("container %s image = %q, want %q", name, c.Image, want)
				}
				if c.ImagePullPolicy != o.pullPolicy {
					t.Errorf("container %s imagePullPolicy = %q, want %q", name, c.ImagePullPolicy, o.pullPolicy)
				}
				if prev, ok := seen[c.Image]; ok {
					t.Errorf("image %s used by both %s and %s", c.Image, prev, o.dir)
				}
				seen[c.Image] = o.dir
			}
		})
	}
	t.Run("overlays/prod pinned", func(t *testing.T) {
		for name, c := range containersOf(t, typed(t, "overlays/prod")) {
			if !pinned(c.Image) {
				t.Errorf("container %s image %q is not pinned to a version tag or digest", name, c.Image)
			}
		}
	})
}

// pinned reports whether ref names a digest or a tag other than latest.
func pinned(ref string) bool {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		return strings.HasPrefix(digest, "sha256:")
	}
	lastSlash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= lastSlash { // no tag; a colon before the last slash is a registry port
		return false
	}
	tag := ref[colon+1:]
	return tag != "" && tag != "latest"
}

func TestPinned(t *testing.T) {
	for ref, want := range map[string]bool{
		"ghcr.io/gmini-dev/gmini-runner:v0.1.0":          true,
		"ghcr.io/gmini-dev/gmini-runner@sha256:0123abcd": true,
		"ghcr.io/gmini-dev/gmini-runner:latest":          false,
		"ghcr.io/gmini-dev/gmini-runner":                 false,
		"localhost:5000/gmini-runner":                    false,
		"localhost:5000/gmini-runner:v1":                 true,
	} {
		if got := pinned(ref); got != want {
			t.Errorf("pinned(%q) = %v, want %v", ref, got, want)
		}
	}
}

func TestRBAC(t *testing.T) {
	// Exactly what the backend calls; tools/reliability's RBAC test asks
	// the API server about each verb.
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "get", "list", "watch", "patch", "delete"}},
		{APIGroups: []string{"batch"}, Resources: []string{"cronjobs"}, ResourceNames: []string{"gmini-runner"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"gmini-backend-recorder"}, Verbs: []string{"get", "update"}},
	}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := typed(t, o.dir)
			role := only[*rbacv1.Role](t, objs, "job-creator")
			if !reflect.DeepEqual(role.Rules, wantRules) {
				t.Errorf("Role job-creator rules =\n%+v\nwant\n%+v", role.Rules, wantRules)
			}
			rb := only[*rbacv1.RoleBinding](t, objs, "job-creator")
			wantRef := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "job-creator"}
			if rb.RoleRef != wantRef {
				t.Errorf("roleRef = %+v, want %+v", rb.RoleRef, wantRef)
			}
			wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "gmini-backend", Namespace: o.namespace}}
			if !reflect.DeepEqual(rb.Subjects, wantSubjects) {
				t.Errorf("subjects = %+v, want %+v", rb.Subjects, wantSubjects)
			}
			for _, obj := range []metav1.Object{role, rb, only[*corev1.ServiceAccount](t, objs, "gmini-backend")} {
				if obj.GetNamespace() != o.namespace {
					t.Errorf("%s is in namespace %q, want %q", obj.GetName(), obj.GetNamespace(), o.namespace)
				}
			}
			if sa := only[*appsv1.Deployment](t, objs, "gmini-backend").Spec.Template.Spec.ServiceAccountName; sa != "gmini-backend" {
				t.Errorf("backend runs as ServiceAccount %q, want gmini-backend (the RoleBinding subject)", sa)
			}
		})
	}
}

// TestHistory: dev keeps history in SQLite on a claim, one replica replaced
// with Recreate; prod in PostgreSQL named by a Secret the repository does
// not hold.
func TestHistory(t *testing.T) {
	env := func(d *appsv1.Deployment, name string) *corev1.EnvVar {
		for i, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == name {
				return &d.Spec.Template.Spec.Containers[0].Env[i]
			}
		}
		return nil
	}
	t.Run("overlays/dev", func(t *testing.T) {
		objs := typed(t, "overlays/dev")
		d := only[*appsv1.Deployment](t, objs, "gmini-backend")
		pvc := only[*corev1.PersistentVolumeClaim](t, objs, "gmini-history")
		if e := env(d, "GMINI_HISTORY_DSN"); e == nil || e.Value != "sqlite:/var/lib/gmini/history.db" {
			t.Errorf("GMINI_HISTORY_DSN = %+v, want sqlite:/var/lib/gmini/history.db", e)
		}
		if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("replicas %d, strategy %q: SQLite needs one replica, replaced with Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
		}
		pod := d.Spec.Template.Spec
		var claim string
		for _, v := range pod.Volumes {
			if v.PersistentVolumeClaim != nil {
				claim = v.PersistentVolumeClaim.ClaimName
			}
		}
		mounted := slices.ContainsFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/var/lib/gmini" })
		if claim != pvc.Name || !mounted {
			t.Errorf("volumes %+v, mounts %+v: want claim %s at /var/lib/gmini", pod.Volumes, pod.Containers[0].VolumeMounts, pvc.Name)
		}
		if pvc.Spec.StorageClassName != nil || pvc.Spec.AccessModes[0] != corev1.ReadWriteOnce {
			t.Errorf("claim %+v: want the default StorageClass, ReadWriteOnce", pvc.Spec)
		}
	})
	t.Run("overlays/prod", func(t *testing.T) {
		d := only[*appsv1.Deployment](t, typed(t, "overlays/prod"), "gmini-backend")
		e := env(d, "GMINI_HISTORY_DSN")
		if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "gmini-history" || e.ValueFrom.SecretKeyRef.Key != "dsn" {
			t.Errorf("GMINI_HISTORY_DSN = %+v, want from Secret gmini-history key dsn", e)
		}
	})
}

// TestAuth: prod authenticates clients through the API server and ships
// the roles they are bound to; dev keeps the tutorial's open contract.
func TestAuth(t *testing.T) {
	env := func(d *appsv1.Deployment) string {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "GMINI_AUTH" {
				return e.Value
			}
		}
		return "none" // the backend's default
	}
	dev := typed(t, "overlays/dev")
	if got := env(only[*appsv1.Deployment](t, dev, "gmini-backend")); got != "none" {
		t.Errorf("dev GMINI_AUTH = %q, want none (the tutorial's frontend sends no token)", got)
	}
	prod := typed(t, "overlays/prod")
	if got := env(only[*appsv1.Deployment](t, prod, "gmini-backend")); got != "kubernetes" {
		t.Errorf("prod GMINI_AUTH = %q, want kubernetes", got)
	}
	exp := func(verbs ...string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{{APIGroups: []string{"gmini.dev"}, Resources: []string{"experiments"}, Verbs: verbs}}
	}
	for name, want := range map[string][]rbacv1.PolicyRule{
		"gmini-submitter": exp("create", "get", "list"),
		"gmini-viewer":    exp("get", "list"),
		"gmini-canceller": exp("get", "list", "delete"),
	} {
		if got := only[*rbacv1.ClusterRole](t, prod, name).Rules; !reflect.DeepEqual(got, want) {
			t.Errorf("ClusterRole %s rules = %+v, want %+v", name, got, want)
		}
	}
	crb := only[*rbacv1.ClusterRoleBinding](t, prod, "gmini-backend-auth-delegator")
	wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "gmini-backend", Namespace: "gmini"}}
	if crb.RoleRef.Name != "system:auth-delegator" || !reflect.DeepEqual(crb.Subjects, wantSubjects) {
		t.Errorf("auth delegator binding = %+v %+v, want system:auth-delegator for gmini/gmini-backend", crb.RoleRef, crb.Subjects)
	}
	for _, o := range dev {
		if _, ok := o.(*rbacv1.ClusterRoleBinding); ok {
			t.Errorf("dev binds %s cluster-wide; without auth the backend needs no review rights", o.(metav1.Object).GetName())
		}
	}
}

func TestRunnerTemplate(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := typed(t, o.dir)
			cj := only[*batchv1.CronJob](t, objs, "gmini-runner")
			if cj.Spec.Suspend == nil || !*cj.Spec.Suspend {
				t.Error("CronJob gmini-runner is not suspended; it is a template and must never be scheduled")
			}
			if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				t.Errorf("concurrencyPolicy = %q, want Forbid", cj.Spec.ConcurrencyPolicy)
			}
			jt := cj.Spec.JobTemplate
			if jt.Labels["app"] != "gmini" || jt.Spec.Template.Labels["app"] != "gmini" {
				t.Errorf("label app=gmini: job template %v, pod template %v", jt.Labels, jt.Spec.Template.Labels)
			}
			js := jt.Spec
			if js.BackoffLimit == nil || *js.BackoffLimit != 4 {
				t.Errorf("backoffLimit = %v, want 4", deref(js.BackoffLimit))
			}
			if js.TTLSecondsAfterFinished == nil || *js.TTLSecondsAfterFinished != o.ttlAfterFinal {
				t.Errorf("ttlSecondsAfterFinished = %v, want %d", deref(js.TTLSecondsAfterFinished), o.ttlAfterFinal)
			}
			if js.ActiveDeadlineSeconds == nil || *js.ActiveDeadlineSeconds <= 0 {
				t.Errorf("activeDeadlineSeconds = %v, want a positive deadline", deref(js.ActiveDeadlineSeconds))
			}
			runner := "runner"
			wantPolicy := &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
					ContainerName: &runner, Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{2},
				}},
				{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
					{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue},
				}},
			}}
			if !reflect.DeepEqual(js.PodFailurePolicy, wantPolicy) {
				t.Errorf("podFailurePolicy = %+v, want %+v", js.PodFailurePolicy, wantPolicy)
			}
			ps := js.Template.Spec
			if ps.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("restartPolicy = %q, want Never", ps.RestartPolicy)
			}
			if ps.ServiceAccountName != "gmini-runner" {
				t.Errorf("serviceAccountName = %q, want gmini-runner", ps.ServiceAccountName)
			}
			if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
				t.Error("pod spec automountServiceAccountToken is not false")
			}
			if sa := only[*corev1.ServiceAccount](t, objs, "gmini-runner"); sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Error("ServiceAccount gmini-runner automountServiceAccountToken is not false")
			}
			if len(ps.Containers) != 1 || ps.Containers[0].Name != "runner" {
				t.Fatalf("want one container named runner, got %d", len(ps.Containers))
			}
			if c := ps.Containers[0]; len(c.Command) != 0 || len(c.Args) != 0 {
				t.Errorf("runner sets command %q args %q; the image entrypoint and the backend's args must be used", c.Command, c.Args)
			}
		})
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func TestBackend(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := typed(t, o.dir)
			d := only[*appsv1.Deployment](t, objs, "gmini-backend")
			if d.Spec.Replicas == nil || *d.Spec.Replicas != o.replicas {
				t.Errorf("replicas = %v, want %d", deref(d.Spec.Replicas), o.replicas)
			}
			c := d.Spec.Template.Spec.Containers[0]
			if c.Name != "backend" || len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
				t.Errorf("container %q ports %+v, want backend with port 8080 named http", c.Name, c.Ports)
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			if e := env["POD_NAMESPACE"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("POD_NAMESPACE = %+v, want fieldRef metadata.namespace", e)
			}
			if e := env["GMINI_TEMPLATE"]; e.Value != "gmini-runner" {
				t.Errorf("GMINI_TEMPLATE = %q, want gmini-runner", e.Value)
			}
			for name, p := range map[string]struct {
				probe *corev1.Probe
				path  string
			}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
					t.Errorf("%s probe = %+v, want GET %s on port http", name, p.probe, p.path)
				}
			}
			// The endpoint must leave the Service before the process stops
			// listening, and preStop plus the backend's shutdown must fit in
			// the grace period, or the kubelet kills requests in flight.
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 3 {
				t.Errorf("preStop = %+v, want a sleep of at least 3 s", c.Lifecycle)
			} else if grace, budget := deref64(d.Spec.Template.Spec.TerminationGracePeriodSeconds), c.Lifecycle.PreStop.Sleep.Seconds+25; grace < budget {
				t.Errorf("terminationGracePeriodSeconds %d < preStop %d s + the backend's 25 s shutdown timeout", grace, c.Lifecycle.PreStop.Sleep.Seconds)
			}
			svc := only[*corev1.Service](t, objs, "gmini-backend")
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "http" {
				t.Errorf("Service ports = %+v, want 8080 -> http", svc.Spec.Ports)
			}
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil {
				t.Fatal(err)
			}
			podLabels := d.Spec.Template.Labels
			if !sel.Matches(labels.Set(podLabels)) {
				t.Errorf("Deployment selector %v does not match its pod labels %v", d.Spec.Selector, podLabels)
			}
			if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
				t.Errorf("Service selector %v does not match the backend pod labels %v", svc.Spec.Selector, podLabels)
			}
		})
	}
}

func deref64(p *int64) int64 {
	if p == nil {
		return 30 // the API's default
	}
	return *p
}

type podSpec struct {
	owner string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

// podSpecs returns the pod template of every workload in objs.
func podSpecs(objs []runtime.Object) []podSpec {
	var out []podSpec
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			out = append(out, podSpec{"Deployment " + w.Name, w.Spec.Template.ObjectMeta, w.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, podSpec{"StatefulSet " + w.Name, w.Spec.Template.ObjectMeta, w.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			out = append(out, podSpec{"DaemonSet " + w.Name, w.Spec.Template.ObjectMeta, w.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, podSpec{"Job " + w.Name, w.Spec.Template.ObjectMeta, w.Spec.Template.Spec})
		case *batchv1.CronJob:
			out = append(out, podSpec{"CronJob " + w.Name, w.Spec.JobTemplate.Spec.Template.ObjectMeta, w.Spec.JobTemplate.Spec.Template.Spec})
		case *corev1.Pod:
			out = append(out, podSpec{"Pod " + w.Name, w.ObjectMeta, w.Spec})
		}
	}
	return out
}

// restrictedViolations evaluates spec with the Pod Security admission
// library itself, at the latest policy version and at the one of the
// Kubernetes version the local node runs.
func restrictedViolations(t *testing.T, ps podSpec) []string {
	t.Helper()
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	for _, v := range []psaapi.Version{psaapi.LatestVersion(), psaapi.MajorMinorVersion(1, 34)} {
		res := policy.AggregateCheckResults(eval.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: v}, &ps.meta, &ps.spec))
		if !res.Allowed {
			problems = append(problems, v.String()+": "+res.ForbiddenReason()+": "+res.ForbiddenDetail())
		}
	}
	return problems
}

func TestPodSecurityRestricted(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			specs := podSpecs(typed(t, b.dir))
			if len(specs) == 0 && slices.ContainsFunc(b.kinds, func(k string) bool { return k == "Deployment" || k == "CronJob" }) {
				t.Fatal("found no pod specs to check")
			}
			for _, ps := range specs {
				for _, p := range restrictedViolations(t, ps) {
					t.Errorf("%s violates Pod Security restricted (%s)", ps.owner, p)
				}
			}
		})
	}
}

// Proves the evaluator used above rejects what restricted forbids.
func TestPodSecurityEvaluatorRejects(t *testing.T) {
	ps := podSpecs(typed(t, "k8s/runner"))[0]
	if v := restrictedViolations(t, ps); len(v) != 0 {
		t.Fatalf("runner template already violates restricted: %v", v)
	}
	for name, mutate := range map[string]func(*corev1.PodSpec){
		"privilege escalation": func(s *corev1.PodSpec) { e := true; s.Containers[0].SecurityContext.AllowPrivilegeEscalation = &e },
		"capabilities kept":    func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil },
		"root allowed": func(s *corev1.PodSpec) {
			no := false
			s.SecurityContext.RunAsNonRoot = &no
			s.Containers[0].SecurityContext.RunAsNonRoot = nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := ps
			bad.spec = *ps.spec.DeepCopy()
			mutate(&bad.spec)
			if len(restrictedViolations(t, bad)) == 0 {
				t.Error("evaluator allowed a pod spec restricted forbids")
			}
		})
	}
}

func TestNamespacesEnforceRestricted(t *testing.T) {
	want := map[string]string{
		psaapi.EnforceLevelLabel:   "restricted",
		psaapi.EnforceVersionLabel: "latest",
		psaapi.AuditLevelLabel:     "restricted",
		psaapi.WarnLevelLabel:      "restricted",
	}
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			var names []string
			for _, o := range typed(t, b.dir) {
				ns, ok := o.(*corev1.Namespace)
				if !ok {
					continue
				}
				names = append(names, ns.Name)
				for k, v := range want {
					if ns.Labels[k] != v {
						t.Errorf("Namespace %s label %s = %q, want %q", ns.Name, k, ns.Labels[k], v)
					}
				}
			}
			wantNames := []string(nil)
			if b.namespace != "" {
				wantNames = []string{b.namespace}
			}
			if !slices.Equal(names, wantNames) {
				t.Errorf("Namespace objects %v, want %v", names, wantNames)
			}
		})
	}
}

func TestWorkloadsHaveRequestsAndLimits(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			for _, ps := range podSpecs(typed(t, b.dir)) {
				for _, c := range append(ps.spec.InitContainers, ps.spec.Containers...) {
					for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						req, hasReq := c.Resources.Requests[r]
						lim, hasLim := c.Resources.Limits[r]
						if !hasReq || !hasLim {
							t.Errorf("%s container %s: %s request set %v, limit set %v; want both", ps.owner, c.Name, r, hasReq, hasLim)
							continue
						}
						if req.Cmp(lim) > 0 {
							t.Errorf("%s container %s: %s request %s above limit %s", ps.owner, c.Name, r, req.String(), lim.String())
						}
					}
				}
			}
		})
	}
}

// Restricted does not require a read-only root filesystem; gmini's images
// write nothing, so a write is a bug the kubelet should stop.
func TestContainersHaveReadOnlyRootFilesystem(t *testing.T) {
	for _, b := range builds {
		t.Run(b.dir, func(t *testing.T) {
			for _, ps := range podSpecs(typed(t, b.dir)) {
				for _, c := range append(ps.spec.InitContainers, ps.spec.Containers...) {
					if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("%s container %s: readOnlyRootFilesystem is not true", ps.owner, c.Name)
					}
				}
			}
		})
	}
}

// The examples' schemas are checked against the controllers' own CRDs on
// a real API server by the e2e suite (tools/e2e/argocd_test.go dry-runs
// the Argo CD Application, gitops_test.go applies the Flux objects and
// lets Flux reconcile them); these tests tie the examples to this
// repository: its URL, its overlays and their namespaces.

const repoURL = "https://github.com/gmini-dev/gmini"

// example reads every object of the YAML files in examples/gitops/<dir>.
func example(t *testing.T, dir string) map[string][]*unstructured.Unstructured {
	t.Helper()
	path := filepath.Join(repoRoot(t), "examples", "gitops", dir)
	entries, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" {
			t.Errorf("%s/%s: kustomize would read an object file named kustomization.yaml as its own config", dir, e.Name())
		}
		if filepath.Ext(e.Name()) != ".yaml" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(path, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range splitDocs(t, raw) {
			var m map[string]any
			if err := sigsyaml.Unmarshal(doc, &m); err != nil {
				t.Fatalf("%s/%s: %v", dir, e.Name(), err)
			}
			o := &unstructured.Unstructured{Object: m}
			byKind[o.GetAPIVersion()+" "+o.GetKind()] = append(byKind[o.GetAPIVersion()+" "+o.GetKind()], o)
		}
	}
	return byKind
}

func str(o *unstructured.Unstructured, path ...string) string {
	v, _, _ := unstructured.NestedString(o.Object, path...)
	return v
}

func boolean(o *unstructured.Unstructured, path ...string) bool {
	v, _, _ := unstructured.NestedBool(o.Object, path...)
	return v
}

// overlayNamespace returns the namespace an overlay path renders into.
func overlayNamespace(t *testing.T, path string) string {
	t.Helper()
	clean := filepath.ToSlash(filepath.Clean(path))
	for _, o := range overlays {
		if o.dir == clean {
			render(t, clean) // the path must build, not only be listed
			return o.namespace
		}
	}
	t.Fatalf("path %q is not one of the overlays", path)
	return ""
}

func TestArgoCDExample(t *testing.T) {
	objs := example(t, "argocd")
	apps := objs["argoproj.io/v1alpha1 Application"]
	if len(apps) != 1 || len(objs) != 1 {
		t.Fatalf("want one argoproj.io/v1alpha1 Application, got %v", objs)
	}
	app := apps[0]
	if got := str(app, "spec", "source", "repoURL"); got != repoURL {
		t.Errorf("repoURL = %q, want %q", got, repoURL)
	}
	if ns := overlayNamespace(t, str(app, "spec", "source", "path")); str(app, "spec", "destination", "namespace") != ns {
		t.Errorf("destination namespace %q, but %s renders into %q", str(app, "spec", "destination", "namespace"), str(app, "spec", "source", "path"), ns)
	}
	if !boolean(app, "spec", "syncPolicy", "automated", "prune") || !boolean(app, "spec", "syncPolicy", "automated", "selfHeal") {
		t.Errorf("syncPolicy.automated = %v, want prune and selfHeal", app.Object["spec"].(map[string]any)["syncPolicy"])
	}
	opts, _, _ := unstructured.NestedStringSlice(app.Object, "spec", "syncPolicy", "syncOptions")
	if slices.Contains(opts, "CreateNamespace=true") {
		t.Error("CreateNamespace=true: the overlay owns its Namespace object")
	}
}

// The Flux example follows the artifact .github/workflows/manifests.yaml
// publishes: ghcr.io/<owner>/gmini-manifests, tag main.
func TestFluxExample(t *testing.T) {
	objs := example(t, "flux")
	sources := map[string]*unstructured.Unstructured{}
	for _, o := range objs["source.toolkit.fluxcd.io/v1 OCIRepository"] {
		sources[o.GetNamespace()+"/"+o.GetName()] = o
		if got := str(o, "spec", "url"); got != "oci://ghcr.io/gmini-dev/gmini-manifests" {
			t.Errorf("OCIRepository %s url = %q, want the manifests workflow's oci://ghcr.io/gmini-dev/gmini-manifests", o.GetName(), got)
		}
		if got := str(o, "spec", "ref", "tag"); got != "main" {
			t.Errorf("OCIRepository %s follows tag %q, want main, which the manifests workflow moves", o.GetName(), got)
		}
	}
	kustomizations := objs["kustomize.toolkit.fluxcd.io/v1 Kustomization"]
	if len(kustomizations) == 0 || len(sources) == 0 || len(objs) != 2 {
		t.Fatalf("want OCIRepository and Kustomization objects only, got %v", objs)
	}
	for _, k := range kustomizations {
		refNS := str(k, "spec", "sourceRef", "namespace")
		if refNS == "" {
			refNS = k.GetNamespace()
		}
		if kind := str(k, "spec", "sourceRef", "kind"); kind != "OCIRepository" {
			t.Errorf("Kustomization %s sourceRef kind %q, want OCIRepository", k.GetName(), kind)
		}
		if _, ok := sources[refNS+"/"+str(k, "spec", "sourceRef", "name")]; !ok {
			t.Errorf("Kustomization %s references OCIRepository %s/%s, which the example does not define", k.GetName(), refNS, str(k, "spec", "sourceRef", "name"))
		}
		path := str(k, "spec", "path")
		if !strings.HasPrefix(path, "./") {
			t.Errorf("path %q: Flux paths are relative to the artifact's root and start with ./", path)
		}
		ns := overlayNamespace(t, path)
		if !boolean(k, "spec", "prune") {
			t.Error("prune is off")
		}
		checks, _, _ := unstructured.NestedSlice(k.Object, "spec", "healthChecks")
		if !slices.ContainsFunc(checks, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["apiVersion"] == "apps/v1" && m["kind"] == "Deployment" && m["name"] == "gmini-backend" && m["namespace"] == ns
		}) {
			t.Errorf("no health check on Deployment %s/gmini-backend: %v", ns, checks)
		}
	}
}

func TestInNamespace(t *testing.T) {
	objs, err := Objects(filepath.Join(repoRoot(t), "overlays/dev"))
	if err != nil {
		t.Fatal(err)
	}
	moved := InNamespace(objs, "bench-a")
	if len(moved) != len(objs) {
		t.Fatalf("%d objects, want %d", len(moved), len(objs))
	}
	for _, o := range moved {
		switch {
		case o.GetKind() == "Namespace" && o.GetName() != "bench-a":
			t.Errorf("Namespace %s not renamed", o.GetName())
		case o.GetKind() != "Namespace" && o.GetNamespace() != "bench-a":
			t.Errorf("%s %s stayed in %q", o.GetKind(), o.GetName(), o.GetNamespace())
		case o.GetKind() == "RoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			if ns := subjects[0].(map[string]any)["namespace"]; ns != "bench-a" {
				t.Errorf("RoleBinding %s subject in %v", o.GetName(), ns)
			}
		}
	}
	if objs[0].GetNamespace() == "bench-a" || objs[len(objs)-1].GetNamespace() == "bench-a" {
		t.Error("InNamespace changed its input")
	}
}
