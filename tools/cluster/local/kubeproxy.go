package local

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// kubeProxy in iptables mode makes ClusterIPs work inside the namespace, and
// from the host, which routes the service range through the veth.
var kubeProxy = component{
	name: KubeProxy,
	node: true,
	kube: true,
	owns: []string{"kube-proxy.json"},
	cleanup: func(ctx context.Context, st *state) error {
		return inNamespace(st.Plan, func() error {
			argv := netns.Command(st.Plan.NetNS, st.KubeBinary, KubeProxy, "--cleanup")
			if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("kube-proxy --cleanup: %w: %s", err, oneLine(out, 5))
			}
			return nil
		})
	},
	configure: func(b *boot) error {
		return writeJSON(b.p.path("kube-proxy.json"), kubeProxyConfig(b.p, b.files["kube-proxy.kubeconfig"]))
	},
	args: func(b *boot) []string {
		return []string{"--config", b.p.path("kube-proxy.json")}
	},
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
