package gitops

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
)

// ManifestsImage is the repository the manifests artifact is pushed to,
// under a registry: ghcr.io/<owner>/gmini-manifests.
const ManifestsImage = "gmini-manifests"

// CASecret holds a registry's CA for the OCIRepository (certSecretRef),
// under the key source-controller reads.
const CASecret = "gmini-registry-ca"

// ReadObjects reads every YAML document of the .yaml files in dir, in
// file name order.
func ReadObjects(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if s := string(bytes.TrimSpace(js)); s == "null" || s == "{}" {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(js); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			objs = append(objs, u)
		}
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("no objects in %s", dir)
	}
	return objs, nil
}

// FluxSync is the Flux example (examples/gitops/flux, as read by
// ReadObjects) pointed at reg instead of ghcr.io: the OCIRepository's URL
// names reg's in-cluster address, and with a CA it trusts it through a
// Secret (certSecretRef), which comes first in the result; a plain-HTTP
// registry is marked insecure. Nothing else of the example changes.
func FluxSync(example []*unstructured.Unstructured, reg images.Registry) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	sources := 0
	for _, o := range example {
		o = o.DeepCopy()
		if o.GetKind() == "OCIRepository" {
			sources++
			if err := unstructured.SetNestedField(o.Object, "oci://"+reg.InCluster+"/"+ManifestsImage, "spec", "url"); err != nil {
				return nil, err
			}
			var err error
			if reg.CA != nil {
				err = unstructured.SetNestedField(o.Object, CASecret, "spec", "certSecretRef", "name")
			} else {
				err = unstructured.SetNestedField(o.Object, true, "spec", "insecure")
			}
			if err != nil {
				return nil, err
			}
		}
		out = append(out, o)
	}
	if sources != 1 {
		return nil, fmt.Errorf("flux example: %d OCIRepository objects, want 1", sources)
	}
	if reg.CA != nil {
		secret := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": CASecret, "namespace": FluxNamespace},
			"stringData": map[string]any{"ca.crt": string(reg.CA)},
		}}
		out = append([]*unstructured.Unstructured{secret}, out...)
	}
	return out, nil
}

// SourceTag is the tag the example's OCIRepository follows (spec.ref.tag):
// the tag a publication must move.
func SourceTag(example []*unstructured.Unstructured) (string, error) {
	for _, o := range example {
		if o.GetKind() == "OCIRepository" {
			tag, ok, err := unstructured.NestedString(o.Object, "spec", "ref", "tag")
			if err != nil || !ok || tag == "" {
				return "", fmt.Errorf("OCIRepository %s follows no tag (spec.ref.tag): %v", o.GetName(), err)
			}
			return tag, nil
		}
	}
	return "", errors.New("no OCIRepository in the Flux example")
}

// Stage copies the manifest directories (ManifestDirs) of the checkout at
// root into dst, to be changed (promoted) and published from there.
func Stage(root, dst string) error {
	for _, d := range ManifestDirs {
		if err := deploy.CopyTree(filepath.Join(root, d), filepath.Join(dst, d), nil); err != nil {
			return fmt.Errorf("stage %s: %w", d, err)
		}
	}
	return nil
}

// Publish packs the manifest directories below root as a Flux artifact and
// pushes it to repo by digest, then moves tag to it.
func Publish(ctx context.Context, root string, meta ArtifactMeta, repo name.Repository, tag string, opts ...remote.Option) (images.Published, error) {
	img, err := Artifact(root, ManifestDirs, meta)
	if err != nil {
		return images.Published{}, err
	}
	return images.Push(ctx, repo, img, []string{tag}, opts...)
}
