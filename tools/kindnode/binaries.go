package kindnode

import (
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/modbuild"
)

// KubeTools is kubeadm and kubectl of modbuild.KubernetesVersion, from
// tools/kindnode/kube, with the same version stamps as the kube binary.
func KubeTools(l layout.Layout) modbuild.Program {
	return modbuild.Program{
		Name: "kubeadm and kubectl", Version: modbuild.KubernetesVersion,
		Module:   l.Path("tools", "kindnode", "kube"),
		Packages: []string{"k8s.io/kubernetes/cmd/kubeadm", "k8s.io/kubernetes/cmd/kubectl"},
		LDFlags:  modbuild.KubeLDFlags(),
	}
}
