//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/tools/manifests"
)

const enforceLabel = "pod-security.kubernetes.io/enforce"

// renderedPods returns the backend's and the runner's pod templates as the
// overlay renders them.
func renderedPods(t *testing.T, overlay string) (backend, runner corev1.PodTemplateSpec) {
	t.Helper()
	objs, err := manifests.Objects(suite.layout.Overlay(overlay))
	if err != nil {
		t.Fatalf("render overlays/%s: %v", overlay, err)
	}
	var found int
	for _, o := range objs {
		switch {
		case o.GetKind() == "Deployment" && o.GetName() == "gmini-backend":
			var d appsv1.Deployment
			fromUnstructured(t, o, &d)
			backend = d.Spec.Template
			found++
		case o.GetKind() == "CronJob" && o.GetName() == "gmini-runner":
			var cj batchv1.CronJob
			fromUnstructured(t, o, &cj)
			runner = cj.Spec.JobTemplate.Spec.Template
			found++
		}
	}
	if found != 2 {
		t.Fatalf("overlays/%s: found %d of Deployment gmini-backend and CronJob gmini-runner", overlay, found)
	}
	return backend, runner
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("convert %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func TestPodSecurity(t *testing.T) {
	f := features.New("Pod Security restricted is enforced, and gmini's pods pass it").
		// The dry-run pods count against the namespace's quota: none of an
		// earlier test's may still hold it.
		Setup(backendAndNoJobs).
		Assess("every overlay's Namespace enforces restricted, and holds everything", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, overlay := range overlays {
				objs, err := manifests.Objects(suite.layout.Overlay(overlay))
				if err != nil {
					t.Fatalf("render overlays/%s: %v", overlay, err)
				}
				var namespaces []string
				for _, o := range objs {
					if o.GetKind() != "Namespace" {
						continue
					}
					namespaces = append(namespaces, o.GetName())
					if got := o.GetLabels()[enforceLabel]; got != "restricted" {
						t.Errorf("overlays/%s: Namespace %s has %s=%q, want restricted", overlay, o.GetName(), enforceLabel, got)
					}
				}
				if len(namespaces) != 1 {
					t.Fatalf("overlays/%s renders Namespaces %v, want exactly one", overlay, namespaces)
				}
				// A namespaced object outside that Namespace would escape
				// its enforcement. Cluster-scoped ones hold no pods.
				for _, o := range objs {
					clusterScoped := o.GetKind() == "Namespace" || o.GetKind() == "ClusterRole" || o.GetKind() == "ClusterRoleBinding"
					if !clusterScoped && o.GetNamespace() != namespaces[0] {
						t.Errorf("overlays/%s: %s %s is in namespace %q, not %s", overlay, o.GetKind(), o.GetName(), o.GetNamespace(), namespaces[0])
					}
				}
			}
			live, err := suite.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get namespace %s: %v", ns, err)
			}
			if live.Labels[enforceLabel] != "restricted" {
				t.Errorf("namespace %s on the API server has %s=%q", ns, enforceLabel, live.Labels[enforceLabel])
			}
			return ctx
		}).
		Assess("the API server admits the backend and runner pods of every overlay", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, overlay := range overlays {
				backend, runner := renderedPods(t, overlay)
				for name, tmpl := range map[string]corev1.PodTemplateSpec{"backend": backend, "runner": runner} {
					pod := podFrom(fmt.Sprintf("psa-%s-%s", overlay, name), tmpl)
					if _, err := dryRunPod(ctx, pod); err != nil {
						t.Errorf("overlays/%s %s pod refused in %s: %v", overlay, name, ns, err)
					}
				}
			}
			return ctx
		}).
		Assess("the API server rejects pods that break restricted", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// A privileged container is not in this table: this API server
			// runs without --allow-privileged, so validation refuses it
			// before Pod Security is asked, which would prove nothing here.
			_, runner := renderedPods(t, "dev")
			breaks := []struct {
				name   string
				change func(*corev1.PodSpec)
				want   string // in the API server's message
			}{
				{"runAsNonRoot unset", func(s *corev1.PodSpec) {
					s.SecurityContext.RunAsNonRoot = nil
					s.Containers[0].SecurityContext.RunAsNonRoot = nil
				}, "runAsNonRoot"},
				{"runs as root", func(s *corev1.PodSpec) {
					s.SecurityContext.RunAsUser = ptr.To(int64(0))
				}, "runAsUser=0"},
				{"privilege escalation allowed", func(s *corev1.PodSpec) {
					s.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
				}, "allowPrivilegeEscalation"},
				{"capabilities not dropped", func(s *corev1.PodSpec) {
					s.Containers[0].SecurityContext.Capabilities = nil
				}, "capabilities"},
				{"NET_ADMIN added", func(s *corev1.PodSpec) {
					s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
				}, "NET_ADMIN"},
				{"no seccomp profile", func(s *corev1.PodSpec) {
					s.SecurityContext.SeccompProfile = nil
					s.Containers[0].SecurityContext.SeccompProfile = nil
				}, "seccompProfile"},
				{"host network", func(s *corev1.PodSpec) { s.HostNetwork = true }, "hostNetwork"},
				{"host PID namespace", func(s *corev1.PodSpec) { s.HostPID = true }, "hostPID"},
				{"hostPath volume", func(s *corev1.PodSpec) {
					s.Volumes = append(s.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
				}, "hostPath"},
			}
			for _, b := range breaks {
				pod := podFrom("psa-break", runner)
				b.change(&pod.Spec)
				_, err := dryRunPod(ctx, pod)
				if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") || !strings.Contains(err.Error(), b.want) {
					t.Errorf("runner pod with %s: err %v, want 403 \"violates PodSecurity\" naming %q", b.name, err, b.want)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
