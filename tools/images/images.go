// Package images builds the project's container images without a Docker
// engine: a static Go binary in a single layer on an empty base, written as a
// docker-archive tarball that `ctr images import` and kind's image loader
// both accept.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Source is the repository the images are built from (OCI source label).
const Source = "https://github.com/gmini-dev/gmini"

// User is the numeric user and group the images run as: no /etc/passwd is
// needed, and it satisfies the restricted Pod Security level (runAsNonRoot).
const User = "65532:65532"

// epoch is the fixed time of every file and of the image config, so that the
// same binary always gives the same image digest and re-importing it is a
// no-op.
var epoch = time.Unix(0, 0).UTC()

// Spec says which Go main package becomes which image.
type Spec struct {
	// Name is the binary's name; it lives at /Name and is the entrypoint.
	Name string
	// Tag is the image reference written into the archive, e.g. gmini-runner:dev.
	// Use a tag other than latest so the kubelet never tries to pull it.
	Tag string
	// ModuleDir is the directory go build runs in (a module root or below).
	ModuleDir string
	// Package is the main package, relative to ModuleDir, e.g. "." or "./cmd/x".
	Package string
	// Binary, if set, is a static Linux binary built elsewhere (for this
	// machine's architecture), packed as it is instead of compiling
	// Package: the Flux controllers, which tools/flux builds.
	Binary string
	// Title is the image's org.opencontainers.image.title (default
	// gmini-<Name>).
	Title string
}

func (s Spec) title() string {
	if s.Title != "" {
		return s.Title
	}
	return "gmini-" + s.Name
}

// Project returns the images of this repository, tagged tag (e.g. "dev").
func Project(repoRoot, tag string) []Spec {
	return []Spec{
		{Name: "backend", Tag: "gmini-backend:" + tag, ModuleDir: filepath.Join(repoRoot, "apps", "backend"), Package: "."},
		{Name: "runner", Tag: "gmini-runner:" + tag, ModuleDir: filepath.Join(repoRoot, "apps", "runner"), Package: "."},
		Pause(repoRoot, tag),
	}
}

// Pause returns the pod sandbox image that containerd's sandbox_image names.
func Pause(repoRoot, tag string) Spec {
	return Spec{Name: "pause", Tag: "gmini-pause:" + tag, ModuleDir: filepath.Join(repoRoot, "tools"), Package: "./images/pause"}
}

// Build compiles spec's package and writes its image to outDir/<Name>.tar.
func Build(ctx context.Context, log *slog.Logger, spec Spec, outDir string) (tarPath string, err error) {
	if err := spec.validate(); err != nil {
		return "", err
	}
	if spec.Tag == "" {
		// An archive names its image; a pushed index is named by the push.
		return "", fmt.Errorf("image %s: an archive needs a tag", spec.Name)
	}
	ref, err := name.NewTag(spec.Tag)
	if err != nil {
		return "", fmt.Errorf("image %s: parse tag: %w", spec.Name, err)
	}
	work, err := os.MkdirTemp("", "gmini-image-"+spec.Name+"-")
	if err != nil {
		return "", fmt.Errorf("image %s: %w", spec.Name, err)
	}
	defer os.RemoveAll(work)

	start := time.Now()
	bin := filepath.Join(work, spec.Name)
	if err := compile(ctx, spec, bin, runtime.GOARCH); err != nil {
		return "", err
	}
	img, err := Image(spec, bin)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("image %s: create output directory: %w", spec.Name, err)
	}
	tarPath = ArchivePath(outDir, spec)
	if err := tarball.WriteToFile(tarPath, ref, img); err != nil {
		return "", fmt.Errorf("image %s: write %s: %w", spec.Name, tarPath, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("image %s: digest: %w", spec.Name, err)
	}
	size := int64(0)
	if fi, err := os.Stat(tarPath); err == nil {
		size = fi.Size()
	}
	log.Info("built image", "tag", spec.Tag, "digest", digest.String(), "archive", tarPath,
		"bytes", size, "elapsed", time.Since(start).Round(10*time.Millisecond))
	return tarPath, nil
}

// ArchivePath is where Build writes spec's archive in outDir.
func ArchivePath(outDir string, spec Spec) string {
	return filepath.Join(outDir, spec.Name+".tar")
}

func (s Spec) validate() error {
	switch {
	case s.Name == "" || strings.ContainsAny(s.Name, `/\ `) || s.Name == "." || s.Name == "..":
		return fmt.Errorf("image spec: name %q must be a plain file name", s.Name)
	case s.ModuleDir == "" && s.Binary == "":
		return fmt.Errorf("image %s: no module directory and no binary", s.Name)
	}
	return nil
}

