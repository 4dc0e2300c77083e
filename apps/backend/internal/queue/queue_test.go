package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const ns = "gmini-test"

var (
	lqGVR = schema.GroupVersionResource{Group: Group, Version: "v1beta2", Resource: "localqueues"}
	wlGVR = schema.GroupVersionResource{Group: Group, Version: "v1beta2", Resource: "workloads"}
	t0    = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
)

// clock is a settable time.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func localQueueObj(name, cq string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/v1beta2", "kind": "LocalQueue",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"clusterQueue": cq},
	}}
}

// workloadObj is the Workload Kueue makes for Job jobUID in queue, with
// conditions given as type=status:reason:message@time.
func workloadObj(name string, jobUID types.UID, queue string, conds ...metav1.Condition) *unstructured.Unstructured {
	var cs []any
	for _, c := range conds {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&c)
		if err != nil {
			panic(err)
		}
		cs = append(cs, m)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Group + "/v1beta2", "kind": "Workload",
		"metadata": map[string]any{
			"name": name, "namespace": ns, "uid": "wl-" + name,
			"ownerReferences": []any{map[string]any{"apiVersion": "batch/v1", "kind": "Job", "name": "job-of-" + name, "uid": string(jobUID)}},
		},
		"spec":   map[string]any{"queueName": queue, "podSets": []any{map[string]any{"name": "main", "count": int64(1)}}},
		"status": map[string]any{"conditions": cs},
	}}
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string, at time.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(at)}
}

// kueueResources is what discovery says a cluster with Kueue v0.17 serves.
func kueueResources() []*metav1.APIResourceList {
	return []*metav1.APIResourceList{
		{GroupVersion: Group + "/v1beta2", APIResources: []metav1.APIResource{{Name: "localqueues", Namespaced: true}, {Name: "workloads", Namespaced: true}}},
		{GroupVersion: Group + "/v1beta1", APIResources: []metav1.APIResource{{Name: "localqueues", Namespaced: true}, {Name: "workloads", Namespaced: true}}},
		{GroupVersion: VisibilityGroup + "/v1beta2", APIResources: []metav1.APIResource{{Name: "localqueues/pendingworkloads", Namespaced: true}}},
	}
}

type fixture struct {
	q         *Queues
	dyn       *dynamicfake.FakeDynamicClient
	discovery *fakediscovery.FakeDiscovery
	clock     *clock
	// visibility counts the calls to the visibility API, whose answer
	// pending gives (nil: 503).
	visibility atomic.Int32
	mu         sync.Mutex
	pending    map[string][]string // LocalQueue → Workloads in order
	path       atomic.Value
}

type options struct {
	served     bool
	defaultQ   string
	template   string
	objects    []runtime.Object
	noVisibSrv bool
}

