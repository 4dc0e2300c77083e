package local

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeName is the name the single node registers under.
const NodeName = "gmini-node"

var kubelet = component{
	name: Kubelet,
	node: true,
	kube: true,
	dirs: []string{"kubelet"},
	owns: []string{"kubelet", "pod-logs", "kubelet.json"},
	// kube-proxy --cleanup leaves the chains the kubelet makes itself.
	cleanup: func(ctx context.Context, st *state) error {
		return inNamespace(st.Plan, func() error { return removeChains(ctx, st.Plan.NetNS) })
	},
	configure: func(b *boot) error {
		return writeJSON(b.p.path("kubelet.json"), kubeletConfig(b.p, b.files))
	},
	args: func(b *boot) []string {
		return []string{
			"--config=" + b.p.path("kubelet.json"),
			"--kubeconfig=" + b.files["kubelet.kubeconfig"],
			"--root-dir=" + b.p.kubeletRoot(),
			"--hostname-override=" + NodeName,
			"--node-ip=" + b.p.nodeIP().String(),
		}
	},
	readyDesc: "node ready",
	explain:   []string{Containerd},
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		cs, err := adminClient(p)
		if err != nil {
			return err
		}
		return c.poll(ctx, Kubelet, func(ctx context.Context) (bool, string, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					return cond.Status == corev1.ConditionTrue, cond.Reason + ": " + cond.Message, nil
				}
			}
			return false, "no Ready condition", nil
		})
	},
}

// kubeletConfig holds the settings a root-but-unprivileged cgroup v1 host
// needs: no QoS cgroups, no allocatable enforcement, no eviction, no
// resolv.conf (the host's DNS server is outside traffic), and image GC off
// so locally imported images are never removed and then pulled. The
// client CA makes the kubelet accept the apiserver's client certificate,
// which `kubectl logs` needs.
//
// In-place pod resize is off: it needs the pod-level cgroups that
// cgroupsPerQOS=false leaves out, and v1.34's kubelet, finding no actuated
// resources for a container (as after its process was frozen and killed
// by the e2e leader test), goes to resize it and dereferences the missing
// pod cgroup config: a nil pointer panic that takes the node down.
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
		"featureGates":                map[string]bool{"InPlacePodVerticalScaling": false},
	}
}