// BuildEnv returns what compile adds to the environment: a static binary for
// Linux on this machine's architecture, since the node runs here.
func BuildEnv() []string { return buildEnv(runtime.GOARCH) }

func buildEnv(arch string) []string {
	return []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + arch}
}

// compile builds spec's package for linux/arch into out. The binary
// depends on the sources and the toolchain only (-trimpath, no VCS
// stamp), so the same commit gives the same bytes; the commit is in the
// image's annotations instead. A spec with a prebuilt Binary is copied.
func compile(ctx context.Context, spec Spec, out, arch string) error {
	if spec.Binary != "" {
		if arch != runtime.GOARCH {
			return fmt.Errorf("image %s: prebuilt binary %s is for %s only, not %s", spec.Name, spec.Binary, runtime.GOARCH, arch)
		}
		return copyFile(spec.Binary, out)
	}
	pkg := spec.Package
	if pkg == "" {
		pkg = "."
	}
	if err := GoBuild(ctx, spec.ModuleDir, pkg, out, arch); err != nil {
		return fmt.Errorf("image %s: %w", spec.Name, err)
	}
	return nil
}

// GoBuild compiles pkg of the module in dir for linux/arch into out, as
// every image's binary is built: static (no cgo), -trimpath, no VCS stamp,
// no symbol table or DWARF. Whatever runs a binary outside an image to
// measure or test it builds it here, so it runs what ships.
func GoBuild(ctx context.Context, dir, pkg, out, arch string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), buildEnv(arch)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for linux/%s in %s: %w\n%s", pkg, arch, dir, err, b)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Image packs the binary at binPath into an image laid out by spec: one layer
// holding /Name and nothing else, run as User.
func Image(spec Spec, binPath string) (v1.Image, error) {
	return newImage(spec, binPath, runtime.GOARCH, nil)
}

// newImage is Image for linux/arch. With meta (a published image) it uses
// OCI media types and carries meta's annotations on the manifest and as
// labels in the config, with meta's time as its creation time; without it
// (an archive for a loader) Docker's media types and the epoch.
func newImage(spec Spec, binPath, arch string, meta *Meta) (v1.Image, error) {
	created := epoch
	base := empty.Image
	var layerOpts []tarball.LayerOption
	open := func() (io.ReadCloser, error) { return binaryLayer(binPath, spec.Name) }
	if meta != nil {
		created = meta.Created.UTC()
		base = mutate.MediaType(mutate.ConfigMediaType(base, types.OCIConfigJSON), types.OCIManifestSchema1)
		// A published image outlives its temporary binary until it is
		// pushed: keep the binary, and the layer once compressed, in memory.
		data, err := os.ReadFile(binPath)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Name, err)
		}
		open = func() (io.ReadCloser, error) {
			return tarStream(bytes.NewReader(data), int64(len(data)), spec.Name), nil
		}
		layerOpts = append(layerOpts, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	}
	layer, err := tarball.LayerFromOpener(open, layerOpts...)
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", spec.Name, err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Author:    "gmini",
			Created:   v1.Time{Time: created},
			CreatedBy: "go build -trimpath -ldflags='-s -w' " + spec.Package + " (CGO_ENABLED=0)",
			Comment:   "static Go binary",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: append layer: %w", spec.Name, err)
	}
	baseCfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", spec.Name, err)
	}
	// Keep the rootfs and history mutate.Append filled in; set the rest.
	cfg := baseCfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = arch
	cfg.Created = v1.Time{Time: created}
	cfg.Author = "gmini"
	cfg.Config = v1.Config{
		Entrypoint: []string{"/" + spec.Name},
		User:       User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.source":      Source,
			"org.opencontainers.image.title":       spec.title(),
			"org.opencontainers.image.description": spec.title() + ": a static Go binary, no shell, no base layers",
		},
	}
	if meta != nil {
		maps.Copy(cfg.Config.Labels, meta.annotations())
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s: set config: %w", spec.Name, err)
	}
	if meta != nil {
		img = mutate.Annotations(img, meta.annotations()).(v1.Image)
	}
	return img, nil
}

// binaryLayer returns an uncompressed tar stream holding binPath as /name,
// owned by root and executable by the image's non-root user.
func binaryLayer(binPath, name string) (io.ReadCloser, error) {
	f, err := os.Open(binPath)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return tarStream(f, fi.Size(), name), nil
}

// tarStream is a tar stream of one file, name, holding size bytes of r
// (closed at the end if it is a Closer).
func tarStream(r io.Reader, size int64, name string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		if c, ok := r.(io.Closer); ok {
			defer c.Close()
		}
		tw := tar.NewWriter(pw)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Mode:     0o755,
			Size:     size,
			ModTime:  epoch,
		}
		err := tw.WriteHeader(hdr)
		if err == nil {
			_, err = io.Copy(tw, r)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
