package gitops

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

func repo(t *testing.T) layout.Layout {
	t.Helper()
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var testMeta = ArtifactMeta{
	Source:   "https://github.com/gmini-dev/gmini",
	Revision: "main@sha1:0123456789012345678901234567890123456789",
	Created:  time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
}

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestArtifactFormat checks what source-controller relies on and what
// `flux push artifact` writes: an OCI manifest with Flux's config media
// type, the source, revision and created annotations, one gzipped tar
// layer whose first entry is the root "." and whose paths are relative,
// owned by root, without times.
func TestArtifactFormat(t *testing.T) {
	root := writeTree(t, map[string]string{
		"overlays/prod/kustomization.yaml": "kind: Kustomization\n",
		"k8s/base/deployment.yaml":         "kind: Deployment\n",
		"apps/backend/main.go":             "package main\n", // not a manifest directory
	})
	if err := os.Symlink("deployment.yaml", filepath.Join(root, "k8s/base/link.yaml")); err != nil {
		t.Fatal(err)
	}
	img, err := Artifact(root, ManifestDirs, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != ArtifactConfigMediaType {
		t.Errorf("media types: manifest %s, config %s", m.MediaType, m.Config.MediaType)
	}
	want := map[string]string{
		"org.opencontainers.image.source":   testMeta.Source,
		"org.opencontainers.image.revision": testMeta.Revision,
		"org.opencontainers.image.created":  "2026-11-01T12:00:00Z",
	}
	if diff := cmp.Diff(want, m.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != ArtifactContentMediaType {
		t.Fatalf("layers %+v, want one %s", m.Layers, ArtifactContentMediaType)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatalf("layer is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.IsZero() && hdr.ModTime.Unix() != 0 || hdr.Uname != "" {
			t.Errorf("%s: owner %d:%d %q, time %s", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.ModTime)
		}
		if perm := hdr.Mode & 0o777; hdr.Typeflag == tar.TypeDir && perm != 0o755 || hdr.Typeflag == tar.TypeReg && perm != 0o644 {
			t.Errorf("%s: mode %o", hdr.Name, hdr.Mode)
		}
	}
	wantNames := []string{".", "k8s", "k8s/base", "k8s/base/deployment.yaml", "overlays", "overlays/prod", "overlays/prod/kustomization.yaml"}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	// The same tree and commit give the same digest.
	again, err := Artifact(root, ManifestDirs, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("digests differ: %s, %s", d1, d2)
	}
	if _, err := Artifact(root, ManifestDirs, ArtifactMeta{}); err == nil {
		t.Error("an artifact without source and revision was built")
	}
}

func example(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := ReadObjects(repo(t).Path("examples", "gitops", "flux"))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// FluxSync changes the example's source URL and its trust in the registry,
// nothing else: what the end-to-end test applies is the example.
func TestFluxSyncChangesOnlyTheSource(t *testing.T) {
	ex := example(t)
	for _, tt := range []struct {
		name string
		reg  images.Registry
		want map[string]any // the OCIRepository's spec fields that change
	}{
		{"TLS with the cluster's CA", images.Registry{Host: "198.18.0.2:5000", InCluster: "198.18.0.2:5000", CA: []byte("PEM")},
			map[string]any{"url": "oci://198.18.0.2:5000/gmini-manifests", "certSecretRef": map[string]any{"name": CASecret}}},
		{"plain HTTP (kind)", images.Registry{Host: "localhost:5001", InCluster: "gmini-e2e-registry:5000"},
			map[string]any{"url": "oci://gmini-e2e-registry:5000/gmini-manifests", "insecure": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FluxSync(ex, tt.reg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.reg.CA != nil {
				if got[0].GetKind() != "Secret" || got[0].GetName() != CASecret || got[0].GetNamespace() != FluxNamespace {
					t.Fatalf("first object %s %s/%s, want the CA Secret", got[0].GetKind(), got[0].GetNamespace(), got[0].GetName())
				}
				if ca, _, _ := unstructured.NestedString(got[0].Object, "stringData", "ca.crt"); ca != "PEM" {
					t.Errorf("ca.crt = %q", ca)
				}
				got = got[1:]
			}
			if len(got) != len(ex) {
				t.Fatalf("%d objects, want the example's %d", len(got), len(ex))
			}
			for i := range ex {
				want := ex[i].DeepCopy()
				if want.GetKind() == "OCIRepository" {
					for k, v := range tt.want {
						if err := unstructured.SetNestedField(want.Object, v, "spec", k); err != nil {
							t.Fatal(err)
						}
					}
				}
				if diff := cmp.Diff(want.Object, got[i].Object); diff != "" {
					t.Errorf("%s %s (-want +got):\n%s", want.GetKind(), want.GetName(), diff)
				}
			}
		})
	}
	if tag, err := SourceTag(ex); err != nil || tag != "main" {
		t.Errorf("SourceTag = %q, %v; want main, the tag the manifests workflow moves", tag, err)
	}
}

// The example deploys an overlay of this repository, by the path Flux
// resolves inside the artifact, into the namespace that overlay renders.
func TestFluxExampleNamesAnOverlay(t *testing.T) {
	for _, o := range example(t) {
		if o.GetKind() != "Kustomization" {
			continue
		}
		path, _, _ := unstructured.NestedString(o.Object, "spec", "path")
		if !strings.HasPrefix(path, "./overlays/") {
			t.Fatalf("Kustomization %s path %q is not under ./overlays/, which the artifact holds", o.GetName(), path)
		}
		if _, err := os.Stat(repo(t).Path(path, "kustomization.yaml")); err != nil {
			t.Errorf("Kustomization %s: %v", o.GetName(), err)
		}
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "sourceRef", "kind")
		if kind != "OCIRepository" {
			t.Errorf("sourceRef kind %q, want OCIRepository", kind)
		}
	}
}

func TestSourceControllerIP(t *testing.T) {
	for in, want := range map[string]string{"198.19.5.1": "198.19.5.15", "198.19.0.1": "198.19.0.15"} {
		got, err := SourceControllerIP(netip.MustParseAddr(in))
		if err != nil || got.String() != want {
			t.Errorf("SourceControllerIP(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := SourceControllerIP(netip.MustParseAddr("198.19.5.7")); err == nil {
		t.Error("an IP that is not the first of its range was accepted")
	}
}

// TestRenderFlux renders the installation from the controllers' module
// sources (downloading the two modules, not building them): CRDs, each
// controller with its own account bound to its own roles, the images
// from the registry, the artifact server at its fixed address, and pods
// that pass the restricted Pod Security level.
func TestRenderFlux(t *testing.T) {
	l := repo(t)
	prog := modbuild.Flux(l.FluxModule())
	refs := map[string]name.Digest{}
	for _, ctrl := range Controllers {
		d, err := name.NewDigest("198.18.0.2:5000/fluxcd/" + ctrl + "@sha256:" + strings.Repeat("a", 64))
		if err != nil {
			t.Fatal(err)
		}
		refs["fluxcd/"+ctrl] = d
	}
	ip := netip.MustParseAddr("198.19.5.15")
	objs, err := RenderFlux(context.Background(), l, prog, refs, ip)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
		if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "Namespace" && !strings.HasPrefix(o.GetKind(), "Cluster") && o.GetNamespace() != FluxNamespace {
			t.Errorf("%s %s in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	var crds []string
	for _, o := range byKind["CustomResourceDefinition"] {
		crds = append(crds, o.GetName())
	}
	for _, want := range []string{"ocirepositories.source.toolkit.fluxcd.io", "gitrepositories.source.toolkit.fluxcd.io", "helmrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io", "buckets.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"} {
		if !strings.Contains(strings.Join(crds, " "), want) {
			t.Errorf("no CRD %s (have %v)", want, crds)
		}
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, b := range byKind[kind] {
			subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
			want := "kustomize-controller"
			if strings.HasPrefix(b.GetName(), "source-") {
				want = "source-controller"
			}
			if diff := cmp.Diff([]any{map[string]any{"kind": "ServiceAccount", "name": want, "namespace": FluxNamespace}}, subjects); diff != "" {
				t.Errorf("%s %s subjects (-want +got):\n%s", kind, b.GetName(), diff)
			}
		}
	}
	var reconciler bool
	for _, b := range byKind["ClusterRoleBinding"] {
		role, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
		reconciler = reconciler || b.GetName() == "kustomize-cluster-reconciler" && role == "cluster-admin"
	}
	if !reconciler {
		t.Error("kustomize-controller is not bound to cluster-admin, which applying RBAC and namespaces needs")
	}
	for _, s := range byKind["Service"] {
		if ip, _, _ := unstructured.NestedString(s.Object, "spec", "clusterIP"); s.GetName() == "source-controller" && ip != "198.19.5.15" {
			t.Errorf("source-controller Service clusterIP %q", ip)
		}
	}
	if len(byKind["Deployment"]) != 2 {
		t.Fatalf("%d Deployments, want 2", len(byKind["Deployment"]))
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range byKind["Deployment"] {
		var pod corev1.PodTemplateSpec
		tmpl, _, _ := unstructured.NestedMap(d.Object, "spec", "template")
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &pod); err != nil {
			t.Fatal(err)
		}
		c := pod.Spec.Containers[0]
		if want := refs["fluxcd/"+d.GetName()].String(); c.Image != want {
			t.Errorf("%s image %s, want %s", d.GetName(), c.Image, want)
		}
		if pod.Spec.ServiceAccountName != d.GetName() {
			t.Errorf("%s runs as ServiceAccount %q", d.GetName(), pod.Spec.ServiceAccountName)
		}
		if d.GetName() == "source-controller" {
			args, _ := json.Marshal(c.Args)
			if !strings.Contains(string(args), `"--storage-adv-addr=198.19.5.15"`) {
				t.Errorf("source-controller args %s: not advertising 198.19.5.15", args)
			}
		}
		for _, r := range evaluator.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &pod.ObjectMeta, &pod.Spec) {
			if !r.Allowed {
				t.Errorf("%s: restricted Pod Security: %s: %s", d.GetName(), r.ForbiddenReason, r.ForbiddenDetail)
			}
		}
	}
}
