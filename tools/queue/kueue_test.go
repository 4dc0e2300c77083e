package queue

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// TestRender renders Kueue's installation from its module's config/
// (downloading the module, not building it) and checks what
// kueue-system changes: the image, the configuration, the Job webhooks
// narrowed to queued Jobs, and Kueue's own certificates rather than
// cert-manager's.
func TestRender(t *testing.T) {
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest("198.18.0.2:5000/kueue@sha256:" + strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(context.Background(), l, modbuild.Kueue(l.KueueModule()), ref)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
		if o.GetAPIVersion() == "cert-manager.io/v1" {
			t.Errorf("cert-manager object %s %s: Kueue manages its certificates itself", o.GetKind(), o.GetName())
		}
	}
	var crds []string
	for _, o := range byKind["CustomResourceDefinition"] {
		crds = append(crds, o.GetName())
	}
	for _, want := range []string{"clusterqueues.kueue.x-k8s.io", "localqueues.kueue.x-k8s.io", "resourceflavors.kueue.x-k8s.io", "workloads.kueue.x-k8s.io"} {
		if !strings.Contains(strings.Join(crds, " "), want) {
			t.Errorf("no CRD %s (have %v)", want, crds)
		}
	}

	deps := byKind["Deployment"]
	if len(deps) != 1 || deps[0].GetName() != Deployment || deps[0].GetNamespace() != Namespace {
		t.Fatalf("deployments: %v", deps)
	}
	containers, _, _ := unstructured.NestedSlice(deps[0].Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	if c["image"] != ref.String() {
		t.Errorf("image %v, want %s", c["image"], ref)
	}
	if cmd, _, _ := unstructured.NestedStringSlice(c, "command"); len(cmd) != 1 || cmd[0] != "/manager" {
		t.Errorf("command %v: Push packs the binary as /manager", cmd)
	}
	if cpu, _, _ := unstructured.NestedString(c, "resources", "requests", "cpu"); cpu != "50m" {
		t.Errorf("CPU request %q, want 50m", cpu)
	}

	var cfg map[string]any
	for _, cm := range byKind["ConfigMap"] {
		if data, ok, _ := unstructured.NestedString(cm.Object, "data", "controller_manager_config.yaml"); ok {
			if err := yaml.Unmarshal([]byte(data), &cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cfg["manageJobsWithoutQueueName"] != false {
		t.Errorf("manageJobsWithoutQueueName = %v, want false: Jobs without a queue are not Kueue's", cfg["manageJobsWithoutQueueName"])
	}
	if fw, _, _ := unstructured.NestedStringSlice(cfg, "integrations", "frameworks"); strings.Join(fw, ",") != "batch/job" {
		t.Errorf("integrations %v, want batch/job only", fw)
	}
	if _, ok, _ := unstructured.NestedMap(cfg, "admissionFairSharing"); !ok {
		t.Error("no admissionFairSharing: the fair share between LocalQueues needs it")
	}

	for _, want := range []struct{ kind, hook string }{
		{"MutatingWebhookConfiguration", "mjob.kb.io"},
		{"ValidatingWebhookConfiguration", "vjob.kb.io"},
	} {
		found := false
		for _, o := range byKind[want.kind] {
			hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
			for _, h := range hooks {
				m := h.(map[string]any)
				if m["name"] != want.hook {
					continue
				}
				found = true
				if m["failurePolicy"] != "Ignore" {
					t.Errorf("%s failurePolicy %v, want Ignore", want.hook, m["failurePolicy"])
				}
				key, _, _ := unstructured.NestedSlice(m, "objectSelector", "matchExpressions")
				if len(key) != 1 || key[0].(map[string]any)["key"] != "kueue.x-k8s.io/queue-name" {
					t.Errorf("%s objectSelector %v, want Jobs with a queue name only", want.hook, key)
				}
			}
		}
		if !found {
			t.Errorf("no webhook %s", want.hook)
		}
	}
	var apiServices []string
	for _, o := range byKind["APIService"] {
		apiServices = append(apiServices, o.GetName())
	}
	if !strings.Contains(strings.Join(apiServices, " "), "v1beta2.visibility.kueue.x-k8s.io") {
		t.Errorf("APIServices %v: the visibility API v1beta2 serves queue positions", apiServices)
	}
}
