// Package hostref counts the local clusters that rely on a host resource
// they share (the blackhole route for 198.18.0.0/15, containerd's k8s.io
// cgroups), so that the last one to go removes it, and only if one of
// them added it: what was on the host before the first cluster stays.
//
// The records live in a directory under /run, which, like the routes and
// cgroups they describe, does not survive a reboot. Layout:
// <dir>/<resource>/added exists when a cluster added the resource, and
// <dir>/<resource>/users/<user> for each cluster using it.
package hostref

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dir is where the records of this machine's clusters live.
const Dir = "/run/gmini"

// Tx holds the records locked against other processes until Close, so
// that checking the host, recording and adding or removing the resource
// happen as one step.
type Tx struct {
	dir string
	f   *os.File
}

// Lock creates dir if needed and locks it.
func Lock(dir string) (*Tx, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("host records %s: %w", dir, err)
	}
	for {
		// Another process's Close may remove dir at any moment until we
		// hold the lock: either step may then find it gone.
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("host records %s: %w", dir, err)
		}
		f, err := os.Open(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("host records %s: %w", dir, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock host records %s: %w", dir, err)
		}
		// Close removes an empty dir: if that happened while we waited
		// for the lock, we hold a lock on a deleted directory.
		var locked, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &locked) == nil && unix.Stat(dir, &now) == nil && locked.Ino == now.Ino && locked.Dev == now.Dev {
			return &Tx{dir: dir, f: f}, nil
		}
		f.Close()
	}
}

// Update runs f with the records in dir locked.
func Update(dir string, f func(*Tx) error) error {
	tx, err := Lock(dir)
	if err != nil {
		return err
	}
	return errors.Join(f(tx), tx.Close())
}

// Close removes the directory if no record is left, and unlocks.
func (t *Tx) Close() error {
	var err error
	if rerr := os.Remove(t.dir); rerr != nil && !errors.Is(rerr, syscall.ENOTEMPTY) && !errors.Is(rerr, syscall.EEXIST) {
		err = fmt.Errorf("remove host records %s: %w", t.dir, rerr)
	}
	return errors.Join(err, t.f.Close()) // closing releases the lock
}

// Acquire records user as relying on resource. present says whether the
// host has the resource now. It returns true when the resource is absent:
// the caller then adds it, and it counts as added by the clusters.
func (t *Tx) Acquire(resource, user string, present bool) (add bool, err error) {
	users := filepath.Join(t.dir, resource, "users")
	if err := os.MkdirAll(users, 0o755); err != nil {
		return false, fmt.Errorf("record %s: %w", resource, err)
	}
	if err := os.WriteFile(filepath.Join(users, user), nil, 0o644); err != nil {
		return false, fmt.Errorf("record %s for %s: %w", resource, user, err)
	}
	if present {
		return false, nil
	}
	// Recorded before the caller adds it: a crash in between leaves a
	// record of a resource that is not there, which Release tolerates,
	// rather than a resource nobody removes.
	if err := os.WriteFile(filepath.Join(t.dir, resource, "added"), nil, 0o644); err != nil {
		return false, fmt.Errorf("record %s as added: %w", resource, err)
	}
	return true, nil
}

// Release forgets user, and every other user for which alive is false
// (a cluster that crashed and was cleaned up by hand). It returns true
// when the clusters added the resource and no user is left: the caller
// then removes it. The records of resource go once no user is left.
func (t *Tx) Release(resource, user string, alive func(user string) bool) (remove bool, err error) {
	base := filepath.Join(t.dir, resource)
	users := filepath.Join(base, "users")
	if err := os.Remove(filepath.Join(users, user)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("forget %s of %s: %w", resource, user, err)
	}
	entries, err := os.ReadDir(users)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("list users of %s: %w", resource, err)
	}
	left := 0
	for _, e := range entries {
		if alive(e.Name()) {
			left++
			continue
		}
		if err := os.Remove(filepath.Join(users, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("forget %s of %s: %w", resource, e.Name(), err)
		}
	}
	if left > 0 {
		return false, nil
	}
	_, err = os.Stat(filepath.Join(base, "added"))
	added := err == nil
	if err := os.RemoveAll(base); err != nil {
		return false, fmt.Errorf("forget %s: %w", resource, err)
	}
	return added, nil
}
