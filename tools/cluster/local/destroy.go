package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// stopOrder stops the kubelet first so it restarts no pods while the rest
// goes down (kube-router before it, so it rewrites no rule while they are
// removed), and etcd last so the apiserver can shut down cleanly.
var stopOrder = []string{KubeRouter, Kubelet, KubeProxy, Scheduler, ControllerManager, APIServer, Containerd, Registry, Etcd}

// kubeletChains are made by the kubelet itself; kube-proxy --cleanup
// leaves them.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

// Destroy stops the cluster and removes everything it made on the machine
// except the run directory's logs and the host's blackhole route for
// 198.18.0.0/15 (harmless, shared by all clusters, and keeping it means a
// stray packet to that range can never leave). It works from the state
// file alone, so another process can call it, and it is idempotent: a
// second call, or a call after a crash half-way through Create or Destroy,
// finishes the job.
func (c *Cluster) Destroy(ctx context.Context) error {
	p, err := c.plan()
	if err != nil {
		return err
	}
	st, err := readState(p.stateFile())
	if err != nil {
		return err
	}
	if st == nil {
		// Create writes the state before it makes anything, so there is
		// nothing of ours to remove. A namespace of the same name would
		// belong to a cluster with another run directory: leave it.
		c.log.Info("no state file; nothing to destroy", "cluster", p.Name, "runDir", p.RunDir)
		return nil
	}
	p = st.Plan
	t0 := time.Now()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	for _, name := range stopOrder {
		if name == Containerd && running(st.Components[Containerd]) {
			note(deleteTasks(ctx, p))
		}
		note(stopProc(ctx, st.Components[name], c.stopGrace))
	}
	// Pod containers live in cgroups containerd names /k8s.io/<id>, outside
	// our tree, so they are found through runc's state in the run directory;
	// that works even when containerd died. Then the shims, which are in
	// our tree, and any component whose record was lost.
	ids := containerIDs(p)
	note(deleteContainers(ctx, p, ids))
	note(killCgroup(ctx, p.Cgroup))
	removeShimSockets(p, ids)
	c.log.Info("processes stopped", "cluster", p.Name, "elapsed", time.Since(t0).Round(10*time.Millisecond))

	// Deleting the namespace drops its iptables rules too; cleaning them
	// first keeps a namespace that cannot be deleted (still in use) from
	// carrying kube-proxy's and the kubelet's rules.
	if netns.Exists(p.NetNS) {
		if _, ok := st.Components[KubeProxy]; ok {
			argv := netns.Command(p.NetNS, st.KubeBinary, KubeProxy, "--cleanup")
			if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
				note(fmt.Errorf("kube-proxy --cleanup: %w: %s", err, lastLines(out, 5)))
			}
		}
		note(removeChains(ctx, p.NetNS))
		if _, ok := st.Components[KubeRouter]; ok {
			note(removeKubeRouterState(ctx, p.NetNS))
		}
	}
	note(unmountUnder(p.RunDir))
	note(netns.Teardown(ctx, netConfig(p)))
	note(cgroups.Remove(p.Cgroup))
	note(removeCNICache(p))
	c.log.Info("network, mounts and cgroups removed", "cluster", p.Name, "elapsed", time.Since(t0).Round(10*time.Millisecond))

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy cluster %s: %w", p.Name, err)
	}
	// Deleting data is only safe once nothing is mounted below it: a
	// leftover bind mount (a hostPath volume) would lead RemoveAll into
	// the host's files.
	if m, err := mountsUnder(p.RunDir); err != nil || len(m) > 0 {
		return fmt.Errorf("destroy cluster %s: still mounted under run directory, data kept: %v %v", p.Name, m, err)
	}
	for _, d := range []string{"containerd", "kubelet", "etcd", "cni", "pod-logs", "pki", "volumes", "registry"} {
		note(os.RemoveAll(p.path(d)))
	}
	for _, f := range []string{"kubeconfig", "kubelet.json", "kube-proxy.json", "state.json"} {
		if err := os.Remove(p.path(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			note(err)
		}
	}
	c.mu.Lock()
	c.rc = nil
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy cluster %s: %w", p.Name, err)
	}
	c.log.Info("cluster destroyed", "cluster", p.Name, "elapsed", time.Since(t0).Round(10*time.Millisecond), "logs", p.logDir())
	return nil
}

// deleteTasks asks containerd to kill and delete every task, so the shims
// exit cleanly and remove their sockets; killCgroup catches the rest.
func deleteTasks(ctx context.Context, p plan) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctr := func(args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, "ctr", append([]string{"--address", p.containerdSock(), "-n", "k8s.io"}, args...)...).CombinedOutput()
	}
	out, err := ctr("tasks", "ls", "-q")
	if err != nil {
		return fmt.Errorf("list containerd tasks: %w: %s", err, lastLines(out, 3))
	}
	var errs []error
	for _, id := range strings.Fields(string(out)) {
		// "ttrpc: closed": the task's shim exited while it was being
		// deleted (seen destroying a node after the e2e benchmark);
		// deleteContainers removes whatever it left.
		if out, err := ctr("tasks", "delete", "--force", id); err != nil && !bytes.Contains(out, []byte("not found")) && !bytes.Contains(out, []byte("ttrpc: closed")) {
			errs = append(errs, fmt.Errorf("delete task %s: %w: %s", id, err, lastLines(out, 3)))
		}
	}
	return errors.Join(errs...)
}

