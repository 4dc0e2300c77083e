package manifests

import (
	"fmt"
	"net/netip"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// These tests read the rendered NetworkPolicies as an engine would: for a
// pod and a peer, is the connection allowed? The e2e suite proves the same
// against a real engine (kube-router on the local node, kindnet on kind).

// endpoint is one side of a connection: a pod (labels set) or an address
// outside the cluster's pods.
type endpoint struct {
	namespace string            // "" for an address that is no pod
	nsLabels  map[string]string // the namespace's labels
	labels    map[string]string // the pod's labels
	ip        string
}

func (e endpoint) isPod() bool { return e.namespace != "" }

// allowed says whether policies let pod (which they may select) send to
// (egress) or receive from (ingress) peer on port/proto, with
// NetworkPolicy's rules: a pod no policy of that direction selects is
// open; otherwise some rule of a selecting policy must match both the
// peer and the port.
func allowed(t *testing.T, policies []*networkingv1.NetworkPolicy, dir networkingv1.PolicyType, pod, peer endpoint, proto corev1.Protocol, port int32) bool {
	t.Helper()
	selected := false
	for _, np := range policies {
		if np.Namespace != pod.namespace || !matches(t, &np.Spec.PodSelector, pod.labels) || !hasType(np, dir) {
			continue
		}
		selected = true
		type rule struct {
			peers []networkingv1.NetworkPolicyPeer
			ports []networkingv1.NetworkPolicyPort
		}
		var rules []rule
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				rules = append(rules, rule{r.From, r.Ports})
			}
		} else {
			for _, r := range np.Spec.Egress {
				rules = append(rules, rule{r.To, r.Ports})
			}
		}
		for _, r := range rules {
			if peerMatches(t, np.Namespace, r.peers, peer) && portMatches(r.ports, proto, port) {
				return true
			}
		}
	}
	return !selected
}

func hasType(np *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	for _, pt := range np.Spec.PolicyTypes {
		if pt == dir {
			return true
		}
	}
	return false
}

func matches(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(set))
}

func peerMatches(t *testing.T, policyNS string, peers []networkingv1.NetworkPolicyPeer, peer endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		switch {
		case p.IPBlock != nil:
			if inBlock(t, p.IPBlock, peer.ip) {
				return true
			}
		case !peer.isPod():
		case p.NamespaceSelector == nil: // this namespace's pods
			if peer.namespace == policyNS && matches(t, p.PodSelector, peer.labels) {
				return true
			}
		default:
			podOK := p.PodSelector == nil || matches(t, p.PodSelector, peer.labels)
			if podOK && matches(t, p.NamespaceSelector, peer.nsLabels) {
				return true
			}
		}
	}
	return false
}

func inBlock(t *testing.T, b *networkingv1.IPBlock, ip string) bool {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	if !netip.MustParsePrefix(b.CIDR).Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		if netip.MustParsePrefix(e).Contains(addr) {
			return false
		}
	}
	return true
}

func portMatches(ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		// Named ports would need the pod's container ports; gmini's
		// policies use numbers, which TestNetworkPolicyShape checks.
		if pp == proto && (p.Port == nil || p.Port.IntVal == port) {
			return true
		}
	}
	return false
}

func policies(objs []runtime.Object) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, o := range objs {
		if np, ok := o.(*networkingv1.NetworkPolicy); ok {
			out = append(out, np)
		}
	}
	return out
}

// policyCase is one connection and whether the overlay allows it.
type policyCase struct {
	name  string
	dir   networkingv1.PolicyType
	pod   endpoint // the backend or a runner
	peer  endpoint
	proto corev1.Protocol
	port  int32
	want  bool
}

