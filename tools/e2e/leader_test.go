//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/postgres"
)

// prodNamespace is overlays/prod's namespace.
const prodNamespace = "gmini"

// hostNetwork is what a provider whose node is this machine offers: a
// program on the host can be made reachable from pods.
type hostNetwork interface {
	Network() (local.Network, error)
}

func TestLeaderKilledMidBurst(t *testing.T) {
	const (
		n      = 200
		killAt = 60 // POSTs answered before the leader dies
		lease  = "gmini-backend-recorder"
	)
	var pg *postgres.Server
	f := features.New("prod's history in PostgreSQL with two replicas: the recording leader killed mid-burst of 200 experiments, every experiment ends with exactly one record and its output").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			hn, ok := provider.(hostNetwork)
			if !ok {
				t.Skip("needs PostgreSQL reachable from pods: the local node runs it on the node's address; kind has no such host process")
			}
			nw, err := hn.Network()
			if err != nil {
				t.Fatal(err)
			}
			l, err := layout.FromWorkingDir()
			if err != nil {
				t.Fatal(err)
			}
			// Debian's PostgreSQL, as a managed database would be: outside
			// the cluster, on the node's address, trusting the pods.
			pg, err = postgres.Start(ctx, l.Output("postgres", clusterName),
				postgres.WithNetNS(nw.Namespace),
				postgres.WithTCP(netip.AddrPortFrom(nw.NodeIP, 5432)),
				postgres.WithTrustedClients(nw.PodCIDR),
				postgres.WithLogger(logger))
			if err != nil {
				t.Fatal(err)
			}
			client := clientset(t, cfg)
			nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prodNamespace}}
			if _, err := client.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			secret := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "gmini-history", Namespace: prodNamespace},
				StringData: map[string]string{"dsn": pg.TCPDSN()},
			}
			if _, err := client.CoreV1().Secrets(prodNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := deploy.ApplyOverlay(logger, l.Path("tools", "e2e", "testdata", "prod-local"))(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := deploy.WaitBackend(logger, prodNamespace, 3*time.Minute)(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("kill the leader mid-burst", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			b := deploy.Backend{Client: client, Namespace: prodNamespace}
			leader := ""
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				l, err := client.CoordinationV1().Leases(prodNamespace).Get(ctx, lease, metav1.GetOptions{})
				if err != nil || l.Spec.HolderIdentity == nil {
					return false, nil
				}
				leader = *l.Spec.HolderIdentity
				return leader != "", nil
			})
			if err != nil {
				t.Fatalf("no replica holds lease %s: %v", lease, err)
			}

			var answered atomic.Int64
			var killOnce sync.Once
			var killedAt time.Time
			// The takeover is timed while the burst goes on, not after it:
			// the survivor must take the lease under load.
			takeover := make(chan string, 1)
			watchTakeover := func() {
				defer close(takeover)
				_ = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
					l, err := client.CoordinationV1().Leases(prodNamespace).Get(ctx, lease, metav1.GetOptions{})
					if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == leader {
						return false, nil
					}
					takeover <- fmt.Sprintf("%s %s", *l.Spec.HolderIdentity, time.Since(killedAt).Round(100*time.Millisecond))
					return true, nil
				})
			}
			ids := make(chan int)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for i := range ids {
						id := fmt.Sprintf("leader-%03d", i)
						body := `{"experiment": {"id": "` + id + `", "key": "k"}}`
						// A POST the dying pod took may fail: retry it, as a
						// client would (the same POST is never run twice).
						err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
							res, err := b.Post(ctx, body)
							return err == nil && (res.Code == http.StatusCreated || res.Code == http.StatusOK), nil
						})
						if err != nil {
							errs <- fmt.Errorf("%s never accepted: %w", id, err)
							continue
						}
						if answered.Add(1) == killAt {
							killOnce.Do(func() {
								killedAt = time.Now()
								err := client.CoreV1().Pods(prodNamespace).Delete(ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
								if err != nil {
									errs <- fmt.Errorf("kill leader %s: %w", leader, err)
								}
								go watchTakeover()
							})
						}
					}
				})
			}
			t0 := time.Now()
			for i := range n {
				ids <- i
			}
			close(ids)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d experiments accepted in %s; leader %s killed after %d", n, time.Since(t0).Round(100*time.Millisecond), leader, killAt)

			if killedAt.IsZero() {
				t.Fatalf("fewer than %d POSTs answered: the leader was never killed", killAt)
			}
			got, ok := <-takeover
			if !ok {
				t.Fatalf("the lease stayed with the killed leader %s two minutes after the kill", leader)
			}
			t.Logf("lease taken over by %s after the kill", got)

			// Every experiment finishes, is recorded with its output, and
			// its Job leaves the cluster.
			pending := map[string]bool{}
			for i := range n {
				pending[fmt.Sprintf("leader-%03d", i)] = true
			}
			err = wait.PollUntilContextTimeout(ctx, 2*time.Second, 6*time.Minute, true, func(ctx context.Context) (bool, error) {
				for id := range pending {
					res, err := b.Do(ctx, http.MethodGet, "/experiments/"+id, "", nil)
					if err != nil || res.Code != http.StatusOK || !strings.Contains(string(res.Body), `"source":"history"`) ||
						!strings.Contains(string(res.Body), `"state":"Succeeded"`) {
						continue
					}
					logs, err := b.Do(ctx, http.MethodGet, "/experiments/"+id+"/logs", "", nil)
					if err == nil && logs.Code == http.StatusOK && strings.Contains(string(logs.Body), "Running Experiment: "+id) {
						delete(pending, id)
					}
				}
				return len(pending) == 0, nil
			})
			if err != nil {
				t.Fatalf("%d of %d experiments without a final record and its output %s after the burst: e.g. %v\n%s",
					len(pending), n, time.Since(t0).Round(time.Second), firstKeys(pending, 5), explainNS(ctx, t, cfg, prodNamespace))
			}
			t.Logf("all %d experiments recorded with their output %s after the burst began", n, time.Since(t0).Round(time.Second))

			// Exactly one record each: the list holds each ID once.
			seen := map[string]int{}
			cont := ""
			for {
				path := "/experiments?limit=1000"
				if cont != "" {
					path += "&continue=" + url.QueryEscape(cont)
				}
				res, err := b.Do(ctx, http.MethodGet, path, "", nil)
				if err != nil || res.Code != http.StatusOK {
					t.Fatalf("GET %s = %d %s (%v)", path, res.Code, res.Body, err)
				}
				var page struct {
					Items    []struct{ ID string }
					Continue string
				}
				if err := json.Unmarshal(res.Body, &page); err != nil {
					t.Fatal(err)
				}
				for _, it := range page.Items {
					if strings.HasPrefix(it.ID, "leader-") {
						seen[it.ID]++
					}
				}
				if page.Continue == "" {
					break
				}
				cont = page.Continue
			}
			for i := range n {
				if id := fmt.Sprintf("leader-%03d", i); seen[id] != 1 {
					t.Errorf("%s has %d records, want 1", id, seen[id])
				}
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			// Jobs wait for their records; let the recorder let them go
			// before the namespace (and the backend) goes.
			bg := metav1.DeletePropagationBackground
			_ = client.BatchV1().Jobs(prodNamespace).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg},
				metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
			_ = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				list, err := client.BatchV1().Jobs(prodNamespace).List(ctx, metav1.ListOptions{})
				return err == nil && len(list.Items) == 0, nil
			})
			if err := client.CoreV1().Namespaces().Delete(ctx, prodNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete namespace %s: %v", prodNamespace, err)
			}
			_ = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := client.CoreV1().Namespaces().Get(ctx, prodNamespace, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if pg != nil {
				if err := pg.Stop(context.WithoutCancel(ctx)); err != nil {
					t.Errorf("stop PostgreSQL: %v", err)
				}
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func firstKeys(m map[string]bool, n int) []string {
	var out []string
	for k := range m {
		if len(out) == n {
			break
		}
		out = append(out, k)
	}
	return out
}

func explainNS(ctx context.Context, t *testing.T, cfg *envconf.Config, namespace string) string {
	return deploy.Diagnose(ctx, clientset(t, cfg), namespace, nil)
}