func newFixture(t *testing.T, o options) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{t: t0}, pending: map[string][]string{}}
	kube := fake.NewClientset()
	f.discovery = kube.Discovery().(*fakediscovery.FakeDiscovery)
	if o.served {
		f.discovery.Resources = kueueResources()
	}
	f.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{lqGVR: "LocalQueueList", wlGVR: "WorkloadList"}, o.objects...)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.visibility.Add(1)
		f.path.Store(r.URL.Path + "?" + r.URL.RawQuery)
		parts := strings.Split(r.URL.Path, "/")
		lq := parts[len(parts)-2]
		f.mu.Lock()
		names, ok := f.pending[lq]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":503,"reason":"ServiceUnavailable"}`, http.StatusServiceUnavailable)
			return
		}
		var out pendingWorkloads
		for i, n := range names {
			out.Items = append(out.Items, struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				PositionInLocalQueue int32 `json:"positionInLocalQueue"`
			}{Metadata: struct {
				Name string `json:"name"`
			}{Name: n}, PositionInLocalQueue: int32(i)})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	rc, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
	}}}}
	if o.template != "" {
		tmpl.Labels = map[string]string{jobspec.LabelQueue: o.template}
	}
	f.q = New(Config{
		Dynamic: f.dyn, Discovery: f.discovery, REST: rc.Discovery().RESTClient(),
		Namespace: ns, Default: o.defaultQ, Templates: template.Static{Template: tmpl},
		Now: f.clock.Now, Recheck: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.q.Start(ctx)
	return f
}

// synced waits until the informers have listed, or the check said no.
func (f *fixture) synced(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		lqs, wls := f.q.informers()
		if lqs != nil && lqs.HasSynced() && wls.HasSynced() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("informers not synced; queues: %q", f.q.whyNot())
}

// checked waits for the first discovery check to finish.
func (f *fixture) checked(t *testing.T) {
	t.Helper()
	if _, err := f.q.recheck(context.Background(), time.Hour); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	queues := []runtime.Object{localQueueObj("team-a", "cq"), localQueueObj("team-b", "cq")}
	for _, tt := range []struct {
		name      string
		opts      options
		requested string
		want      string
		wantKind  failure.Kind
		wantMsg   string
	}{
		{name: "named and known", opts: options{served: true, objects: queues}, requested: "team-b", want: "team-b"},
		{name: "named, unknown: the valid ones listed", opts: options{served: true, objects: queues}, requested: "team-c",
			wantKind: failure.Invalid, wantMsg: `queue "team-c" does not exist in namespace gmini-test: its queues are team-a, team-b`},
		{name: "named, none exist", opts: options{served: true}, requested: "team-a",
			wantKind: failure.Invalid, wantMsg: "it has none"},
		{name: "the hold's queue is reserved", opts: options{served: true, objects: queues}, requested: jobspec.HoldQueue,
			wantKind: failure.Invalid, wantMsg: "reserved"},
		{name: "named, Kueue not served", opts: options{}, requested: "team-a",
			wantKind: failure.Invalid, wantMsg: "queues are not enabled in namespace gmini-test (Kueue's API (localqueues.kueue.x-k8s.io) is not served)"},
		{name: "none named, no default", opts: options{served: true, objects: queues}, want: ""},
		{name: "none named, no default, Kueue not served", opts: options{}, want: ""},
		{name: "the flag's default", opts: options{served: true, objects: queues, defaultQ: "team-a"}, want: "team-a"},
		{name: "named wins over the default", opts: options{served: true, objects: queues, defaultQ: "team-a"}, requested: "team-b", want: "team-b"},
		{name: "the template's label", opts: options{served: true, objects: queues, template: "team-b"}, want: "team-b"},
		{name: "the flag wins over the template", opts: options{served: true, objects: queues, defaultQ: "team-a", template: "team-b"}, want: "team-a"},
		{name: "the default does not exist: the backend's fault", opts: options{served: true, objects: queues, defaultQ: "gone"},
			wantKind: failure.Unavailable, wantMsg: `the default queue "gone" (from --default-queue) does not exist in namespace gmini-test: its queues are team-a, team-b`},
		{name: "a default, Kueue not served", opts: options{template: "team-a"},
			wantKind: failure.Unavailable, wantMsg: `the default queue "team-a" (from the template's label kueue.x-k8s.io/queue-name) cannot be used: queues are not enabled`},
		{name: "Kueue's default LocalQueue", opts: options{served: true, objects: append(queues[:2:2], localQueueObj(DefaultLocalQueue, "cq"))}, want: DefaultLocalQueue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			f.checked(t)
			if tt.opts.served {
				f.synced(t)
			}
			got, err := f.q.Resolve(context.Background(), tt.requested)
			if tt.wantKind != "" {
				if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Resolve(%q) = %q, %v (kind %q); want %s saying %q", tt.requested, got, err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Resolve(%q) = %q, %v; want %q", tt.requested, got, err, tt.want)
			}
		})
	}
}

// Until the LocalQueues are listed nothing proves a queue exists: 503.
func TestResolveBeforeTheQueuesAreLoaded(t *testing.T) {
	f := newFixture(t, options{served: true, objects: []runtime.Object{localQueueObj("team-a", "cq")}})
	f.checked(t)
	// An informer that has not listed yet: one never started (blocking
	// the fake client's list and watch left a window in which client-go's
	// reflector still synced, now and then).
	f.q.mu.Lock()
	f.q.lqs = cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{})
	f.q.mu.Unlock()
	_, err := f.q.Resolve(context.Background(), "team-a")
	if failure.KindOf(err) != failure.Unavailable || !strings.Contains(err.Error(), "not loaded yet") {
		t.Fatalf("Resolve before the informer synced = %v, want Unavailable, not loaded yet", err)
	}
}

