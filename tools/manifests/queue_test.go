package manifests

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kueue "sigs.k8s.io/kueue/apis/kueue/v1beta2"
)

// withQueue renders overlay with k8s/components/queue added, as an overlay
// that opts in does.
func withQueue(t *testing.T, overlay, namespace string) []runtime.Object {
	t.Helper()
	return withComponent(t, overlay, namespace, "k8s/components/queue")
}

// withComponent renders overlay with the Component component added.
func withComponent(t *testing.T, overlay, namespace, component string) []runtime.Object {
	t.Helper()
	root := repoRoot(t)
	// Kustomize takes only relative paths to other kustomizations, so
	// the opting-in overlay lives inside the repository, under _output.
	parent := filepath.Join(root, "_output", "manifests-test")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(parent, "with-component-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + namespace + "\nresources:\n  - " +
		rel(overlay) + "\ncomponents:\n  - " + rel(component) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return typed(t, dir)
}

// TestQueueComponent: the Component hands the Job template to Kueue's
// LocalQueue "default" of the ClusterQueue k8s/queue defines, lets the
// backend read Kueue, and changes nothing else.
func TestQueueComponent(t *testing.T) {
	cq := only[*kueue.ClusterQueue](t, typed(t, "k8s/queue"), "gmini")
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			var objs []runtime.Object
			if o.queue {
				objs = typed(t, o.dir)
			} else {
				objs = withQueue(t, o.dir, o.namespace)
			}
			cj := only[*batchv1.CronJob](t, objs, "gmini-runner")
			if got := cj.Spec.JobTemplate.Labels["kueue.x-k8s.io/queue-name"]; got != "default" {
				t.Errorf("job template queue-name label %q, want default", got)
			}
			lq := only[*kueue.LocalQueue](t, objs, "default")
			if lq.Namespace != o.namespace || string(lq.Spec.ClusterQueue) != cq.Name {
				t.Errorf("LocalQueue default in %q for ClusterQueue %q, want %q and %q", lq.Namespace, lq.Spec.ClusterQueue, o.namespace, cq.Name)
			}
			rb := only[*rbacv1.RoleBinding](t, objs, "gmini-queue-reader")
			if rb.RoleRef.Name != "gmini-queue-reader" || len(rb.Subjects) != 1 || rb.Subjects[0].Name != "gmini-backend" || rb.Subjects[0].Namespace != o.namespace {
				t.Errorf("RoleBinding gmini-queue-reader: %+v %+v", rb.RoleRef, rb.Subjects)
			}
			role := only[*rbacv1.Role](t, objs, "gmini-queue-reader")
			for _, r := range role.Rules {
				if slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
					t.Errorf("rule %+v: the backend only reads Kueue", r)
				}
			}

			// Everything else is the overlay's own.
			if !o.queue {
				plain := typed(t, o.dir)
				if len(objs) != len(plain)+3 {
					t.Errorf("%d objects with the Component, %d without: want the LocalQueue, Role and RoleBinding more", len(objs), len(plain))
				}
			}
		})
	}
}

// TestClusterQueueFitsTheTemplate: the ClusterQueue's quota is a whole
// number of runners, by the template's requests, in every resource, and
// it orders its LocalQueues by fair share.
func TestClusterQueueFitsTheTemplate(t *testing.T) {
	cq := only[*kueue.ClusterQueue](t, typed(t, "k8s/queue"), "gmini")
	if cq.Spec.QueueingStrategy != kueue.StrictFIFO {
		t.Errorf("queueingStrategy %q, want StrictFIFO: first in, first out within a LocalQueue", cq.Spec.QueueingStrategy)
	}
	if cq.Spec.AdmissionScope == nil || cq.Spec.AdmissionScope.AdmissionMode != kueue.UsageBasedAdmissionFairSharing {
		t.Errorf("admissionScope %+v, want UsageBasedAdmissionFairSharing", cq.Spec.AdmissionScope)
	}
	if len(cq.Spec.ResourceGroups) != 1 || len(cq.Spec.ResourceGroups[0].Flavors) != 1 {
		t.Fatalf("want one resource group with one flavor, got %+v", cq.Spec.ResourceGroups)
	}
	only[*kueue.ResourceFlavor](t, typed(t, "k8s/queue"), string(cq.Spec.ResourceGroups[0].Flavors[0].Name))
	quota := corev1.ResourceList{}
	for _, r := range cq.Spec.ResourceGroups[0].Flavors[0].Resources {
		quota[r.Name] = r.NominalQuota
	}
	runner := podSpecs(typed(t, "k8s/runner"))[0].spec.Containers[0].Resources.Requests
	pods := quota[corev1.ResourcePods]
	runners := pods.Value()
	if runners <= 0 {
		t.Fatalf("pods quota %v", quota)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		want := runner[res].DeepCopy()
		want.Mul(runners)
		if got := quota[res]; got.Cmp(want) != 0 {
			t.Errorf("%s quota %s, want %d runners x %s = %s", res, got.String(), runners, ptrTo(runner[res]).String(), want.String())
		}
	}
	if !slices.Contains(cq.Spec.ResourceGroups[0].CoveredResources, corev1.ResourcePods) {
		t.Errorf("coveredResources %v: pods must be covered, or the count of runners is not bounded", cq.Spec.ResourceGroups[0].CoveredResources)
	}
}

func ptrTo[T any](v T) *T { return &v }
