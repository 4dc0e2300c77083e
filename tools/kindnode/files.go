package kindnode

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gmini-dev/gmini/tools/cluster/kind"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// PodSubnet is the node's pod range: the kind configuration's.
const PodSubnet = kind.PodSubnet

// containerdConfig is kind's base containerd configuration
// (images/base/files/etc/containerd/config.toml) for Debian's containerd
// 1.6: the same v2 format and settings, without the fuse-overlayfs
// snapshotter and the runtime-class test handler; runc through gmini-runc
// (this machine's bounding set lacks a capability privileged pods such as
// kube-proxy get), oom_score_adj left alone (the node lacks
// CAP_SYS_RESOURCE), the sandbox image and CNI plugins the image has.
var containerdConfig = `version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + Repository + `/pause:` + PauseTag + `"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    discard_unpacked_layers = true
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        BinaryName = "/usr/local/sbin/gmini-runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
`

// cniConfig is the node's pod network with Debian's CNI plugins (kindnet
// is not to be had offline): a point-to-point link per pod, addresses
// from PodSubnet, a route to 198.18.0.0/15 only (no default route: nothing
// beyond this machine), masquerading towards the rest of that range (the
// kind network's containers, such as the registry, have no route back to
// pods).
var cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "gmini-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": true,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "` + PodSubnet + `"}]],
        "routes": [{"dst": "198.18.0.0/15"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// imagesUnit imports the control-plane images into containerd at boot,
// before the kubelet starts (kind's node images have them imported at
// build time, which needs a running containerd).
const imagesUnit = `[Unit]
Description=gmini: import the control-plane images into containerd
After=containerd.service
Requires=containerd.service
ConditionPathExists=/kind/images/control-plane.tar

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ctr --namespace=k8s.io images import --all-platforms /kind/images/control-plane.tar

[Install]
WantedBy=multi-user.target
`

const kubeletWantsImages = `[Unit]
Wants=gmini-images.service
After=gmini-images.service
`

// kubeRouterUnit runs kube-router's firewall on the node, as the local
// node runs it (tools/cluster/local/kuberouter.go: the same flags), to
// enforce NetworkPolicy, which kindnet would have done; started by
// kubeRouterPath once kubeadm has written the admin kubeconfig. Test-only
// infrastructure, as there: v2.1.0 is the only version the Go module proxy
// serves.
var kubeRouterUnit = `[Unit]
Description=gmini: kube-router's NetworkPolicy firewall
After=kubelet.service

[Service]
Environment=NODE_NAME=%H
ExecStart=/usr/bin/kube-router --kubeconfig=/etc/kubernetes/admin.conf --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false --hostname-override=%H --service-cluster-ip-range=` + kind.ServiceSubnet + ` --health-port=0 --metrics-port=0 --iptables-sync-period=1m --cache-sync-timeout=1m --v=1
Restart=always
RestartSec=2
`

const kubeRouterPath = `[Unit]
Description=gmini: start kube-router once the cluster's admin kubeconfig exists

[Path]
PathExists=/etc/kubernetes/admin.conf
Unit=gmini-kube-router.service