// A backend that may not list LocalQueues runs without queues and says
// why, rather than retrying a forbidden list for ever.
func TestResolveForbidden(t *testing.T) {
	f := newFixture(t, options{served: true})
	f.dyn.PrependReactor("list", "workloads", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: Group, Resource: "workloads"}, "", fmt.Errorf("RBAC"))
	})
	f.checked(t)
	_, err := f.q.Resolve(context.Background(), "team-a")
	if failure.KindOf(err) != failure.Invalid || !strings.Contains(err.Error(), "the backend may not list workloads.kueue.x-k8s.io in namespace gmini-test") {
		t.Fatalf("Resolve = %v, want Invalid naming the forbidden list", err)
	}
	if lqs, _ := f.q.informers(); lqs != nil {
		t.Error("informers started without the right to list")
	}
}

// Kueue installed after the backend started is found: a request looks
// again once minRecheck has passed since the last check.
func TestKueueInstalledLater(t *testing.T) {
	f := newFixture(t, options{objects: []runtime.Object{localQueueObj("team-a", "cq")}})
	f.checked(t)
	if _, err := f.q.Resolve(context.Background(), "team-a"); failure.KindOf(err) != failure.Invalid {
		t.Fatalf("Resolve without Kueue = %v, want Invalid", err)
	}
	f.discovery.Resources = kueueResources()
	f.discovery.Fake.ClearActions()
	if _, err := f.q.Resolve(context.Background(), "team-a"); failure.KindOf(err) != failure.Invalid {
		t.Fatalf("Resolve within minRecheck = %v, want Invalid still (no new discovery)", err)
	}
	if n := len(f.discovery.Actions()); n != 0 {
		t.Errorf("a request within minRecheck asked discovery %d times", n)
	}
	f.clock.Add(minRecheck)
	_, err := f.q.Resolve(context.Background(), "team-a")
	for deadline := time.Now().Add(5 * time.Second); failure.KindOf(err) == failure.Unavailable && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // found; the informer is syncing
		_, err = f.q.Resolve(context.Background(), "team-a")
	}
	if err != nil {
		t.Fatalf("Resolve once Kueue is served = %v", err)
	}
}

func admittedAt(at time.Time) metav1.Condition {
	return cond(condAdmitted, metav1.ConditionTrue, "Admitted", "The workload is admitted", at)
}

func waiting(msg string) metav1.Condition {
	return cond(condQuotaReserved, metav1.ConditionFalse, "Pending", msg, t0.Add(-time.Minute))
}

