// Package queue is what the backend knows of Kueue (sigs.k8s.io/kueue) in
// its namespace: which LocalQueues exist (to refuse a POST naming another
// before anything is claimed or created), and, for a Job waiting in one,
// why it waits, its position and when it may start.
//
// Kueue is optional. The package asks discovery whether Kueue's API is
// served, and starts its informers (LocalQueues and Workloads of the
// namespace, through the dynamic client: importing Kueue's module would
// bring controller-runtime and other Kubernetes versions) only once it is;
// until then it looks again now and then. Positions come from Kueue's
// visibility API, one call per LocalQueue every PositionTTL at most,
// whatever the number of requests.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Kueue's API groups, and the versions this package reads, newest first:
// Kueue v0.17 serves v1beta2 and v1beta1 of both.
const (
	Group           = "kueue.x-k8s.io"
	VisibilityGroup = "visibility.kueue.x-k8s.io"
	// DefaultLocalQueue is the LocalQueue Kueue's webhook puts a Job
	// without LabelQueue in, when the namespace has one of that name.
	DefaultLocalQueue = "default"
)

var versions = []string{"v1beta2", "v1beta1"}

// Defaults of Config.
const (
	DefaultPositionTTL = 2 * time.Second
	DefaultRateWindow  = 10 * time.Minute
	DefaultRecheck     = 30 * time.Second
	// minRecheck bounds how often a request makes discovery look again
	// for a Kueue that was not served.
	minRecheck = 5 * time.Second
	// maxListedQueues bounds the names a 400 lists.
	maxListedQueues = 20
)

// Config says where to look.
type Config struct {
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
	// REST reaches the API server's paths, for the visibility API (the
	// clientset's Discovery().RESTClient()).
	REST      rest.Interface
	Namespace string
	// Default is the queue of a POST that names none (--default-queue);
	// empty: the template's own LabelQueue, if any.
	Default   string
	Templates template.Source
	Log       *slog.Logger
	// Registerer, when set, gets the package's metrics.
	Registerer prometheus.Registerer
	// PositionTTL is how long a LocalQueue's positions are reused.
	PositionTTL time.Duration
	// RateWindow is how far back admissions count for the ETA.
	RateWindow time.Duration
	// Recheck is how often discovery is asked again while Kueue's API is
	// not served.
	Recheck time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Queues answers for the queues of one namespace. Its methods are safe for
// concurrent use.
type Queues struct {
	cfg       Config
	log       *slog.Logger
	positions *positions
	rates     *rates
	lookups   *prometheus.CounterVec

	// runCtx bounds the informers and the checks; set by Start.
	runCtx context.Context

	mu sync.Mutex
	// why says why queues cannot be used ("" once the informers run);
	// checked is when discovery last answered, check the one running.
	why     string
	checked time.Time
	check   *flight[bool]
	version string
	lqs     cache.SharedIndexInformer
	wls     cache.SharedIndexInformer
	// visibility is the visibility API's version, "" until found.
	visibility string
}

// New returns the queues of cfg.Namespace; Start makes them known.
func New(cfg Config) *Queues {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PositionTTL <= 0 {
		cfg.PositionTTL = DefaultPositionTTL
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = DefaultRateWindow
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	q := &Queues{
		cfg:   cfg,
		log:   cfg.Log.With("namespace", cfg.Namespace),
		rates: newRates(cfg.RateWindow),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_queue_position_lookups_total",
			Help: "Calls to Kueue's visibility API for the positions in a LocalQueue, by result (ok, error); at most one per LocalQueue and position TTL.",
		}, []string{"result"}),
		why:    "not checked yet",
		runCtx: context.Background(),
	}
	q.positions = newPositions(cfg.PositionTTL, cfg.Now, q.fetchPositions)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(q.lookups)
	}
	return q
}

// Start asks discovery whether Kueue is served, now and every
// cfg.Recheck until it is, and then runs the informers until ctx ends.
func (q *Queues) Start(ctx context.Context) {
	q.mu.Lock()
	q.runCtx = ctx
	q.mu.Unlock()
	go func() {
		// The first look shares a check a request may have started or
		// finished a moment ago (it answers for "now"); later ones always
		// look again.
		fresh := q.cfg.Recheck
		for {
			if ok, _ := q.recheck(ctx, fresh); ok {
				return
			}
			fresh = 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(q.cfg.Recheck):
			}
		}
	}()
}

// enabled reports whether queues can be used, or why not. A request that
// finds them off makes discovery look again, at most every minRecheck.
func (q *Queues) enabled(ctx context.Context) (bool, string) {
	if why := q.whyNot(); why == "" {
		return true, ""
	}
	// A request that gives up waiting is answered from what is known.
	_, _ = q.recheck(ctx, minRecheck)
	why := q.whyNot()
	return why == "", why
}

func (q *Queues) whyNot() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.why
}

