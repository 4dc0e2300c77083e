package main

// The queue part, on the cluster with a node and overlays/dev deployed:
// the same batch of experiments POSTed at once, first as gmini behaves
// without Kueue (the dev overlay's ResourceQuota, pods: 20, is the only
// bound), then with Kueue installed as tools/e2e's installKueue does it and
// every POST naming the LocalQueue "default" (ClusterQueue gmini: 16
// runners at once).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/manifests"
	"github.com/gmini-dev/gmini/tools/queue"
)

// queueRow is one run of the queue part.
type queueRow struct {
	name     string
	n        int
	answered time.Duration // first POST sent to the last 201
	makespan time.Duration // first POST sent to the last Job Complete seen
	spearman float64       // completion order against submission order
	warnings int           // Warning events in the namespace during the run
	reasons  map[string]int
	maxLive  int // most runner pods of the run alive at once
	pods     int // runner pods created
	// waits: per experiment, its 201 to its first pod seen by the watch.
	waits []time.Duration
}

const (
	queueRowWithout = "without Kueue (ResourceQuota pods: 20 only)"
	queueRowWith    = "with Kueue (LocalQueue default, ClusterQueue gmini: 16 at once)"
)

// queueBenchmarks runs the batch without Kueue, installs Kueue and runs it
// again naming the queue. The order is fixed: once the namespace has a
// LocalQueue "default" the backend puts every experiment under it, named
// or not (README, Queues).
func queueBenchmarks(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, cs kubernetes.Interface, url string, o options, rep *report) error {
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	bc, err := gmini.New(url, gmini.WithHTTPClient(httpc))
	if err != nil {
		return err
	}
	without, err := queueRun(ctx, log, cs, bc, queueRowWithout, "q-plain", "", o.queueN)
	if err != nil {
		return err
	}
	rep.queue = append(rep.queue, without)
	took, err := installKueue(ctx, log, l, c, c.KubernetesRestConfig(), bc)
	if err != nil {
		return err
	}
	rep.kueueInstall = took
	with, err := queueRun(ctx, log, cs, bc, queueRowWith, "q-kueue", "default", o.queueN)
	if err != nil {
		return err
	}
	rep.queue = append(rep.queue, with)
	return nil
}

// follower watches the run's Jobs and pods: when each Job is first seen
// Complete (or Failed), and the most runner pods alive at once.
type follower struct {
	mu       sync.Mutex
	follow   map[string]bool      // experiment IDs
	complete map[string]time.Time // by experiment ID
	failed   map[string]bool
	live     map[types.UID]bool
	created  map[types.UID]bool
	firstPod map[string]time.Time // by experiment ID
	maxLive  int
}

func (f *follower) onJob(obj any) {
	j, ok := obj.(*batchv1.Job)
	if !ok || !f.follow[j.Annotations[jobspec.AnnotationID]] {
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	id := j.Annotations[jobspec.AnnotationID]
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			if _, ok := f.complete[id]; !ok {
				f.complete[id] = now
			}
		case batchv1.JobFailed:
			f.failed[id] = true
		}
	}
}

func (f *follower) onPod(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok || !f.follow[p.Annotations[jobspec.AnnotationID]] {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created[p.UID] = true
	if id := p.Annotations[jobspec.AnnotationID]; f.firstPod[id].IsZero() {
		f.firstPod[id] = time.Now()
	}
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		delete(f.live, p.UID)
	} else {
		f.live[p.UID] = true
	}
	f.maxLive = max(f.maxLive, len(f.live))
}

func (f *follower) done() (complete, failed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.complete), len(f.failed)
}

