package kind

import (
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

// The cluster's pod and Service ranges lie in 198.18.0.0/15, the range
// reserved for network tests, as on the local node, so tests see the same
// addresses on both providers and none of them can clash with a real network.
const (
	PodSubnet     = "198.18.128.0/17"
	ServiceSubnet = "198.19.0.0/16"
)

// Config returns the kind configuration of a one-node cluster named name.
// An empty image leaves kind's default node image in place.
func Config(name, image string) *v1alpha4.Cluster {
	return &v1alpha4.Cluster{
		TypeMeta: v1alpha4.TypeMeta{Kind: "Cluster", APIVersion: "kind.x-k8s.io/v1alpha4"},
		Name:     name,
		Nodes:    []v1alpha4.Node{{Role: v1alpha4.ControlPlaneRole, Image: image}},
		Networking: v1alpha4.Networking{
			IPFamily: v1alpha4.IPv4Family,
			// The API server is reachable from this machine only.
			APIServerAddress: "127.0.0.1",
			PodSubnet:        PodSubnet,
			ServiceSubnet:    ServiceSubnet,
		},
	}
}

// NodeImage returns kind's node image for a Kubernetes version such as v1.34.0.
func NodeImage(version string) string {
	if version == "" {
		return ""
	}
	if version[0] != 'v' {
		version = "v" + version
	}
	return "kindest/node:" + version
}
