// Package deploy puts gmini on a cluster, as steps any suite, the benchmark
// and `make up` compose (e2e-framework env.Funcs, like envfuncs'
// CreateClusterWithOpts and LoadImageArchiveToCluster): build the images,
// load them into the cluster, apply an overlay server-side, wait for the
// backend, and reach it.
package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/manifests"
)

// Namespace of the dev overlay, which the root kustomization renders.
const Namespace = "gmini-dev"

// Names of the backend's Deployment, Service and port, as the base sets them.
const (
	BackendName = "gmini-backend"
	BackendPort = 8080
)

// FieldManager owns the fields this package applies.
const FieldManager = "gmini-deploy"

// Images are the project's backend and runner images, tagged Tag, with
// their archives in the checkout's image directory, and any Extra images a
// suite's own pods run (e.g. images.NetProbe).
type Images struct {
	Layout layout.Layout
	Tag    string
	Extra  []images.Spec
}

func (im Images) specs() []images.Spec {
	var out []images.Spec
	for _, s := range images.Project(im.Layout.Root, im.Tag) {
		if s.Name != "pause" { // the cluster provider brings its own sandbox image
			out = append(out, s)
		}
	}
	return append(out, im.Extra...)
}

// Archives are the paths BuildImages writes.
func (im Images) Archives() []string {
	var out []string
	for _, s := range im.specs() {
		out = append(out, images.ArchivePath(im.Layout.Images(), s))
	}
	return out
}

// BuildImages builds the images from source into their archives.
func BuildImages(log *slog.Logger, im Images) env.Func {
	return func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		for _, spec := range im.specs() {
			if _, err := images.Build(ctx, log, spec, im.Layout.Images()); err != nil {
				return ctx, fmt.Errorf("build image %s: %w", spec.Tag, err)
			}
		}
		return ctx, nil
	}
}

// LoadImages imports the archives into the runtime of the cluster that
// envfuncs.CreateClusterWithOpts stored under clusterName.
func LoadImages(log *slog.Logger, clusterName string, im Images) env.Func {
	return func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		p, ok := envfuncs.GetClusterFromContext(ctx, clusterName)
		if !ok {
			return ctx, fmt.Errorf("load images: no cluster %q in the context (create it first)", clusterName)
		}
		loader, ok := p.(support.E2EClusterProviderWithImageLoader)
		if !ok {
			return ctx, fmt.Errorf("load images: cluster %q cannot load images", clusterName)
		}
		for _, tar := range im.Archives() {
			start := time.Now()
			if err := loader.LoadImageArchive(ctx, tar); err != nil {
				return ctx, fmt.Errorf("load image archive %s: %w", tar, err)
			}
			log.Info("image loaded", "archive", filepath.Base(tar), "elapsed", time.Since(start).Round(time.Millisecond))
		}
		return ctx, nil
	}
}

// ApplyOverlay renders the kustomization in dir and applies it to the
// environment's cluster.
func ApplyOverlay(log *slog.Logger, dir string) env.Func {
	return func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		return ctx, Apply(ctx, log, cfg.Client().RESTConfig(), dir)
	}
}

// Apply renders the kustomization in dir and applies every object with
// server-side apply, in kustomize's legacy order (namespaces and
// ServiceAccounts before the workloads that use them).
func Apply(ctx context.Context, log *slog.Logger, cfg *rest.Config, dir string) error {
	objs, err := manifests.Objects(dir)
	if err != nil {
		return fmt.Errorf("render %s: %w", dir, err)
	}
	if err := ApplyObjects(ctx, log, cfg, objs); err != nil {
		return err
	}
	log.Info("manifests applied", "dir", dir, "objects", len(objs))
	return nil
}

// ApplyObjects applies objs in order with server-side apply, which
// validates each against its schema (an unknown field is an error).
func ApplyObjects(ctx context.Context, log *slog.Logger, cfg *rest.Config, objs []*unstructured.Unstructured) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discovery client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("map %s: %w", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		log.Debug("applied", "kind", gvk.Kind, "namespace", obj.GetNamespace(), "name", obj.GetName())
	}
	return nil
}

// WaitBackend waits until the backend Deployment in namespace is
// available.
func WaitBackend(log *slog.Logger, namespace string, timeout time.Duration) env.Func {
	return func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
		client, err := kubernetes.NewForConfig(cfg.Client().RESTConfig())
		if err != nil {
			return ctx, err
		}
		return ctx, waitBackend(ctx, log, client, namespace, timeout)
	}
}

// waitBackend explains why not when it times out: the pods' states and the
// last events.
func waitBackend(ctx context.Context, log *slog.Logger, client kubernetes.Interface, namespace string, timeout time.Duration) error {
	start := time.Now()
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := client.AppsV1().Deployments(namespace).Get(ctx, BackendName, metav1.GetOptions{})
		if err != nil {
			return false, nil // not applied yet or API hiccup: keep waiting
		}
		last = d
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue &&
				d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.ObservedGeneration >= d.Generation {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("backend deployment %s/%s not available after %s: %w\n%s",
			namespace, BackendName, timeout, err, Diagnose(context.WithoutCancel(ctx), client, namespace, last))
	}
	log.Info("backend available", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// Run runs steps in order outside a test environment (`make up`, the
// benchmark), threading the context as env.Environment would.
func Run(ctx context.Context, cfg *envconf.Config, steps ...env.Func) (context.Context, error) {
	for _, step := range steps {
		var err error
		if ctx, err = step(ctx, cfg); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}

// Diagnose summarises pods and recent events of the namespace, for error
// messages that must explain a failure from a CI log alone.
func Diagnose(ctx context.Context, client kubernetes.Interface, namespace string, dep *appsv1.Deployment) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := ""
	if dep != nil {
		out += fmt.Sprintf("deployment status: %+v\n", dep.Status)
	}
	if pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			out += fmt.Sprintf("pod %s: phase %s", p.Name, p.Status.Phase)
			for _, cs := range p.Status.ContainerStatuses {
				switch {
				case cs.State.Waiting != nil:
					out += fmt.Sprintf("; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
				case cs.State.Terminated != nil:
					out += fmt.Sprintf("; %s terminated: exit %d %s", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
				}
			}
			out += "\n"
		}
	}
	if events, err := client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{}); err == nil {
		items := events.Items
		if len(items) > 20 {
			items = items[len(items)-20:]
		}
		for _, e := range items {
			out += fmt.Sprintf("event %s %s/%s: %s %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return out
}
