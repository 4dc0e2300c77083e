//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/deploy"
)

// TestBackendPodTermination deletes one of two backend pods while clients
// POST through the Service: the preStop delay keeps the terminating pod
// serving until kube-proxy has taken it out of the Service, so no request
// fails.
//
// On the local node the clients are on the host and POST to the Service's
// ClusterIP, which the host routes into the node's network namespace: each
// connection goes through kube-proxy's DNAT there, as a client pod's would,
// so the endpoint removal that preStop waits for is what is tested. A
// client inside that namespace could not: the namespace routes the test
// range, service range included, to a blackhole, so connecting from it to a
// ClusterIP fails at once (EINVAL), before kube-proxy's rules see a packet.
// On kind the host has no route to the service range, so the clients go
// through the API server's service proxy, which picks a ready endpoint
// itself: there the test proves only that no request fails while a pod
// terminates, not that kube-proxy stops sending it new connections in time.
func TestBackendPodTermination(t *testing.T) {
	const (
		clients  = 2
		interval = 200 * time.Millisecond
		before   = 2 * time.Second  // load before the deletion
		after    = 10 * time.Second // preStop (5 s) + shutdown + margin
		idPrefix = "rollout"
	)
	type outcome struct {
		id  string
		sub wire.Submission
		err error
	}
	var (
		outcomes []outcome
		c        *gmini.Client
		path     string // how the clients reach the backend, for messages
		policy   string // the NetworkPolicy that lets the host in, if made
	)
	f := features.New("a backend pod deleted under load: every request is answered 201").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			if _, err := client.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.MergePatchType, []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
				t.Fatalf("scale the backend to 2: %v", err)
			}
			if _, err := deploy.WaitBackend(logger, ns, 2*time.Minute)(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if hn, ok := provider.(hostNetwork); ok {
				var err error
				if c, policy, err = clusterIPClient(ctx, client, hn); err != nil {
					t.Fatal(err)
				}
				path = "the Service's ClusterIP, through kube-proxy"
			} else {
				c, path = backend(t, cfg), "the API server's service proxy (this cluster's host has no route to the service range)"
			}
			t.Logf("clients POST through %s", path)
			// The test is about the backend, not the runner: its Jobs are
			// created suspended, so no pods load the node. Both replicas'
			// template caches must have seen the change, and on the local
			// node the probes also wait for the engine to apply the host's
			// policy.
			suspendNewJobs(ctx, t, cfg, c, idPrefix+"-probe")
			return ctx
		}).
		Assess("deleting a backend pod fails no request", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy.BackendName})
			if err != nil || len(pods.Items) != 2 {
				t.Fatalf("backend pods: %v (%d, want 2)", err, len(pods.Items))
			}
			victim := pods.Items[0].Name
			stop := make(chan struct{})
			var mu sync.Mutex
			var wg sync.WaitGroup
			for w := range clients {
				wg.Go(func() {
					tick := time.NewTicker(interval)
					defer tick.Stop()
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						o := outcome{id: fmt.Sprintf("%s-%d-%03d", idPrefix, w, n)}
						o.sub, o.err = c.Submit(ctx, map[string]any{"id": o.id})
						mu.Lock()
						outcomes = append(outcomes, o)
						mu.Unlock()
					}
				})
			}
			time.Sleep(before)
			t0 := time.Now()
			if err := client.CoreV1().Pods(ns).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete pod %s: %v", victim, err)
			}
			time.Sleep(after)
			close(stop)
			wg.Wait()
			gone := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := client.CoreV1().Pods(ns).Get(ctx, victim, metav1.GetOptions{})
				return err != nil, nil
			})
			if gone != nil {
				t.Errorf("pod %s still exists a minute after its deletion", victim)
			}
			t.Logf("pod %s deleted under load; gone %s later", victim, time.Since(t0).Round(100*time.Millisecond))

			jobs := map[string]bool{}
			list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range list.Items {
				jobs[j.Annotations[jobspec.AnnotationID]] = true
			}
			failed := 0
			for _, o := range outcomes {
				switch {
				case o.err != nil:
					failed++
					t.Errorf("%s: %v", o.id, o.err)
				case !o.sub.Created:
					failed++
					t.Errorf("%s: answered 200 %+v, want 201", o.id, o.sub)
				case !jobs[o.id]:
					t.Errorf("%s: answered 201 but has no Job (%+v)", o.id, o.sub)
				}
			}
			t.Logf("%d POSTs through %s while a backend pod terminated: %d failed", len(outcomes), path, failed)
			if len(outcomes) < int(before+after)/int(interval) {
				t.Errorf("only %d POSTs were sent; the test did not load the backend", len(outcomes))
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			if _, err := client.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
				t.Errorf("scale the backend back to 1: %v", err)
			}
			resumeNewJobs(ctx, t, cfg)
			if policy != "" {
				if err := client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, policy, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("delete NetworkPolicy %s: %v", policy, err)
				}
			}
			deleteManagedJobs(ctx, t, cfg, func(j batchv1.Job) bool { return j.Spec.Suspend != nil && *j.Spec.Suspend })
			if _, err := deploy.WaitBackend(logger, ns, 2*time.Minute)(ctx, cfg); err != nil {
				t.Error(err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// deleteManagedJobs deletes the Jobs gmini made that match keep, with
// their pods, and waits until they are gone.
func deleteManagedJobs(ctx context.Context, t *testing.T, cfg *envconf.Config, match func(batchv1.Job) bool) {
	t.Helper()
	client := clientset(t, cfg)
	list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	if err != nil {
		t.Errorf("list jobs: %v", err)
		return
	}
	bg := metav1.DeletePropagationBackground
	var names []string
	for _, j := range list.Items {
		if match(j) {
			names = append(names, j.Name)
			if err := client.BatchV1().Jobs(ns).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Errorf("delete job %s: %v", j.Name, err)
			}
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if _, err := client.BatchV1().Jobs(ns).Get(ctx, n, metav1.GetOptions{}); err == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("jobs not gone 2 minutes after their deletion: %v", err)
	}
}

// hostPolicy lets the host's address reach the backend while a test POSTs
// from the host: the overlay's policies admit labelled client pods and the
// node itself, and the host is neither.
const hostPolicy = "e2e-host-client"

// clusterIPClient returns a client that sends from this host to the
// backend Service's ClusterIP, one connection per request, so that kube-proxy
// chooses an endpoint for every request, as it does for every new
// connection of a client pod; a kept-alive connection would stay with
// the pod it first reached and never meet the endpoint removal. It makes
// the NetworkPolicy that admits the host and returns its name.
func clusterIPClient(ctx context.Context, client kubernetes.Interface, hn hostNetwork) (*gmini.Client, string, error) {
	nw, err := hn.Network()
	if err != nil {
		return nil, "", fmt.Errorf("the cluster's network: %w", err)
	}
	url, err := deploy.ClusterIPURL(ctx, client, ns)
	if err != nil {
		return nil, "", err
	}
	addr := strings.TrimPrefix(url, "http://")
	if ap, err := netip.ParseAddrPort(addr); err != nil || !nw.ServiceCIDR.Contains(ap.Addr()) {
		return nil, "", fmt.Errorf("the backend's ClusterIP %s is not in the service range %s the host routes into the node (%v)", addr, nw.ServiceCIDR, err)
	}
	// The address the host's packets to the ClusterIP leave from: a UDP
	// "connection" sends nothing, it only asks the routing table.
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("route to the backend's ClusterIP %s: %w", addr, err)
	}
	src := c.LocalAddr().(*net.UDPAddr).IP
	c.Close()
	port := intstr.FromInt32(deploy.BackendPort)
	tcp := corev1.ProtocolTCP
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: hostPolicy, Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": deploy.BackendName}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: src.String() + "/32"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
	if _, err := client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", fmt.Errorf("admit the host (%s) to the backend: %w", src, err)
	}
	hc := &http.Client{
		Timeout:   10 * time.Second, // a connection to a vanished endpoint must not stall a client
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	bc, err := gmini.New(url, gmini.WithHTTPClient(hc))
	if err != nil {
		return nil, "", err
	}
	return bc, hostPolicy, nil
}

// suspendNewJobs makes the runner template's Jobs start suspended, and
// waits until POSTs through c get suspended Jobs four times in a row:
// the Service spreads them over the replicas, each of which must have seen
// the template change. It returns the probe experiments it posted.
func suspendNewJobs(ctx context.Context, t *testing.T, cfg *envconf.Config, c *gmini.Client, prefix string) []string {
	t.Helper()
	client := clientset(t, cfg)
	const suspended = `{"spec":{"jobTemplate":{"spec":{"suspend":true}}}}`
	if _, err := client.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, []byte(suspended), metav1.PatchOptions{}); err != nil {
		t.Fatalf("suspend the template's Jobs: %v", err)
	}
	var probes []string
	// A new ID for every POST, unique to this run: a POST whose answer was
	// lost may still have made its Job, and a kept cluster has the last
	// run's.
	run := time.Now().UnixNano()
	last := "no POST answered"
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for range 4 {
			id := fmt.Sprintf("%s-%d-%d", prefix, run, len(probes))
			probes = append(probes, id)
			if sub, err := c.Submit(ctx, map[string]any{"id": id}); err != nil || !sub.Created {
				last = fmt.Sprintf("POST %s = %+v (%v), want 201", id, sub, err)
				return false, nil
			}
			j, err := client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
			if err != nil || j.Spec.Suspend == nil || !*j.Spec.Suspend {
				last = fmt.Sprintf("the Job of %s is not suspended (%v)", id, err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("new Jobs are not suspended a minute after the template change: %v; last: %s", err, last)
	}
	return probes
}

// resumeNewJobs undoes suspendNewJobs: new Jobs run again.
func resumeNewJobs(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	t.Helper()
	const resumed = `{"spec":{"jobTemplate":{"spec":{"suspend":null}}}}`
	if _, err := clientset(t, cfg).BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, []byte(resumed), metav1.PatchOptions{}); err != nil {
		t.Errorf("resume the template's Jobs: %v", err)
	}
}
