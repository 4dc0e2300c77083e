package local

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Files written under the run directory: configuration is rendered as JSON,
// which the kubelet and kube-proxy read as YAML, so no YAML library or
// Kubernetes config types need to be imported.

func writeKubeconfig(path, server, contextName string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[contextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[contextName] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[contextName] = &clientcmdapi.Context{Cluster: contextName, AuthInfo: contextName}
	cfg.CurrentContext = contextName
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// kubeletConfig holds the settings a root-but-unprivileged cgroup v1 host
// needs: no QoS cgroups, no allocatable enforcement, no eviction, no
// resolv.conf (the host's DNS server is outside traffic), and image GC off
// so locally imported images are never removed and then pulled. The
// client CA makes the kubelet accept the apiserver's client certificate,
// which `kubectl logs` needs.
func kubeletConfig(p plan, f map[string]string) map[string]any {
	return map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            p.nodeIP().String(),
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": f["ca.crt"]},
		},
		"authorization":               map[string]any{"mode": "Webhook"},
		"tlsCertFile":                 f["kubelet-serving.crt"],
		"tlsPrivateKeyFile":           f["kubelet-serving.key"],
		"containerRuntimeEndpoint":    "unix://" + p.containerdSock(),
		"cgroupDriver":                "cgroupfs",
		"cgroupsPerQOS":               false,
		"enforceNodeAllocatable":      []string{},
		"failSwapOn":                  false,
		"resolvConf":                  "",
		"evictionHard":                map[string]string{},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"podLogsDir":                  p.path("pod-logs"),
		"clusterDomain":               "cluster.local",
		"serializeImagePulls":         false,
		"rotateCertificates":          false,
		"serverTLSBootstrap":          false,
	}
}

// kubeProxyConfig: iptables mode; conntrack tuning off because its sysctls
// cannot be written from inside a network namespace.
func kubeProxyConfig(p plan, kubeconfig string) map[string]any {
	return map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"mode":               "iptables",
		"clusterCIDR":        p.PodCIDR,
		"hostnameOverride":   NodeName,
		"bindAddress":        p.nodeIP().String(),
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"conntrack":          map[string]any{"maxPerCore": 0},
	}
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
`, q(filepath.Join(d, "root")), q(filepath.Join(d, "state")), q(p.containerdSock()), q(p.containerdSock()+".ttrpc"),
		q(filepath.Join(d, "opt")), q(pauseTag), q(snapshotter), q(filepath.Join(d, "runc")), q(p.cniConfDir())), "\n")
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
