package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// containerd is Debian's containerd with a configuration of its own: it
// shares nothing with a containerd the machine may already run.
var containerd = component{
	name: Containerd,
	node: true,
	dirs: []string{"containerd", "cni/net.d"},
	owns: []string{"containerd", "cni"},
	// Asked to delete its tasks, the shims exit cleanly and remove their
	// sockets.
	beforeStop: deleteTasks,
	cleanup:    removeContainers,
	configure: func(b *boot) error {
		p := b.p
		if err := os.WriteFile(p.path("containerd", "config.toml"), []byte(containerdConfig(p, b.c.pauseTag, snapshotter())), 0o644); err != nil {
			return fmt.Errorf("write containerd config: %w", err)
		}
		return writeJSON(filepath.Join(p.cniConfDir(), "10-gmini.conflist"), cniConfig(p))
	},
	args: func(b *boot) []string {
		return []string{"--config", b.p.path("containerd", "config.toml")}
	},
	readyDesc: "containerd ready",
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		return c.poll(ctx, Containerd, func(ctx context.Context) (bool, string, error) {
			out, err := exec.CommandContext(ctx, "ctr", "--address", p.containerdSock(), "version").CombinedOutput()
			if err != nil {
				return false, strings.TrimSpace(string(out)), nil
			}
			return true, "", nil
		})
	},
}

// snapshotter is overlayfs where the kernel has it.
func snapshotter() string {
	b, err := os.ReadFile("/proc/filesystems")
	if err == nil && containsField(string(b), "overlay") {
		return "overlayfs"
	}
	return "native"
}

func containsField(s, field string) bool {
	for _, f := range strings.Fields(s) {
		if f == field {
			return true
		}
	}
	return false
}

// cniConfig is a bridge network whose pods get a route to 198.18.0.0/15
// only: no default route, so nothing a pod sends can be routed off the
// machine. IP allocations are kept in the run directory.
func cniConfig(p plan) map[string]any {
	return map[string]any{
		"cniVersion": "1.0.0",
		"name":       p.CNINetwork,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      "gmini0",
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": p.path("cni", "ipam"),
				"ranges": []any{[]any{map[string]any{
					"subnet":  p.PodCIDR,
					"gateway": p.podGateway().String(),
				}}},
				"routes": []any{map[string]any{"dst": "198.18.0.0/15"}},
			},
		}},
	}
}

// containerdConfig gives this cluster's containerd its own root, state,
// sockets, runc root and CNI configuration, so it shares nothing with a
// containerd the machine may already run. restrict_oom_score_adj is needed
// because the machine lacks CAP_SYS_RESOURCE; netns_mounts_under_state_dir
// keeps pod network namespaces under the run directory, where Destroy
// finds them.
func containerdConfig(p plan, pauseTag, snapshotter string) string {
	d := p.containerdDir()
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return strings.TrimLeft(fmt.Sprintf(`
version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %s

[ttrpc]
  address = %s

[plugins."io.containerd.internal.v1.opt"]
  path = %s

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %s
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %s
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %s
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %s

  # One directory per registry, with its hosts.toml (the node's registry
  # has one: registry.go), read again on every pull.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %s
`, q(filepath.Join(d, "root")), q(filepath.Join(d, "state")), q(p.containerdSock()), q(p.containerdSock()+".ttrpc"),
		q(filepath.Join(d, "opt")), q(pauseTag), q(snapshotter), q(filepath.Join(d, "runc")), q(p.cniConfDir()), q(p.hostsDir())), "\n")
}
