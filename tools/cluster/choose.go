package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// Probe is what the choice of a provider asks of the machine. Machine
// answers for this one; tests pass their own.
type Probe struct {
	// DockerAnswers reports whether a Docker engine answers.
	DockerAnswers func(context.Context) bool
	// ImagePresent reports whether the engine has an image, without
	// pulling it.
	ImagePresent func(context.Context, string) bool
	// MayPull says a node image the engine lacks may be pulled (kind's
	// create pulls it).
	MayPull bool
}

// Machine is the Probe of this machine: the docker CLI, and pulls only
// where kind.MayPull allows them.
func Machine() Probe {
	return Probe{DockerAnswers: kind.DockerAvailable, ImagePresent: kind.ImagePresent, MayPull: kind.MayPull()}
}

// NodeImages are the kind node images a choice may use, in this order:
// Forced if set, the pinned kindest/node if the engine has it or it may be
// pulled, the project's offline one if the engine has it.
type NodeImages struct {
	Forced  string // kind.ImageEnv
	Pinned  string // kind.NodeImage of the local node's version
	Offline string // kind.OfflineNodeImage of the local node's version
}

// DefaultNodeImages are the images of the local node's Kubernetes version.
func DefaultNodeImages() NodeImages {
	pinned, _ := kind.NodeImage(local.Version)
	return NodeImages{Forced: os.Getenv(kind.ImageEnv), Pinned: pinned, Offline: kind.OfflineNodeImage(local.Version)}
}

// Choice is a provider that can run here, and for kind the node image.
type Choice struct {
	Provider  string
	NodeImage string // kind only
	// Reason says why, for the log: a person who wanted the other
	// provider learns what to change.
	Reason string
}

// Choose turns a provider name into a Choice. Auto (or "") picks kind
// when a Docker engine answers and a node image can be had without
// pulling from where pulls are not allowed, else the local node; kind
// asked for explicitly is an error, saying what to do, when it cannot
// run, so nothing is half-created and nothing has to be cleaned up.
func Choose(ctx context.Context, provider string, p Probe, imgs NodeImages) (Choice, error) {
	switch provider {
	case Local:
		return Choice{Provider: Local, Reason: "asked for (CLUSTER=local)"}, nil
	case Kind, Auto, "":
	default:
		return Choice{}, fmt.Errorf("unknown cluster provider %q: want %s, %s or %s", provider, Auto, Kind, Local)
	}
	auto := provider != Kind
	if !p.DockerAnswers(ctx) {
		why := "no Docker engine answers (docker info failed)"
		if auto {
			return Choice{Provider: Local, Reason: why}, nil
		}
		return Choice{}, fmt.Errorf("CLUSTER=kind: %s: start one (make docker starts the project's own on Debian), or %s", why, kind.LocalNodeHint)
	}
	image, why := nodeImage(ctx, p, imgs)
	if image == "" {
		if auto {
			return Choice{Provider: Local, Reason: why + "; " + kind.ImageHint(imgs.Pinned, imgs.Offline)}, nil
		}
		return Choice{}, fmt.Errorf("CLUSTER=kind: %s: %s", why, kind.ImageHint(imgs.Pinned, imgs.Offline))
	}
	return Choice{Provider: Kind, NodeImage: image, Reason: why}, nil
}

// nodeImage is the image kind can use, and why; "" and why not.
func nodeImage(ctx context.Context, p Probe, imgs NodeImages) (image, why string) {
	if imgs.Forced != "" {
		if p.ImagePresent(ctx, imgs.Forced) || p.MayPull {
			return imgs.Forced, "node image " + imgs.Forced + " (" + kind.ImageEnv + ")"
		}
		return "", fmt.Sprintf("node image %s (%s) is not in the Docker engine and pulling is off", imgs.Forced, kind.ImageEnv)
	}
	// kind's own image first wherever it can be had; the offline one where
	// it cannot.
	switch {
	case imgs.Pinned != "" && p.ImagePresent(ctx, imgs.Pinned):
		return imgs.Pinned, "kind's node image " + imgs.Pinned + " is in the Docker engine"
	case imgs.Pinned != "" && p.MayPull:
		return imgs.Pinned, "kind will pull its node image " + imgs.Pinned + " (" + kind.PullEnv + "=1 or GitHub Actions)"
	case imgs.Offline != "" && p.ImagePresent(ctx, imgs.Offline):
		return imgs.Offline, "the offline node image " + imgs.Offline + " is in the Docker engine"
	}
	return "", fmt.Sprintf("neither kind's node image %s nor the offline one %s is in the Docker engine, and pulling is off", imgs.Pinned, imgs.Offline)
}

// Existing returns the provider of the cluster called name that runs
// here, for commands that reach a running cluster (`make proxy`): with
// Auto, kind if a Docker engine lists such a kind cluster, else the local
// node; an explicit provider as is. Nothing is built or probed for images.
func Existing(ctx context.Context, log *slog.Logger, l layout.Layout, provider, name string) (Provider, error) {
	switch provider {
	case Auto, "":
		provider = Local
		if kind.Exists(ctx, name) {
			provider = Kind
		}
	case Kind, Local:
	default:
		return nil, fmt.Errorf("unknown cluster provider %q: want %s, %s or %s", provider, Auto, Kind, Local)
	}
	if provider == Kind {
		// kind keeps no kubeconfig of ours between commands: write one.
		k := NewKind(l, name, "", log)
		if _, err := k.GenerateKubeconfig(); err != nil {
			return nil, fmt.Errorf("kind cluster %s (is it up? make up CLUSTER=kind): %w", name, err)
		}
		return k, nil
	}
	return New(ctx, log, l, provider, name, false)
}

// Down deletes the cluster called name. With Auto it deletes both a kind
// cluster and a local node of that name, whichever exist, so `make down`
// cleans up after `make up` whatever it chose; a provider with nothing to
// delete says so and is not an error.
func Down(ctx context.Context, log *slog.Logger, l layout.Layout, provider, name string) error {
	var providers []string
	switch provider {
	case Auto, "":
		providers = []string{Kind, Local}
	case Kind, Local:
		providers = []string{provider}
	default:
		return fmt.Errorf("unknown cluster provider %q: want %s, %s or %s", provider, Auto, Kind, Local)
	}
	var errs []error
	for _, p := range providers {
		c, err := New(ctx, log, l, p, name, false)
		if err == nil {
			err = c.Destroy(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete %s cluster %s: %w", p, name, err))
		}
	}
	return errors.Join(errs...)
}
