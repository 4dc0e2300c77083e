package netns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSetupTeardown(t *testing.T) {
	if testing.Short() {
		t.Skip("changes the host's network and cgroups; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root; run as root or with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Slot 62 of the local cluster layout, unlikely to be in use.
	c := Config{
		Name:     "gmini-netns-test",
		HostLink: "gminitest",
		HostAddr: netip.MustParsePrefix("198.18.0.249/30"),
		NodeAddr: netip.MustParsePrefix("198.18.0.250/30"),
		Routed:   []netip.Prefix{netip.MustParsePrefix("198.18.190.0/24")},
	}
	routeBefore := routeExists(ctx, TestNet)
	if err := Setup(ctx, c); err != nil {
		_ = Teardown(ctx, c)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Teardown(context.Background(), c); err != nil {
			t.Error(err)
		}
	})
	if err := Setup(ctx, c); err == nil {
		t.Error("second Setup with the same name succeeded")
	}
	if out, _ := exec.Command("ip", "route", "show", "exact", TestNet.String()).Output(); !strings.HasPrefix(string(out), "blackhole") {
		t.Errorf("host route for %s = %q, want a blackhole", TestNet, out)
	}

	// From inside the namespace, the host's end of the veth answers.
	ln, err := net.Listen("tcp", net.JoinHostPort(c.HostAddr.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Write([]byte("hi"))
			conn.Close()
		}
	}()
	conn, err := Dialer(c.Name)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial host from namespace: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := conn.Read(buf); err != nil || string(buf) != "hi" {
		t.Errorf("read = %q, %v", buf, err)
	}
	if src := conn.LocalAddr().(*net.TCPAddr).IP.String(); src != c.NodeAddr.Addr().String() {
		t.Errorf("connection came from %s, want the node address %s", src, c.NodeAddr.Addr())
	}
	conn.Close()

	// Route lookups only, no packets: the namespace has no way out.
	tests := []struct {
		dst, want string
	}{
		{"192.0.2.1", "unreachable"},             // any outside address
		{"198.18.200.1", "invalid argument"},     // inside the test range but not ours: blackholed
		{c.HostAddr.Addr().String(), "dev eth0"}, // the host, through the veth
		{"127.0.0.1", "dev lo"},                  // loopback is up
	}
	for _, tt := range tests {
		out, _ := exec.Command("ip", "-n", c.Name, "route", "get", tt.dst).CombinedOutput()
		if !strings.Contains(strings.ToLower(string(out)), tt.want) {
			t.Errorf("route get %s in namespace = %q, want %q", tt.dst, out, tt.want)
		}
	}
	out, err := exec.Command("ip", "-n", c.Name, "link", "show", "lo").Output()
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("loopback not up: %s %v", out, err)
	}
	out, err = exec.Command("ip", "route", "show", "exact", "198.18.190.0/24").Output()
	if err != nil || !strings.Contains(string(out), "via "+c.NodeAddr.Addr().String()) {
		t.Errorf("host route to routed prefix = %q, %v", out, err)
	}

	if err := Teardown(ctx, c); err != nil {
		t.Fatal(err)
	}
	if Exists(c.Name) {
		t.Error("namespace left after Teardown")
	}
	if _, err := net.InterfaceByName(c.HostLink); err == nil {
		t.Error("host link left after Teardown")
	}
	if err := Teardown(ctx, c); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	// The host's route stays if it was there before, or while another
	// cluster's namespace relies on it.
	others, _ := filepath.Glob(Path("gmini-*"))
	switch after := routeExists(ctx, TestNet); {
	case routeBefore && !after:
		t.Errorf("Teardown removed the host's route for %s, which was there before Setup", TestNet)
	case !routeBefore && len(others) == 0 && after:
		t.Errorf("Teardown left the host's route for %s, which Setup added", TestNet)
	}
}

// TestRouteSharedByNamespaces checks that the host's blackhole route stays
// while any namespace relies on it and goes with the last, when Setup
// added it.
func TestRouteSharedByNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("changes the host's network; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root; run as root or with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Slots 60 and 61 of the local cluster layout, unlikely to be in use.
	a := Config{Name: "gmini-netns-test-a", HostLink: "gminitesta",
		HostAddr: netip.MustParsePrefix("198.18.0.241/30"), NodeAddr: netip.MustParsePrefix("198.18.0.242/30")}
	b := Config{Name: "gmini-netns-test-b", HostLink: "gminitestb",
		HostAddr: netip.MustParsePrefix("198.18.0.245/30"), NodeAddr: netip.MustParsePrefix("198.18.0.246/30")}
	others, _ := filepath.Glob(Path("gmini-*"))
	routeBefore := routeExists(ctx, TestNet)
	for _, c := range []Config{a, b} {
		if err := Setup(ctx, c); err != nil {
			_ = Teardown(ctx, c)
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Teardown(context.Background(), c) })
	}
	if err := Teardown(ctx, a); err != nil {
		t.Fatal(err)
	}
	if !routeExists(ctx, TestNet) {
		t.Fatalf("the route went with %s while %s still relies on it", a.Name, b.Name)
	}
	if err := Teardown(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, want := routeExists(ctx, TestNet), routeBefore || len(others) > 0; got != want {
		t.Errorf("route after the last Teardown: %v, want %v (there before: %v, other namespaces: %v)", got, want, routeBefore, others)
	}
}
