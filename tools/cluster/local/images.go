package local

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
)

// LoadImage is not supported: there is no Docker engine to take images
// from. Build a docker-archive tarball and use LoadImageArchive.
func (c *Cluster) LoadImage(_ context.Context, image string, _ ...string) error {
	return fmt.Errorf("load image %s into local cluster %s: only LoadImageArchive is supported (no Docker engine)", image, c.name)
}

// LoadImageArchive imports a docker-archive or OCI tarball into the
// cluster's containerd, in the k8s.io namespace the kubelet uses. Pods
// must refer to it by its local tag with imagePullPolicy IfNotPresent or
// Never so nothing is ever pulled.
func (c *Cluster) LoadImageArchive(ctx context.Context, archive string, _ ...string) error {
	p, err := c.plan()
	if err != nil {
		return err
	}
	if err := c.importImage(ctx, p, archive); err != nil {
		return fmt.Errorf("load image archive into cluster %s: %w", c.name, err)
	}
	return nil
}

func (c *Cluster) importImage(ctx context.Context, p plan, archive string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", p.containerdSock(), "-n", "k8s.io",
		"images", "import", "--snapshotter", snapshotter(), archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", archive, err, bytes.TrimSpace(out))
	}
	return nil
}
