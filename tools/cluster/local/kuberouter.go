package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
)

// kubeRouter enforces NetworkPolicy: kube-router v2.1.0 with only its
// firewall controller, a host process in the node's namespace like the
// other components. It turns each policy into iptables chains and ipsets
// there; pods reach each other over the CNI bridge, whose traffic passes
// iptables only because bridge-nf-call-iptables is 1 in the namespace.
// Test-only infrastructure: security flaws are reported for v2.1.0, the
// only version the Go module proxy serves.
var kubeRouter = component{
	name: KubeRouter,
	node: true,
	cleanup: func(ctx context.Context, st *state) error {
		return inNamespace(st.Plan, func() error { return removeKubeRouterState(ctx, st.Plan.NetNS) })
	},
	// kube-router looks its node up by $NODE_NAME, then by the machine's
	// host name, and only then by --hostname-override; the host name
	// could name another node.
	prefix: func(b *boot) []string {
		return []string{"env", "NODE_NAME=" + NodeName, b.c.kubeRouterBin}
	},
	configure: func(b *boot) error {
		return checkBridgeNetfilter(b.p)
	},
	args: func(b *boot) []string {
		return []string{
			"--kubeconfig=" + b.files["kube-router.kubeconfig"],
			"--run-firewall=true",
			"--run-router=false",
			"--run-service-proxy=false",
			"--run-loadbalancer=false",
			"--hostname-override=" + NodeName,
			// Its INPUT chain lets pods reach ClusterIPs that are local
			// addresses (IPVS); with kube-proxy's iptables mode the policy
			// sees the endpoint after DNAT instead.
			"--service-cluster-ip-range=" + b.p.ServiceCIDR,
			// The health port would serve net/http/pprof on every address
			// of the namespace; metrics are off by default.
			"--health-port=0",
			"--metrics-port=0",
			// Policy, pod and namespace events sync at once; this is the
			// full resync that repairs rules someone else changed.
			"--iptables-sync-period=1m",
			"--cache-sync-timeout=1m",
			"--v=1",
		}
	},
	readyDesc: "network policy engine ready",
	explain:   []string{APIServer},
	// Ready once its chains are hooked into the filter table: from then
	// on every pod's traffic passes its policies.
	ready: func(ctx context.Context, c *Cluster, p plan) error {
		return c.poll(ctx, KubeRouter, func(ctx context.Context) (bool, string, error) {
			cmd := netns.Command(p.NetNS, "iptables", "-w", "-t", "filter", "-S", "FORWARD")
			out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
			if err != nil {
				return false, strings.TrimSpace(string(out)), nil
			}
			if !strings.Contains(string(out), "-j "+kubeRouterChainPrefix+"FORWARD") {
				return false, "no jump to " + kubeRouterChainPrefix + "FORWARD in FORWARD yet", nil
			}
			return true, "", nil
		})
	},
}

// kubeRouterUser is the identity of kube-router's client certificate;
// grantKubeRouter gives it what its informers read.
const kubeRouterUser = "gmini:kube-router"

// kubeRouterChainPrefix starts the names of its three top-level chains
// (KUBE-ROUTER-INPUT, -FORWARD, -OUTPUT).
const kubeRouterChainPrefix = "KUBE-ROUTER-"

// grantKubeRouter lets kube-router's user read what its firewall watches:
// it starts informers on pods, namespaces, nodes, services, endpoints,
// endpointslices and networkpolicies even with only the firewall enabled,
// and gives up when they do not sync within --cache-sync-timeout.
func grantKubeRouter(ctx context.Context, b *boot) error {
	if b.c.kubeRouterBin == "" {
		return nil
	}
	cs, err := adminClient(b.p)
	if err != nil {
		return err
	}
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: kubeRouterUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "nodes", "services", "endpoints"}, Verbs: read},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: kubeRouterUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kubeRouterUser}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role %s: %w", role.Name, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role binding %s: %w", binding.Name, err)
	}
	return nil
}

