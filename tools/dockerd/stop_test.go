package dockerd

import (
	"slices"
	"strings"
	"testing"
)

func TestOurLinks(t *testing.T) {
	t.Parallel()
	ipAddr := `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\       valid_lft forever preferred_lft forever
5: gmini63    inet 198.18.0.253/30 brd 198.18.0.255 scope global gmini63\       valid_lft forever preferred_lft forever
7: gminidock0    inet 198.18.64.1/24 brd 198.18.64.255 scope global gminidock0\       valid_lft forever preferred_lft forever
9: br-0a1b2c3d4e5f    inet 198.18.96.1/24 brd 198.18.96.255 scope global br-0a1b2c3d4e5f\       valid_lft forever preferred_lft forever
11: br-ffffffffffff    inet 172.18.0.1/16 brd 172.18.255.255 scope global br-ffffffffffff\       valid_lft forever preferred_lft forever
`
	want := []string{"gminidock0", "br-0a1b2c3d4e5f"}
	if got := ourLinks(ipAddr); !slices.Equal(got, want) {
		t.Errorf("ourLinks = %v, want %v (never the local node's link, never another engine's bridge)", got, want)
	}
}

func TestOurs(t *testing.T) {
	t.Parallel()
	dir := "/w/_output/docker"
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"dockerd", "--config-file", dir + "/daemon.json"}, true},
		{[]string{"containerd", "--config", dir + "/run/containerd/containerd.toml"}, true},
		{[]string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-address", dir + "/run/containerd/containerd.sock"}, true},
		{[]string{"/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", "32768", "-container-ip", "198.18.96.3", "-container-port", "5000"}, true},
		{[]string{"/usr/sbin/docker-proxy", "-container-ip", "172.17.0.2"}, false},
		// The local node's containerd, another engine: not ours.
		{[]string{"containerd", "--config", "/w/_output/cluster/gmini-e2e/containerd/config.toml"}, false},
		{[]string{"dockerd", "-H", "fd://"}, false},
		{[]string{"sleep", dir}, false},
		{nil, false},
	} {
		if got := ours(tt.args, dir); got != tt.want {
			t.Errorf("ours(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}

// TestRuleCleanup: the engine's chains and the rules that lead to them or
// name its bridges go; the local node's, kube-router's and the host's
// rules stay.
func TestRuleCleanup(t *testing.T) {
	t.Parallel()
	save := `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 198.18.128.0/24 -j MASQUERADE
-A DOCKER -i gminidock0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-USER - [0:0]
:KUBE-ROUTER-FORWARD - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o gminidock0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i br-0a1b2c3d4e5f ! -o br-0a1b2c3d4e5f -j ACCEPT
-A FORWARD -j KUBE-ROUTER-FORWARD
-A FORWARD -d 198.18.0.0/15 -j ACCEPT
-A DOCKER-USER -s 198.18.64.0/18 ! -d 198.18.0.0/15 -j DROP
COMMIT
`
	got := ruleCleanup(save, []string{"gminidock0", "br-0a1b2c3d4e5f"})
	var lines []string
	for _, a := range got {
		lines = append(lines, strings.Join(a, " "))
	}
	want := []string{
		"-t nat -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
		"-t nat -D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
		"-t filter -D FORWARD -j DOCKER-USER",
		"-t filter -D FORWARD -j DOCKER-ISOLATION-STAGE-1",
		"-t filter -D FORWARD -o gminidock0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-t filter -D FORWARD -i br-0a1b2c3d4e5f ! -o br-0a1b2c3d4e5f -j ACCEPT",
		"-t nat -F DOCKER",
		"-t filter -F DOCKER",
		"-t filter -F DOCKER-ISOLATION-STAGE-1",
		"-t filter -F DOCKER-USER",
		"-t nat -X DOCKER",
		"-t filter -X DOCKER",
		"-t filter -X DOCKER-ISOLATION-STAGE-1",
		"-t filter -X DOCKER-USER",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("ruleCleanup =\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
