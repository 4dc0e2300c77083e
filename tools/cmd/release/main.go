// Command release publishes gmini: the images, the promotion of an
// environment to their digests, and the manifests Flux syncs.
//
//	release push      -registry HOST[:PORT][/PATH] [-tag T] [-ca FILE] [backend runner]
//	release promote   -registry HOST[:PORT][/PATH] [-tag T] [-ca FILE] [-env prod]
//	release manifests -registry HOST[:PORT][/PATH] [-tag main] [-ref main] [-ca FILE]
//
// push builds gmini-backend and gmini-runner for linux/amd64 and
// linux/arm64 from the checkout and pushes each as an image index, by
// digest first and then tagged T (default: the commit ID), printing the
// digest references. promote resolves REGISTRY/gmini-<name>:T in the
// registry and pins overlays/<env>/kustomization.yaml to the digests.
// manifests pushes k8s/ and overlays/ as the OCI artifact Flux reads,
// tagged main. Credentials come from the Docker config (docker login);
// -ca trusts a private CA (a local cluster's registry) instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gmini-dev/gmini/tools/gitops"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/promote"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Stdout, os.Args[1:]); err != nil {
		log.Error("release", "err", err)
		os.Exit(1)
	}
}

// published are the images push builds, by name under the registry.
var published = []string{"backend", "runner"}

func imageName(short string) string { return "gmini-" + short }

type options struct {
	registry, tag, ca, env, ref, platforms, source string
}

func run(ctx context.Context, log *slog.Logger, stdout io.Writer, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: release push|promote|manifests -registry HOST[:PORT][/PATH] [flags]")
	}
	cmd := args[0]
	var o options
	fs := flag.NewFlagSet("release "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.registry, "registry", os.Getenv("REGISTRY"), "registry and path to push under, e.g. ghcr.io/gmini-dev")
	fs.StringVar(&o.tag, "tag", "", "tag to push or resolve (push, promote: the commit ID; manifests: the -ref)")
	fs.StringVar(&o.ca, "ca", "", "PEM file of a CA to trust for the registry, instead of the system's (a local cluster's registry)")
	fs.StringVar(&o.env, "env", "prod", "promote: the overlay to pin")
	fs.StringVar(&o.ref, "ref", "main", "manifests: the branch or tag the artifact's revision names")
	fs.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "push: platforms to build")
	fs.StringVar(&o.source, "source", images.Source, "the repository's URL, for the images' and the artifact's source annotation")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	opts, err := remoteOptions(o.ca)
	if err != nil {
		return err
	}
	switch cmd {
	case "push":
		return push(ctx, log, stdout, l, o, fs.Args(), opts)
	case "promote":
		return promoteEnv(ctx, stdout, l, o, opts)
	case "manifests":
		return manifests(ctx, stdout, l, o, opts)
	}
	return fmt.Errorf("unknown command %q: want push, promote or manifests", cmd)
}

