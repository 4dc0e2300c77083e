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
	"slices"

	"sigs.k8s.io/e2e-framework/support"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
	"github.com/gmini-dev/gmini/tools/kindnode"
)

// Provider names accepted by Resolve.
const (
	Auto  = "auto"
	Kind  = "kind"
	Local = "local"
)

// Provider is what the suites need of any cluster: e2e-framework's
// provider contract with image loading, and the registry its nodes pull
// from (for a cluster made with the Registry feature).
type Provider interface {
	support.E2EClusterProviderWithImageLoader
	// Registry is where to push images the cluster pulls, and how pods
	// reach it; an error if the cluster runs none.
	Registry() (images.Registry, error)
}

var (
	_ Provider = (*local.Cluster)(nil)
	_ Provider = (*kind.Cluster)(nil)
)

// Resolve turns Auto (or "") into the provider that can run here: kind
// when a Docker engine answers and has a node image of the local node's
// Kubernetes minor (or may pull one); else the local node. Kind asked for
// where it cannot run is an error that says what to do. Choose says why.
func Resolve(ctx context.Context, provider string) (string, error) {
	c, err := Choose(ctx, provider, Machine(), DefaultNodeImages())
	return c.Provider, err
}

// Feature is a capability a cluster has only when asked for, because it
// costs a build or a process that most suites do not need.
type Feature string

// NetworkPolicy makes the cluster enforce NetworkPolicy objects. kind's
// kindnet does, and on the offline node image (tools/kindnode) kube-router
// in the node; the local node runs kube-router for it, which Prepare
// builds (a cold build takes minutes, a warm one seconds).
const NetworkPolicy Feature = "network-policy"

// Registry gives the cluster an OCI registry its nodes pull from
// (Provider.Registry): on the local node CNCF Distribution's registry,
// which Prepare builds (a cold build takes minutes), serving TLS with a
// certificate of the cluster's CA; on kind a registry container, as kind's
// local-registry guide sets one up (registry:3, or where it cannot be
// pulled the registry the local node runs, as an image: kindnode).
const Registry Feature = "registry"

// LocalNode is what a local node takes from the machine: the Kubernetes
// binary and the pod sandbox image, and kube-router if the node is to
// enforce NetworkPolicy.
type LocalNode struct {
	KubeBinary string
	PauseImage string // docker-archive tarball
	PauseTag   string
	KubeRouter string // "" unless prepared with NetworkPolicy
	Registry   string // "" unless prepared with Registry
}

// Prepare makes this machine able to run local nodes: it installs the
// Debian packages they need and builds the Kubernetes binary and the pause
// image, and what the features need, each only when missing or out of
// date. Call it once, before creating local clusters.
func Prepare(ctx context.Context, log *slog.Logger, l layout.Layout, features ...Feature) (LocalNode, error) {
	node := Artifacts(l)
	netpol := slices.Contains(features, NetworkPolicy)
	pkgs := hostpkgs.LocalNode()
	if netpol {
		pkgs = append(pkgs, hostpkgs.NetworkPolicyEngine()...)
	}
	if err := hostpkgs.Ensure(ctx, log, pkgs...); err != nil {
		return LocalNode{}, fmt.Errorf("install the local node's Debian packages: %w", err)
	}
	// Built into _output/bin, where Artifacts names them.
	if err := modbuild.Build(ctx, log, modbuild.Kube(l.KubeModule()), l.Output("bin")); err != nil {
		return LocalNode{}, err
	}
	if netpol {
		node.KubeRouter = l.KubeRouterBinary()
		if err := modbuild.Build(ctx, log, modbuild.KubeRouter(l.KubeRouterModule()), l.Output("bin")); err != nil {
			return LocalNode{}, err
		}
	}
	if slices.Contains(features, Registry) {
		prog := modbuild.Registry(l.RegistryModule())
		if err := modbuild.Build(ctx, log, prog, l.Output("bin")); err != nil {
			return LocalNode{}, err
		}
		node.Registry = prog.Binaries(l.Output("bin"))[0]
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
// in the checkout's output and the node's artifacts (with kube-router, it
// enforces NetworkPolicy); nothing starts until Create.
func NewLocal(l layout.Layout, node LocalNode, name string, log *slog.Logger, opts ...local.Option) *local.Cluster {
	base := []local.Option{
		local.WithRunDir(l.ClusterDir(name)),
		local.WithKubeBinary(node.KubeBinary),
		local.WithPauseImage(node.PauseImage, node.PauseTag),
		local.WithLogger(log),
	}
	if node.KubeRouter != "" {
		base = append(base, local.WithNetworkPolicy(node.KubeRouter))
	}
	if node.Registry != "" {
		base = append(base, local.WithRegistry(node.Registry))
	}
	return local.NewCluster(name, append(base, opts...)...)
}

// NewKind returns the kind cluster called name on image; "" is kind's
// pinned node image of the local node's Kubernetes minor, so both
// providers test the version people run. If its creation fails, the
// nodes' logs go to the checkout's logs directory.
func NewKind(l layout.Layout, name, image string, log *slog.Logger, features ...Feature) *kind.Cluster {
	c := kind.NewCluster(name)
	opts := []support.ClusterOpts{kind.WithLogger(log), kind.WithFailureLogs(l.Logs("kind-" + name))}
	if image != "" {
		opts = append(opts, kind.WithImage(image))
	}
	if slices.Contains(features, Registry) {
		opts = append(opts, kind.WithRegistry())
	}
	c.WithOpts(opts...).WithVersion(local.Version)
	return c
}

// New builds the named provider (after Resolve) for callers that work with
// either kind: the e2e suite and `make up`. For the local node it runs
// Prepare first, with the features, unless prepare is false (reaching or
// destroying a running cluster needs nothing built). kind has every
// feature: its kindnet enforces NetworkPolicy.
func New(ctx context.Context, log *slog.Logger, l layout.Layout, provider, name string, prepare bool, features ...Feature) (Provider, error) {
	switch provider {
	case Kind:
		image := ""
		if prepare {
			// The image is checked before anything is made: a kind
			// that cannot start leaves nothing to clean up.
			c, err := Choose(ctx, Kind, Machine(), DefaultNodeImages())
			if err != nil {
				return nil, err
			}
			image = c.NodeImage
			log.Info("cluster provider: kind", "why", c.Reason)
		}
		k := NewKind(l, name, image, log, features...)
		if prepare && slices.Contains(features, Registry) && !kind.ImagePresent(ctx, kind.RegistryImage) && !kind.MayPull() {
			// registry:3 cannot be pulled here: the registry the local
			// node runs, as an image.
			img, err := kindnode.BuildRegistryImage(ctx, log, l)
			if err != nil {
				return nil, fmt.Errorf("registry image for kind: %w", err)
			}
			k.WithOpts(kind.WithRegistryImage(img))
		}
		return k, nil
	case Local:
		log.Info("cluster provider: local node", "features", features)
		node := Artifacts(l)
		if prepare {
			var err error
			if node, err = Prepare(ctx, log, l, features...); err != nil {
				return nil, err
			}
		}
		return NewLocal(l, node, name, log), nil
	}
	return nil, fmt.Errorf("cluster provider %q: resolve it first (Resolve)", provider)
}
