package kind

import (
	"fmt"
	"slices"
	"strings"

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
// An empty image leaves kind's default node image in place. The offline
// node image (IsOffline) has no kindnet, whose image cannot be had
// offline: its own CNI configuration (Debian's ptp plugin) takes its
// place; and kubeadm is told where its images are.
func Config(name, image string) *v1alpha4.Cluster {
	cfg := config(name, image)
	if IsOffline(image) {
		cfg.Networking.DisableDefaultCNI = true
		cfg.KubeadmConfigPatches = append(cfg.KubeadmConfigPatches, offlineKubeadmPatch)
	}
	return cfg
}

// offlineKubeadmPatch points kubeadm at the offline image's control-plane
// images.
const offlineKubeadmPatch = `kind: ClusterConfiguration
imageRepository: ` + OfflineImageRepository + `
etcd:
  local:
    imageTag: "` + OfflineEtcdTag + `"
`

func config(name, image string) *v1alpha4.Cluster {
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

// nodeImages are the node images the kind release in go.mod (v0.33.0)
// lists in its release notes, by Kubernetes minor. kind tests its release
// only with these exact images, and a tag alone is not guaranteed to be
// compatible, so they are pinned by digest.
var nodeImages = map[string]string{
	"1.33": "kindest/node:v1.33.12@sha256:3f5c8443c620245e4d355cfe09e96a91ead32ceaa569d3f1ca9edf0cb2fe2ff4",
	"1.34": "kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d",
	"1.35": "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0",
	"1.36": "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed",
	"1.37": "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5",
}

// NodeImage returns the pinned node image of the Kubernetes minor of
// version (v1.34.4 and 1.34 both give the 1.34 image).
func NodeImage(version string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(version, "v"), ".")
	if len(parts) < 2 {
		return "", fmt.Errorf("kind node image: version %q: want v1.MINOR[.PATCH]", version)
	}
	minor := parts[0] + "." + parts[1]
	img, ok := nodeImages[minor]
	if !ok {
		known := make([]string, 0, len(nodeImages))
		for m := range nodeImages {
			known = append(known, m)
		}
		slices.Sort(known)
		return "", fmt.Errorf("kind node image: no pinned image for Kubernetes %s (kind v0.33.0 lists %s)", minor, strings.Join(known, ", "))
	}
	return img, nil
}
