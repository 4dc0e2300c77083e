// Package cgroups keeps the processes of a local cluster (components and
// containerd's shims) under one cgroup tree, so they can be measured, and
// killed after a crash, by walking that tree.
//
// It supports cgroup v1 (one directory per mounted hierarchy) and the
// hybrid layout's unified mount; the kubelet of Kubernetes 1.34 and this
// machine both use cgroup v1.
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
)

// Mounts lists the mount points of every cgroup hierarchy on the machine.
func Mounts() ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	out := make([]string, 0, len(infos))
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// Create makes the cgroup rel (e.g. "gmini-dev/system") in every hierarchy.
// Each new cpuset gets its parent's cpus and mems, since an empty cpuset
// accepts no task.
func Create(rel string) error {
	mounts, err := Mounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		parts := strings.Split(strings.Trim(rel, "/"), "/")
		dir := m
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inherit(parent, dir, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Join moves pid into the cgroup rel in every hierarchy.
func Join(rel string, pid int) error {
	mounts, err := Mounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		p := filepath.Join(m, rel, "cgroup.procs")
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("move %d to %s: %w", pid, p, err)
		}
	}
	return nil
}

// Procs returns every process in the tree rel, in any hierarchy.
func Procs(rel string) ([]int, error) {
	mounts, err := Mounts()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, m := range mounts {
		root := filepath.Join(m, rel)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil // the cgroup went away while we walked
			}
			for _, f := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, n) {
					pids = append(pids, n)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list processes in %s: %w", root, err)
		}
	}
	return pids, nil
}

// Remove deletes the tree rel in every hierarchy, deepest first. It fails
// while processes remain in it.
func Remove(rel string) error {
	mounts, err := Mounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		root := filepath.Join(m, rel)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// Root is where the cgroup file systems are mounted.
const Root = "/sys/fs/cgroup"

// Unified reports whether root is a cgroup v2 unified hierarchy, as on
// GitHub's runners, rather than a directory of cgroup v1 hierarchies (this
// project's machine): only v2's root has cgroup.controllers.
func Unified(root string) bool {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// Dirs lists where the cgroup rel would be below root: one directory on
// cgroup v2, one per hierarchy on v1 (including the hybrid layout's
// unified one). It reads root only, so a test that checks nothing is left
// behind works on either kind of host without the mount table.
func Dirs(root, rel string) ([]string, error) {
	if Unified(root) {
		return []string{filepath.Join(root, rel)}, nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("list cgroup hierarchies: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		// Symbolic links such as cpu -> cpu,cpuacct name a hierarchy
		// that is listed under its own name too.
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, e.Name(), rel))
		}
	}
	return dirs, nil
}

// MemoryUsage returns the memory charged to the tree rel (cgroup v1 memory
// controller, which counts page cache too), or 0 if it cannot be read.
func MemoryUsage(rel string) uint64 {
	for _, f := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		for _, name := range []string{"memory.usage_in_bytes", "memory.current"} {
			b, err := os.ReadFile(filepath.Join(f, rel, name))
			if err != nil {
				continue
			}
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				return n
			}
		}
	}
	return 0
}

func inherit(parent, dir, name string) error {
	cur, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || strings.TrimSpace(string(cur)) != "" {
		return nil // not a cpuset hierarchy, or already set
	}
	v, err := os.ReadFile(filepath.Join(parent, name))
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(parent, name), err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), v, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}
