// Package kindnode assembles a kind node image offline, where kind's
// pinned kindest/node cannot be pulled and `kind build node-image` cannot
// run (it fetches etcd, CoreDNS, pause and kindnetd images): a Debian root
// file system from Debian's mirror (debootstrap) with kind's base files
// (read from the kind module in the Go module cache), Debian's containerd,
// runc and CNI plugins, the Kubernetes binaries of the local node's
// version built from their Go modules (kubelet from tools/kube, kubeadm
// and kubectl from tools/kindnode/kube, crictl from tools/kindnode/crictl),
// and the control-plane images built with go-containerregistry and
// imported into the node's containerd at boot. The image is tagged kind.OfflineNodeImage and loaded into the
// Docker engine; nothing is pulled.
package kindnode
