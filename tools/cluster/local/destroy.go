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
	"github.com/gmini-dev/gmini/tools/internal/logtail"
)

// kubeletChains are made by the kubelet itself; kube-proxy --cleanup
// leaves them.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

// Destroy stops the cluster and removes everything it made on the machine
// except the run directory's logs. What clusters share (the host's
// blackhole route for 198.18.0.0/15, containerd's k8s.io cgroups) goes
// with the last cluster, and only if a cluster made it. It works from the
// state file alone, so another process can call it, and it is idempotent:
// a second call, or a call after a crash half-way through Create or
// Destroy, finishes the job.
//
// It is Create's actions undone in reverse order. So the kubelet stops
// before the apiserver and containerd, and restarts no pods while they go
// down; kube-router before the kubelet, and rewrites no rule while the
// kubelet's are removed; etcd last, so the apiserver shuts down cleanly.
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
	t := &teardown{c: c, st: st, t0: time.Now()}
	acts := actions()
	for i := len(acts) - 1; i >= 0; i-- {
		if acts[i].undo != nil {
			acts[i].undo(ctx, t)
		}
	}
	t.note(unmountUnder(p.RunDir))
	c.log.Info("processes, network, mounts and cgroups removed", "cluster", p.Name, "elapsed", t.elapsed())

	if err := errors.Join(t.errs...); err != nil {
		return fmt.Errorf("destroy cluster %s: %w", p.Name, err)
	}
	// Deleting data is only safe once nothing is mounted below it: a
	// leftover bind mount (a hostPath volume) would lead RemoveAll into
	// the host's files.
	if m, err := mountsUnder(p.RunDir); err != nil || len(m) > 0 {
		return fmt.Errorf("destroy cluster %s: still mounted under run directory, data kept: %v %v", p.Name, m, err)
	}
	for _, a := range acts {
		for _, o := range a.owns {
			t.note(os.RemoveAll(p.path(o)))
		}
	}
	if err := os.Remove(p.stateFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.note(err)
	}
	c.mu.Lock()
	c.rc = nil
	c.mu.Unlock()
	if err := errors.Join(t.errs...); err != nil {
		return fmt.Errorf("destroy cluster %s: %w", p.Name, err)
	}
	c.log.Info("cluster destroyed", "cluster", p.Name, "elapsed", t.elapsed(), "logs", p.logDir())
	return nil
}

// teardown is what the undo steps of Destroy share. A failed step does
// not stop the others: each removes what it can, and Destroy reports
// every failure.
type teardown struct {
	c    *Cluster
	st   *state
	t0   time.Time
	errs []error
}

func (t *teardown) note(err error) {
	if err != nil {
		t.errs = append(t.errs, err)
	}
}

func (t *teardown) elapsed() time.Duration { return time.Since(t.t0).Round(10 * time.Millisecond) }

// stop is the undo of starting comp: nothing if it was never started.
func (comp component) stop(ctx context.Context, t *teardown) {
	pr, ok := t.st.Components[comp.name]
	if !ok {
		return
	}
	if comp.beforeStop != nil && running(pr) {
		t.note(comp.beforeStop(ctx, t.st.Plan))
	}
	t.note(stopProc(ctx, pr, t.c.stopGrace))
	if comp.cleanup != nil {
		t.note(comp.cleanup(ctx, t.st))
	}
}

// tearDownNetwork undoes setUpNetwork once every component has stopped:
// first whatever is left in the cluster's cgroup (the shims, and any
// component whose record was lost), then the namespace and the cgroups.
func tearDownNetwork(ctx context.Context, t *teardown) {
	p := t.st.Plan
	t.note(killCgroup(ctx, p.Cgroup))
	t.note(netns.Teardown(ctx, netConfig(p)))
	if !netns.Exists(p.NetNS) {
		t.note(forgetOwner(p))
	}
	t.note(cgroups.Remove(p.Cgroup))
	t.note(releaseContainerdCgroup(p))
}

// inNamespace runs a clean-up inside the cluster's namespace if it is
// still there. Deleting the namespace drops its iptables rules too;
// cleaning them first keeps a namespace that cannot be deleted (still in
// use) from carrying the components' rules.
func inNamespace(p plan, clean func() error) error {
	if !netns.Exists(p.NetNS) {
		return nil
	}
	return clean()
}

// removeContainers removes, once containerd stopped, what its containers
// left. Pod containers live in cgroups containerd names /k8s.io/<id>,
// outside our tree, so they are found through runc's state in the run
// directory; that works even when containerd died.
func removeContainers(ctx context.Context, st *state) error {
	p := st.Plan
	ids := containerIDs(p)
	err := deleteContainers(ctx, p, ids)
	removeShimSockets(p, ids)
	return errors.Join(err, removeCNICache(p))
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
		return fmt.Errorf("list containerd tasks: %w: %s", err, oneLine(out, 3))
	}
	var errs []error
	for _, id := range strings.Fields(string(out)) {
		// "ttrpc: closed": the task's shim exited while it was being
		// deleted (seen destroying a node after the e2e benchmark);
		// deleteContainers removes whatever it left.
		if out, err := ctr("tasks", "delete", "--force", id); err != nil && !bytes.Contains(out, []byte("not found")) && !bytes.Contains(out, []byte("ttrpc: closed")) {
			errs = append(errs, fmt.Errorf("delete task %s: %w: %s", id, err, oneLine(out, 3)))
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
// removes its cgroups; releaseContainerdCgroup sees to their parent.
func deleteContainers(ctx context.Context, p plan, ids []string) error {
	var errs []error
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(runcRoot(p), id)); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "runc", "--root", runcRoot(p), "delete", "--force", id).CombinedOutput()
		if err != nil && !bytes.Contains(out, []byte("does not exist")) {
			errs = append(errs, fmt.Errorf("runc delete %s: %w: %s", id, err, oneLine(out, 2)))
		}
	}
	if mounts, err := cgroups.Mounts(); err == nil {
		for _, m := range mounts {
			for _, id := range ids {
				_ = os.Remove(filepath.Join(m, containerdCgroup, id)) // runc leaves some hierarchies behind
			}
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
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, oneLine(out, 2)))
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

// oneLine keeps the last n lines of a command's output, on one line, for
// an error that joins others.
func oneLine(out []byte, n int) string {
	return strings.Join(logtail.Lines(strings.TrimSpace(string(out)), n), " | ")
}
