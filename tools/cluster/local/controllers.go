package local

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// controllerManager runs every controller; it signs the node's and the
// ServiceAccounts' certificates with the cluster CA, and gives pods a
// ca.crt that verifies the apiserver.
var controllerManager = component{
	name: ControllerManager,
	kube: true,
	args: func(b *boot) []string {
		f := b.files
		kc := f["controller-manager.kubeconfig"]
		return []string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1",
			"--leader-elect=false",
			"--controllers=*",
			"--root-ca-file=" + f["ca.crt"],
			"--service-account-private-key-file=" + f["sa.key"],
			"--use-service-account-credentials",
			"--cluster-signing-cert-file=" + f["ca.crt"],
			"--cluster-signing-key-file=" + f["ca.key"],
			"--service-cluster-ip-range=" + b.p.ServiceCIDR,
			"--profiling=false",
		}
	},
	// The controller-manager makes the default ServiceAccount about 9.5 s
	// after start, and the apiserver rejects pods of a namespace before
	// then: the cluster is ready for tests only once it exists.
	readyDesc: "default ServiceAccount exists",
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		cs, err := adminClient(p)
		if err != nil {
			return err
		}
		return c.poll(ctx, ControllerManager, func(ctx context.Context) (bool, string, error) {
			if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
				return false, err.Error(), nil
			}
			return true, "", nil
		})
	},
}

var scheduler = component{
	name: Scheduler,
	node: true,
	kube: true,
	args: func(b *boot) []string {
		kc := b.files["scheduler.kubeconfig"]
		return []string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1",
			"--leader-elect=false",
			"--profiling=false",
		}
	},
}
