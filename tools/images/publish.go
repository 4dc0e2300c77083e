package images

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The standard OCI annotations (image-spec annotations.md) a published
// image carries, on its index and manifests and as config labels.
const (
	AnnotationSource   = "org.opencontainers.image.source"
	AnnotationRevision = "org.opencontainers.image.revision"
	AnnotationCreated  = "org.opencontainers.image.created"
	AnnotationVersion  = "org.opencontainers.image.version"
)

// Platforms are what a published image runs on. Every binary is
// cross-compiled (CGO_ENABLED=0), so no emulator is involved.
var Platforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

// Meta is what a published image says about its source. Revision and
// Created come from the commit (MetaFromGit), never from the clock, so the
// same commit always gives the same digests.
type Meta struct {
	Source   string    // repository URL
	Revision string    // commit ID
	Created  time.Time // commit time
	Version  string    // optional: the release, e.g. v1.2.0
	// Dirty is set when the working tree differs from Revision: the
	// images hold what is on disk, not what the commit holds.
	Dirty bool
}

func (m Meta) annotations() map[string]string {
	a := map[string]string{
		AnnotationSource:   m.Source,
		AnnotationRevision: m.Revision,
		AnnotationCreated:  m.Created.UTC().Format(time.RFC3339),
	}
	if m.Version != "" {
		a[AnnotationVersion] = m.Version
	}
	return a
}

// MetaFromGit reads HEAD's commit ID and commit time in the checkout at
// dir, and whether tracked files differ from it.
func MetaFromGit(ctx context.Context, dir string) (Meta, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(string(exit.Stderr)))
			}
			return "", fmt.Errorf("git %s in %s: %w", strings.Join(args, " "), dir, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	out, err := git("show", "-s", "--format=%H %ct", "HEAD")
	if err != nil {
		return Meta{}, err
	}
	rev, secs, ok := strings.Cut(out, " ")
	unix, perr := strconv.ParseInt(secs, 10, 64)
	if !ok || perr != nil || len(rev) != 40 {
		return Meta{}, fmt.Errorf("git show HEAD in %s: unexpected output %q", dir, out)
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return Meta{}, err
	}
	return Meta{Source: Source, Revision: rev, Created: time.Unix(unix, 0).UTC(), Dirty: status != ""}, nil
}

// BuildIndex compiles spec for each platform and returns the image index
// that lists the images, each with its platform, the index and every
// manifest carrying meta's annotations.
func BuildIndex(ctx context.Context, log *slog.Logger, spec Spec, meta Meta, platforms []v1.Platform) (v1.ImageIndex, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if len(platforms) == 0 {
		return nil, fmt.Errorf("image %s: no platforms", spec.Name)
	}
	if meta.Revision == "" || meta.Created.IsZero() || meta.Source == "" {
		return nil, fmt.Errorf("image %s: source, revision and creation time are required (MetaFromGit)", spec.Name)
	}
	work, err := os.MkdirTemp("", "gmini-index-"+spec.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	defer os.RemoveAll(work)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		if p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("image %s: platform %s: only linux/<arch> is built", spec.Name, p)
		}
		start := time.Now()
		bin := filepath.Join(work, p.Architecture, spec.Name)
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Name, err)
		}
		if err := compile(ctx, spec, bin, p.Architecture); err != nil {
			return nil, err
		}
		img, err := newImage(spec, bin, p.Architecture, &meta)
		if err != nil {
			return nil, err
		}
		// Digest reads the whole layer: the binary must still be there.
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("image %s for %s: %w", spec.Name, p, err)
		}
		log.Info("built image", "image", spec.title(), "platform", p.String(), "digest", d.String(), "elapsed", time.Since(start).Round(10*time.Millisecond))
		platform := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return mutate.Annotations(idx, meta.annotations()).(v1.ImageIndex), nil
}

// Published is an image pushed by Push: its digest reference and its tags.
type Published struct {
	Digest name.Digest
	Tags   []name.Tag
}

// Push writes t (an image or an index, with everything it references) to
// repo by digest, and only once that succeeded points each tag at it: a
// push that fails half-way leaves blobs and untagged manifests, which a
// registry's garbage collection removes, but never a tag naming something
// incomplete.
func Push(ctx context.Context, repo name.Repository, t remote.Taggable, tags []string, opts ...remote.Option) (Published, error) {
	d, err := partial.Digest(t)
	if err != nil {
		return Published{}, fmt.Errorf("push to %s: digest: %w", repo, err)
	}
	ref := repo.Digest(d.String())
	// Tags are checked before anything is written.
	var tagRefs []name.Tag
	for _, tag := range tags {
		tr, err := name.NewTag(repo.String()+":"+tag, name.StrictValidation)
		if err != nil {
			return Published{}, fmt.Errorf("push to %s: tag %q: %w", repo, tag, err)
		}
		tagRefs = append(tagRefs, tr)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.Push(ref, t, opts...); err != nil {
		return Published{}, fmt.Errorf("push %s: %w", ref, explain(repo.Registry, err))
	}
	for _, tr := range tagRefs {
		if err := remote.Tag(tr, t, opts...); err != nil {
			return Published{}, fmt.Errorf("tag %s as %s: %w", ref, tr.TagStr(), explain(repo.Registry, err))
		}
	}
	return Published{Digest: ref, Tags: tagRefs}, nil
}

// explain says what a failed registry call means for the person pushing.
func explain(reg name.Registry, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("registry %s refused the push (%d %s): log in to it (docker login %s) with a token that may write packages: %w",
				reg, terr.StatusCode, http.StatusText(terr.StatusCode), reg.RegistryStr(), err)
		}
		return fmt.Errorf("registry %s answered %d %s: %w", reg, terr.StatusCode, http.StatusText(terr.StatusCode), err)
	}
	var nerr net.Error
	var oerr *net.OpError
	if errors.As(err, &oerr) || errors.As(err, &nerr) {
		return fmt.Errorf("registry %s is unreachable: %w", reg, err)
	}
	return err
}

// ParseRepository checks a REGISTRY value (host[:port][/path]) and the
// image name under it, e.g. ("ghcr.io/gmini-dev", "gmini-backend").
func ParseRepository(registry, image string) (name.Repository, error) {
	registry = strings.TrimSuffix(strings.TrimSpace(registry), "/")
	if registry == "" {
		return name.Repository{}, errors.New("no registry: set REGISTRY=host[:port][/path]")
	}
	if strings.Contains(registry, "://") {
		return name.Repository{}, fmt.Errorf("registry %q: give host[:port][/path], without a scheme", registry)
	}
	// A reference reads "x/y" without a dot or port in x as a Docker Hub
	// path; a REGISTRY must name its host.
	if host, _, _ := strings.Cut(registry, "/"); !strings.ContainsAny(host, ".:") && host != "localhost" {
		return name.Repository{}, fmt.Errorf("registry %q: %q is not a registry host (want a name with a dot or a port, or localhost)", registry, host)
	}
	repo, err := name.NewRepository(registry+"/"+image, name.StrictValidation)
	if err != nil {
		return name.Repository{}, fmt.Errorf("registry %q: not a valid repository reference: %w", registry, err)
	}
	return repo, nil
}
