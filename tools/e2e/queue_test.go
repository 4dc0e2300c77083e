//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/queue"
)

var (
	clusterQueues = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "clusterqueues"}
	localQueues   = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "localqueues"}
	workloads     = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "workloads"}
)

// kueueOnce installs Kueue once per suite, for every test that needs it.
var kueueOnce struct {
	sync.Once
	err error
}

// ensureKueue builds Kueue's controller (cached after the first build),
// pushes it to the cluster's registry, installs it with the cluster's
// side of gmini's queues (k8s/queue), and lets the backend read Kueue
// (k8s/components/queue's Role).
func ensureKueue(ctx context.Context, t *testing.T, cfg *envconf.Config) {
	t.Helper()
	kueueOnce.Do(func() { kueueOnce.err = installKueue(ctx, cfg) })
	if kueueOnce.err != nil {
		t.Fatalf("install Kueue: %v", kueueOnce.err)
	}
}

func installKueue(ctx context.Context, cfg *envconf.Config) error {
	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	reg, err := provider.Registry()
	if err != nil {
		return fmt.Errorf("the suite's cluster has no registry: %w", err)
	}
	start := time.Now()
	rc := cfg.Client().RESTConfig()
	if err := queue.Setup(ctx, logger, l, reg, rc, ns); err != nil {
		return err
	}
	// The backend, running since before Kueue was installed, looks for
	// it again at least every 30 s: until then a queue is "not enabled".
	c, err := deploy.Backend{Config: rc, Namespace: ns}.Client()
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Submit(ctx, map[string]any{"id": "kueue-probe"}, gmini.InQueue("no-such-queue"))
		var e *gmini.Error
		if !errors.As(err, &e) {
			last = fmt.Sprint(err)
			return false, nil
		}
		last = e.Error()
		return e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, "no-such-queue") && !strings.Contains(e.Message, "not enabled"), nil
	})
	if err != nil {
		return fmt.Errorf("the backend did not take up Kueue within a minute: last answer to a POST naming an unknown queue: %s", last)
	}
	logger.Info("the backend takes queues", "after", time.Since(start).Round(100*time.Millisecond))
	logger.Info("kueue ready for the suite", "elapsed", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }

