// Package hostpkgs installs the Debian packages a tool needs on this host.
package hostpkgs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/gmini-dev/gmini/tools/internal/logtail"
)

// Package is a Debian binary package name.
type Package string

// LocalNode returns the packages a Docker-less local Kubernetes node needs
// next to the kube binary (which holds etcd too).
func LocalNode() []Package {
	return []Package{
		"containerd",                  // CRI runtime for the kubelet
		"runc",                        // OCI runtime containerd starts containers with
		"containernetworking-plugins", // bridge, host-local, portmap, loopback in /usr/lib/cni
		"iptables",                    // kube-proxy rules and the kubelet's own chains
		"iproute2",                    // ip: network namespace, veth pair, bridge, blackhole route
		"conntrack",                   // kube-proxy clears stale UDP conntrack entries with it
		"util-linux",                  // nsenter to run components inside the node's network namespace
		"mount",                       // umount of the kubelet's pod volumes at teardown
	}
}

// NetworkPolicyEngine returns what kube-router's firewall needs: ipset,
// whose sets hold the pods and CIDRs each policy selects, and iptables.
// LocalNode has iptables too, but kube-router's clean-up (and its test,
// which may run first on a fresh machine) needs it without a node.
func NetworkPolicyEngine() []Package {
	return []Package{"ipset", "iptables"}
}

// provides names a file each package installs. A machine may have the
// program from another package: GitHub's Ubuntu runners have Docker's
// containerd.io, which conflicts with Debian's containerd but serves the
// local node as well.
var provides = map[Package]string{
	"containerd":                  "/usr/bin/containerd",
	"runc":                        "/usr/bin/runc",
	"containernetworking-plugins": "/usr/lib/cni/bridge",
}

// Ensure installs those of pkgs that are not installed yet, with one
// apt-get update before the install, and without letting their
// maintainer scripts start a system service. It does nothing when all are
// present.
func Ensure(ctx context.Context, log *slog.Logger, pkgs ...Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	status, err := query(ctx, pkgs)
	if err != nil {
		return err
	}
	todo := slices.DeleteFunc(Missing(pkgs, status), func(p Package) bool {
		f, ok := provides[p]
		if !ok {
			return false
		}
		_, err := os.Stat(f)
		return err == nil
	})
	if len(todo) == 0 {
		log.Debug("host packages present", "packages", pkgs)
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("install host packages %v: must run as root", todo)
	}
	names := make([]string, len(todo))
	for i, p := range todo {
		names[i] = string(p)
	}
	log.Info("installing host packages", "packages", names)
	// Another apt run may hold the lock for a while; wait for it rather than fail.
	lock := []string{"-o", "DPkg::Lock::Timeout=300"}
	if err := apt(ctx, log, append([]string{"update", "-q"}, lock...)...); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	install := append([]string{"install", "-y", "-q", "--no-install-recommends"}, lock...)
	if err := withoutServiceStarts(policyRCD, func() error { return apt(ctx, log, append(install, names...)...) }); err != nil {
		return fmt.Errorf("install host packages %v: %w", names, err)
	}

	status, err = query(ctx, todo)
	if err != nil {
		return err
	}
	if still := Missing(todo, status); len(still) > 0 {
		return fmt.Errorf("install host packages: still missing after apt-get install: %v", still)
	}
	log.Info("installed host packages", "packages", names)
	return nil
}

// Missing returns the packages of want that dpkgStatus, the output of
// dpkg-query -W -f='${Package}\t${db:Status-Status}\n', does not show as
// installed, in the order of want and without duplicates.
func Missing(want []Package, dpkgStatus string) []Package {
	installed := map[Package]bool{}
	s := bufio.NewScanner(strings.NewReader(dpkgStatus))
	for s.Scan() {
		name, state, ok := strings.Cut(s.Text(), "\t")
		if !ok {
			continue
		}
		// Multi-arch packages may print as name:arch.
		name, _, _ = strings.Cut(strings.TrimSpace(name), ":")
		if strings.TrimSpace(state) == "installed" {
			installed[Package(name)] = true
		}
	}
	var missing []Package
	for _, p := range want {
		if !installed[p] && !slices.Contains(missing, p) {
			missing = append(missing, p)
		}
	}
	return missing
}

// query asks dpkg for the state of pkgs. dpkg-query exits 1 when a package
// is unknown to it (never installed), which only means that one is missing.
func query(ctx context.Context, pkgs []Package) (string, error) {
	args := []string{"-W", "-f=${Package}\t${db:Status-Status}\n"}
	for _, p := range pkgs {
		args = append(args, string(p))
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-query", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return "", fmt.Errorf("dpkg-query: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// apt runs apt-get, logging its output line by line as it comes: a large
// package (a browser) takes minutes to download, and the lines (Get:,
// Unpacking, Setting up) are its progress. A failure carries the last
// lines.
func apt(ctx context.Context, log *slog.Logger, args ...string) error {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out := &lineLog{log: log}
	// One writer for both: exec then calls it from one goroutine at a time.
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	if err != nil {
		return fmt.Errorf("%w: %s", err, logtail.String(out.all.String(), 20))
	}
	return nil
}

// lineLog logs each line written to it, and keeps them all.
type lineLog struct {
	log     *slog.Logger
	all     bytes.Buffer
	partial []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.line(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
}

func (l *lineLog) flush() {
	l.line(l.partial)
	l.partial = nil
}

func (l *lineLog) line(b []byte) {
	if s := strings.TrimSpace(string(b)); s != "" {
		l.log.Info("apt-get", "line", s)
	}
}
