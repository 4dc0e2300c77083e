package dockerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
)

// Stop stops the engine Start started, with its containers, and removes
// what it left on the machine: processes, mounts under its directory, its
// bridges, its iptables chains and the rules that jump to them, its
// cgroups, its socket. An engine it did not start (one that answered
// already) is left alone. The data root stays: it caches the images
// loaded into the engine (make clean removes it).
func (e *Engine) Stop(ctx context.Context) error {
	st, err := e.readState()
	if err != nil {
		return err
	}
	if st == nil {
		e.Log.Debug("no engine of the project's was started here", "dir", e.Dir)
		return nil
	}
	start := time.Now()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if alive(st.PID) {
		e.Log.Info("stopping the project's Docker engine", "pid", st.PID)
		e.removeContainers(ctx)
		note(stopProcess(st.PID, 30*time.Second))
	}
	// dockerd's containerd, its shims and port proxies, and whatever ran
	// in the containers, if the engine died without stopping them.
	note(e.killLeftovers())
	note(unmountUnder(e.Dir))
	links, err := e.links()
	note(err)
	for _, l := range links {
		if out, err := exec.Command("ip", "link", "delete", l).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
			note(fmt.Errorf("ip link delete %s: %w: %s", l, err, out))
		}
	}
	note(removeRules(ctx, links))
	note(cgroups.Remove(CgroupParent))
	if fi, err := os.Lstat(Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		note(os.Remove(Socket))
	}
	for _, p := range st.Made {
		note(os.RemoveAll(p))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop the project's Docker engine: %w", err)
	}
	for _, f := range []string{e.stateFile(), e.pidFile()} {
		_ = os.Remove(f)
	}
	_ = os.RemoveAll(e.execRoot())
	e.Log.Info("the project's Docker engine is stopped and its traces removed", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// removeContainers deletes every container of the engine (all of them are
// the project's: the data root is its own), so it stops with nothing to
// wait for.
func (e *Engine) removeContainers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq").Output()
	if err != nil {
		return
	}
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		e.Log.Info("removing the engine's containers", "count", len(ids))
		_ = exec.CommandContext(ctx, "docker", append([]string{"rm", "-f", "-v"}, ids...)...).Run()
	}
}

func stopProcess(pid int, grace time.Duration) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) || zombie(pid) {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	if alive(pid) && !zombie(pid) {
		return fmt.Errorf("dockerd (pid %d) did not stop", pid)
	}
	return nil
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(data), ") ")
	return strings.HasPrefix(rest, "Z")
}

// killLeftovers kills processes of the engine: those whose command line
// names its directory (containerd, shims), its port proxies (docker-proxy
// to a container address in Range), and those in its cgroups.
func (e *Engine) killLeftovers() error {
	pids, err := cgroups.Procs(CgroupParent)
	if err != nil {
		return err
	}
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if ours(strings.Split(strings.TrimRight(string(data), "\x00"), "\x00"), e.Dir) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for range 50 {
		if !slices.ContainsFunc(pids, func(p int) bool { return alive(p) && !zombie(p) }) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes of the engine still run: %v", pids)
}

// ours tells a process of the engine by its arguments.
func ours(args []string, dir string) bool {
	if len(args) == 0 || args[0] == "" {
		return false
	}
	name := filepath.Base(args[0])
	if strings.HasPrefix(name, "containerd") || name == "dockerd" {
		return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, dir+"/") || a == dir })
	}
	if name == "docker-proxy" {
		for i, a := range args {
			if a == "-container-ip" && i+1 < len(args) {
				ip, err := netip.ParseAddr(args[i+1])
				return err == nil && netip.MustParsePrefix(Range).Contains(ip)
			}
		}
	}
	return false
}

// links are the engine's bridges: Bridge, and the bridges of its networks
// (br-<id>) whose address lies in Range.
func (e *Engine) links() ([]string, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip addr: %w", err)
	}
	links := ourLinks(string(out))
	// The bridge Start makes may not have its address yet.
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil && !slices.Contains(links, Bridge) {
		links = append(links, Bridge)
	}
	return links, nil
}

// ourLinks picks the engine's bridges from `ip -4 -o addr show`.
func ourLinks(ipAddr string) []string {
	rng := netip.MustParsePrefix(Range)
	var out []string
	s := bufio.NewScanner(strings.NewReader(ipAddr))
	for s.Scan() {
		f := strings.Fields(s.Text())
		// 5: br-1a2b3c inet 198.18.96.1/24 brd ... scope global br-1a2b3c
		if len(f) < 4 || f[2] != "inet" {
			continue
		}
		name := f[1]
		p, err := netip.ParsePrefix(f[3])
		if err != nil || !rng.Contains(p.Addr()) {
			continue
		}
		if (name == Bridge || strings.HasPrefix(name, "br-")) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// removeRules deletes the engine's iptables rules (IPv4; it makes no IPv6
// ones): its DOCKER* chains, and the rules elsewhere that jump to them or
// name its bridges or its range.
func removeRules(ctx context.Context, links []string) error {
	out, err := exec.CommandContext(ctx, "iptables-save").Output()
	if err != nil {
		return fmt.Errorf("iptables-save: %w", err)
	}
	var errs []error
	for _, args := range ruleCleanup(string(out), links) {
		if out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// ruleCleanup turns iptables-save output into the iptables arguments that
// remove the engine's rules, then its chains.
func ruleCleanup(save string, links []string) [][]string {
	ourChain := func(c string) bool { return strings.HasPrefix(c, "DOCKER") }
	rng := netip.MustParsePrefix(Range)
	mentionsOurs := func(f []string) bool {
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "-j", "-g":
				if ourChain(f[i+1]) {
					return true
				}
			case "-i", "-o":
				if slices.Contains(links, f[i+1]) || f[i+1] == Bridge {
					return true
				}
			case "-s", "-d":
				if p, err := netip.ParsePrefix(f[i+1]); err == nil && rng.Overlaps(p) && p.Bits() >= rng.Bits() {
					return true
				}
			}
		}
		return false
	}
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
			if ourChain(name) {
				chains = append(chains, []string{"-t", table, "-F", name})
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if !ourChain(f[1]) && mentionsOurs(f) {
				// The engine's rules carry no quoted comments, so
				// splitting on spaces gives the arguments back.
				rules = append(rules, append([]string{"-t", table, "-D"}, f[1:]...))
			}
		}
	}
	// Flush every chain first: they refer to each other.
	var del [][]string
	for _, c := range chains {
		del = append(del, []string{"-t", c[1], "-X", c[3]})
	}
	return append(append(rules, chains...), del...)
}

// unmountUnder lazily unmounts everything below dir, deepest first,
// repeating for stacked mounts.
func unmountUnder(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for range 10 {
		infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(abs))
		if err != nil {
			return fmt.Errorf("read mountinfo: %w", err)
		}
		if len(infos) == 0 {
			return nil
		}
		slices.SortFunc(infos, func(a, b *mountinfo.Info) int {
			return strings.Count(b.Mountpoint, "/") - strings.Count(a.Mountpoint, "/")
		})
		for _, m := range infos {
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m.Mountpoint, err)
			}
		}
	}
	return fmt.Errorf("mounts under %s remain after 10 rounds", dir)
}
