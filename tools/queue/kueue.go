// Package queue installs Kueue on a test cluster: the controller manager
// tools/kueue builds, packed into an image and pushed to the cluster's
// registry, with the CRDs, RBAC, webhooks and visibility APIService of the
// same module's config/ (tools/queue/kueue-system says what differs).
package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
	"github.com/gmini-dev/gmini/tools/manifests"
	"github.com/gmini-dev/gmini/tools/promote"
)

// Namespace is where Kueue runs.
const Namespace = "kueue-system"

// Deployment is Kueue's controller manager, as config/default names it.
const Deployment = "kueue-controller-manager"

// Module is the Go module of Kueue, which tools/kueue requires.
const Module = "sigs.k8s.io/kueue"

// image is the repository the controller manager is pushed to, and the
// name tools/queue/kueue-system gives it.
const image = "kueue"

// upstreamImage is the image config/components/manager names.
const upstreamImage = "us-central1-docker.pkg.dev/k8s-staging-images/kueue/kueue"

// Push packs the controller manager built by modbuild.Kueue (in binDir)
// into an image for this machine's platform and pushes it to reg, tagged
// with Kueue's version. Upstream's Deployment runs /manager.
func Push(ctx context.Context, log *slog.Logger, prog modbuild.Program, binDir string, reg images.Registry) (name.Digest, error) {
	opts, err := reg.RemoteOptions()
	if err != nil {
		return name.Digest{}, err
	}
	mod, err := modbuild.RequiredModule(ctx, prog, Module)
	if err != nil {
		return name.Digest{}, err
	}
	spec := images.Spec{Name: "manager", Title: image, Binary: prog.Binaries(binDir)[0]}
	meta := images.Meta{Source: "https://" + Module, Revision: mod.Version, Version: mod.Version, Created: mod.Time}
	idx, err := images.BuildIndex(ctx, log, spec, meta, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}})
	if err != nil {
		return name.Digest{}, fmt.Errorf("kueue image: %w", err)
	}
	repo, err := reg.Repository(image)
	if err != nil {
		return name.Digest{}, err
	}
	start := time.Now()
	pub, err := images.Push(ctx, repo, idx, []string{mod.Version}, opts...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("push kueue: %w", err)
	}
	log.Info("pushed image", "image", pub.Digest.String(), "elapsed", time.Since(start).Round(10*time.Millisecond))
	return pub.Digest, nil
}

// Render renders Kueue's installation with the image ref: upstream's
// config/ copied from the module cache next to tools/queue/kueue-system,
// so kustomize builds it as one tree.
func Render(ctx context.Context, l layout.Layout, prog modbuild.Program, ref name.Digest) ([]*unstructured.Unstructured, error) {
	mod, err := modbuild.RequiredModule(ctx, prog, Module)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "gmini-kueue-system-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := deploy.CopyTree(l.Path("tools", "queue", "kueue-system"), work, nil); err != nil {
		return nil, fmt.Errorf("kueue install: %w", err)
	}
	if err := deploy.CopyTree(filepath.Join(mod.Dir, "config"), filepath.Join(work, "upstream"), nil); err != nil {
		return nil, fmt.Errorf("kueue install: %w", err)
	}
	img := promote.Image{Name: upstreamImage, NewName: ref.Context().Name(), Digest: ref.DigestStr()}
	if _, err := promote.File(filepath.Join(work, "kustomization.yaml"), []promote.Image{img}); err != nil {
		return nil, err
	}
	rendered, err := manifests.Objects(work)
	if err != nil {
		return nil, fmt.Errorf("render kueue %s: %w", mod.Version, err)
	}
	return deploy.Normalize(rendered)
}

// visibility is the API group Kueue's visibility server adds to the API
// server; the backend reads queue positions from it.
var visibility = schema.GroupVersion{Group: "visibility.kueue.x-k8s.io", Version: "v1beta2"}

// Install applies objs (Render's), CRDs first, and waits until Kueue
// serves: its Deployment available, its webhooks answering (a dry-run
// ResourceFlavor passes them) and its visibility API served.
func Install(ctx context.Context, log *slog.Logger, cfg *rest.Config, objs []*unstructured.Unstructured, timeout time.Duration) error {
	start := time.Now()
	crds := slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return o.GetKind() != "CustomResourceDefinition" })
	others := slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return o.GetKind() == "CustomResourceDefinition" })
	if err := deploy.ApplyCRDs(ctx, log, cfg, crds, timeout); err != nil {
		return fmt.Errorf("kueue install: %w", err)
	}
	if err := deploy.ApplyObjects(ctx, log, cfg, others); err != nil {
		return fmt.Errorf("kueue install: %w", err)
	}
	log.Info("kueue applied; waiting for it to serve", "crds", len(crds), "objects", len(others))
	if err := WaitServing(ctx, cfg, timeout); err != nil {
		return err
	}
	log.Info("kueue installed", "elapsed", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// WaitServing waits until Kueue is available: after Install, or after its
// controller was stopped and started again.
func WaitServing(ctx context.Context, cfg *rest.Config, timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := deploy.WaitDeployment(ctx, cs, Namespace, Deployment, timeout); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// The webhook's certificate is made and injected by Kueue after it
	// starts; until then the API server refuses Kueue's own kinds.
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
		"metadata": map[string]any{"name": "gmini-webhook-probe"},
	}}
	flavors := dyn.Resource(schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "resourceflavors"})
	var last error
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		note := func(err error) bool {
			if err != nil && ctx.Err() == nil { // not the poll's own deadline
				last = err
			}
			return err == nil
		}
		if _, err := flavors.Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !note(err) {
			return false, nil
		}
		return note(cs.Discovery().RESTClient().Get().AbsPath("/apis", visibility.Group, visibility.Version).Do(ctx).Error()), nil
	})
	if err != nil {
		return fmt.Errorf("kueue not serving after %s (webhooks and %s): %v", timeout, visibility, last)
	}
	return nil
}

// Setup installs what gmini's queues need on a test cluster, in the order
// a cluster's owner and an overlay with k8s/components/queue would: the
// Component's Role for the backend in namespace first (so a running
// backend finds Kueue readable the moment it is served), then Kueue
// (built from tools/kueue, pushed to reg), then k8s/queue.
func Setup(ctx context.Context, log *slog.Logger, l layout.Layout, reg images.Registry, rc *rest.Config, namespace string) error {
	prog := modbuild.Kueue(l.KueueModule())
	if err := modbuild.Build(ctx, log, prog, l.Output("bin")); err != nil {
		return err
	}
	ref, err := Push(ctx, log, prog, l.Output("bin"), reg)
	if err != nil {
		return err
	}
	objs, err := Render(ctx, l, prog, ref)
	if err != nil {
		return err
	}
	rbac, err := manifests.ReadFile(l.Path("k8s", "components", "queue", "rbac.yaml"))
	if err != nil {
		return err
	}
	for _, o := range rbac {
		o.SetNamespace(namespace)
	}
	if err := deploy.ApplyObjects(ctx, log, rc, rbac); err != nil {
		return err
	}
	if err := Install(ctx, log, rc, objs, 3*time.Minute); err != nil {
		return err
	}
	return deploy.Apply(ctx, log, rc, l.Path("k8s", "queue"))
}
