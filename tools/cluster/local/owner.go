package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ownersDir records, per network namespace, the run directory of the
// cluster that made it. A namespace's name is the cluster's, so two
// checkouts that create the same cluster meet there; the record lets the
// second tell a cluster the first still runs from one a killed run left,
// and clean the latter up from its own state. Under /run, like the
// namespaces it describes, it does not survive a reboot.
const ownersDir = "/run/gmini-clusters"

func ownerFile(ns string) string { return filepath.Join(ownersDir, ns) }

// recordOwner notes that p's run directory owns p's namespace.
func recordOwner(p plan) error {
	if err := os.MkdirAll(ownersDir, 0o755); err != nil {
		return fmt.Errorf("record owner of %s: %w", p.NetNS, err)
	}
	if err := os.WriteFile(ownerFile(p.NetNS), []byte(p.RunDir+"\n"), 0o644); err != nil {
		return fmt.Errorf("record owner of %s: %w", p.NetNS, err)
	}
	return nil
}

// owner is the run directory recorded for ns, or "" if none is.
func owner(ns string) string {
	b, err := os.ReadFile(ownerFile(ns))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// forgetOwner removes p's record once its namespace is gone; a record
// naming another run directory is that one's to remove.
func forgetOwner(p plan) error {
	if owner(p.NetNS) != p.RunDir {
		return nil
	}
	if err := os.Remove(ownerFile(p.NetNS)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget owner of %s: %w", p.NetNS, err)
	}
	// Empty, the directory goes too, so a machine the clusters left is
	// as it was; another cluster's record keeps it.
	_ = os.Remove(ownersDir)
	return nil
}

// reclaim handles a namespace of p's name that exists although p's run
// directory has no running cluster: if the run directory recorded for it
// holds the state of a cluster whose API server is gone (a run killed
// before it could destroy what it made), that cluster is destroyed from
// its own state. A cluster still running there, or a namespace with no
// record, is refused: it is not ours to remove.
func (c *Cluster) reclaim(ctx context.Context, p plan) error {
	dir := owner(p.NetNS)
	if dir == "" || dir == p.RunDir {
		return fmt.Errorf("network namespace %s exists but no other run directory is recorded for it: a crash left it (`ip netns del %s`)", p.NetNS, p.NetNS)
	}
	other := &Cluster{name: c.name, runDir: dir, subnetIndex: c.subnetIndex, log: c.log, stopGrace: c.stopGrace}
	op, err := other.plan()
	if err != nil {
		return err
	}
	st, err := readState(op.stateFile())
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("network namespace %s exists, recorded for run directory %s, which has no state: a crash left it (`ip netns del %s`)", p.NetNS, dir, p.NetNS)
	}
	if running(st.Components[APIServer]) {
		return fmt.Errorf("network namespace %s exists: the cluster runs from run directory %s (destroy it there first)", p.NetNS, dir)
	}
	c.log.Info("removing leftovers of a stopped cluster of the same name in another run directory", "name", p.Name, "runDir", dir)
	if err := other.Destroy(ctx); err != nil {
		return fmt.Errorf("clean up the cluster left in %s: %w", dir, err)
	}
	return nil
}