// runcRoot is where runc keeps the state of our containerd's containers.
func runcRoot(p plan) string { return p.path("containerd", "runc", "k8s.io") }

// containerIDs lists the containers our containerd made, from runc's state
// and the shims' bundle directories.
func containerIDs(p plan) []string {
	var ids []string
	for _, dir := range []string{runcRoot(p), p.path("containerd", "state", "io.containerd.runtime.v2.task", "k8s.io")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(ids, e.Name()) {
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

// deleteContainers kills every container runc knows in our runc root and
// removes its cgroups, then the /k8s.io parent cgroups if nothing else
// uses them.
func deleteContainers(ctx context.Context, p plan, ids []string) error {
	var errs []error
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(runcRoot(p), id)); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "runc", "--root", runcRoot(p), "delete", "--force", id).CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("does not exist")) {
			errs = append(errs, fmt.Errorf("runc delete %s: %w: %s", id, err, lastLines(out, 2)))
		}
	}
	if mounts, err := cgroups.Mounts(); err == nil {
		for _, m := range mounts {
			for _, id := range ids {
				_ = os.Remove(filepath.Join(m, "k8s.io", id)) // runc leaves some hierarchies behind
			}
			_ = os.Remove(filepath.Join(m, "k8s.io")) // fails, as it should, while another containerd uses it
		}
	}
	return errors.Join(errs...)
}

// removeShimSockets removes the sockets of shims that were killed instead
// of shutting down. containerd 1.6 puts them in /run/containerd/s, named by
// the SHA-256 of <containerd address>/<namespace>/<id>.
func removeShimSockets(p plan, ids []string) {
	for _, id := range ids {
		sum := sha256.Sum256([]byte(filepath.Join(p.containerdSock(), "k8s.io", id)))
		_ = os.Remove(filepath.Join("/run/containerd/s", hex.EncodeToString(sum[:])))
	}
}

// killCgroup SIGKILLs every process in the cluster's cgroup tree until it
// is empty.
func killCgroup(ctx context.Context, rel string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := cgroups.Procs(rel)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("processes %v still in cgroup %s", pids, rel)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeChains deletes the kubelet's own chains, and every rule jumping to
// them, in the namespace's IPv4 and IPv6 tables.
func removeChains(ctx context.Context, ns string) error {
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		cmd := netns.Command(ns, bin+"-save")
		out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-save in %s: %w", bin, ns, err))
			continue
		}
		for _, args := range chainCleanup(string(out)) {
			cmd := netns.Command(ns, bin, args...)
			if out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, lastLines(out, 2)))
			}
		}
	}
	return errors.Join(errs...)
}

// chainCleanup turns iptables-save output into the iptables arguments that
// delete the rules referring to kubeletChains and then the chains.
func chainCleanup(save string) [][]string {
	var rules, chains [][]string
	table := ""
	s := bufio.NewScanner(strings.NewReader(save))
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if slices.Contains(kubeletChains, name) {
				chains = append(chains, []string{"-t", table, "-F", name}, []string{"-t", table, "-X", name})
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			target := ""
			for i := range f {
				if (f[i] == "-j" || f[i] == "-g") && i+1 < len(f) {
					target = f[i+1]
				}
			}
			if slices.Contains(kubeletChains, target) && !slices.Contains(kubeletChains, f[1]) {
				// Splitting on spaces is enough: the rules that jump to
				// these chains carry no quoted comments.
				rules = append(rules, append([]string{"-t", table, "-D"}, f[1:]...))
			}
		}
	}
	return append(rules, chains...)
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var out []string
	for _, m := range infos {
		if m.Mountpoint != filepath.Clean(dir) {
			out = append(out, m.Mountpoint)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

// unmountUnder lazily unmounts everything below dir, deepest first,
// repeating for stacked mounts.
func unmountUnder(dir string) error {
	for range 10 {
		mps, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	mps, _ := mountsUnder(dir)
	return fmt.Errorf("still mounted after 10 rounds: %v", mps)
}

// removeCNICache removes libcni's result cache for our pods: containerd
// 1.6 keeps it in /var/lib/cni/results, outside the run directory, named
// <network>-<sandbox>-eth0 for our bridge and cni-loopback-<sandbox>-lo for
// its built-in loopback network.
func removeCNICache(p plan) error {
	matches, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", p.CNINetwork+"-*"))
	for _, d := range []string{"state", "root"} {
		sandboxes, _ := os.ReadDir(p.path("containerd", d, "io.containerd.grpc.v1.cri", "sandboxes"))
		for _, sb := range sandboxes {
			matches = append(matches, filepath.Join("/var/lib/cni/results", "cni-loopback-"+sb.Name()+"-lo"))
		}
	}
	var errs []error
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
