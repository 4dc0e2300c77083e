// Package netns gives a local cluster its own network namespace, joined to
// the host by a veth pair, so the cluster's ports, iptables rules, bridge and
// pod traffic never touch the host's network stack.
//
// The namespace has no default route: the only routes inside it are the veth
// link, the pod bridge and a blackhole for 198.18.0.0/15. Whatever runs in
// it can reach loopback and the addresses this package sets up, and nothing
// else, which is what keeps image pulls and DNS lookups from leaving the
// machine even if a component is misconfigured.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gmini-dev/gmini/tools/cluster/local/hostref"
)

// TestNet is the range reserved for network benchmarks (RFC 2544). Every
// address a cluster uses lies inside it, and a blackhole route for the whole
// range keeps any of it from being routed off the machine.
var TestNet = netip.MustParsePrefix("198.18.0.0/15")

// Config describes one namespace and its link to the host.
type Config struct {
	// Name of the namespace, as shown by `ip netns`.
	Name string
	// HostLink is the host end of the veth pair; the other end is eth0
	// inside the namespace.
	HostLink string
	// HostAddr and NodeAddr are the two ends of the veth pair, in one
	// small prefix.
	HostAddr, NodeAddr netip.Prefix
	// Routed are prefixes the host reaches through NodeAddr (pods,
	// services).
	Routed []netip.Prefix
}

// Path is where `ip netns add` bind-mounts the namespace.
func Path(name string) string { return filepath.Join("/run/netns", name) }

// Exists reports whether the namespace is there.
func Exists(name string) bool {
	_, err := os.Stat(Path(name))
	return err == nil
}

// Setup makes the namespace, the veth pair, addresses and routes. It fails if
// the namespace or the host link already exists, because that means another
// cluster uses them.
func Setup(ctx context.Context, c Config) error {
	if Exists(c.Name) {
		return fmt.Errorf("network namespace %s already exists", c.Name)
	}
	if _, err := net.InterfaceByName(c.HostLink); err == nil {
		return fmt.Errorf("host link %s already exists (another cluster with the same subnet index?)", c.HostLink)
	}
	if err := run(ctx, "ip", "netns", "add", c.Name); err != nil {
		return err
	}
	// After the namespace exists, so that a Teardown of another cluster
	// running meanwhile counts this one as a user of the route.
	if err := holdRoute(ctx, c.Name); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "link", "add", c.HostLink, "type", "veth", "peer", "name", "eth0", "netns", c.Name},
		{"ip", "addr", "add", c.HostAddr.String(), "dev", c.HostLink},
		{"ip", "link", "set", c.HostLink, "up"},
		{"ip", "-n", c.Name, "link", "set", "lo", "up"},
		{"ip", "-n", c.Name, "addr", "add", c.NodeAddr.String(), "dev", "eth0"},
		{"ip", "-n", c.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", c.Name, "route", "add", "blackhole", TestNet.String()},
	}
	for _, p := range c.Routed {
		steps = append(steps, []string{"ip", "route", "replace", p.String(), "via", c.NodeAddr.Addr().String(), "dev", c.HostLink})
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return err
		}
	}
	// Forwarding between the veth and the pod bridge, and iptables on
	// bridged traffic so a pod reaching another pod through a Service gets
	// its reply un-NATed. Both sysctls are per namespace.
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if err := run(ctx, Command(c.Name, "sysctl", "-q", "-w", s)...); err != nil {
			return err
		}
	}
	return nil
}

// Teardown removes what Setup made. The host's blackhole route goes with
// the last namespace that relies on it, and only if Setup added it. It is
// idempotent.
func Teardown(ctx context.Context, c Config) error {
	var errs []error
	for _, p := range c.Routed {
		if routeExists(ctx, p) {
			errs = append(errs, run(ctx, "ip", "route", "del", p.String()))
		}
	}
	// Deleting the namespace deletes the veth pair with it, but a pair
	// whose peer was never moved in would stay: remove it explicitly.
	if _, err := net.InterfaceByName(c.HostLink); err == nil {
		errs = append(errs, run(ctx, "ip", "link", "del", c.HostLink))
	}
	if Exists(c.Name) {
		errs = append(errs, run(ctx, "ip", "netns", "del", c.Name))
	}
	// A namespace that could not be deleted may still route pods' traffic:
	// it keeps the route.
	if !Exists(c.Name) {
		errs = append(errs, releaseRoute(ctx, c.Name))
	}
	return errors.Join(errs...)
}

// routeRecord names the blackhole route in the host records.
const routeRecord = "blackhole-route"

// holdRoute makes sure the host blackholes TestNet, and records that ns
// relies on it. A route that was there before the first namespace is
// left as it is, and one that is not a blackhole is not replaced: it is
// not ours to change.
func holdRoute(ctx context.Context, ns string) error {
	return hostref.Update(hostref.Dir, func(tx *hostref.Tx) error {
		out, err := exec.CommandContext(ctx, "ip", "route", "show", "exact", TestNet.String()).Output()
		if err != nil {
			return fmt.Errorf("ip route show exact %s: %w", TestNet, err)
		}
		route := strings.TrimSpace(string(out))
		if route != "" && !strings.HasPrefix(route, "blackhole ") {
			return fmt.Errorf("the host routes %s elsewhere (%q): refusing to replace the route, as this range must not leave the machine", TestNet, route)
		}
		add, err := tx.Acquire(routeRecord, ns, route != "")
		if err != nil || !add {
			return err
		}
		return run(ctx, "ip", "route", "add", "blackhole", TestNet.String())
	})
}

// releaseRoute forgets that ns relies on the route, and removes the route
// when Setup added it and no namespace relies on it any more.
func releaseRoute(ctx context.Context, ns string) error {
	return hostref.Update(hostref.Dir, func(tx *hostref.Tx) error {
		remove, err := tx.Release(routeRecord, ns, Exists)
		if err != nil || !remove || !routeExists(ctx, TestNet) {
			return err
		}
		return run(ctx, "ip", "route", "del", "blackhole", TestNet.String())
	})
}

// Command returns argv that runs name inside the namespace. nsenter joins only
// the network namespace; `ip netns exec` would also remount /sys, hiding
// the cgroup mounts the kubelet and runc need.
func Command(ns, name string, args ...string) []string {
	return append([]string{"nsenter", "--net=" + Path(ns), "--", name}, args...)
}

// Dialer returns a DialContext that opens connections from inside the
// namespace, so the host process can reach listeners bound to the
// namespace's loopback (etcd, health ports) without exposing them.
func Dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			c, err := dialIn(ctx, ns, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// dialIn runs on its own goroutine locked to an OS thread: a socket belongs
// to the namespace of the thread that creates it, and keeps it afterwards.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(Path(ns))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	var d net.Dialer
	c, dialErr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime then ends it with the
		// goroutine instead of reusing a thread in the wrong namespace.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("return from network namespace %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	return c, dialErr
}

func routeExists(ctx context.Context, p netip.Prefix) bool {
	out, err := exec.CommandContext(ctx, "ip", "route", "show", "exact", p.String()).Output()
	return err == nil && len(bytes.TrimSpace(out)) > 0
}

func run(ctx context.Context, argv ...string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