func dyn(t *testing.T, cfg *envconf.Config) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(cfg.Client().RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// clusterQueue creates a ClusterQueue admitting slots runner pods at once
// (the runner template requests 10m CPU and 16Mi), held (stopPolicy Hold:
// nothing admitted) so a test can fill it before it starts.
func clusterQueue(ctx context.Context, t *testing.T, cfg *envconf.Config, name string, slots int, fair bool) {
	t.Helper()
	spec := map[string]any{
		"namespaceSelector": map[string]any{},
		// As k8s/queue: BestEffortFIFO lets Kueue move equivalent
		// Workloads aside when the head does not fit, and the order goes.
		"queueingStrategy": "StrictFIFO",
		"stopPolicy":       "Hold",
		"resourceGroups": []any{map[string]any{
			"coveredResources": []any{"cpu", "memory", "pods"},
			"flavors": []any{map[string]any{"name": "default", "resources": []any{
				map[string]any{"name": "cpu", "nominalQuota": fmt.Sprintf("%dm", 10*slots)},
				map[string]any{"name": "memory", "nominalQuota": fmt.Sprintf("%dMi", 16*slots)},
				map[string]any{"name": "pods", "nominalQuota": int64(slots)},
			}}},
		}},
	}
	if fair {
		spec["admissionScope"] = map[string]any{"admissionMode": "UsageBasedAdmissionFairSharing"}
	}
	cq := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	d := dyn(t, cfg)
	_ = d.Resource(clusterQueues).Delete(ctx, name, metav1.DeleteOptions{})
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := d.Resource(clusterQueues).Create(ctx, cq, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, nil // the old one is still being removed
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("create ClusterQueue %s: %v", name, err)
	}
	t.Cleanup(func() { _ = d.Resource(clusterQueues).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// release lets a held ClusterQueue admit.
func release(ctx context.Context, t *testing.T, cfg *envconf.Config, name string) time.Time {
	t.Helper()
	patch := []byte(`{"spec":{"stopPolicy":"None"}}`)
	if _, err := dyn(t, cfg).Resource(clusterQueues).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("release ClusterQueue %s: %v", name, err)
	}
	return time.Now()
}

func localQueue(ctx context.Context, t *testing.T, cfg *envconf.Config, name, cq string) {
	t.Helper()
	lq := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"clusterQueue": cq, "fairSharing": map[string]any{"weight": "1"}},
	}}
	d := dyn(t, cfg).Resource(localQueues).Namespace(ns)
	_ = d.Delete(ctx, name, metav1.DeleteOptions{})
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := d.Create(ctx, lq, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("create LocalQueue %s: %v", name, err)
	}
	t.Cleanup(func() { _ = d.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// admissions follows the order in which Kueue admits the followed
// experiments (their Workloads gaining QuotaReserved, from one watch:
// the order Kueue wrote them; the Jobs' unsuspends, which its Job
// reconcilers make in parallel, may land in another), and the most runner
// pods of the followed experiments not yet ended at any moment.
type admissions struct {
	mu       sync.Mutex
	follow   map[string]bool // experiment IDs
	order    []string        // experiment IDs, in admission order
	admitted map[string]bool
	created  map[string]time.Time // each admitted Workload's creation time
	at       map[string]time.Time // when the watch saw it admitted
	live     map[types.UID]string // pods not ended, by pod UID -> ID
	pods     map[string]int       // pods ever created, by ID
	maxLive  int
	stop     context.CancelFunc
}

func followAdmissions(ctx context.Context, t *testing.T, cfg *envconf.Config, ids []string) *admissions {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	a := &admissions{follow: map[string]bool{}, admitted: map[string]bool{}, created: map[string]time.Time{}, at: map[string]time.Time{}, live: map[types.UID]string{}, pods: map[string]int{}, stop: stop}
	for _, id := range ids {
		a.follow[id] = true
	}
	byJob := map[string]string{} // Job name -> experiment ID
	for _, id := range ids {
		byJob[jobspec.JobName(id)] = id
	}
	cs := clientset(t, cfg)
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	pods := f.Core().V1().Pods().Informer()
	wf := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn(t, cfg), 0, ns, nil)
	wls := wf.ForResource(workloads).Informer()
	onWorkload := func(obj any) {
		w, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		reserved := false
		conds, _, _ := unstructured.NestedSlice(w.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			reserved = reserved || m["type"] == "QuotaReserved" && m["status"] == "True"
		}
		if !reserved {
			return
		}
		for _, o := range w.GetOwnerReferences() {
			id, ok := byJob[o.Name]
			if !ok {
				continue
			}
			a.mu.Lock()
			if !a.admitted[id] {
				a.admitted[id] = true
				a.order = append(a.order, id)
				a.created[id] = w.GetCreationTimestamp().Time
				a.at[id] = time.Now()
			}
			a.mu.Unlock()
		}
	}
	onPod := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok || !a.follow[p.Annotations[jobspec.AnnotationID]] {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		ended := p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if _, seen := a.live[p.UID]; !seen && !ended {
			a.pods[p.Annotations[jobspec.AnnotationID]]++
		}
		if ended {
			delete(a.live, p.UID)
		} else {
			a.live[p.UID] = p.Annotations[jobspec.AnnotationID]
		}
		a.maxLive = max(a.maxLive, len(a.live))
	}
	_, _ = wls.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onWorkload, UpdateFunc: func(_, o any) { onWorkload(o) }})
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }, DeleteFunc: onPod})
	f.Start(ctx.Done())
	wf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), wls.HasSynced, pods.HasSynced) {
		t.Fatal("admissions: informers did not sync")
	}
	return a
}

func (a *admissions) snapshot() (order []string, maxLive int, pods map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.order), a.maxLive, maps.Clone(a.pods)
}

// checkRuns fails t unless at most slots runner pods were ever alive at
// once and every experiment of ids had exactly one pod.
func checkRuns(t *testing.T, maxLive, slots int, pods map[string]int, ids []string) {
	t.Helper()
	if maxLive > slots {
		t.Errorf("%d runner pods alive at once, the ClusterQueue admits %d", maxLive, slots)
	}
	for _, id := range ids {
		if pods[id] != 1 {
			t.Errorf("experiment %s had %d runner pods, want 1", id, pods[id])
		}
	}
}

// getStatus reads GET /experiments/{id}.
func getStatus(ctx context.Context, t *testing.T, cfg *envconf.Config, id string) wire.Status {
	t.Helper()
	st, err := backend(t, cfg).Get(ctx, id)
	if err != nil {
		t.Fatalf("GET /experiments/%s: %v", id, err)
	}
	return st
}

