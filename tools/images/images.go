// Package images builds the project's container images without a Docker
// engine: a static Go binary in a single layer on an empty base, written as a
// docker-archive tarball that `ctr images import` and kind's image loader
// both accept.
package images

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log/slog"
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
	if err := compile(ctx, spec, bin); err != nil {
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
	case s.Tag == "":
		return fmt.Errorf("image %s: no tag", s.Name)
	case s.ModuleDir == "":
		return fmt.Errorf("image %s: no module directory", s.Name)
	}
	return nil
}

// BuildEnv returns what compile adds to the environment: a static binary for
// Linux on this machine's architecture, since the node runs here.
func BuildEnv() []string {
	return []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH}
}

func compile(ctx context.Context, spec Spec, out string) error {
	pkg := spec.Package
	if pkg == "" {
		pkg = "."
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = spec.ModuleDir
	cmd.Env = append(os.Environ(), BuildEnv()...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("image %s: go build %s in %s: %w\n%s", spec.Name, pkg, spec.ModuleDir, err, b)
	}
	return nil
}

// Image packs the binary at binPath into an image laid out by spec: one layer
// holding /Name and nothing else, run as User.
func Image(spec Spec, binPath string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return binaryLayer(binPath, spec.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", spec.Name, err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Author:    "gmini",
			Created:   v1.Time{Time: epoch},
			CreatedBy: "go build -trimpath -ldflags='-s -w' " + spec.Package + " (CGO_ENABLED=0)",
			Comment:   "static Go binary",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: append layer: %w", spec.Name, err)
	}
	base, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", spec.Name, err)
	}
	// Keep the rootfs and history mutate.Append filled in; set the rest.
	cfg := base.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Created = v1.Time{Time: epoch}
	cfg.Author = "gmini"
	cfg.Config = v1.Config{
		Entrypoint: []string{"/" + spec.Name},
		User:       User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.source":      Source,
			"org.opencontainers.image.title":       "gmini-" + spec.Name,
			"org.opencontainers.image.description": "gmini " + spec.Name + ": a static Go binary, no shell, no base layers",
		},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s: set config: %w", spec.Name, err)
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
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		tw := tar.NewWriter(pw)
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Mode:     0o755,
			Size:     fi.Size(),
			ModTime:  epoch,
		}
		err := tw.WriteHeader(hdr)
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}
