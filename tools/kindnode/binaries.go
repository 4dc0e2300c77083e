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

// CriToolsVersion is the cri-tools release of the Kubernetes minor the
// node runs, as tools/kindnode/crictl/go.mod requires.
const CriToolsVersion = "v1.34.0"

// CriTools is crictl, from tools/kindnode/crictl: kind's base image has
// it, kind's log export lists the node's images with it, and people look
// at a kind node's containers with it.
func CriTools(l layout.Layout) modbuild.Program {
	const pkg = "sigs.k8s.io/cri-tools"
	return modbuild.Program{
		Name: "crictl", Version: CriToolsVersion,
		Module:   l.Path("tools", "kindnode", "crictl"),
		Packages: []string{pkg + "/cmd/crictl"},
		// Without it, crictl --version says "unknown".
		LDFlags: "-X " + pkg + "/pkg/version.Version=" + CriToolsVersion,
	}
}