// checkBridgeNetfilter refuses to start the engine where it would enforce
// nothing: pods on the same bridge talk without passing iptables unless
// net.bridge.bridge-nf-call-iptables is 1 in the node's namespace (the
// sysctl is per namespace; netns.Setup sets it).
func checkBridgeNetfilter(p plan) error {
	cmd := netns.Command(p.NetNS, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables")
	out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("read net.bridge.bridge-nf-call-iptables in %s (br_netfilter missing?): %w: %s", p.NetNS, err, strings.TrimSpace(string(out)))
	}
	if v := strings.TrimSpace(string(out)); v != "1" {
		return fmt.Errorf("net.bridge.bridge-nf-call-iptables is %s in %s: traffic between pods would bypass every NetworkPolicy", v, p.NetNS)
	}
	return nil
}

// removeKubeRouterState deletes what kube-router's firewall made in the
// namespace: the jumps from INPUT, FORWARD and OUTPUT, its chains and its
// ipsets. Its own --cleanup-config (v2.1.0) removes none of it, because it
// cleans up through an empty controller, and then panics; stopping it
// leaves everything in place.
func removeKubeRouterState(ctx context.Context, ns string) error {
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		cmd := netns.Command(ns, bin+"-save", "-t", "filter")
		out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-save in %s: %w", bin, ns, err))
			continue
		}
		for _, args := range kubeRouterCleanup(string(out)) {
			cmd := netns.Command(ns, bin, append([]string{"-w", "-t", "filter"}, args...)...)
			if out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, oneLine(out, 2)))
			}
		}
	}
	cmd := netns.Command(ns, "ipset", "list", "-n")
	out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ipset list in %s: %w: %s", ns, err, oneLine(out, 2)))...)
	}
	for _, set := range kubeRouterSets(string(out)) {
		cmd := netns.Command(ns, "ipset", "destroy", set)
		if out, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ipset destroy %s: %w: %s", set, err, oneLine(out, 2)))
		}
	}
	return errors.Join(errs...)
}

// isKubeRouterChain tells kube-router's netpol chains from kube-proxy's and
// the kubelet's, which also start with KUBE-.
func isKubeRouterChain(name string) bool {
	switch name {
	case kubeRouterChainPrefix + "INPUT", kubeRouterChainPrefix + "FORWARD", kubeRouterChainPrefix + "OUTPUT":
		return true
	}
	return strings.HasPrefix(name, "KUBE-POD-FW-") || strings.HasPrefix(name, "KUBE-NWPLCY-")
}

// kubeRouterCleanup turns the filter table of iptables-save into the
// iptables arguments that remove kube-router's rules: the jumps from the
// built-in chains by number (their quoted comments make rule specs awkward
// to repeat), last first so the numbers stay valid, then its chains, all
// flushed before any is deleted since they jump to one another.
func kubeRouterCleanup(save string) [][]string {
	var jumps, flush, remove [][]string
	pos := map[string]int{}
	s := bufio.NewScanner(strings.NewReader(save))
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if isKubeRouterChain(name) {
				flush = append(flush, []string{"-F", name})
				remove = append(remove, []string{"-X", name})
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			chain := f[1]
			pos[chain]++
			if !slices.Contains([]string{"INPUT", "FORWARD", "OUTPUT"}, chain) {
				continue
			}
			for i := range f {
				if (f[i] == "-j" || f[i] == "-g") && i+1 < len(f) && isKubeRouterChain(f[i+1]) {
					jumps = append(jumps, []string{"-D", chain, strconv.Itoa(pos[chain])})
				}
			}
		}
	}
	slices.Reverse(jumps)
	return slices.Concat(jumps, flush, remove)
}

// kubeRouterSets picks kube-router's sets from `ipset list -n`: KUBE-SRC-*
// and KUBE-DST-* for the pods and blocks a policy selects, with an
// "inet6:" prefix for IPv6, and the TMP-* sets it swaps them with, which
// outlive a kube-router killed half-way through an update.
func kubeRouterSets(list string) []string {
	var sets []string
	for _, name := range strings.Fields(list) {
		base := strings.TrimPrefix(name, "inet6:")
		if strings.HasPrefix(base, "KUBE-SRC-") || strings.HasPrefix(base, "KUBE-DST-") || strings.HasPrefix(base, "TMP-") {
			sets = append(sets, name)
		}
	}
	return sets
}