func TestDescribe(t *testing.T) {
	const quota = "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default, 1 more needed"
	objs := []runtime.Object{
		localQueueObj("team-a", "shared"),
		workloadObj("job-q1", "uid-q1", "team-a", waiting(quota)),
		workloadObj("job-q2", "uid-q2", "team-a", waiting(quota)),
		workloadObj("job-new", "uid-new", "team-a"),
		workloadObj("job-far", "uid-far", "team-a", waiting(quota)),
		// Three admitted in the last minute: 2 intervals over 60 s.
		workloadObj("job-a1", "uid-a1", "team-a", admittedAt(t0.Add(-60*time.Second))),
		workloadObj("job-a2", "uid-a2", "team-a", admittedAt(t0.Add(-30*time.Second))),
		workloadObj("job-a3", "uid-a3", "team-a", admittedAt(t0.Add(-10*time.Second))),
	}
	f := newFixture(t, options{served: true, objects: objs})
	f.pending["team-a"] = []string{"job-q1", "job-q2", "job-new"}
	f.checked(t)
	f.synced(t)
	ctx := context.Background()
	pos := func(p int32) *int32 { return &p }
	eta := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	for _, tt := range []struct {
		name   string
		qname  string
		job    types.UID
		queued bool
		want   string // JSON
	}{
		{name: "first in line", qname: "team-a", job: "uid-q1", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", pos(0), quota, eta(30*time.Second)))},
		{name: "second: eta = now + (1+1) / (2/60 s)", qname: "team-a", job: "uid-q2", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", pos(1), quota, eta(60*time.Second)))},
		{name: "Kueue has not looked at it yet", qname: "team-a", job: "uid-new", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", pos(2), "waiting for Kueue to consider it", eta(90*time.Second)))},
		{name: "beyond the positions read: no position, no eta", qname: "team-a", job: "uid-far", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", nil, quota, nil))},
		{name: "no Workload yet", qname: "team-a", job: "uid-none", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", nil, "Kueue has made no Workload for the Job yet (is Kueue's controller running?)", nil))},
		{name: "admitted: name and ClusterQueue only", qname: "team-a", job: "uid-a1",
			want: jsonOf(t, wireQueue("team-a", "shared", nil, "", nil))},
		{name: "the name from the Workload (a record)", job: "uid-q1", queued: true,
			want: jsonOf(t, wireQueue("team-a", "shared", pos(0), quota, eta(30*time.Second)))},
		{name: "no name, no Workload", job: "uid-none", want: "null"},
		{name: "held", qname: jobspec.HoldQueue, job: "uid-none", want: "null"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := jsonOf(t, f.q.Describe(ctx, tt.qname, tt.job, tt.queued))
			if got != tt.want {
				t.Errorf("Describe = %s\nwant       %s", got, tt.want)
			}
		})
	}
	if p, _ := f.path.Load().(string); p != "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/gmini-test/localqueues/team-a/pendingworkloads?limit=5000" {
		t.Errorf("visibility path = %s", p)
	}
}

// Positions cost one visibility call per LocalQueue and TTL, however many
// requests ask, also all at once; a failing visibility API leaves the
// position out, cached as well.
func TestPositionsAreCached(t *testing.T) {
	objs := []runtime.Object{
		localQueueObj("team-a", "shared"), localQueueObj("team-b", "shared"),
		workloadObj("job-a", "uid-a", "team-a", waiting("no quota")),
		workloadObj("job-b", "uid-b", "team-b", waiting("no quota")),
	}
	f := newFixture(t, options{served: true, objects: objs})
	f.pending["team-a"] = []string{"job-a"}
	f.checked(t)
	f.synced(t)
	ctx := context.Background()
	describeMany := func(job types.UID, queue string) (withPos int) {
		var wg sync.WaitGroup
		var n atomic.Int32
		for range 50 {
			wg.Go(func() {
				if q := f.q.Describe(ctx, queue, job, true); q != nil && q.Position != nil {
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return int(n.Load())
	}
	if n := describeMany("uid-a", "team-a"); n != 50 || f.visibility.Load() != 1 {
		t.Fatalf("50 concurrent requests: %d with a position, %d visibility calls; want 50 and 1", n, f.visibility.Load())
	}
	f.clock.Add(DefaultPositionTTL - time.Millisecond)
	if n := describeMany("uid-a", "team-a"); n != 50 || f.visibility.Load() != 1 {
		t.Fatalf("within the TTL: %d with a position, %d visibility calls; want 50 and 1", n, f.visibility.Load())
	}
	f.clock.Add(time.Millisecond)
	if n := describeMany("uid-a", "team-a"); n != 50 || f.visibility.Load() != 2 {
		t.Fatalf("after the TTL: %d with a position, %d visibility calls; want 50 and 2", n, f.visibility.Load())
	}
	// team-b's visibility answers 503: no position, no error, one call.
	if n := describeMany("uid-b", "team-b"); n != 0 || f.visibility.Load() != 3 {
		t.Fatalf("failing visibility: %d with a position, %d visibility calls; want 0 and 3", n, f.visibility.Load())
	}
	if q := f.q.Describe(ctx, "team-b", "uid-b", true); q == nil || q.Reason != "no quota" || q.ClusterQueue != "shared" {
		t.Errorf("without a position the rest stays: %+v", q)
	}
}

// Kueue's admissions seen by the Workload informer make the rate, also
// those of Workloads deleted since (a finished Job's TTL).
func TestAdmissionsAreObserved(t *testing.T) {
	f := newFixture(t, options{served: true, objects: []runtime.Object{localQueueObj("team-a", "cq")}})
	f.checked(t)
	f.synced(t)
	ctx := context.Background()
	wls := f.dyn.Resource(wlGVR).Namespace(ns)
	for i, ago := range []time.Duration{40 * time.Second, 20 * time.Second} {
		w := workloadObj(fmt.Sprintf("job-%d", i), types.UID(fmt.Sprintf("uid-%d", i)), "team-a", admittedAt(t0.Add(-ago)))
		if _, err := wls.Create(ctx, w, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Admitted, then deleted with its Job.
	w := workloadObj("job-gone", "uid-gone", "team-a", waiting("no quota"))
	if _, err := wls.Create(ctx, w, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w = workloadObj("job-gone", "uid-gone", "team-a", admittedAt(t0.Add(-10*time.Second)))
	if _, err := wls.Update(ctx, w, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, ok := f.q.rates.perSecond("team-a", t0); ok {
			if want := 2.0 / 40; r != want {
				t.Fatalf("rate = %v, want %v", r, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("three admissions never made a rate")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := wls.Delete(ctx, "job-gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.q.rates.perSecond("team-a", t0); !ok {
		t.Error("a deleted Workload's admission was forgotten")
	}
}

func TestRate(t *testing.T) {
	for _, tt := range []struct {
		name string
		// admissions, as seconds before t0, by uid
		admissions map[types.UID][]int
		want       float64 // admissions per second; 0: no estimate
	}{
		{name: "none"},
		{name: "two are too few", admissions: map[types.UID][]int{"a": {10}, "b": {5}}},
		{name: "three in 20 s", admissions: map[types.UID][]int{"a": {20}, "b": {10}, "c": {5}}, want: 2.0 / 20},
		{name: "one Workload seen many times counts once", admissions: map[types.UID][]int{"a": {20, 20, 20}, "b": {10}}},
		{name: "evicted and admitted again counts twice", admissions: map[types.UID][]int{"a": {20, 15}, "b": {10}}, want: 2.0 / 20},
		{name: "older than the window is forgotten", admissions: map[types.UID][]int{"a": {601}, "b": {30}, "c": {20}, "d": {10}}, want: 2.0 / 30},
		{name: "a stalled queue slows down", admissions: map[types.UID][]int{"a": {300}, "b": {299}, "c": {298}}, want: 2.0 / 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRates(DefaultRateWindow)
			for uid, agos := range tt.admissions {
				for _, ago := range agos {
					r.observe("q", uid, t0.Add(-time.Duration(ago)*time.Second), t0)
				}
			}
			got, ok := r.perSecond("q", t0)
			if ok != (tt.want != 0) || got != tt.want {
				t.Errorf("perSecond = %v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}

func TestETA(t *testing.T) {
	c := &clock{t: t0}
	q := New(Config{Now: c.Now})
	if _, ok := q.eta("q", 0); ok {
		t.Error("an eta without admissions")
	}
	for i, ago := range []int{100, 50, 0} {
		q.rates.observe("q", types.UID(fmt.Sprint(i)), t0.Add(-time.Duration(ago)*time.Second), t0)
	}
	// 2 intervals in 100 s: 0.02 admissions per second, 50 s each.
	for pos, want := range map[int32]time.Duration{0: 50 * time.Second, 1: 100 * time.Second, 9: 500 * time.Second} {
		got, ok := q.eta("q", pos)
		if !ok || !got.Equal(t0.Add(want)) {
			t.Errorf("eta(position %d) = %v, %v; want now + %v", pos, got, ok, want)
		}
	}
}

func wireQueue(name, cq string, pos *int32, reason string, eta *time.Time) *wire.Queue {
	return &wire.Queue{Name: name, ClusterQueue: cq, Position: pos, Reason: reason, ETA: eta}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