// queueRun POSTs n experiments at once (n goroutines released together),
// each naming lq when not empty, and waits until every Job is Complete.
// Submission order is the order of the 201 answers; completion order the
// order in which a watch first saw each Job Complete.
func queueRun(ctx context.Context, log *slog.Logger, cs kubernetes.Interface, bc *gmini.Client, name, prefix, lq string, n int) (queueRow, error) {
	r := queueRow{name: name, n: n}
	ids := make([]string, n)
	f := &follower{follow: map[string]bool{}, complete: map[string]time.Time{}, failed: map[string]bool{}, live: map[types.UID]bool{}, created: map[types.UID]bool{}, firstPod: map[string]time.Time{}}
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
		f.follow[ids[i]] = true
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	inf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(deploy.Namespace))
	jobs, pods := inf.Batch().V1().Jobs().Informer(), inf.Core().V1().Pods().Informer()
	_, _ = jobs.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: f.onJob, UpdateFunc: func(_, o any) { f.onJob(o) }})
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: f.onPod, UpdateFunc: func(_, o any) { f.onPod(o) }, DeleteFunc: f.onPod})
	inf.Start(wctx.Done())
	if !cache.WaitForCacheSync(wctx.Done(), jobs.HasSynced, pods.HasSynced) {
		return r, errors.New("queue part: informers did not sync")
	}
	before, err := warningCounts(ctx, cs)
	if err != nil {
		return r, err
	}

	answered := make([]time.Time, n)
	errs := make([]error, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			experiment := map[string]any{"id": id, "key": fmt.Sprintf("k-%d", i)}
			var opts []gmini.SubmitOption
			if lq != "" {
				opts = append(opts, gmini.InQueue(lq))
			}
			<-gate
			_, errs[i] = submit(ctx, bc, experiment, opts...)
			answered[i] = time.Now()
		})
	}
	time.Sleep(100 * time.Millisecond) // every goroutine at the gate
	start := time.Now()
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, fmt.Errorf("queue part, %s: %w", name, err)
	}
	last := slices.MaxFunc(answered, func(a, b time.Time) int { return a.Compare(b) })
	r.answered = last.Sub(start)
	log.Info("queue part: every POST answered 201", "run", name, "experiments", n, "elapsed", r.answered.Round(time.Millisecond))

	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(context.Context) (bool, error) {
		c, failed := f.done()
		if failed > 0 {
			return false, fmt.Errorf("%d Jobs Failed", failed)
		}
		return c == n, nil
	})
	if err != nil {
		c, _ := f.done()
		return r, fmt.Errorf("queue part, %s: %d of %d Jobs Complete: %w", name, c, n, err)
	}
	stop()
	after, err := warningCounts(ctx, cs)
	if err != nil {
		return r, err
	}
	r.warnings, r.reasons = warningsSince(before, after)

	f.mu.Lock()
	done := make([]time.Time, n)
	for i, id := range ids {
		done[i] = f.complete[id]
	}
	r.maxLive, r.pods = f.maxLive, len(f.created)
	for i, id := range ids {
		r.waits = append(r.waits, f.firstPod[id].Sub(answered[i]))
	}
	f.mu.Unlock()
	lastDone := slices.MaxFunc(done, func(a, b time.Time) int { return a.Compare(b) })
	r.makespan = lastDone.Sub(start)
	r.spearman = spearman(timesAsSeconds(answered, start), timesAsSeconds(done, start))
	log.Info("queue part: every Job Complete", "run", name, "makespan", r.makespan.Round(time.Millisecond),
		"spearman", fmt.Sprintf("%.2f", r.spearman), "warnings", r.warnings, "most pods alive", r.maxLive)
	return r, nil
}

func timesAsSeconds(ts []time.Time, start time.Time) []float64 {
	out := make([]float64, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(start).Seconds()
	}
	return out
}

// submit sends one POST /experiment and wants 201: every experiment of
// a benchmark is new.
func submit(ctx context.Context, c *gmini.Client, experiment map[string]any, opts ...gmini.SubmitOption) (wire.Submission, error) {
	sub, err := c.Submit(ctx, experiment, opts...)
	if err != nil {
		return sub, fmt.Errorf("POST /experiment %v: %w", experiment["id"], err)
	}
	if !sub.Created {
		return sub, fmt.Errorf("POST /experiment %v: %w", experiment["id"], errExisting)
	}
	return sub, nil
}

// warning is what one Warning event says: its reason, how often it
// happened so far.
type warning struct {
	reason string
	count  int
}