// TestNetworkPolicies: the backend takes requests only from labelled client
// pods of the namespaces the overlay names, on its port; it reaches DNS, the
// API server's endpoint (after DNAT: the node's address and 6443 on the
// clusters dev runs on) and, in prod, the database; runners get nothing in
// or out.
func TestNetworkPolicies(t *testing.T) {
	client := map[string]string{"gmini.dev/client": "true"}
	dns := endpoint{namespace: "kube-system", nsLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"},
		labels: map[string]string{"k8s-app": "kube-dns"}, ip: "198.18.128.2"}
	address := func(ip string) endpoint { return endpoint{ip: ip} }
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := typed(t, o.dir)
			nps := policies(objs)
			backendLabels := only[*appsv1.Deployment](t, objs, "gmini-backend").Spec.Template.Labels
			runnerLabels := only[*batchv1.CronJob](t, objs, "gmini-runner").Spec.JobTemplate.Spec.Template.Labels
			nsLabels := map[string]string{"kubernetes.io/metadata.name": o.namespace}
			for k, v := range only[*corev1.Namespace](t, objs, o.namespace).Labels {
				nsLabels[k] = v
			}
			pod := func(l map[string]string, ip string) endpoint {
				return endpoint{namespace: o.namespace, nsLabels: nsLabels, labels: l, ip: ip}
			}
			backend, runner := pod(backendLabels, "198.18.128.10"), pod(runnerLabels, "198.18.128.11")
			other := func(nsl map[string]string, l map[string]string) endpoint {
				return endpoint{namespace: "frontend", nsLabels: nsl, labels: l, ip: "198.18.128.12"}
			}
			frontendNS := map[string]string{"kubernetes.io/metadata.name": "frontend"}
			markedNS := map[string]string{"kubernetes.io/metadata.name": "frontend", "gmini.dev/clients": "true"}
			in, out := networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress
			tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
			cases := []policyCase{
				{"labelled client of this namespace to the backend", in, backend, pod(client, "198.18.128.20"), tcp, 8080, true},
				{"unlabelled pod of this namespace to the backend", in, backend, pod(map[string]string{"app": "x"}, "198.18.128.21"), tcp, 8080, false},
				{"labelled client to another port of the backend", in, backend, pod(client, "198.18.128.20"), tcp, 9090, false},
				{"a runner to the backend", in, backend, runner, tcp, 8080, false},
				{"labelled client of an unmarked namespace", in, backend, other(frontendNS, client), tcp, 8080, false},
				{"unlabelled pod of a marked namespace", in, backend, other(markedNS, nil), tcp, 8080, false},
				{"an address outside the cluster to the backend", in, backend, address("203.0.113.7"), tcp, 8080, false},
				{"backend to the cluster DNS (UDP)", out, backend, dns, udp, 53, true},
				{"backend to the cluster DNS (TCP)", out, backend, dns, tcp, 53, true},
				{"backend to a DNS server outside", out, backend, address("203.0.113.53"), udp, 53, false},
				{"backend to a pod of this namespace", out, backend, runner, tcp, 8080, false},
				{"backend to the web", out, backend, address("203.0.113.80"), tcp, 443, false},
				{"anyone to a runner", in, runner, pod(client, "198.18.128.20"), tcp, 8080, false},
				{"runner to the cluster DNS", out, runner, dns, udp, 53, false},
				{"runner to the web", out, runner, address("203.0.113.80"), tcp, 443, false},
			}
			switch o.dir {
			case "overlays/dev":
				cases = append(cases,
					// Local nodes are 198.18.0.<4i+2>; kind's node is on a
					// Docker network.
					policyCase{"backend to a local node's API server", out, backend, address("198.18.0.6"), tcp, 6443, true},
					policyCase{"backend to kind's API server", out, backend, address("172.18.0.2"), tcp, 6443, true},
					policyCase{"backend to the node on another port", out, backend, address("198.18.0.6"), tcp, 10250, false},
					policyCase{"backend to a pod on 6443", out, backend, address("198.18.128.30"), tcp, 6443, false},
					policyCase{"runner to the API server", out, runner, address("198.18.0.6"), tcp, 6443, false},
					policyCase{"labelled client of a marked namespace (dev names its own only)", in, backend, other(markedNS, client), tcp, 8080, false},
				)
			case "overlays/prod":
				cases = append(cases,
					policyCase{"backend to a managed API server", out, backend, address("10.0.0.2"), tcp, 443, true},
					policyCase{"backend to a kubeadm API server", out, backend, address("10.0.0.2"), tcp, 6443, true},
					policyCase{"backend to the database", out, backend, address("10.20.0.5"), tcp, 5432, true},
					policyCase{"backend to an address outside the blocks", out, backend, address("192.0.2.10"), tcp, 5432, false},
					policyCase{"runner to the API server", out, runner, address("10.0.0.2"), tcp, 443, false},
					policyCase{"runner to the database", out, runner, address("10.20.0.5"), tcp, 5432, false},
					policyCase{"labelled client of a marked namespace", in, backend, other(markedNS, client), tcp, 8080, true},
				)
			}
			for _, c := range cases {
				if got := allowed(t, nps, c.dir, c.pod, c.peer, c.proto, c.port); got != c.want {
					t.Errorf("%s (%s %s/%d): allowed = %v, want %v", c.name, c.dir, c.proto, c.port, got, c.want)
				}
			}
		})
	}
}

