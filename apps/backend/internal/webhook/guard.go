package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// The guard decides which addresses a delivery may connect to. It runs in
// the dialer (net.Dialer.Control), on the address being connected to, after
// name resolution: a name that resolves to an internal address (by
// misconfiguration, or DNS rebinding between a check and the connect) is
// refused at the connect itself.
//
// Some addresses are never reached: unspecified, "this network" (0/8),
// link-local (169.254/16, with the clouds' metadata endpoint
// 169.254.169.254, and fe80::/10), multicast and broadcast. Internal ones
// (loopback, private, shared, benchmark and documentation ranges, and the
// file's internalCIDRs) are refused unless the sink or allowNotify entry
// names them: its host is that IP literal, or its allowAddresses hold it.

// neverPrefixes are refused whatever the configuration names.
var neverPrefixes = prefixes(
	"0.0.0.0/8",          // "this network", and the unspecified address
	"169.254.0.0/16",     // link-local, the metadata endpoint among them
	"224.0.0.0/4",        // multicast
	"255.255.255.255/32", // broadcast
	"::/128",             // unspecified
	"fe80::/10",          // link-local
	"ff00::/8",           // multicast
)

// internalPrefixes are refused unless named.
var internalPrefixes = prefixes(
	"127.0.0.0/8",     // loopback
	"10.0.0.0/8",      // private
	"172.16.0.0/12",   // private
	"192.168.0.0/16",  // private
	"100.64.0.0/10",   // shared (carrier-grade NAT; some clusters' pod ranges)
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // documentation
	"198.18.0.0/15",   // benchmarking (this project's local clusters)
	"198.51.100.0/24", // documentation
	"203.0.113.0/24",  // documentation
	"240.0.0.0/4",     // reserved
	"::1/128",         // loopback
	"fc00::/7",        // unique local
	"64:ff9b::/96",    // NAT64: an IPv4 address behind it may be internal
	"64:ff9b:1::/48",  // local-use NAT64
	"2002::/16",       // 6to4: embeds an IPv4 address
	"2001:db8::/32",   // documentation
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func within(ip netip.Addr, ps []netip.Prefix) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// alwaysRefused says why ip can never be a target, or nil.
func alwaysRefused(ip netip.Addr) error {
	if p, ok := within(ip, neverPrefixes); ok {
		return fmt.Errorf("address %s (in %s) is never a webhook target: unspecified, link-local (the metadata endpoint among them), multicast or broadcast", ip, p)
	}
	return nil
}

// errRefused marks a connection the guard refused.
var errRefused = errors.New("refused by the webhook address guard")

// guard is one target's address policy.
type guard struct {
	// named are the internal addresses the target may reach.
	named []netip.Prefix
	// internal are the ranges refused unless named: internalPrefixes and
	// the file's internalCIDRs.
	internal []netip.Prefix
}

// newGuard makes the guard of a target whose URL or pattern names host:
// an IP literal host is named by itself, and allow lists more.
func newGuard(host string, allow []string, internalCIDRs []netip.Prefix) (guard, error) {
	g := guard{internal: append(append([]netip.Prefix{}, internalPrefixes...), internalCIDRs...)}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		g.named = append(g.named, netip.PrefixFrom(ip, ip.BitLen()))
	}
	for i, a := range allow {
		p, err := parsePrefix(a)
		if err != nil {
			return guard{}, fmt.Errorf("allowAddresses[%d]: %w", i, err)
		}
		if err := alwaysRefused(p.Addr()); err != nil {
			return guard{}, fmt.Errorf("allowAddresses[%d]: %w", i, err)
		}
		if o, ok := overlapsNever(p); ok {
			return guard{}, fmt.Errorf("allowAddresses[%d]: %s overlaps %s, which is never a webhook target", i, p, o)
		}
		g.named = append(g.named, p)
	}
	return g, nil
}

func overlapsNever(p netip.Prefix) (netip.Prefix, bool) {
	for _, n := range neverPrefixes {
		if n.Overlaps(p) {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// parsePrefix reads a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 ranges as IPv4", s)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR", s)
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// check says why connecting to ip is refused, or nil.
func (g guard) check(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if err := alwaysRefused(ip); err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	if p, ok := within(ip, g.internal); ok {
		if _, named := within(ip, g.named); !named {
			return fmt.Errorf("%w: address %s is internal (in %s); a sink or allowNotify entry reaches it only by naming it (an IP literal host, or allowAddresses)", errRefused, ip, p)
		}
	}
	return nil
}

// control is the dialer's hook: address is the resolved ip:port.
func (g guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read the address %q (%s)", errRefused, address, network)
	}
	return g.check(ap.Addr())
}