// warningCounts reads every Warning event of the namespace, by UID.
func warningCounts(ctx context.Context, cs kubernetes.Interface) (map[types.UID]warning, error) {
	list, err := cs.CoreV1().Events(deploy.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "type=" + corev1.EventTypeWarning})
	if err != nil {
		return nil, fmt.Errorf("list warning events: %w", err)
	}
	out := map[types.UID]warning{}
	for _, e := range list.Items {
		n := int(e.Count)
		if e.Series != nil {
			n = max(n, int(e.Series.Count))
		}
		out[e.UID] = warning{reason: e.Reason, count: max(n, 1)}
	}
	return out, nil
}

// warningsSince counts the Warning occurrences between two reads: an
// event's count grows when the same warning repeats.
func warningsSince(before, after map[types.UID]warning) (int, map[string]int) {
	total, reasons := 0, map[string]int{}
	for uid, w := range after {
		d := w.count - before[uid].count
		if d > 0 {
			total += d
			reasons[w.reason] += d
		}
	}
	return total, reasons
}

// spearman is the rank correlation of x and y (ties get their mean rank):
// 1 when y orders the items exactly as x does, 0 for no relation.
func spearman(x, y []float64) float64 {
	rx, ry := ranks(x), ranks(y)
	var mx, my float64
	for i := range rx {
		mx += rx[i]
		my += ry[i]
	}
	mx /= float64(len(rx))
	my /= float64(len(ry))
	var sxy, sxx, syy float64
	for i := range rx {
		dx, dy := rx[i]-mx, ry[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	r := make([]float64, len(v))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && v[idx[j+1]] == v[idx[i]] {
			j++
		}
		mean := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = mean
		}
		i = j + 1
	}
	return r
}

var clusterQueues = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "clusterqueues"}

// installKueue does what tools/e2e's installKueue does (the controller
// built from its module, pushed to the node's registry, config/ applied
// with the backend's Role from k8s/components/queue/rbac.yaml first, then
// k8s/queue), adds the Component's LocalQueue "default"
// (k8s/components/queue/localqueue.yaml) to the namespace, and waits until
// the ClusterQueue gmini is active and the backend answers a POST naming
// an unknown queue with the namespace's queues.
func installKueue(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, rc *rest.Config, bc *gmini.Client) (time.Duration, error) {
	start := time.Now()
	reg, err := c.Registry()
	if err != nil {
		return 0, fmt.Errorf("the node cluster has no registry: %w", err)
	}
	if err := queue.Setup(ctx, log, l, reg, rc, deploy.Namespace); err != nil {
		return 0, err
	}
	lq, err := manifests.ReadFile(l.Path("k8s", "components", "queue", "localqueue.yaml"))
	if err != nil {
		return 0, err
	}
	for _, o := range lq {
		o.SetNamespace(deploy.Namespace)
	}
	if err := deploy.ApplyObjects(ctx, log, rc, lq); err != nil {
		return 0, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return 0, err
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		cq, err := dyn.Resource(clusterQueues).Get(ctx, "gmini", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(cq.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Active" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("ClusterQueue gmini not active: %w", err)
	}
	// The backend looks for Kueue again at least every 30 s.
	var last string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := bc.Submit(ctx, map[string]any{"id": "kueue-probe"}, gmini.InQueue("no-such-queue"))
		if err == nil {
			return false, errors.New("a POST naming an unknown queue was accepted")
		}
		last = err.Error()
		var e *gmini.Error
		return errors.As(err, &e) && e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, "no-such-queue") &&
			!strings.Contains(e.Message, "not enabled") && strings.Contains(e.Message, "default"), nil
	})
	if err != nil {
		return 0, fmt.Errorf("the backend did not take up Kueue and the LocalQueue default: last answer to a POST naming an unknown queue: %s: %w", last, err)
	}
	took := time.Since(start)
	log.Info("queue part: Kueue installed and the backend takes queues", "elapsed", took.Round(100*time.Millisecond))
	return took, nil
}