// TestNetworkPolicyShape pins what the evaluation above relies on: the
// policies select gmini's pods by the label their selectors already use,
// the backend's port is the container's, and the runner's policy has no
// rule at all.
func TestNetworkPolicyShape(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			objs := typed(t, o.dir)
			d := only[*appsv1.Deployment](t, objs, "gmini-backend")
			runner := only[*networkingv1.NetworkPolicy](t, objs, "gmini-runner")
			wantRunner := networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "gmini-runner"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			}
			if fmt.Sprint(runner.Spec) != fmt.Sprint(wantRunner) {
				t.Errorf("gmini-runner spec = %+v, want %+v", runner.Spec, wantRunner)
			}
			be := only[*networkingv1.NetworkPolicy](t, objs, "gmini-backend")
			if len(be.Spec.Ingress) != 1 || len(be.Spec.Ingress[0].Ports) != 1 {
				t.Fatalf("gmini-backend ingress = %+v, want one rule with one port", be.Spec.Ingress)
			}
			port := be.Spec.Ingress[0].Ports[0].Port
			if port == nil || port.Type != intstr.Int || port.IntVal != d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort {
				t.Errorf("gmini-backend ingress port %v, want the backend's container port %d as a number", port, d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort)
			}
			for _, np := range policies(objs) {
				if np.Namespace != o.namespace {
					t.Errorf("NetworkPolicy %s in namespace %q, want %q", np.Name, np.Namespace, o.namespace)
				}
				if len(np.Spec.PolicyTypes) == 0 {
					t.Errorf("NetworkPolicy %s states no policyTypes", np.Name)
				}
				if len(np.Spec.PodSelector.MatchLabels) != 1 || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] == "" {
					t.Errorf("NetworkPolicy %s selects %v, want app.kubernetes.io/name only (what the Service and the Deployment select by)", np.Name, np.Spec.PodSelector)
				}
			}
		})
	}
}

// quotaWant is an overlay's ResourceQuota and what it is sized for.
type quotaWant struct {
	hard corev1.ResourceList
	// runners at once, beside backendPods backend pods and spare pods of
	// a runner's size.
	runners, backendPods, spare int64
}