[Install]
WantedBy=multi-user.target
`

// The node's storage, as the local node's (tools/cluster/local/storage.go):
// a default StorageClass "standard" without a provisioner, and static
// volumes made in the image, writable by the pods' non-root users (a
// provisioner's or the kubelet's new directory is root's, 0755: the
// backend could not open its history database there). hostPath, not
// local: the node's name is not known when the image is made; the cluster
// has one node.
const (
	volumes      = 8
	volumeSize   = "2Gi"
	volumeDir    = "/var/local-volumes"
	storageClass = "standard"
)

// defaultStorage is /kind/manifests/default-storage.yaml, which kind
// applies after kubeadm init.
func defaultStorage() string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: %s
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
`, storageClass)
	for i := range volumes {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: node-pv%[1]d
spec:
  capacity:
    storage: %[2]s
  accessModes: ["ReadWriteOnce"]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: %[3]s
  hostPath:
    path: %[4]s/pv%[1]d
    type: Directory
`, i, volumeSize, storageClass, volumeDir)
	}
	return b.String()
}

// kindFiles are the files of kind's base image this image takes, with
// their modes as its Dockerfile copies them. Its containerd config is
// replaced (containerdConfig), its fuse-overlayfs unit left out.
var kindFiles = []struct {
	path string
	mode int64
}{
	{"usr/local/bin/entrypoint", 0o755},
	{"usr/local/bin/clean-install", 0o755},
	{"kind/bin/mount-product-files.sh", 0o755},
	{"kind/bin/undo-mount-hacks.sh", 0o755},
	{"kind/bin/create-kubelet-cgroup-v2.sh", 0o755},
	{"etc/crictl.yaml", 0o644},
	{"etc/default/kubelet", 0o644},
	{"etc/sysctl.d/10-network-magic.conf", 0o644},
	{"etc/sysctl.d/10-network-security.conf", 0o644},
	{"etc/systemd/system/kubelet.slice", 0o644},
	{"etc/systemd/system/undo-mount-hacks.service", 0o644},
	{"etc/systemd/system/kubelet.service", 0o644},
	{"etc/systemd/system/containerd.service", 0o644},
	{"etc/systemd/system/kubelet.service.d/10-kubeadm.conf", 0o644},
	{"etc/systemd/system/kubelet.service.d/11-kind.conf", 0o644},
}

// additions is the image's second layer: kind's base files and what its
// Dockerfile does after installing packages (units enabled and removed,
// journald not reading kmsg), the binaries, the configuration, the
// images.
func additions(idx *rootfsIndex, rootfsTar, kindDir, kube, kubeadm, kubectl, crictl, kubeRouter, runc, cpTar string) ([]entry, error) {
	var out []entry
	for _, f := range kindFiles {
		src := filepath.Join(kindDir, filepath.FromSlash(f.path))
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("kind base file: %w", err)
		}
		out = append(out, copyOf("/"+f.path, f.mode, src))
	}
	// The Dockerfile's removals, as whiteouts of what the root file
	// system has.
	for _, pattern := range []string{
		"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
		"/lib/systemd/system/multi-user.target.wants/*",
		"/etc/systemd/system/*.wants/*",
		"/lib/systemd/system/local-fs.target.wants/*",
		"/lib/systemd/system/sockets.target.wants/*udev*",
		"/lib/systemd/system/sockets.target.wants/*initctl*",
		"/lib/systemd/system/basic.target.wants/*",
	} {
		for _, p := range idx.glob(idx.canonical(pattern)) {
			out = append(out, whiteout(p))
		}
	}
	journald := idx.canonical("/etc/systemd/journald.conf")
	conf, err := extract(rootfsTar, map[string]bool{journald: true})
	if err != nil || len(conf) != 1 {
		return nil, fmt.Errorf("the root file system's %s: %v", journald, err)
	}
	out = append(out,
		file(journald, 0o644, string(conf[0].Data)+"ReadKMsg=no\n"),
		// systemctl enable of kubelet, containerd, undo-mount-hacks and
		// ours; systemctl mask systemd-binfmt.
		link("/etc/systemd/system/multi-user.target.wants/kubelet.service", "/etc/systemd/system/kubelet.service"),
		link("/etc/systemd/system/multi-user.target.wants/containerd.service", "/etc/systemd/system/containerd.service"),
		link("/etc/systemd/system/multi-user.target.wants/undo-mount-hacks.service", "/etc/systemd/system/undo-mount-hacks.service"),
		link("/etc/systemd/system/multi-user.target.wants/gmini-images.service", "/etc/systemd/system/gmini-images.service"),
		link("/etc/systemd/system/systemd-binfmt.service", "/dev/null"),
		link("/etc/systemd/system/multi-user.target.wants/gmini-kube-router.path", "/etc/systemd/system/gmini-kube-router.path"),
		file("/etc/systemd/system/gmini-kube-router.path", 0o644, kubeRouterPath),
		file("/etc/systemd/system/gmini-kube-router.service", 0o644, kubeRouterUnit),
		copyOf("/usr/bin/kube-router", 0o755, kubeRouter),
		file("/etc/systemd/system/gmini-images.service", 0o644, imagesUnit),
		file("/etc/systemd/system/kubelet.service.d/20-gmini-images.conf", 0o644, kubeletWantsImages),
		dir("/etc/kubernetes/manifests"),
		// containerd where kind's unit starts it.
		link("/usr/local/bin/containerd", "/usr/bin/containerd"),
		file("/etc/containerd/config.toml", 0o644, containerdConfig),
		copyOf("/usr/local/sbin/gmini-runc", 0o755, runc),
		file("/etc/cni/net.d/10-gmini-ptp.conflist", 0o644, cniConfig),
		// The kubelet is the kube multi-call binary, by its name.
		copyOf("/usr/bin/kube", 0o755, kube),
		link("/usr/bin/kubelet", "kube"),
		copyOf("/usr/bin/kubeadm", 0o755, kubeadm),
		copyOf("/usr/bin/kubectl", 0o755, kubectl),
		// Where kind's base image has it (/etc/crictl.yaml is kind's).
		copyOf("/usr/local/bin/crictl", 0o755, crictl),
		file("/kind/version", 0o644, modbuild.KubernetesVersion),
		file("/kind/manifests/default-storage.yaml", 0o644, defaultStorage()),
		copyOf("/kind/images/control-plane.tar", 0o644, cpTar),
	)
	for i := range volumes {
		out = append(out, entry{Name: fmt.Sprintf("%s/pv%d", volumeDir, i), Mode: 0o777, Dir: true})
	}
	// A layer must not both remove and add a name.
	added := map[string]bool{}
	for _, e := range out {
		if !e.Remove {
			added[idx.canonical(e.Name)] = true
		}
	}
	return slices.DeleteFunc(out, func(e entry) bool { return e.Remove && added[e.Name] }), nil
}
