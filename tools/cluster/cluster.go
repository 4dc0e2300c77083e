// Package cluster chooses and builds the cluster that gmini's suites, its
// benchmark and `make up` run on: kind where a Docker engine answers,
// otherwise a local node made of host processes. Choosing (Resolve) is
// separate from building (NewLocal, NewKind), as in kind's
// DetectNodeProvider and NewProvider, so callers get the concrete type they
// need.
package cluster

import (
	"context"
	"fmt"
	"log/slog"

	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
	"github.com/gmini-dev/gmini/tools/internal/kubebuild"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// Provider names accepted by Resolve.
const (
	Auto  = "auto"
	Kind  = "kind"
	Local = "local"
)

// Provider is what the suites need of any cluster: e2e-framework's
// provider contract with image loading.
type Provider = support.E2EClusterProviderWithImageLoader

// Resolve turns Auto (or "") into the provider that can run here: kind
// when a Docker engine answers, else the local node.
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

// LocalNode is what a local node takes from the machine: the Kubernetes
// binary and the pod sandbox image.
type LocalNode struct {
	KubeBinary string
	PauseImage string // docker-archive tarball
	PauseTag   string
}

// Prepare makes this machine able to run local nodes: it installs the
// Debian packages they need and builds the Kubernetes binary and the pause
// image, each only when missing or out of date. Call it once, before
// creating local clusters.
func Prepare(ctx context.Context, log *slog.Logger, l layout.Layout) (LocalNode, error) {
	node := Artifacts(l)
	if err := hostpkgs.Ensure(ctx, log, hostpkgs.LocalNode()...); err != nil {
		return LocalNode{}, fmt.Errorf("install the local node's Debian packages: %w", err)
	}
	if err := kubebuild.Build(ctx, log, l.KubeModule(), node.KubeBinary); err != nil {
		return LocalNode{}, fmt.Errorf("build kubernetes %s: %w", kubebuild.KubernetesVersion, err)
	}
	pause := images.Pause(l.Root, "dev")
	if _, err := images.Build(ctx, log, pause, l.Images()); err != nil {
		return LocalNode{}, fmt.Errorf("build pause image: %w", err)
	}
	return node, nil
}

// Artifacts says where Prepare puts what a local node needs, without
// building anything: enough to reach or destroy a running node.
func Artifacts(l layout.Layout) LocalNode {
	pause := images.Pause(l.Root, "dev")
	return LocalNode{
		KubeBinary: l.KubeBinary(),
		PauseImage: images.ArchivePath(l.Images(), pause),
		PauseTag:   pause.Tag,
	}
}

// NewLocal returns the local cluster called name, with its run directory
// in the checkout's output and the node's artifacts; nothing starts until
// Create.
func NewLocal(l layout.Layout, node LocalNode, name string, log *slog.Logger, opts ...local.Option) *local.Cluster {
	base := []local.Option{
		local.WithRunDir(l.ClusterDir(name)),
		local.WithKubeBinary(node.KubeBinary),
		local.WithPauseImage(node.PauseImage, node.PauseTag),
		local.WithLogger(log),
	}
	return local.NewCluster(name, append(base, opts...)...)
}

// NewKind returns the kind cluster called name, on the node image of the
// same Kubernetes minor as the local node, so both providers test the
// version people run. If its creation fails, the nodes' logs go to the
// checkout's logs directory.
func NewKind(l layout.Layout, name string, log *slog.Logger) *kind.Cluster {
	c := kind.NewCluster(name)
	c.WithOpts(kind.WithLogger(log), kind.WithFailureLogs(l.Logs("kind-"+name))).WithVersion(local.Version)
	return c
}

// New builds the named provider (after Resolve) for callers that work with
// either kind: the e2e suite and `make up`. For the local node it runs
// Prepare first unless prepare is false (reaching or destroying a running
// cluster needs nothing built).
func New(ctx context.Context, log *slog.Logger, l layout.Layout, provider, name string, prepare bool) (Provider, error) {
	switch provider {
	case Kind:
		log.Info("cluster provider: kind (a Docker engine answers)")
		return NewKind(l, name, log), nil
	case Local:
		log.Info("cluster provider: local node (no Docker engine)")
		node := Artifacts(l)
		if prepare {
			var err error
			if node, err = Prepare(ctx, log, l); err != nil {
				return nil, err
			}
		}
		return NewLocal(l, node, name, log), nil
	}
	return nil, fmt.Errorf("cluster provider %q: resolve it first (Resolve)", provider)
}