// TestResourceQuotas: each overlay's quota holds what its comment says it
// is sized for, computed from the rendered runner template and backend,
// so changing their requests or limits without the quota fails here; and
// dev's is the smaller.
func TestResourceQuotas(t *testing.T) {
	q := resource.MustParse
	want := map[string]quotaWant{
		"overlays/dev": {hard: corev1.ResourceList{
			"count/jobs.batch": q("1500"), corev1.ResourcePods: q("20"),
			corev1.ResourceRequestsCPU: q("300m"), corev1.ResourceRequestsMemory: q("512Mi"),
			corev1.ResourceLimitsCPU: q("5"), corev1.ResourceLimitsMemory: q("2Gi"),
		}, runners: 16, backendPods: 2, spare: 2},
		"overlays/prod": {hard: corev1.ResourceList{
			"count/jobs.batch": q("5000"), corev1.ResourcePods: q("110"),
			corev1.ResourceRequestsCPU: q("1500m"), corev1.ResourceRequestsMemory: q("2Gi"),
			corev1.ResourceLimitsCPU: q("24"), corev1.ResourceLimitsMemory: q("8Gi"),
		}, runners: 100, backendPods: 3, spare: 7},
	}
	got := map[string]corev1.ResourceList{}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			w := want[o.dir]
			objs := typed(t, o.dir)
			rq := only[*corev1.ResourceQuota](t, objs, "gmini")
			got[o.dir] = rq.Spec.Hard
			if len(rq.Spec.Hard) != len(w.hard) {
				t.Errorf("hard = %v, want %v", rq.Spec.Hard, w.hard)
			}
			for name, v := range w.hard {
				if g, ok := rq.Spec.Hard[name]; !ok || g.Cmp(v) != 0 {
					t.Errorf("hard[%s] = %v, want %v", name, rq.Spec.Hard[name], v.String())
				}
			}
			if len(rq.Spec.Scopes) != 0 || rq.Spec.ScopeSelector != nil {
				t.Errorf("quota is scoped (%v %v); it must count every pod of the namespace", rq.Spec.Scopes, rq.Spec.ScopeSelector)
			}
			runner := only[*batchv1.CronJob](t, objs, "gmini-runner").Spec.JobTemplate.Spec.Template.Spec.Containers[0].Resources
			backend := only[*appsv1.Deployment](t, objs, "gmini-backend").Spec.Template.Spec.Containers[0].Resources
			if pods := w.runners + w.backendPods + w.spare; rq.Spec.Hard.Pods().Value() < pods {
				t.Errorf("pods %v < %d runners + %d backend pods + %d spare", rq.Spec.Hard.Pods(), w.runners, w.backendPods, w.spare)
			}
			for _, r := range []struct {
				quota corev1.ResourceName
				of    func(corev1.ResourceRequirements) resource.Quantity
			}{
				{corev1.ResourceRequestsCPU, func(rr corev1.ResourceRequirements) resource.Quantity { return *rr.Requests.Cpu() }},
				{corev1.ResourceRequestsMemory, func(rr corev1.ResourceRequirements) resource.Quantity { return *rr.Requests.Memory() }},
				{corev1.ResourceLimitsCPU, func(rr corev1.ResourceRequirements) resource.Quantity { return *rr.Limits.Cpu() }},
				{corev1.ResourceLimitsMemory, func(rr corev1.ResourceRequirements) resource.Quantity { return *rr.Limits.Memory() }},
			} {
				run, be := r.of(runner), r.of(backend)
				if run.IsZero() || be.IsZero() {
					t.Errorf("%s: the runner (%v) and the backend (%v) must both set it, or the quota refuses their pods", r.quota, run.String(), be.String())
				}
				need := scaled(run, w.runners+w.spare)
				need.Add(scaled(be, w.backendPods))
				if h := rq.Spec.Hard[r.quota]; h.Cmp(need) < 0 {
					t.Errorf("%s = %s holds less than %d runners and %d spare pods of %s and %d backend pods of %s (%s)",
						r.quota, h.String(), w.runners, w.spare, run.String(), w.backendPods, be.String(), need.String())
				}
			}
		})
	}
	for name, dev := range got["overlays/dev"] {
		if prod := got["overlays/prod"][name]; dev.Cmp(prod) >= 0 {
			t.Errorf("%s: dev %s is not below prod %s", name, dev.String(), prod.String())
		}
	}
}

func scaled(q resource.Quantity, n int64) resource.Quantity {
	return *resource.NewMilliQuantity(q.MilliValue()*n, q.Format)
}
