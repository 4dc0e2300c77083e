package kind

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// The project's own node image, assembled offline (tools/kindnode) where
// kind's pinned image cannot be pulled. Its tag names the Kubernetes version
// it carries; it never has to be pulled, so it needs no registry host.
const offlineNodeRepo = "gmini.local/kind-node"

// The offline image's control-plane images live under OfflineImageRepository,
// which the kind configuration gives kubeadm (imageRepository), so no image
// claims to be registry.k8s.io's; nothing resolves it, so an image the node
// lacks (CoreDNS) fails on this machine without reaching out. Its etcd is
// the kube binary's (v3.6.4), tagged OfflineEtcdTag, which the
// configuration gives kubeadm too (its own default for v1.34 is 3.6.5-0).
const (
	OfflineImageRepository = "gmini.local"
	OfflineEtcdTag         = "3.6.4-0"
)

// IsOffline reports whether image is the project's offline node image.
func IsOffline(image string) bool { return strings.HasPrefix(image, offlineNodeRepo+":") }

// OfflineNodeImage is the tag of the node image the project assembles for
// Kubernetes version (e.g. v1.34.4).
func OfflineNodeImage(version string) string {
	return offlineNodeRepo + ":" + strings.TrimPrefix(version, "v") + "-gmini"
}

// Environment variables that steer the node image.
const (
	// ImageEnv names the node image to use instead of choosing one.
	ImageEnv = "GMINI_KIND_IMAGE"
	// PullEnv=1 lets kind pull a node image the Docker engine lacks. Off by
	// default, because a pull is traffic to the internet that the machine
	// may not be allowed, or able, to make; on GitHub Actions
	// (GITHUB_ACTIONS=true) it is on.
	PullEnv = "GMINI_KIND_PULL"
)

// MayPull reports whether the environment allows pulling node images.
func MayPull() bool {
	return os.Getenv(PullEnv) == "1" || os.Getenv("GITHUB_ACTIONS") == "true"
}

// ImagePresent reports whether the Docker engine has image, without
// pulling anything.
func ImagePresent(ctx context.Context, image string) bool {
	_, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", image)
	return err == nil
}

// ImageHint says how to get a node image that is missing.
func ImageHint(pinned, offline string) string {
	return fmt.Sprintf("build the offline node image (make kind-node-image, which makes %s), "+
		"or let kind pull %s (docker pull it, or set %s=1), or %s", offline, pinned, PullEnv, LocalNodeHint)
}
