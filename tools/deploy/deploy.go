// Package deploy puts gmini on a cluster: it builds the images from source,
// loads them into the cluster, applies a kustomization server-side and waits
// for the backend. The e2e suite and `make up` share it.
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/manifests"
)

// Namespace of the dev overlay, which the root kustomization renders.
const Namespace = "gmini-dev"

// FieldManager owns the fields this package applies.
const FieldManager = "gmini-deploy"

// ImageLoader is the part of an e2e-framework cluster provider that loads
// image archives.
type ImageLoader interface {
	LoadImageArchive(ctx context.Context, archivePath string, args ...string) error
}

// BuildImages builds the backend and runner images tagged tag into outDir
// and returns the archives' paths.
func BuildImages(ctx context.Context, log *slog.Logger, repoRoot, outDir, tag string) ([]string, error) {
	var tars []string
	for _, spec := range images.Project(repoRoot, tag) {
		if spec.Name == "pause" {
			continue // the cluster provider brings its own sandbox image
		}
		tar, err := images.Build(ctx, log, spec, outDir)
		if err != nil {
			return nil, fmt.Errorf("build image %s: %w", spec.Tag, err)
		}
		tars = append(tars, tar)
	}
	return tars, nil
}

// LoadImages imports archives into the cluster's container runtime.
func LoadImages(ctx context.Context, log *slog.Logger, c ImageLoader, tars []string) error {
	for _, tar := range tars {
		start := time.Now()
		if err := c.LoadImageArchive(ctx, tar); err != nil {
			return fmt.Errorf("load image archive %s: %w", tar, err)
		}
		log.Info("image loaded", "archive", filepath.Base(tar), "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// Apply renders the kustomization in dir and applies every object with
// server-side apply, in kustomize's legacy order (namespaces and
// ServiceAccounts before the workloads that use them).
func Apply(ctx context.Context, log *slog.Logger, cfg *rest.Config, dir string) error {
	objs, err := manifests.Objects(dir)
	if err != nil {
		return fmt.Errorf("render %s: %w", dir, err)
	}
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
	log.Info("manifests applied", "dir", dir, "objects", len(objs))
	return nil
}

// WaitBackend waits until the backend Deployment is available, and explains
// why not when it times out (the pods' states and the last events).
func WaitBackend(ctx context.Context, log *slog.Logger, client kubernetes.Interface, namespace string, timeout time.Duration) error {
	start := time.Now()
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := client.AppsV1().Deployments(namespace).Get(ctx, "gmini-backend", metav1.GetOptions{})
		if err != nil {
			return false, nil // not applied yet or API hiccup: keep waiting
		}
		last = d
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.UpdatedReplicas == *d.Spec.Replicas {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("backend deployment %s/gmini-backend not available after %s: %w\n%s",
			namespace, timeout, err, Diagnose(context.WithoutCancel(ctx), client, namespace, last))
	}
	log.Info("backend available", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
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
