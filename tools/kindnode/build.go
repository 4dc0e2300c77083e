package kindnode

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// assembly names the way the image is put together; raise it when the
// files below change in a way the inputs' hashes do not show.
const assembly = "2"

// inputsLabel carries the hash of everything the image is made of: an
// image with the same label is up to date.
const inputsLabel = "dev.gmini.kind-node.inputs"

func arch() string { return runtime.GOARCH }

// Build makes the offline node image of the local node's Kubernetes
// version and loads it into the Docker engine as kind.OfflineNodeImage,
// unless the engine has it with the same inputs. Every step is cached:
// the root file system (by its package list), the binaries (Go's build
// cache), the image (by the hash of its inputs).
func Build(ctx context.Context, log *slog.Logger, l layout.Layout) (string, error) {
	start := time.Now()
	tag := kind.OfflineNodeImage(modbuild.KubernetesVersion)
	dir := l.Output("kindnode")
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	rootfsTar, err := Rootfs(ctx, log, dir)
	if err != nil {
		return "", err
	}
	if err := modbuild.Build(ctx, log, modbuild.Kube(l.KubeModule()), l.Output("bin")); err != nil {
		return "", err
	}
	if err := modbuild.Build(ctx, log, KubeTools(l), bin); err != nil {
		return "", err
	}
	if err := modbuild.Build(ctx, log, CriTools(l), bin); err != nil {
		return "", err
	}
	if err := modbuild.Build(ctx, log, modbuild.KubeRouter(l.KubeRouterModule()), l.Output("bin")); err != nil {
		return "", err
	}
	runc, pause := filepath.Join(bin, "gmini-runc"), filepath.Join(bin, "pause")
	if err := images.GoBuild(ctx, l.Tools(), "./cmd/gmini-runc", runc, arch()); err != nil {
		return "", err
	}
	if err := images.GoBuild(ctx, l.Tools(), "./images/pause", pause, arch()); err != nil {
		return "", err
	}
	kindFiles, err := kindBaseFiles(ctx, l)
	if err != nil {
		return "", err
	}
	kubeadm, kubectl, crictl := filepath.Join(bin, "kubeadm"), filepath.Join(bin, "kubectl"), filepath.Join(bin, "crictl")
	key, err := inputsKey(rootfsTar, l.KubeBinary(), kubeadm, kubectl, crictl, l.KubeRouterBinary(), runc, pause, kindFiles)
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{index .Config.Labels \""+inputsLabel+"\"}}", tag).Output(); err == nil && strings.TrimSpace(string(out)) == key {
		log.Info("kind node image up to date", "image", tag)
		return tag, nil
	}

	idx, err := readIndex(rootfsTar)
	if err != nil {
		return "", err
	}
	cpTar := filepath.Join(dir, "control-plane.tar")
	if err := controlPlaneImages(l.KubeBinary(), pause, rootfsTar, idx, cpTar); err != nil {
		return "", fmt.Errorf("control-plane images: %w", err)
	}
	log.Info("control-plane images built", "archive", cpTar, "elapsed", time.Since(start).Round(time.Second))
	adds, err := additions(idx, rootfsTar, kindFiles, l.KubeBinary(), kubeadm, kubectl, crictl, l.KubeRouterBinary(), runc, cpTar)
	if err != nil {
		return "", err
	}
	base, err := tarball.LayerFromFile(rootfsTar, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return "", err
	}
	addLayer, err := layer(adds)
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, base, addLayer)
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch()
	cfg.Created = v1.Time{Time: epoch}
	// As kind's base image: systemd as PID 1 behind kind's entrypoint.
	cfg.Config = v1.Config{
		Entrypoint: []string{"/usr/local/bin/entrypoint", "/sbin/init"},
		Env:        append([]string{"container=docker"}, imageEnv...),
		StopSignal: "SIGRTMIN+3",
		Labels:     map[string]string{inputsLabel: key, "org.opencontainers.image.source": images.Source},
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return "", err
	}
	nodeTar := filepath.Join(dir, "node.tar")
	t0 := time.Now()
	if err := tarball.WriteToFile(nodeTar, ref, img); err != nil {
		return "", fmt.Errorf("write %s: %w", nodeTar, err)
	}
	log.Info("kind node image written", "archive", nodeTar, "elapsed", time.Since(t0).Round(time.Second))
	t0 = time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "load", "-i", nodeTar).CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker load %s: %w: %s", nodeTar, err, out)
	}
	_ = os.Remove(nodeTar)
	log.Info("kind node image loaded", "image", tag, "load", time.Since(t0).Round(time.Second), "elapsed", time.Since(start).Round(time.Second))
	return tag, nil
}

// kindBaseFiles is the directory of kind's base image files in the kind
// module the tools module requires (sigs.k8s.io/kind/images/base/files).
func kindBaseFiles(ctx context.Context, l layout.Layout) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kind")
	cmd.Dir = l.Tools()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("find the kind module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "images", "base", "files")
	if _, err := os.Stat(filepath.Join(dir, "usr", "local", "bin", "entrypoint")); err != nil {
		return "", fmt.Errorf("kind's base files: %w", err)
	}
	return dir, nil
}

// inputsKey hashes the files and directories the image is made of.
func inputsKey(paths ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "assembly %s\n", assembly)
	for _, p := range paths {
		err := filepath.Walk(p, func(f string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			fmt.Fprintf(h, "%s %o\n", strings.TrimPrefix(f, p), fi.Mode())
			r, err := os.Open(f)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(h, r)
			return err
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}
