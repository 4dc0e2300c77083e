//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/images"
)

// The suite's cluster enforces NetworkPolicy (cluster.NetworkPolicy: kube-router
// on the local node, kindnet on kind). These tests first show the engine at
// work on a policy of their own, then the overlay's policies, from pods that run
// tools/images/netprobe: it tries a connection until it sees what it expects and
// prints what happened as JSON.

// netprobeImage is the tag main_test.go loads into the cluster.
var netprobeImage = images.NetProbe("", "dev").Tag

// probeResult is netprobe's JSON line (tools/images/netprobe).
type probeResult struct {
	Action            string `json:"action"`
	Target            string `json:"target"`
	Expect            string `json:"expect"`
	Met               bool   `json:"met"`
	Outcome           string `json:"outcome"`
	Status            int    `json:"status"`
	Body              string `json:"body"`
	Error             string `json:"error"`
	Tries             int    `json:"tries"`
	OpenBeforeBlocked int    `json:"openBeforeBlocked"`
	Elapsed           string `json:"elapsed"`
}

// probeContainer runs netprobe with args, as Pod Security restricted asks,
// with requests and limits, which the namespace's quota requires.
func probeContainer(name string, args ...string) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           netprobeImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func probePod(namespace, name string, labels map[string]string, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: containers,
		},
	}
}

// runProbes creates the pods at once, waits until each has ended and
// returns every container's result by "pod/container".
func runProbes(ctx context.Context, t *testing.T, cs kubernetes.Interface, pods ...*corev1.Pod) map[string]probeResult {
	t.Helper()
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	var mu sync.Mutex
	results := map[string]probeResult{}
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			var last *corev1.Pod
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				got, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				last = got
				return got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed, nil
			})
			if err != nil {
				t.Errorf("probe pod %s/%s did not end: %v; status %+v\n%s", p.Namespace, p.Name, err, last.Status, deploy.Diagnose(ctx, cs, p.Namespace, nil))
				return
			}
			for _, c := range p.Spec.Containers {
				raw, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
				var r probeResult
				if err == nil {
					err = json.Unmarshal(raw, &r)
				}
				if err != nil {
					t.Errorf("result of %s/%s: %v (%q)", p.Name, c.Name, err, raw)
					continue
				}
				t.Logf("%s/%s: %s %s expecting %s: met %v, %s after %d tries in %s (%d got through before the block) %s",
					p.Name, c.Name, r.Action, r.Target, r.Expect, r.Met, r.Outcome, r.Tries, r.Elapsed, r.OpenBeforeBlocked, r.Error)
				mu.Lock()
				results[p.Name+"/"+c.Name] = r
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return results
}

func deletePods(ctx context.Context, cs kubernetes.Interface, pods ...*corev1.Pod) {
	for _, p := range pods {
		_ = cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}
}

// blockedArgs: refused or unanswered for 5 s in a row, within a minute.
var blockedArgs = []string{"-expect", "blocked", "-hold", "5s", "-within", "60s", "-timeout", "2s"}

// openArgs: through within a minute, the engine having seen the new pod.
var openArgs = []string{"-expect", "open", "-within", "60s", "-timeout", "15s"}