// recheck runs one discovery check unless one finished less than fresh
// ago, sharing a check under way; it waits for it within ctx.
func (q *Queues) recheck(ctx context.Context, fresh time.Duration) (bool, error) {
	q.mu.Lock()
	if q.why == "" {
		q.mu.Unlock()
		return true, nil
	}
	f := q.check
	if f == nil || f.finished() && q.cfg.Now().Sub(q.checked) >= fresh {
		f = newFlight[bool]()
		q.check = f
		runCtx := q.runCtx
		go func() {
			ok := q.discover(runCtx)
			q.mu.Lock()
			q.checked = q.cfg.Now()
			q.mu.Unlock()
			f.finish(ok, nil)
		}()
	}
	q.mu.Unlock()
	return f.wait(ctx)
}

// discover asks whether Kueue's API is served and the backend may read
// it; if so it starts the informers. Discovery has no context: it is
// bounded by the client's own timeout, and runs apart from requests.
func (q *Queues) discover(ctx context.Context) bool {
	version, why := "", ""
	for _, v := range versions {
		res, err := q.cfg.Discovery.ServerResourcesForGroupVersion(Group + "/" + v)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			why = fmt.Sprintf("cannot tell whether Kueue is installed: discovery of %s/%s: %v", Group, v, err)
			break
		}
		if serves(res, "localqueues") && serves(res, "workloads") {
			version = v
			break
		}
	}
	if version == "" && why == "" {
		why = "Kueue's API (localqueues." + Group + ") is not served"
	}
	if version != "" {
		why = q.mayRead(ctx, version)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if why != "" {
		if why != q.why {
			q.log.Info("queues are not enabled", "reason", why)
		}
		q.why = why
		return false
	}
	q.startInformers(ctx, version)
	q.why = ""
	q.log.Info("queues enabled: Kueue's API is served", "version", Group+"/"+version)
	return true
}

func serves(res *metav1.APIResourceList, resource string) bool {
	return slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == resource })
}

// mayRead lists one LocalQueue and one Workload: informers that may not
// list would retry, and log, for ever. "" when both lists work.
func (q *Queues) mayRead(ctx context.Context, version string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, resource := range []string{"localqueues", "workloads"} {
		gvr := schema.GroupVersionResource{Group: Group, Version: version, Resource: resource}
		_, err := q.cfg.Dynamic.Resource(gvr).Namespace(q.cfg.Namespace).List(ctx, metav1.ListOptions{Limit: 1})
		switch {
		case apierrors.IsForbidden(err):
			return fmt.Sprintf("the backend may not list %s.%s in namespace %s (its Role must grant get, list and watch)", resource, Group, q.cfg.Namespace)
		case err != nil:
			return fmt.Sprintf("list %s.%s in namespace %s: %v", resource, Group, q.cfg.Namespace, err)
		}
	}
	return ""
}

// startInformers runs the informers of LocalQueues and Workloads until ctx
// ends. q.mu is held.
func (q *Queues) startInformers(ctx context.Context, version string) {
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(q.cfg.Dynamic, 0, q.cfg.Namespace, nil)
	lqs := factory.ForResource(schema.GroupVersionResource{Group: Group, Version: version, Resource: "localqueues"}).Informer()
	wls := factory.ForResource(schema.GroupVersionResource{Group: Group, Version: version, Resource: "workloads"}).Informer()
	// Transforms and indexers must be in place before the informers start.
	if err := errors.Join(
		lqs.SetTransform(slimLocalQueue),
		wls.SetTransform(slimWorkload),
		wls.AddIndexers(cache.Indexers{byJob: jobIndex}),
	); err != nil {
		// Only a started informer refuses them; these were just made.
		q.log.Error("queue informers", "err", err)
	}
	_, _ = lqs.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: q.warnHoldQueue})
	observe := func(obj any) {
		if w, ok := obj.(*workload); ok {
			if t, ok := w.admittedAt(); ok {
				q.rates.observe(w.queueName, w.UID, t, q.cfg.Now())
			}
		}
	}
	_, _ = wls.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	})
	factory.Start(ctx.Done())
	q.version, q.lqs, q.wls = version, lqs, wls
}

// warnHoldQueue complains about a LocalQueue named jobspec.HoldQueue: Kueue
// could admit the Jobs the backend holds in it.
func (q *Queues) warnHoldQueue(obj any) {
	if lq, ok := obj.(*localQueue); ok && lq.Name == jobspec.HoldQueue {
		q.log.Error("a LocalQueue has the name the backend reserves for held Jobs: Kueue may start a held Job before its record is checked; delete or rename it",
			"localqueue", lq.Name)
	}
}

// informers returns the informers, nil before Kueue was found.
func (q *Queues) informers() (lqs, wls cache.SharedIndexInformer) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lqs, q.wls
}

