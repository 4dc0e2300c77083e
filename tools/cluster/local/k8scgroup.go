package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/cluster/local/hostref"
	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// containerdCgroup is the parent cgroup that containerd's runc makes for
// pod containers in each hierarchy, outside the cluster's own tree. Any
// other containerd on the machine (Docker's, the system's) uses it too,
// so it is only removed when a cluster made it, by the last cluster.
const containerdCgroup = "k8s.io"

// containerdCgroupRecord names it in the host records.
const containerdCgroupRecord = "cgroup-k8s.io"

// claimContainerdCgroup records, before containerd starts, that the
// cluster will use the k8s.io cgroups, and whether they are new.
func claimContainerdCgroup(p plan) error {
	mounts, err := cgroups.Mounts()
	if err != nil {
		return err
	}
	return hostref.Update(hostref.Dir, func(tx *hostref.Tx) error {
		_, err := tx.Acquire(containerdCgroupRecord, p.NetNS, anyExists(mounts, containerdCgroup))
		return err
	})
}

// releaseContainerdCgroup forgets the cluster's claim and, if the
// clusters made the k8s.io cgroups and none is left, removes them where
// they are empty. One that is not empty now belongs to whoever uses it.
func releaseContainerdCgroup(p plan) error {
	mounts, err := cgroups.Mounts()
	if err != nil {
		return err
	}
	return hostref.Update(hostref.Dir, func(tx *hostref.Tx) error {
		remove, err := tx.Release(containerdCgroupRecord, p.NetNS, netns.Exists)
		if err != nil || !remove {
			return err
		}
		var errs []error
		for _, m := range mounts {
			err := os.Remove(filepath.Join(m, containerdCgroup))
			if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENOTEMPTY) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(m, containerdCgroup), err))
			}
		}
		return errors.Join(errs...)
	})
}

func anyExists(mounts []string, rel string) bool {
	for _, m := range mounts {
		if _, err := os.Stat(filepath.Join(m, rel)); err == nil {
			return true
		}
	}
	return false
}