// TestNetworkPolicyEngine shows the cluster enforces policies before the next
// test relies on it: a pod reaches another, after a deny-all ingress policy
// in their namespace a pod like it no longer does, and once the policy is
// deleted a third one does again. The last step is what makes the block the
// policy's: kube-router rejects (a refusal), which is also what a server
// that died would give.
func TestNetworkPolicyEngine(t *testing.T) {
	const proofNS = "netpol-proof"
	server := probePod(proofNS, "server", map[string]string{"app": "server"}, probeContainer("serve", "serve", ":8080"))
	server.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	var addr string
	f := features.New("the cluster's NetworkPolicy engine enforces a deny-all policy").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := clientset(t, cfg)
			nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: proofNS, Labels: map[string]string{
				"pod-security.kubernetes.io/enforce": "restricted",
			}}}
			if _, err := cs.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create namespace %s: %v", proofNS, err)
			}
			// A new namespace gets its default ServiceAccount a moment later,
			// and pods are refused until then.
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := cs.CoreV1().Pods(proofNS).Create(ctx, server, metav1.CreateOptions{})
				return err == nil, nil
			})
			if err != nil {
				t.Fatalf("create pod %s/server: %v", proofNS, err)
			}
			err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				p, err := cs.CoreV1().Pods(proofNS).Get(ctx, "server", metav1.GetOptions{})
				if err != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
					return false, nil
				}
				addr = net.JoinHostPort(p.Status.PodIP, "8080")
				return true, nil
			})
			if err != nil {
				t.Fatalf("pod %s/server not running: %v\n%s", proofNS, err, deploy.Diagnose(ctx, cs, proofNS, nil))
			}
			return ctx
		}).
		Assess("without a policy, a pod reaches the server", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			r := runProbes(ctx, t, clientset(t, cfg), probePod(proofNS, "before", nil, probeContainer("dial", slices.Concat(openArgs, []string{"dial", addr})...)))
			if got := r["before/dial"]; !got.Met {
				t.Fatalf("pod-to-pod connection without any policy: %+v; the engine test proves nothing", got)
			}
			return ctx
		}).
		Assess("with a deny-all ingress policy, the same connection is blocked", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := clientset(t, cfg)
			deny := &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "deny-all", Namespace: proofNS},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				},
			}
			if _, err := cs.NetworkingV1().NetworkPolicies(proofNS).Create(ctx, deny, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			r := runProbes(ctx, t, cs, probePod(proofNS, "after", nil, probeContainer("dial", slices.Concat(blockedArgs, []string{"dial", addr})...)))
			if got := r["after/dial"]; !got.Met {
				t.Fatalf("pod-to-pod connection under a deny-all policy: %+v, want blocked", got)
			}
			return ctx
		}).
		Assess("with the policy deleted, the connection opens again", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := clientset(t, cfg)
			if err := cs.NetworkingV1().NetworkPolicies(proofNS).Delete(ctx, "deny-all", metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete NetworkPolicy %s/deny-all: %v", proofNS, err)
			}
			// openArgs waits up to a minute for the engine to drop the rule.
			r := runProbes(ctx, t, cs, probePod(proofNS, "unblocked", nil, probeContainer("dial", slices.Concat(openArgs, []string{"dial", addr})...)))
			if got := r["unblocked/dial"]; !got.Met {
				srv, err := cs.CoreV1().Pods(proofNS).Get(ctx, "server", metav1.GetOptions{})
				phase := corev1.PodPhase("unknown")
				if err == nil {
					phase = srv.Status.Phase
				}
				t.Fatalf("pod-to-pod connection after the deny-all policy was deleted: %+v, want open (server pod %s, err %v): "+
					"the block seen before may have been a dead server, not the policy", got, phase, err)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Not waited for: nothing else uses the namespace.
			_ = clientset(t, cfg).CoreV1().Namespaces().Delete(ctx, proofNS, metav1.DeleteOptions{})
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// TestNetworkPolicy: with the overlay's policies, a client pod must carry the
// label gmini.dev/client to reach the backend, and a runner pod reaches
// nothing, the API server included; the kubelet's probes and the API server's
// service proxy (what `make proxy` and this suite use) still reach the backend.
func TestNetworkPolicy(t *testing.T) {
	const experiment = "netpol-labelled-client"
	var pods []*corev1.Pod
	f := features.New("gmini's NetworkPolicies: labelled clients only, runners cut off").
		Assess("a labelled pod's POST gets 201, an unlabelled pod's gets no connection, a runner pod cannot reach the API server", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			cs := clientset(t, cfg)
			url, err := deploy.ClusterIPURL(ctx, cs, ns)
			if err != nil {
				t.Fatal(err)
			}
			api, err := cs.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// Through the Service's ClusterIP, as a pod's client-go does: the
			// policy sees the endpoint behind it.
			apiAddr := net.JoinHostPort(api.Spec.ClusterIP, strconv.Itoa(int(api.Spec.Ports[0].Port)))
			body := `{"experiment": {"id": "` + experiment + `"}}`

			// A runner pod as the backend makes them: the template's labels,
			// identity and security context, with netprobe in place of the
			// runner.
			cj, err := cs.BatchV1().CronJobs(ns).Get(ctx, "gmini-runner", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tmpl := cj.Spec.JobTemplate.Spec.Template
			runner := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "netpol-runner", Namespace: ns, Labels: tmpl.Labels}, Spec: *tmpl.Spec.DeepCopy()}
			rc := &runner.Spec.Containers[0]
			rc.Image, rc.ImagePullPolicy, rc.Command = netprobeImage, corev1.PullIfNotPresent, nil
			rc.Args = slices.Concat(blockedArgs, []string{"dial", apiAddr})

			pods = []*corev1.Pod{
				// The dial is the control for the runner's: the same
				// connection from a pod no egress policy selects.
				probePod(ns, "netpol-client", map[string]string{"gmini.dev/client": "true"},
					probeContainer("post", slices.Concat(openArgs, []string{"post", url + "/experiment", body})...),
					probeContainer("dial", slices.Concat(openArgs, []string{"dial", apiAddr})...)),
				probePod(ns, "netpol-stranger", nil, probeContainer("post", slices.Concat(blockedArgs, []string{"post", url + "/experiment", body})...)),
				runner,
			}
			r := runProbes(ctx, t, cs, pods...)

			if got := r["netpol-client/post"]; !got.Met || got.Status != http.StatusCreated {
				t.Errorf("labelled client's POST: %+v, want 201", got)
			}
			if got := r["netpol-client/dial"]; !got.Met {
				t.Errorf("labelled client's connection to the API server (%s): %+v, want open; the runner's block below proves nothing", apiAddr, got)
			}
			// The backend's policy existed before this pod: no try may pass.
			if got := r["netpol-stranger/post"]; !got.Met || got.OpenBeforeBlocked > 0 {
				t.Errorf("unlabelled pod's POST: %+v, want no connection, ever", got)
			} else if got.Outcome != "timeout" && got.Outcome != "refused" {
				t.Errorf("unlabelled pod's POST ended %s (%s), want a timeout (a dropping engine) or a refusal (kube-router's REJECT)", got.Outcome, got.Error)
			}
			// The runner pod's own rules appear once the engine has seen the
			// pod, a moment after it started; tries before may pass, which
			// NetworkPolicy allows ("Pod lifecycle" in its documentation).
			if got := r["netpol-runner/runner"]; !got.Met {
				t.Errorf("runner pod's connection to the API server (%s): %+v, want blocked", apiAddr, got)
			}
			return ctx
		}).
		Assess("the kubelet's probes and the API server's service proxy still reach the backend", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// /readyz is the kubelet's probe, which the Go client does not speak.
			if code, body := rawRequest(ctx, t, cfg, http.MethodGet, "/readyz", "", nil); code != http.StatusOK {
				t.Errorf("GET /readyz through the API server's service proxy = %d %s", code, body)
			}
			if _, err := deploy.WaitBackend(logger, ns, 30*time.Second)(ctx, cfg); err != nil {
				t.Errorf("backend not available (its probes fail?): %v", err)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			deletePods(ctx, clientset(t, cfg), pods...)
			if _, err := backend(t, cfg).Cancel(ctx, experiment); err != nil && gmini.StatusCode(err) != http.StatusNotFound {
				t.Errorf("DELETE /experiments/%s: %v", experiment, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
