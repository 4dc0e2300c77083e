package local

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

func TestNewPlan(t *testing.T) {
	tests := []struct {
		name    string
		index   int
		wantErr bool
		node    string
		pods    string
		svc     string
	}{
		{name: "dev", index: 0, node: "198.18.0.2/30", pods: "198.18.128.0/24", svc: "198.19.0.0/24"},
		{name: "e2e", index: 63, node: "198.18.0.254/30", pods: "198.18.191.0/24", svc: "198.19.63.0/24"},
		{name: "Upper", index: 1, wantErr: true},
		{name: "", index: 1, wantErr: true},
		{name: "a-very-long-name-that-is-over-32-chars", index: 1, wantErr: true},
		{name: "ok", index: 64, wantErr: true},
		{name: "ok", index: -1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newPlan(tt.name, "/run/dir", tt.index)
			if (err != nil) != tt.wantErr {
				t.Fatalf("newPlan(%q, %d) error = %v, want error %v", tt.name, tt.index, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if p.NodeAddr != tt.node || p.PodCIDR != tt.pods || p.ServiceCIDR != tt.svc {
				t.Errorf("got node %s pods %s services %s, want %s %s %s", p.NodeAddr, p.PodCIDR, p.ServiceCIDR, tt.node, tt.pods, tt.svc)
			}
			if len(p.HostLink) > 15 || len(p.NetNS) > 64 {
				t.Errorf("link name %q or netns %q too long", p.HostLink, p.NetNS)
			}
		})
	}
}

// Every address of every slot must be inside the test range, and no two
// slots may share an address, or two clusters could not coexist.
func TestPlansStayInsideTestNetAndDisjoint(t *testing.T) {
	var seen []netip.Prefix
	for i := range maxClusters {
		p, err := newPlan("c", "/d", i)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{p.HostAddr, p.NodeAddr, p.PodCIDR, p.ServiceCIDR} {
			pf := netip.MustParsePrefix(s).Masked()
			if !netns.TestNet.Contains(pf.Addr()) || pf.Bits() < netns.TestNet.Bits() {
				t.Errorf("slot %d: %s outside %s", i, s, netns.TestNet)
			}
			if s == p.NodeAddr {
				continue // same /30 as HostAddr
			}
			for _, o := range seen {
				if o.Overlaps(pf) {
					t.Errorf("slot %d: %s overlaps %s", i, pf, o)
				}
			}
			seen = append(seen, pf)
		}
		if !netip.MustParsePrefix(p.ServiceCIDR).Contains(p.apiServiceIP()) {
			t.Errorf("slot %d: API service IP %s outside %s", i, p.apiServiceIP(), p.ServiceCIDR)
		}
	}
}

func TestSubnetIndexSpreads(t *testing.T) {
	var idx []int
	for _, n := range []string{"dev", "e2e", "ci", "test"} {
		i := subnetIndex(n)
		if i < 0 || i >= maxClusters {
			t.Fatalf("subnetIndex(%q) = %d", n, i)
		}
		idx = append(idx, i)
	}
	slices.Sort(idx)
	if len(slices.Compact(idx)) < 3 {
		t.Errorf("indices %v: common names collide", idx)
	}
}

// Network names both ends of the veth: the node, and the host, where a
// server of this machine listens for the node's pods.
func TestNetworkNamesBothEnds(t *testing.T) {
	c := NewCluster("net", WithRunDir(t.TempDir()), WithSubnetIndex(3))
	nw, err := c.Network()
	if err != nil {
		t.Fatal(err)
	}
	if nw.HostIP != netip.MustParseAddr("198.18.0.13") || nw.NodeIP != netip.MustParseAddr("198.18.0.14") {
		t.Errorf("host %s, node %s; want 198.18.0.13 and 198.18.0.14, the two ends of slot 3's /30", nw.HostIP, nw.NodeIP)
	}
}
