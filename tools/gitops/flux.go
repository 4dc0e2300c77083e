package gitops

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
	"github.com/gmini-dev/gmini/tools/manifests"
	"github.com/gmini-dev/gmini/tools/promote"
)

// FluxNamespace is where the controllers run and the examples' Flux
// objects live.
const FluxNamespace = "flux-system"

// Controllers are Flux's controllers the loop needs, by module path.
var Controllers = []string{"source-controller", "kustomize-controller"}

func controllerModule(ctrl string) string { return "github.com/fluxcd/" + ctrl }

// controllerImage is the image name upstream gives the controller, and
// the repository it is pushed to under a registry.
func controllerImage(ctrl string) string { return "fluxcd/" + ctrl }

// sourceControllerHost is the fixed host number of source-controller's
// ClusterIP in the service range: inside the first 16 addresses, which
// the API server keeps for fixed IPs. No cluster DNS runs on the local
// node, so kustomize-controller downloads artifacts from this address,
// which source-controller advertises (--storage-adv-addr).
const sourceControllerHost = 15

// SourceControllerIP is source-controller's fixed ClusterIP, derived from
// the `kubernetes` Service's, the service range's first address.
func SourceControllerIP(apiServiceIP netip.Addr) (netip.Addr, error) {
	if !apiServiceIP.Is4() {
		return netip.Addr{}, fmt.Errorf("kubernetes Service IP %s: only IPv4 ranges are supported", apiServiceIP)
	}
	b := apiServiceIP.As4()
	if b[3] != 1 {
		return netip.Addr{}, fmt.Errorf("kubernetes Service IP %s is not the first of its range", apiServiceIP)
	}
	b[3] = sourceControllerHost
	return netip.AddrFrom4(b), nil
}

// PushFlux packs the controllers built by modbuild.Flux (in binDir) into
// images, one per controller for this machine's platform, and pushes them
// to reg, tagged with their version. It returns the digest references by
// upstream image name (fluxcd/source-controller, ...).
func PushFlux(ctx context.Context, log *slog.Logger, prog modbuild.Program, binDir string, reg images.Registry) (map[string]name.Digest, error) {
	opts, err := reg.RemoteOptions()
	if err != nil {
		return nil, err
	}
	refs := map[string]name.Digest{}
	for i, ctrl := range Controllers {
		mod, err := modbuild.RequiredModule(ctx, prog, controllerModule(ctrl))
		if err != nil {
			return nil, err
		}
		spec := images.Spec{Name: ctrl, Title: controllerImage(ctrl), Binary: prog.Binaries(binDir)[i]}
		meta := images.Meta{Source: "https://" + controllerModule(ctrl), Revision: mod.Version, Version: mod.Version, Created: mod.Time}
		idx, err := images.BuildIndex(ctx, log, spec, meta, []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}})
		if err != nil {
			return nil, err
		}
		repo, err := reg.Repository(controllerImage(ctrl))
		if err != nil {
			return nil, err
		}
		start := time.Now()
		pub, err := images.Push(ctx, repo, idx, []string{mod.Version}, opts...)
		if err != nil {
			return nil, err
		}
		log.Info("pushed image", "image", pub.Digest.String(), "elapsed", time.Since(start).Round(10*time.Millisecond))
		refs[controllerImage(ctrl)] = pub.Digest
	}
	return refs, nil
}

// RenderFlux renders the controllers' installation: tools/gitops/flux-system
// over each module's config (CRDs, RBAC, Deployment), with the images set
// to refs and source-controller's Service at sourceIP, which it
// advertises as the address of its artifacts.
func RenderFlux(ctx context.Context, l layout.Layout, prog modbuild.Program, refs map[string]name.Digest, sourceIP netip.Addr) ([]*unstructured.Unstructured, error) {
	work, err := os.MkdirTemp("", "gmini-flux-system-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := deploy.CopyTree(l.Path("tools", "gitops", "flux-system"), work, nil); err != nil {
		return nil, err
	}
	var imgs []promote.Image
	for _, ctrl := range Controllers {
		mod, err := modbuild.RequiredModule(ctx, prog, controllerModule(ctrl))
		if err != nil {
			return nil, err
		}
		for _, part := range []string{"crd", "rbac", "manager"} {
			if err := deploy.CopyTree(filepath.Join(mod.Dir, "config", part), filepath.Join(work, "upstream", ctrl, part), nil); err != nil {
				return nil, fmt.Errorf("flux install: %w", err)
			}
		}
		ref, ok := refs[controllerImage(ctrl)]
		if !ok {
			return nil, fmt.Errorf("flux install: no image for %s", ctrl)
		}
		imgs = append(imgs, promote.Image{Name: controllerImage(ctrl), NewName: ref.Context().Name(), Digest: ref.DigestStr()})
	}
	if _, err := promote.File(filepath.Join(work, "kustomization.yaml"), imgs); err != nil {
		return nil, err
	}
	rendered, err := manifests.Objects(work)
	if err != nil {
		return nil, err
	}
	objs, err := deploy.Normalize(rendered)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		switch {
		case o.GetKind() == "Service" && o.GetName() == "source-controller":
			if err := unstructured.SetNestedField(o.Object, sourceIP.String(), "spec", "clusterIP"); err != nil {
				return nil, err
			}
		case o.GetKind() == "Deployment" && o.GetName() == "source-controller":
			if err := setArg(o, "--storage-adv-addr=", sourceIP.String()); err != nil {
				return nil, err
			}
		}
	}
	return objs, nil
}

// setArg replaces the value of the manager container's flag.
func setArg(d *unstructured.Unstructured, flag, value string) error {
	containers, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		return fmt.Errorf("deployment %s: want one container (%v)", d.GetName(), err)
	}
	c := containers[0].(map[string]any)
	args, _, _ := unstructured.NestedStringSlice(c, "args")
	i := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, flag) })
	if i < 0 {
		return fmt.Errorf("deployment %s: no %s argument", d.GetName(), flag)
	}
	args[i] = flag + value
	if err := unstructured.SetNestedStringSlice(c, args, "args"); err != nil {
		return err
	}
	return unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers")
}

// InstallFlux applies objs: the CRDs first, until the API server serves
// them (the controllers exit at start-up on a missing kind), then the
// rest; it waits until both controllers are available.
func InstallFlux(ctx context.Context, log *slog.Logger, cfg *rest.Config, objs []*unstructured.Unstructured, timeout time.Duration) error {
	start := time.Now()
	crds := slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return o.GetKind() != "CustomResourceDefinition" })
	others := slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return o.GetKind() == "CustomResourceDefinition" })
	if err := deploy.ApplyCRDs(ctx, log, cfg, crds, timeout); err != nil {
		return err
	}
	if err := deploy.ApplyObjects(ctx, log, cfg, others); err != nil {
		return fmt.Errorf("flux install: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, ctrl := range Controllers {
		if err := deploy.WaitDeployment(ctx, cs, FluxNamespace, ctrl, timeout); err != nil {
			return err
		}
	}
	log.Info("flux installed", "crds", len(crds), "objects", len(others), "elapsed", time.Since(start).Round(10*time.Millisecond))
	return nil
}
