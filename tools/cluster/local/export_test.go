package local

import "net/netip"

// What the external tests (package local_test) need to look inside a
// cluster. They are external because they create clusters with
// cluster.Prepare, which imports this package.

type (
	State = state
	Plan  = plan
)

func (c *Cluster) LoadState() (*State, error) { return c.loadState() }

func (p plan) APIServiceIP() netip.Addr { return p.apiServiceIP() }
func (p plan) StateFile() string        { return p.stateFile() }

var (
	Running      = running
	MountsUnder  = mountsUnder
	ContainerIDs = containerIDs
	OwnerFile    = ownerFile
)
