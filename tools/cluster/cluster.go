// Package cluster picks and prepares the cluster that gmini's end-to-end
// tests and `make up` run on: kind where a Docker engine answers, otherwise
// a local node made of host processes. Both are e2e-framework providers.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
	"github.com/gmini-dev/gmini/tools/internal/kubebuild"
)

// Provider names accepted by New.
const (
	Auto  = "auto"
	Kind  = "kind"
	Local = "local"
)

// Options say which cluster to prepare.
type Options struct {
	// Provider is Auto, Kind or Local.
	Provider string
	// RepoRoot is the repository checkout; build output goes to
	// RepoRoot/_output.
	RepoRoot string
	Log      *slog.Logger
	// LocalOptions are passed to the local provider.
	LocalOptions []local.Option
	// NoBuild skips installing and building what a new local node needs:
	// enough to reach or destroy a running one.
	NoBuild bool
}

// Resolve turns Auto into the provider that can run here.
func Resolve(ctx context.Context, provider string) (string, error) {
	switch provider {
	case Kind, Local:
		return provider, nil
	case Auto, "":
		if kind.DockerAvailable(ctx) {
			return Kind, nil
		}
		return Local, nil
	}
	return "", fmt.Errorf("unknown cluster provider %q: want %s, %s or %s", provider, Auto, Kind, Local)
}

// New returns an uncreated provider, having built what it needs: for the
// local node, its Debian packages, the Kubernetes binary and the pause image.
func New(ctx context.Context, opts Options) (support.E2EClusterProviderWithImageLoader, string, error) {
	name, err := Resolve(ctx, opts.Provider)
	if err != nil {
		return nil, "", err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if name == Kind {
		log.Info("cluster provider: kind (a Docker engine answers)")
		p := kind.NewProvider().WithOpts(kind.WithLogger(log))
		return p.(support.E2EClusterProviderWithImageLoader), name, nil
	}
	log.Info("cluster provider: local node (no Docker engine)")
	out := filepath.Join(opts.RepoRoot, "_output")
	kubeBin := filepath.Join(out, "bin", "kube")
	pause := images.Pause(opts.RepoRoot, "dev")
	pauseTar := filepath.Join(out, "images", pause.Name+".tar")
	lopts := append([]local.Option{
		local.WithKubeBinary(kubeBin),
		local.WithPauseImage(pauseTar, pause.Tag),
		local.WithLogger(log),
	}, opts.LocalOptions...)
	if opts.NoBuild {
		return local.NewCluster("", lopts...), name, nil
	}
	if err := hostpkgs.Ensure(ctx, log, hostpkgs.LocalNode()...); err != nil {
		return nil, "", fmt.Errorf("install the local node's Debian packages: %w", err)
	}
	if err := kubebuild.Build(ctx, log, opts.RepoRoot, kubeBin); err != nil {
		return nil, "", fmt.Errorf("build kubernetes %s: %w", kubebuild.KubernetesVersion, err)
	}
	if _, err := images.Build(ctx, log, pause, filepath.Dir(pauseTar)); err != nil {
		return nil, "", fmt.Errorf("build pause image: %w", err)
	}
	return local.NewCluster("", lopts...), name, nil
}
