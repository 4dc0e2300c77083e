package kindnode

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
)

// Debian release and mirror of the node's root file system: the release
// and mirror this machine's apt uses.
const (
	Suite  = "bookworm"
	Mirror = "http://deb.debian.org/debian"
)

// Packages are what kind's base image installs (its Dockerfile's
// clean-install list) that a node of this project needs, and the
// container runtime, which kind builds from source and Debian packages:
// containerd 1.6, runc 1.1, and the CNI plugins (ptp, host-local,
// loopback, portmap), and ipset. Left out of kind's list: nfs-common, open-iscsi,
// e2fsprogs, fuse-overlayfs (storage and rootless), curl, jq.
var Packages = []string{
	"systemd", "systemd-sysv", "dbus",
	"conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
	"libseccomp2", "pigz", "bash", "ca-certificates", "procps",
	"containerd", "runc", "containernetworking-plugins",
	// kube-router's firewall, the node's NetworkPolicy engine, keeps its
	// pod and CIDR sets in ipset.
	"ipset",
}

// rootfsKey names a root file system by what makes it: a change of the
// list, release or mirror builds another.
func rootfsKey() string {
	h := sha256.Sum256([]byte(Suite + "\n" + Mirror + "\n" + strings.Join(Packages, ",")))
	return hex.EncodeToString(h[:])[:16]
}

// Rootfs returns the tarball of a Debian root file system with Packages,
// made by debootstrap from Debian's mirror into dir once and reused while
// the package list is the same.
func Rootfs(ctx context.Context, log *slog.Logger, dir string) (string, error) {
	tarPath := filepath.Join(dir, "rootfs-"+Suite+"-"+rootfsKey()+".tar")
	if _, err := os.Stat(tarPath); err == nil {
		log.Info("node root file system cached", "tar", tarPath)
		return tarPath, nil
	}
	if err := hostpkgs.Ensure(ctx, log, "debootstrap"); err != nil {
		return "", err
	}
	root := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	log.Info("debootstrap: a Debian root file system for the kind node", "suite", Suite, "mirror", Mirror, "packages", len(Packages))
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(Packages, ","),
		Suite, root, Mirror)
	// No service starts in the chroot (policy-rc.d is debootstrap's own
	// concern there); no questions.
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := progress(log, "debootstrap", cmd); err != nil {
		return "", fmt.Errorf("debootstrap %s into %s: %w", Suite, root, err)
	}
	log.Info("debootstrap done", "elapsed", time.Since(start).Round(time.Second))
	// What kind's Dockerfile removes, and apt's caches.
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*"} {
		matches, _ := filepath.Glob(filepath.Join(root, g))
		for _, m := range matches {
			_ = os.RemoveAll(m)
		}
	}
	tmp := tarPath + ".tmp"
	// --numeric-owner: the rootfs's own users, not this machine's names.
	if out, err := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar the node root file system: %w: %s", err, out)
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		return "", err
	}
	_ = os.RemoveAll(root)
	log.Info("node root file system ready", "tar", tarPath, "elapsed", time.Since(start).Round(time.Second))
	return tarPath, nil
}

// progress runs cmd, logging each line of its output as it comes.
func progress(log *slog.Logger, what string, cmd *exec.Cmd) error {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var last []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(pr)
		for s.Scan() {
			line := strings.TrimSpace(s.Text())
			if line == "" {
				continue
			}
			log.Info(what, "line", line)
			last = append(last, line)
			if len(last) > 20 {
				last = last[1:]
			}
		}
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.Join(last, "\n"))
	}
	return nil
}
