//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/gitops"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

var applications = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}

// TestArgoCDExample checks examples/gitops/argocd/application.yaml against
// Argo CD's own Application CRD, read from its module source and installed
// in the cluster's API server: a server-side dry-run create with strict
// field validation, which refuses an unknown or misspelled field, a
// missing required one and a wrong type, as `kubectl apply` against a
// cluster running Argo CD would. Argo CD itself does not run.
func TestArgoCDExample(t *testing.T) {
	var app *unstructured.Unstructured
	var kueueApps []*unstructured.Unstructured
	f := features.New("the Argo CD examples are valid Applications").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			l, err := layout.FromWorkingDir()
			if err != nil {
				t.Fatal(err)
			}
			objs, err := gitops.ReadObjects(l.Path("examples", "gitops", "argocd"))
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 1 || objs[0].GetKind() != "Application" {
				t.Fatalf("want one Application in examples/gitops/argocd, got %d objects", len(objs))
			}
			app = objs[0]
			if kueueApps, err = gitops.ReadObjects(l.Path("examples", "gitops", "kueue", "argocd")); err != nil || len(kueueApps) != 2 {
				t.Fatalf("examples/gitops/kueue/argocd: %d objects, %v; want 2 Applications", len(kueueApps), err)
			}
			start := time.Now()
			crd, err := gitops.ArgoCDApplicationCRD(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := deploy.ApplyCRDs(ctx, logger, cfg.Client().RESTConfig(), []*unstructured.Unstructured{crd}, time.Minute); err != nil {
				t.Fatal(err)
			}
			t.Logf("Argo CD %s Application CRD established %s after the module download began", gitops.ArgoCDVersion, time.Since(start).Round(10*time.Millisecond))
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app.GetNamespace()}}
			if _, err := clientset(t, cfg).CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("a server-side dry-run create accepts the example", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := dryRunCreate(ctx, cfg, app); err != nil {
				t.Fatalf("the API server refuses examples/gitops/argocd/application.yaml: %v", err)
			}
			for _, a := range kueueApps {
				if err := dryRunCreate(ctx, cfg, a); err != nil {
					t.Errorf("the API server refuses Application %s of examples/gitops/kueue/argocd: %v", a.GetName(), err)
				}
			}
			return ctx
		}).
		Assess("the same dry run refuses what Argo CD would not accept", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, tt := range []struct {
				name   string
				change func(*unstructured.Unstructured)
				want   string
			}{
				{"a misspelled field", func(u *unstructured.Unstructured) {
					_ = unstructured.SetNestedField(u.Object, true, "spec", "syncPolicy", "automated", "selfheal")
				}, "selfheal"},
				{"no destination", func(u *unstructured.Unstructured) {
					unstructured.RemoveNestedField(u.Object, "spec", "destination")
				}, "destination"},
				{"prune as a string", func(u *unstructured.Unstructured) {
					_ = unstructured.SetNestedField(u.Object, "yes", "spec", "syncPolicy", "automated", "prune")
				}, "prune"},
			} {
				bad := app.DeepCopy()
				tt.change(bad)
				err := dryRunCreate(ctx, cfg, bad)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: dry run = %v, want an error naming %q", tt.name, err, tt.want)
				}
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if app != nil {
				_ = clientset(t, cfg).CoreV1().Namespaces().Delete(ctx, app.GetNamespace(), metav1.DeleteOptions{})
			}
			dyn := dynamic.NewForConfigOrDie(cfg.Client().RESTConfig())
			crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
			_ = dyn.Resource(crds).Delete(ctx, "applications.argoproj.io", metav1.DeleteOptions{})
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func dryRunCreate(ctx context.Context, cfg *envconf.Config, app *unstructured.Unstructured) error {
	dyn, err := dynamic.NewForConfig(cfg.Client().RESTConfig())
	if err != nil {
		return err
	}
	_, err = dyn.Resource(applications).Namespace(app.GetNamespace()).Create(ctx, app, metav1.CreateOptions{
		DryRun:          []string{metav1.DryRunAll},
		FieldValidation: metav1.FieldValidationStrict,
	})
	return err
}