func postQueued(ctx context.Context, t *testing.T, cfg *envconf.Config, id, lq string) {
	t.Helper()
	// A LocalQueue created a moment ago is unknown until the backend's
	// informer has seen it (a 400 that names no queue of that name).
	var sub wire.Submission
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		sub, err = backend(t, cfg).Submit(ctx, map[string]any{"id": id}, gmini.InQueue(lq))
		var e *gmini.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, "does not exist") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !sub.Created {
		t.Fatalf("POST %s to queue %s = %+v (%v), want 201", id, lq, sub, err)
	}
}

// waitSucceeded waits until every experiment's status says Succeeded.
func waitSucceeded(ctx context.Context, t *testing.T, cfg *envconf.Config, ids []string, timeout time.Duration) {
	t.Helper()
	left := slices.Clone(ids)
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		left = slices.DeleteFunc(left, func(id string) bool { return getStatus(ctx, t, cfg, id).State == "Succeeded" })
		return len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("%d experiments not Succeeded after %s: %v\n%s", len(left), timeout, left, explain(ctx, t, cfg))
	}
}

// TestQueueFIFO: a ClusterQueue with room for 2 runners and 10
// experiments in one LocalQueue, submitted one a second.
func TestQueueFIFO(t *testing.T) {
	// 10, one a second: the set of 20 (TestQueueSet) is submitted in one
	// request, within a second or two, where Kueue's order is by UID.
	const n, slots = 10, 2
	const cq, lq = "e2e-fifo", "e2e-fifo"
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("fifo-%02d", i))
	}
	var adm *admissions
	// The last experiment's event stream, followed from before the
	// release to its end: the queue positions it carries.
	var (
		streamMu  sync.Mutex
		streamed  []int32
		watchDone = make(chan error, 1)
	)
	f := features.New("Kueue admits a queue's experiments in submission order, never more than its quota at once").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, slots, false)
			localQueue(ctx, t, cfg, lq, cq)
			adm = followAdmissions(ctx, t, cfg, ids)
			t.Cleanup(adm.stop)
			return ctx
		}).
		Assess("submitted while the ClusterQueue holds, each is Queued with its position", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Kueue orders a queue by its Workloads' creation time, which
			// the API keeps in whole seconds (ties: by UID): one second
			// between submissions makes submission order Kueue's order.
			for i, id := range ids {
				if i > 0 {
					time.Sleep(1100 * time.Millisecond)
				}
				postQueued(ctx, t, cfg, id, lq)
			}
			var positions []int
			err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
				positions = positions[:0]
				for _, id := range ids {
					st := getStatus(ctx, t, cfg, id)
					if st.State != "Queued" || st.Queue == nil || st.Queue.Position == nil {
						return false, nil
					}
					positions = append(positions, int(*st.Queue.Position))
				}
				return true, nil
			})
			if err != nil {
				t.Fatalf("not every experiment Queued with a position: %v (positions so far %v)", err, positions)
			}
			for i, p := range positions {
				if p != i {
					t.Errorf("positions %v, want 0..%d in submission order", positions, n-1)
					break
				}
			}
			st := getStatus(ctx, t, cfg, ids[n-1])
			if st.Queue.Name != lq || st.Queue.ClusterQueue != cq || st.Queue.Reason == "" {
				t.Errorf("queue of the last: %+v, want name %s, clusterQueue %s and a reason", *st.Queue, lq, cq)
			}
			if _, _, pods := adm.snapshot(); len(pods) != 0 {
				t.Errorf("pods while the ClusterQueue holds: %v", pods)
			}

			// Its event stream says where it waits too: the position GET
			// gives, without a change of state.
			go func() {
				done, err := backend(t, cfg).WatchExperiment(ctx, ids[n-1], 0, func(wire.Event) error { return nil },
					gmini.OnPosition(func(p wire.Position) error {
						streamMu.Lock()
						defer streamMu.Unlock()
						streamed = append(streamed, *p.Position)
						return nil
					}))
				if err == nil && done.State != "Succeeded" {
					err = fmt.Errorf("ended %q", done.State)
				}
				watchDone <- err
			}()
			err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				streamMu.Lock()
				defer streamMu.Unlock()
				return len(streamed) > 0, nil
			})
			streamMu.Lock()
			if err != nil || streamed[0] != int32(n-1) {
				t.Errorf("the event stream of %s: positions %v within 30s, want %d first", ids[n-1], streamed, n-1)
			}
			streamMu.Unlock()
			return ctx
		}).
		Assess("released, at most 2 run at once, all succeed, admitted in submission order (give or take two written at once), positions only go down", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			released := release(ctx, t, cfg, cq)
			last := map[string]int32{}
			rose := []string{}
			// The first estimate of each experiment's start, to compare
			// with when it was admitted: eta needs 3 admissions of the
			// LocalQueue first.
			eta := map[string]time.Time{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					order, _, _ := adm.snapshot()
					if len(order) == n {
						return
					}
					for _, id := range ids {
						if slices.Contains(order, id) {
							continue
						}
						st := getStatus(ctx, t, cfg, id)
						if st.Queue == nil || st.Queue.Position == nil {
							continue
						}
						if p, ok := last[id]; ok && *st.Queue.Position > p {
							rose = append(rose, fmt.Sprintf("%s %d->%d", id, p, *st.Queue.Position))
						}
						last[id] = *st.Queue.Position
						if _, ok := eta[id]; !ok && st.Queue.ETA != nil {
							eta[id] = *st.Queue.ETA
						}
					}
					time.Sleep(500 * time.Millisecond)
				}
			}()
			waitSucceeded(ctx, t, cfg, ids, 5*time.Minute)
			<-done
			order, maxLive, pods := adm.snapshot()
			t.Logf("all %d Succeeded %s after the release; admission order %v; most runner pods alive at once: %d", n, time.Since(released).Round(100*time.Millisecond), order, maxLive)
			// Kueue schedules in order but writes each admission from a
			// goroutine of its own: two admitted moments apart may land
			// in either order, nothing further.
			for rank, id := range order {
				if d := abs(rank - slices.Index(ids, id)); d > 1 {
					t.Errorf("admitted in order %v: %s is %d places from its submission order %v", order, id, d, ids)
					break
				}
			}
			checkRuns(t, maxLive, slots, pods, ids)
			if len(rose) > 0 {
				t.Errorf("positions went up: %v", rose)
			}
			select {
			case err := <-watchDone:
				if err != nil {
					t.Errorf("the event stream of %s: %v", ids[n-1], err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("the event stream of %s did not end with it", ids[n-1])
			}
			streamMu.Lock()
			t.Logf("queue positions on the event stream of %s: %v", ids[n-1], streamed)
			if len(streamed) < 2 {
				t.Errorf("positions on the event stream %v: want the first and at least one as the queue drained", streamed)
			}
			for i := 1; i < len(streamed); i++ {
				if streamed[i] >= streamed[i-1] {
					t.Errorf("positions on the event stream %v: %d is not below %d (a position is sent only when it changes)", streamed, streamed[i], streamed[i-1])
					break
				}
			}
			streamMu.Unlock()
			// How good the estimates were: a figure, not a bound.
			adm.mu.Lock()
			var sum, worst time.Duration
			for id, e := range eta {
				d := adm.at[id].Sub(e).Abs()
				sum += d
				worst = max(worst, d)
			}
			adm.mu.Unlock()
			if len(eta) == 0 {
				t.Errorf("no experiment ever had an eta")
			} else {
				t.Logf("eta: the first estimate of %d experiments against when Kueue admitted them: mean error %s, worst %s",
					len(eta), (sum / time.Duration(len(eta))).Round(100*time.Millisecond), worst.Round(100*time.Millisecond))
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestLocalQueueDeleted: a LocalQueue removed under waiting experiments.
func TestLocalQueueDeleted(t *testing.T) {
	const cq, lq, id = "e2e-gone", "e2e-gone", "queue-gone"
	f := features.New("a LocalQueue deleted: POSTs naming it are 400 saying so, and what waits in it says why").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, 1, false)
			localQueue(ctx, t, cfg, lq, cq)
			return ctx
		}).
		Assess("the waiting experiment stays Queued with Kueue's reason; a new POST naming the queue is refused, nothing created", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			postQueued(ctx, t, cfg, id, lq)
			// It would wait for ever: cancel it after the test.
			t.Cleanup(func() {
				_, _ = backend(t, cfg).Cancel(context.Background(), id)
			})
			if err := dyn(t, cfg).Resource(localQueues).Namespace(ns).Delete(ctx, lq, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete LocalQueue %s: %v", lq, err)
			}
			var last wire.Status
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				last = getStatus(ctx, t, cfg, id)
				return last.State == "Queued" && last.Queue != nil && strings.Contains(last.Queue.Reason, lq), nil
			})
			if err != nil {
				t.Errorf("the experiment in the deleted queue: %+v (reason %v); want Queued with a reason naming %s", last, last.Queue, lq)
			} else {
				t.Logf("the experiment in the deleted queue says: %s", last.Queue.Reason)
			}
			before := len(managedJobs(ctx, t, cfg))
			err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				_, err := backend(t, cfg).Submit(ctx, map[string]any{"id": "queue-gone-2"}, gmini.InQueue(lq))
				var e *gmini.Error
				return errors.As(err, &e) && e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, "does not exist"), nil
			})
			if err != nil {
				t.Errorf("a POST naming the deleted queue is not refused with 400 within 30 s")
			}
			if after := len(managedJobs(ctx, t, cfg)); after != before {
				t.Errorf("%d Jobs after the refused POSTs, %d before", after, before)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestKueueInstalled: Kueue from its module serves, and only Jobs that
// name a queue are its: one created running is suspended by its webhook
// and admitted; one naming no queue is left alone.
func TestKueueInstalled(t *testing.T) {
	const cq, lq = "e2e-smoke", "e2e-smoke"
	f := features.New("Kueue built from its module admits Jobs naming a queue, and only those").
		Assess("a Job naming a queue gets a Workload and is admitted; a Job naming none gets none", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, 1, false)
			localQueue(ctx, t, cfg, lq, cq)
			cs := clientset(t, cfg)
			job := func(name string, labels map[string]string) *batchv1.Job {
				return &batchv1.Job{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
					Spec: batchv1.JobSpec{
						// Never to run: suspended by the test or by Kueue.
						Suspend: ptr.To(true),
						Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
							RestartPolicy: corev1.RestartPolicyNever,
							Containers: []corev1.Container{{Name: "c", Image: "gmini-runner:dev", Resources: corev1.ResourceRequirements{
								Requests: corev1.ResourceList{corev1.ResourceCPU: resourceMust("10m"), corev1.ResourceMemory: resourceMust("16Mi")},
								Limits:   corev1.ResourceList{corev1.ResourceCPU: resourceMust("10m"), corev1.ResourceMemory: resourceMust("16Mi")},
							}}},
						}},
					},
				}
			}
			queuedJob := job("kueue-smoke-queued", map[string]string{"kueue.x-k8s.io/queue-name": lq})
			plain := job("kueue-smoke-plain", nil)
			for _, j := range []*batchv1.Job{queuedJob, plain} {
				if _, err := cs.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
					t.Fatalf("create Job %s: %v", j.Name, err)
				}
				name := j.Name
				t.Cleanup(func() {
					bg := metav1.DeletePropagationBackground
					_ = cs.BatchV1().Jobs(ns).Delete(context.Background(), name, metav1.DeleteOptions{PropagationPolicy: &bg})
				})
			}
			release(ctx, t, cfg, cq)
			var wl string
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				list, err := dyn(t, cfg).Resource(workloads).Namespace(ns).List(ctx, metav1.ListOptions{})
				if err != nil {
					return false, nil
				}
				for _, w := range list.Items {
					for _, o := range w.GetOwnerReferences() {
						if o.Name == plain.Name {
							return false, fmt.Errorf("Workload %s for the Job that names no queue", w.GetName())
						}
						if o.Name == queuedJob.Name {
							wl = w.GetName()
						}
					}
				}
				j, err := cs.BatchV1().Jobs(ns).Get(ctx, queuedJob.Name, metav1.GetOptions{})
				return err == nil && wl != "" && !ptr.Deref(j.Spec.Suspend, true), nil
			})
			if err != nil {
				t.Fatalf("the queued Job not admitted (Workload %q): %v", wl, err)
			}
			if j, err := cs.BatchV1().Jobs(ns).Get(ctx, plain.Name, metav1.GetOptions{}); err != nil || !ptr.Deref(j.Spec.Suspend, false) {
				t.Errorf("the Job naming no queue changed: %v", err)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestQueueFairShare: two teams' LocalQueues of equal weight on one
// ClusterQueue with room for 4, 20 experiments each submitted at once.
func TestQueueFairShare(t *testing.T) {
	const n, slots = 20, 4
	const cq = "e2e-fair"
	teams := []string{"team-a", "team-b"}
	ids := map[string][]string{}
	var all []string
	for _, team := range teams {
		for i := range n {
			id := fmt.Sprintf("%s-%02d", team, i)
			ids[team] = append(ids[team], id)
			all = append(all, id)
		}
	}
	var adm *admissions
	f := features.New("two teams' queues of equal weight share the ClusterQueue: admissions alternate").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, slots, true)
			for _, team := range teams {
				localQueue(ctx, t, cfg, team, cq)
			}
			adm = followAdmissions(ctx, t, cfg, all)
			t.Cleanup(adm.stop)
			return ctx
		}).
		Assess("after any prefix of admissions the two teams' counts differ by at most 2", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Kueue orders the teams by the usage it samples into their
			// LocalQueues' status: the samples go in the log, so that an
			// order that did not alternate can be read against them.
			usage := sampleQueueUsage(ctx, t, cfg, teams)
			defer func() { t.Logf("the teams' LocalQueue usage as Kueue sampled it:\n%s", usage()) }()
			var wg sync.WaitGroup
			for _, team := range teams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, id := range ids[team] {
						postQueued(ctx, t, cfg, id, team)
					}
				}()
			}
			wg.Wait()
			released := release(ctx, t, cfg, cq)
			waitSucceeded(ctx, t, cfg, all, 5*time.Minute)
			order, maxLive, pods := adm.snapshot()
			t.Logf("all %d Succeeded %s after the release; most runner pods alive at once: %d; admission order %v",
				len(all), time.Since(released).Round(100*time.Millisecond), maxLive, order)
			counts := map[string]int{}
			worst := 0
			for _, id := range order {
				counts[id[:len("team-a")]]++
				worst = max(worst, abs(counts["team-a"]-counts["team-b"]))
			}
			if worst > 2 {
				t.Errorf("admissions did not alternate: the counts differed by %d after some prefix (order %v)", worst, order)
			}
			t.Logf("largest difference between the teams' admissions after any prefix: %d", worst)
			checkRuns(t, maxLive, slots, pods, all)
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// sampleQueueUsage reads the LocalQueues' admission fair sharing status
// every second until ctx ends or the returned func is called; that func
// returns each change seen, one line each.
func sampleQueueUsage(ctx context.Context, t *testing.T, cfg *envconf.Config, names []string) func() string {
	ctx, stop := context.WithCancel(ctx)
	d := dyn(t, cfg).Resource(localQueues).Namespace(ns)
	start := time.Now()
	var (
		mu    sync.Mutex
		lines []string
		done  = make(chan struct{})
	)
	last := map[string]string{}
	go func() {
		defer close(done)
		for {
			for _, name := range names {
				lq, err := d.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					continue
				}
				afs, _, _ := unstructured.NestedMap(lq.Object, "status", "fairSharing")
				cur := fmt.Sprint(afs)
				if cur != last[name] {
					last[name] = cur
					mu.Lock()
					lines = append(lines, fmt.Sprintf("+%s %s %s", time.Since(start).Round(100*time.Millisecond), name, cur))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return func() string {
		stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(lines, "\n")
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestQueuedCancel: an experiment cancelled while Queued never runs.
func TestQueuedCancel(t *testing.T) {
	const cq, lq, id = "e2e-cancel", "e2e-cancel", "queued-cancel"
	var adm *admissions
	f := features.New("a queued experiment cancelled never gets a pod, and its record says Cancelled").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, 1, false)
			localQueue(ctx, t, cfg, lq, cq)
			adm = followAdmissions(ctx, t, cfg, []string{id})
			t.Cleanup(adm.stop)
			return ctx
		}).
		Assess("POST, Queued, DELETE, the queue released: Cancelled, no pod", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			postQueued(ctx, t, cfg, id, lq)
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				return getStatus(ctx, t, cfg, id).State == "Queued", nil
			})
			if err != nil {
				t.Fatalf("never Queued: %+v", getStatus(ctx, t, cfg, id))
			}
			if _, err := backend(t, cfg).Cancel(ctx, id); err != nil {
				t.Fatalf("DELETE: %v", err)
			}
			release(ctx, t, cfg, cq)
			err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				return getStatus(ctx, t, cfg, id).State == "Cancelled", nil
			})
			if err != nil {
				t.Fatalf("not Cancelled: %+v", getStatus(ctx, t, cfg, id))
			}
			time.Sleep(5 * time.Second) // room for a wrongly admitted Job to make its pod
			if _, _, pods := adm.snapshot(); pods[id] != 0 {
				t.Errorf("the cancelled experiment got %d pods", pods[id])
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// scaleKueue sets Kueue's replicas; 0 with its pod force-deleted is a
// crash of the controller as far as admission is concerned.
func scaleKueue(ctx context.Context, t *testing.T, cfg *envconf.Config, replicas int32) {
	t.Helper()
	cs := clientset(t, cfg)
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
	if _, err := cs.AppsV1().Deployments(queue.Namespace).Patch(ctx, queue.Deployment, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale Kueue to %d: %v", replicas, err)
	}
	if replicas > 0 {
		if err := queue.WaitServing(ctx, cfg.Client().RESTConfig(), 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := cs.CoreV1().Pods(queue.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
		t.Fatalf("kill Kueue's pod: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(queue.Namespace).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("Kueue's pod still there: %v", err)
	}
}

// TestKueueDown: Kueue's controller killed mid-sweep and started again.
func TestKueueDown(t *testing.T) {
	const cq, lq, slots = "e2e-down", "e2e-down", 2
	var before, during []string
	for i := range 4 {
		before = append(before, fmt.Sprintf("down-before-%d", i))
		during = append(during, fmt.Sprintf("down-during-%d", i))
	}
	all := append(slices.Clone(before), during...)
	var adm *admissions
	f := features.New("Kueue killed mid-sweep: POSTs still answer 201, nothing runs until it is back, then everything runs once, never over the quota").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, slots, false)
			localQueue(ctx, t, cfg, lq, cq)
			release(ctx, t, cfg, cq)
			adm = followAdmissions(ctx, t, cfg, all)
			t.Cleanup(adm.stop)
			t.Cleanup(func() { scaleKueue(context.Background(), t, cfg, 1) })
			return ctx
		}).
		Assess("killed after the first 4 were submitted, 4 more submitted while it is down", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, id := range before {
				postQueued(ctx, t, cfg, id, lq)
			}
			scaleKueue(ctx, t, cfg, 0)
			for _, id := range during {
				postQueued(ctx, t, cfg, id, lq)
			}
			for _, id := range during {
				if st := getStatus(ctx, t, cfg, id); st.State != "Queued" {
					t.Errorf("%s submitted while Kueue is down: state %s, want Queued", id, st.State)
				}
			}
			time.Sleep(10 * time.Second)
			_, _, pods := adm.snapshot()
			for _, id := range during {
				if pods[id] != 0 {
					t.Errorf("%s got a pod while Kueue was down", id)
				}
			}
			return ctx
		}).
		Assess("once it is back, all 8 run once, never more than 2 at a time", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			back := time.Now()
			scaleKueue(ctx, t, cfg, 1)
			t.Logf("Kueue serving again %s after it was started", time.Since(back).Round(100*time.Millisecond))
			waitSucceeded(ctx, t, cfg, all, 5*time.Minute)
			_, maxLive, pods := adm.snapshot()
			t.Logf("all %d Succeeded %s after Kueue was started again; most runner pods alive at once: %d", len(all), time.Since(back).Round(100*time.Millisecond), maxLive)
			checkRuns(t, maxLive, slots, pods, all)
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

// TestQueueSet: a sweep of 20 submitted as one experiment set to a queue
// with room for 2.
func TestQueueSet(t *testing.T) {
	const n, slots = 20, 2
	const cq, lq, set = "e2e-set", "e2e-set", "e2e-sweep"
	var ids []string
	req := wire.SetRequest{ID: set}
	for i := range n {
		id := fmt.Sprintf("sweep-%02d", i)
		ids = append(ids, id)
		// An item with a queue is built by hand (client.Item has none).
		req.Items = append(req.Items, json.RawMessage(fmt.Sprintf(`{"queue": %q, "experiment": {"id": %q, "lr": %d}}`, lq, id, i)))
	}
	var adm *admissions
	setCounts := func(ctx context.Context, t *testing.T, cfg *envconf.Config) map[string]int {
		t.Helper()
		got, err := backend(t, cfg).GetSet(ctx, set, gmini.ListOptions{})
		if err != nil || got.Total != n {
			t.Fatalf("GET /experiment-sets/%s: total %d (%v), want %d", set, got.Total, err, n)
		}
		return got.Counts
	}
	f := features.New("a set of 20 to a queue with room for 2: one request, all Queued, then all Succeeded, never more than 2 at once").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureKueue(ctx, t, cfg)
			clusterQueue(ctx, t, cfg, cq, slots, false)
			localQueue(ctx, t, cfg, lq, cq)
			adm = followAdmissions(ctx, t, cfg, ids)
			t.Cleanup(adm.stop)
			return ctx
		}).
		Assess("POST /experiment-sets creates all 20, each its own Job, Queued; sent again it creates nothing", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for round, want := range []string{wire.OutcomeCreated, wire.OutcomeExisting} {
				t0 := time.Now()
				sub, err := backend(t, cfg).SubmitSet(ctx, req)
				if err != nil || len(sub.Items) != n {
					t.Fatalf("POST /experiment-sets = %+v (%v), want %d items", sub, err, n)
				}
				for i, it := range sub.Items {
					if it.Index != i || it.ID != ids[i] || it.Outcome != want {
						t.Errorf("round %d item %d: %+v, want %s %s", round, i, it, ids[i], want)
					}
				}
				t.Logf("round %d: the set answered in %s", round, time.Since(t0).Round(time.Millisecond))
			}
			if c := setCounts(ctx, t, cfg); c["Queued"] != n {
				t.Errorf("set counts %v, want %d Queued", c, n)
			}
			if jobs := managedJobs(ctx, t, cfg); len(jobs) < n {
				t.Errorf("%d Jobs", len(jobs))
			}
			return ctx
		}).
		Assess("released: all 20 Succeeded, at most 2 at once, admitted in the order Kueue keeps (its Workloads' creation seconds)", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// The set's event stream carries its items' queue positions:
			// every item's while the ClusterQueue holds, then their
			// changes as the queue drains.
			var mu sync.Mutex
			streamed := map[string][]int32{}
			watched := make(chan error, 1)
			go func() {
				done, err := backend(t, cfg).WatchSet(ctx, set, 0, func(wire.Event) error { return nil },
					gmini.OnPosition(func(p wire.Position) error {
						mu.Lock()
						defer mu.Unlock()
						streamed[p.Experiment] = append(streamed[p.Experiment], *p.Position)
						return nil
					}))
				if err == nil && done.Counts["Succeeded"] != n {
					err = fmt.Errorf("ended with %v", done.Counts)
				}
				watched <- err
			}()
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				mu.Lock()
				defer mu.Unlock()
				return len(streamed) == n, nil
			})
			if err != nil {
				mu.Lock()
				t.Errorf("the set's event stream gave the positions of %d of %d items within 30s: %v", len(streamed), n, streamed)
				mu.Unlock()
			}
			released := release(ctx, t, cfg, cq)
			waitSucceeded(ctx, t, cfg, ids, 5*time.Minute)
			select {
			case err := <-watched:
				if err != nil {
					t.Errorf("the set's event stream: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("the set's event stream did not end with its items")
			}
			mu.Lock()
			moves := 0
			for id, ps := range streamed {
				moves += len(ps) - 1
				for i := 1; i < len(ps); i++ {
					switch {
					case ps[i] == ps[i-1]:
						t.Errorf("%s's positions on the set's stream %v: %d sent twice in a row (a position is sent when it changes)", id, ps, ps[i])
					case ps[i] > ps[i-1]:
						// Items created in the same second are Kueue's to
						// order among themselves: logged, not failed.
						t.Logf("%s's position went up on the set's stream: %v", id, ps)
					}
				}
			}
			t.Logf("the set's event stream: positions of %d items, %d changes, the last item's %v", len(streamed), moves, streamed[ids[n-1]])
			if moves == 0 {
				t.Errorf("no position changed on the set's stream as the queue drained: %v", streamed)
			}
			mu.Unlock()
			waitSucceeded(ctx, t, cfg, ids, 5*time.Minute)
			order, maxLive, pods := adm.snapshot()
			t.Logf("all %d Succeeded %s after the release; most runner pods alive at once: %d; admission order %v", n, time.Since(released).Round(100*time.Millisecond), maxLive, order)
			if c := setCounts(ctx, t, cfg); c["Succeeded"] != n {
				t.Errorf("set counts %v, want %d Succeeded", c, n)
			}
			checkRuns(t, maxLive, slots, pods, ids)
			adm.mu.Lock()
			defer adm.mu.Unlock()
			for i := 1; i < len(order); i++ {
				if adm.created[order[i]].Before(adm.created[order[i-1]]) {
					t.Errorf("%s (Workload created %s) admitted after %s (created %s)", order[i], adm.created[order[i]], order[i-1], adm.created[order[i-1]])
				}
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