func remoteOptions(caFile string) ([]remote.Option, error) {
	if caFile == "" {
		return []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}, nil
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	tr, err := images.Registry{CA: ca}.Transport()
	if err != nil {
		return nil, err
	}
	return []remote.Option{remote.WithTransport(tr), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, nil
}

// commitMeta is the checkout's commit; the default tag is its ID, which a
// tree with uncommitted changes must not claim.
func commitMeta(ctx context.Context, log *slog.Logger, l layout.Layout, tag, source string) (images.Meta, string, error) {
	meta, err := images.MetaFromGit(ctx, l.Root)
	if err != nil {
		return images.Meta{}, "", err
	}
	meta.Source = source
	if tag == "" {
		if meta.Dirty {
			return images.Meta{}, "", fmt.Errorf("the checkout has uncommitted changes, so the images would not be commit %s: commit them, or give a TAG", meta.Revision)
		}
		tag = meta.Revision
	} else if meta.Dirty && log != nil {
		log.Warn("the checkout has uncommitted changes: the images hold them, their revision says " + meta.Revision)
	}
	if strings.HasPrefix(tag, "v") {
		meta.Version = tag
	}
	return meta, tag, nil
}

func push(ctx context.Context, log *slog.Logger, stdout io.Writer, l layout.Layout, o options, names []string, opts []remote.Option) error {
	if len(names) == 0 {
		names = published
	}
	var specs []images.Spec
	for _, n := range names {
		i := slices.IndexFunc(images.Project(l.Root, "unused"), func(s images.Spec) bool { return s.Name == n })
		if i < 0 || !slices.Contains(published, n) {
			return fmt.Errorf("unknown image %q: want %s", n, strings.Join(published, " or "))
		}
		specs = append(specs, images.Project(l.Root, "unused")[i])
	}
	var platforms []v1.Platform
	for _, p := range strings.Split(o.platforms, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("platform %q: %w", p, err)
		}
		platforms = append(platforms, *pl)
	}
	// Every reference is checked before anything is built or pushed.
	repos := map[string]images.Published{}
	for _, s := range specs {
		if _, err := images.ParseRepository(o.registry, imageName(s.Name)); err != nil {
			return err
		}
	}
	meta, tag, err := commitMeta(ctx, log, l, o.tag, o.source)
	if err != nil {
		return err
	}
	for _, s := range specs {
		repo, _ := images.ParseRepository(o.registry, imageName(s.Name))
		idx, err := images.BuildIndex(ctx, log, s, meta, platforms)
		if err != nil {
			return err
		}
		start := time.Now()
		pub, err := images.Push(ctx, repo, idx, []string{tag}, opts...)
		if err != nil {
			return err
		}
		log.Info("pushed", "image", pub.Digest.String(), "tag", tag, "elapsed", time.Since(start).Round(10*time.Millisecond))
		repos[s.Name] = pub
	}
	for _, s := range specs {
		fmt.Fprintf(stdout, "%s %s\n", imageName(s.Name), repos[s.Name].Digest)
	}
	return nil
}

func promoteEnv(ctx context.Context, stdout io.Writer, l layout.Layout, o options, opts []remote.Option) error {
	_, tag, err := commitMeta(ctx, nil, l, o.tag, o.source)
	if err != nil {
		return err
	}
	var imgs []promote.Image
	for _, n := range published {
		repo, err := images.ParseRepository(o.registry, imageName(n))
		if err != nil {
			return err
		}
		digest, err := promote.Resolve(ctx, repo.Tag(tag), opts...)
		if err != nil {
			return err
		}
		imgs = append(imgs, promote.Image{Name: imageName(n), NewName: repo.Name(), Digest: digest})
	}
	path := l.Path("overlays", o.env, "kustomization.yaml")
	changed, err := promote.File(path, imgs)
	if err != nil {
		return err
	}
	state := "already pinned to"
	if changed {
		state = "pinned to"
	}
	fmt.Fprintf(stdout, "overlays/%s %s %s\n", o.env, state, promote.Describe(imgs))
	return nil
}

func manifests(ctx context.Context, stdout io.Writer, l layout.Layout, o options, opts []remote.Option) error {
	meta, err := images.MetaFromGit(ctx, l.Root)
	if err != nil {
		return err
	}
	if meta.Dirty {
		return fmt.Errorf("the checkout has uncommitted changes: the artifact would not be commit %s", meta.Revision)
	}
	repo, err := images.ParseRepository(o.registry, gitops.ManifestsImage)
	if err != nil {
		return err
	}
	tag := o.tag
	if tag == "" {
		tag = o.ref
	}
	pub, err := gitops.Publish(ctx, l.Root, gitops.ArtifactMeta{
		Source: o.source, Revision: o.ref + "@sha1:" + meta.Revision, Created: meta.Created,
	}, repo, tag, opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s\n", gitops.ManifestsImage, pub.Digest)
	return nil
}
