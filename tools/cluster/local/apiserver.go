package local

import (
	"context"
	"fmt"
	"strings"
)

// frontProxyUser is the aggregation layer's client certificate's name.
const frontProxyUser = "front-proxy-client"

// apiServer listens on the node address, so the host reaches it through the
// veth, and on the namespace's loopback for the other components.
var apiServer = component{
	name: APIServer,
	kube: true,
	args: func(b *boot) []string {
		p, f := b.p, b.files
		return []string{
			"--etcd-servers=http://127.0.0.1:2379",
			fmt.Sprintf("--secure-port=%d", apiPort),
			"--advertise-address=" + p.nodeIP().String(),
			"--cert-dir=" + p.pkiDir(),
			"--tls-cert-file=" + f["apiserver.crt"],
			"--tls-private-key-file=" + f["apiserver.key"],
			"--client-ca-file=" + f["ca.crt"],
			"--kubelet-client-certificate=" + f["apiserver-kubelet-client.crt"],
			"--kubelet-client-key=" + f["apiserver-kubelet-client.key"],
			"--kubelet-certificate-authority=" + f["ca.crt"],
			// The node name must never be resolved through the machine's DNS.
			"--kubelet-preferred-address-types=InternalIP",
			"--service-account-key-file=" + f["sa.pub"],
			"--service-account-signing-key-file=" + f["sa.key"],
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=" + p.ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			// The aggregation layer, for extension API servers such as
			// Kueue's visibility API (certs.go).
			"--requestheader-client-ca-file=" + f["front-proxy-ca.crt"],
			"--requestheader-allowed-names=" + frontProxyUser,
			"--requestheader-username-headers=X-Remote-User",
			"--requestheader-group-headers=X-Remote-Group",
			"--requestheader-extra-headers-prefix=X-Remote-Extra-",
			"--proxy-client-cert-file=" + f["front-proxy-client.crt"],
			"--proxy-client-key-file=" + f["front-proxy-client.key"],
			// Webhooks and extension API servers are called at their
			// endpoints' pod IPs, not their ClusterIPs: in the node's
			// namespace the service range has no route (only the
			// blackhole for 198.18.0.0/15), so a connect to a ClusterIP
			// from a process there fails before kube-proxy's rules could
			// rewrite it; pods reach ClusterIPs through the bridge.
			"--enable-aggregator-routing=true",
			"--profiling=false",
		}
	},
	readyDesc: "kube-apiserver ready",
	explain:   []string{Etcd},
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		cs, err := adminClient(p)
		if err != nil {
			return err
		}
		return c.poll(ctx, APIServer, func(ctx context.Context) (bool, string, error) {
			body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if err != nil {
				return false, strings.TrimSpace(err.Error() + " " + string(body)), nil
			}
			return true, "", nil
		})
	},
}
