package local

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"regexp"
)

// maxClusters bounds the subnet index: each cluster gets a /30 for its veth
// pair inside 198.18.0.0/24, so 64 fit there.
const maxClusters = 64

// apiPort is the kube-apiserver's secure port inside the namespace.
const apiPort = 6443

var validName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$`)

// plan is everything derived from the cluster name and options: addresses,
// names and paths. It is written to the state file so a later process can
// tear the cluster down without recomputing anything.
type plan struct {
	Name        string `json:"name"`
	RunDir      string `json:"runDir"`
	Index       int    `json:"index"`
	NetNS       string `json:"netns"`
	HostLink    string `json:"hostLink"`
	HostAddr    string `json:"hostAddr"` // prefix form, e.g. 198.18.0.1/30
	NodeAddr    string `json:"nodeAddr"` // prefix form, e.g. 198.18.0.2/30
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	Cgroup      string `json:"cgroup"` // relative to each hierarchy's mount
	CNINetwork  string `json:"cniNetwork"`
}

// subnetIndex spreads names over the 64 address slots, so two clusters with
// different names usually get disjoint subnets without coordination; Create
// detects the rare collision and WithSubnetIndex resolves it.
func subnetIndex(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % maxClusters)
}

func newPlan(name, runDir string, index int) (plan, error) {
	if !validName.MatchString(name) {
		return plan{}, fmt.Errorf("cluster name %q: want 1-32 lower-case letters, digits and '-'", name)
	}
	if index < 0 || index >= maxClusters {
		return plan{}, fmt.Errorf("subnet index %d out of range [0,%d)", index, maxClusters)
	}
	base := netip.AddrFrom4([4]byte{198, 18, 0, byte(4 * index)})
	return plan{
		Name:     name,
		RunDir:   runDir,
		Index:    index,
		NetNS:    "gmini-" + name,
		HostLink: fmt.Sprintf("gmini%d", index),
		HostAddr: netip.PrefixFrom(base.Next(), 30).String(),
		NodeAddr: netip.PrefixFrom(base.Next().Next(), 30).String(),
		// Pods and services get a /24 each per slot, distinct across
		// clusters because the host routes both to the node.
		PodCIDR:     fmt.Sprintf("198.18.%d.0/24", 128+index),
		ServiceCIDR: fmt.Sprintf("198.19.%d.0/24", index),
		Cgroup:      "gmini-" + name,
		CNINetwork:  "gmini-" + name,
	}, nil
}

func (p plan) nodeIP() netip.Addr     { return netip.MustParsePrefix(p.NodeAddr).Addr() }
func (p plan) podGateway() netip.Addr { return netip.MustParsePrefix(p.PodCIDR).Addr().Next() }

// apiServiceIP is the first address of the service range, which the
// apiserver gives to the `kubernetes` Service.
func (p plan) apiServiceIP() netip.Addr { return netip.MustParsePrefix(p.ServiceCIDR).Addr().Next() }

// serverURL is the apiserver address as seen from the host, through the veth.
func (p plan) serverURL() string {
	return fmt.Sprintf("https://%s", netip.AddrPortFrom(p.nodeIP(), apiPort))
}

func (p plan) path(elem ...string) string {
	return filepath.Join(append([]string{p.RunDir}, elem...)...)
}

func (p plan) stateFile() string      { return p.path("state.json") }
func (p plan) logDir() string         { return p.path("logs") }
func (p plan) pkiDir() string         { return p.path("pki") }
func (p plan) kubeconfig() string     { return p.path("kubeconfig") }
func (p plan) containerdDir() string  { return p.path("containerd") }
func (p plan) containerdSock() string { return p.path("containerd", "containerd.sock") }
func (p plan) kubeletRoot() string    { return p.path("kubelet") }
func (p plan) cniConfDir() string     { return p.path("cni", "net.d") }

// systemCgroup holds the components and containerd's shims. Pod
// containers are not in it: with cgroupsPerQOS off the kubelet gives no
// cgroup parent and containerd puts them in /k8s.io/<id>.
func (p plan) systemCgroup() string { return p.Cgroup + "/system" }