// localQueue returns the LocalQueue name from the cache, nil if unknown.
func (q *Queues) localQueue(name string) *localQueue {
	lqs, _ := q.informers()
	if lqs == nil {
		return nil
	}
	obj, ok, err := lqs.GetStore().GetByKey(q.cfg.Namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	lq, _ := obj.(*localQueue)
	return lq
}

// names lists the LocalQueues a POST may name, sorted.
func (q *Queues) names() []string {
	lqs, _ := q.informers()
	if lqs == nil {
		return nil
	}
	var out []string
	for _, obj := range lqs.GetStore().List() {
		if lq, ok := obj.(*localQueue); ok && lq.Name != jobspec.HoldQueue {
			out = append(out, lq.Name)
		}
	}
	slices.Sort(out)
	return out
}

// Resolve returns the queue a POST's Job goes to: requested, else
// Config.Default, else the template's LabelQueue, else Kueue's own
// default LocalQueue if the namespace has one (Kueue would put the Job
// there anyway; named, the Job's hold, status and authorization see it).
// "" means no queue: the Job is not Kueue's.
//
// A named queue that cannot be used is the client's error (Invalid:
// unknown, or queues not enabled); a default that cannot be used is the
// backend's (Unavailable). Until the LocalQueues are loaded, Unavailable.
func (q *Queues) Resolve(ctx context.Context, requested string) (string, error) {
	name, from := requested, ""
	if name == "" {
		name, from = q.cfg.Default, "--default-queue"
	}
	if name == "" && q.cfg.Templates != nil {
		if tmpl, err := q.cfg.Templates.JobTemplate(); err == nil {
			name, from = jobspec.TemplateQueue(tmpl), "the template's label "+jobspec.LabelQueue
		}
	}
	if name == "" {
		if lqs, _ := q.informers(); lqs != nil && lqs.HasSynced() && q.localQueue(DefaultLocalQueue) != nil {
			return DefaultLocalQueue, nil
		}
		return "", nil
	}
	explicit := requested != ""
	if name == jobspec.HoldQueue {
		return "", failure.New(failure.Invalid, "queue %q is reserved for the backend's held Jobs; name another", name)
	}
	if ok, why := q.enabled(ctx); !ok {
		if explicit {
			return "", failure.New(failure.Invalid, "queues are not enabled in namespace %s (%s); leave \"queue\" out", q.cfg.Namespace, why)
		}
		return "", failure.New(failure.Unavailable, "the default queue %q (from %s) cannot be used: queues are not enabled in namespace %s (%s)", name, from, q.cfg.Namespace, why)
	}
	if lqs, _ := q.informers(); lqs == nil || !lqs.HasSynced() {
		return "", failure.New(failure.Unavailable, "the LocalQueues of namespace %s are not loaded yet; retry", q.cfg.Namespace)
	}
	if q.localQueue(name) != nil {
		return name, nil
	}
	valid := "it has none"
	if names := q.names(); len(names) > 0 {
		more := ""
		if len(names) > maxListedQueues {
			names, more = names[:maxListedQueues], fmt.Sprintf(" and %d more", len(names)-maxListedQueues)
		}
		valid = "its queues are " + strings.Join(names, ", ") + more
	}
	if explicit {
		return "", failure.New(failure.Invalid, "queue %q does not exist in namespace %s: %s", name, q.cfg.Namespace, valid)
	}
	return "", failure.New(failure.Unavailable, "the default queue %q (from %s) does not exist in namespace %s: %s", name, from, q.cfg.Namespace, valid)
}

// Describe returns what is known of the queue of the Job with UID job:
// LocalQueue name (empty: the one its Workload names), its ClusterQueue,
// and while queued, Kueue's reason, the position and an estimated start.
// Whatever cannot be known now (Kueue not served, caches not loaded, the
// visibility API failing) is left out: a status never fails for it.
func (q *Queues) Describe(ctx context.Context, name string, job types.UID, queued bool) *wire.Queue {
	wl := q.workloadOf(job)
	if name == "" && wl != nil {
		name = wl.queueName
	}
	if name == "" || name == jobspec.HoldQueue {
		return nil
	}
	out := &wire.Queue{Name: name}
	if lq := q.localQueue(name); lq != nil {
		out.ClusterQueue = lq.clusterQueue
	}
	if wl != nil && wl.clusterQueue != "" {
		out.ClusterQueue = wl.clusterQueue
	}
	if !queued {
		return out
	}
	if wl == nil {
		if _, wls := q.informers(); wls != nil && wls.HasSynced() {
			out.Reason = "Kueue has made no Workload for the Job yet (is Kueue's controller running?)"
		}
		return out
	}
	out.Reason = wl.reason()
	pos, ok := q.positions.get(ctx, name, wl.Name)
	if !ok {
		return out
	}
	out.Position = &pos
	if eta, ok := q.eta(name, pos); ok {
		out.ETA = &eta
	}
	return out
}

// workloadOf returns the Workload Kueue made for the Job with UID job: the
// live one if a deleted one lingers.
func (q *Queues) workloadOf(job types.UID) *workload {
	_, wls := q.informers()
	if wls == nil || job == "" {
		return nil
	}
	objs, err := wls.GetIndexer().ByIndex(byJob, string(job))
	if err != nil {
		return nil
	}
	var best *workload
	for _, obj := range objs {
		w, ok := obj.(*workload)
		if !ok {
			continue
		}
		if best == nil || best.DeletionTimestamp != nil && w.DeletionTimestamp == nil ||
			(best.DeletionTimestamp == nil) == (w.DeletionTimestamp == nil) && best.CreationTimestamp.Before(&w.CreationTimestamp) {
			best = w
		}
	}
	return best
}
