// Package manifests renders the repository's kustomizations with the same
// engine kubectl kustomize uses (sigs.k8s.io/kustomize/api/krusty), so tests
// and the end-to-end program apply exactly what a GitOps controller would.
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render builds the kustomization in dir and returns the result as a
// multi-document YAML stream, as `kubectl kustomize dir` would print it.
func Render(dir string) ([]byte, error) {
	m, err := build(dir)
	if err != nil {
		return nil, err
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("encode kustomization %s: %w", dir, err)
	}
	return out, nil
}

// Objects builds the kustomization in dir and returns each resulting object,
// in kustomize's output order, ready for a server-side apply.
func Objects(dir string) ([]*unstructured.Unstructured, error) {
	m, err := build(dir)
	if err != nil {
		return nil, err
	}
	objs := make([]*unstructured.Unstructured, 0, m.Size())
	for _, r := range m.Resources() {
		// Through JSON, not r.Map(): kyaml's maps hold Go ints, which
		// unstructured's deep copy refuses; JSON gives its int64s.
		raw, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("convert %s from kustomization %s: %w", r.CurId(), dir, err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("convert %s from kustomization %s: %w", r.CurId(), dir, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

func build(dir string) (resmap.ResMap, error) {
	// The defaults match kubectl kustomize (files must stay inside the
	// kustomization root, no plugins, no Helm) except for the output order:
	// krusty's default keeps input order, the kustomize and kubectl CLIs
	// sort the legacy way (Namespaces first, then RBAC, Services,
	// workloads), which is also the order a client applying one object at a
	// time needs.
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("build kustomization %s: %w", dir, err)
	}
	return m, nil
}

// InNamespace moves a rendered overlay to namespace: its one Namespace is
// renamed, every namespaced object moves, and ServiceAccount subjects of
// its bindings follow, as kustomize's namespace transformer does for an
// overlay. The benchmark runs several copies of an overlay side by side.
func InNamespace(objs []*unstructured.Unstructured, namespace string) []*unstructured.Unstructured {
	old := ""
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			old = o.GetName()
		}
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		o = o.DeepCopy()
		switch {
		case o.GetKind() == "Namespace":
			o.SetName(namespace)
		case o.GetNamespace() != "":
			o.SetNamespace(namespace)
		}
		if subjects, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
			for _, s := range subjects {
				if m, ok := s.(map[string]any); ok && m["kind"] == "ServiceAccount" && (m["namespace"] == old || m["namespace"] == nil) {
					m["namespace"] = namespace
				}
			}
			_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
		}
		out = append(out, o)
	}
	return out
}

// ReadFile decodes every object of one YAML file as it is on disk, not
// through kustomize: the single files of a Component (its LocalQueue, its
// Role) that a test applies into a namespace of its choosing.
func ReadFile(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}
