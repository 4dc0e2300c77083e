package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Watch keeps the namespace's experiment Jobs and Job pods from one watch
// of each, for the log follows of one replica. A follow waiting for its
// runner reads its Job and pods every poll; without a Watch each read is
// a GET and a LIST (two API requests a second per waiting follow: 500 of
// them kept the API server at a full CPU, docs/benchmarks.md), with one
// it costs the API server nothing. What the Watch has not seen (a Job
// created a moment ago) is still read from the API.
//
// It starts watching when a follow first asks it for a Job, not when the
// replica starts: a replica that serves no waiting follow keeps no copy
// of the namespace's Jobs and pods, and makes no watch requests.
type Watch struct {
	jobsFactory, podsFactory informers.SharedInformerFactory
	jobs, pods               cache.SharedIndexInformer

	mu      sync.Mutex
	stop    <-chan struct{} // set by Run; nil before
	started bool
}

// byController indexes pods by their controller's UID; bySet, Jobs by
// their experiment set.
const (
	byController = "controller"
	bySet        = "set"
)

// NewWatch returns a Watch of namespace; Run lets it start.
func NewWatch(client kubernetes.Interface, namespace string, resync time.Duration) (*Watch, error) {
	w := &Watch{
		jobsFactory: informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithNamespace(namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = jobspec.ManagedSelector })),
		// Every Job's pods carry the controller-uid label; the namespace
		// is the experiments'.
		podsFactory: informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithNamespace(namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = batchv1.ControllerUidLabel })),
	}
	w.jobs = w.jobsFactory.Batch().V1().Jobs().Informer()
	w.pods = w.podsFactory.Core().V1().Pods().Informer()
	// A follow reads none of the managed fields, nor a Job's pod
	// template (its pods have their own spec): with thousands of Jobs
	// waiting for their TTL they would be most of the cache.
	slim := func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		if job, ok := obj.(*batchv1.Job); ok {
			job.Spec.Template.Spec = corev1.PodSpec{}
		}
		return obj, nil
	}
	for _, inf := range []cache.SharedIndexInformer{w.jobs, w.pods} {
		if err := inf.SetTransform(slim); err != nil {
			return nil, fmt.Errorf("watch jobs and pods of %s: %w", namespace, err)
		}
	}
	err := w.jobs.AddIndexers(cache.Indexers{bySet: func(obj any) ([]string, error) {
		if m, ok := obj.(metav1.Object); ok {
			if set := m.GetLabels()[jobspec.LabelSet]; set != "" {
				return []string{set}, nil
			}
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("watch jobs and pods of %s: %w", namespace, err)
	}
	err = w.pods.AddIndexers(cache.Indexers{byController: func(obj any) ([]string, error) {
		if m, ok := obj.(metav1.Object); ok {
			if ref := metav1.GetControllerOf(m); ref != nil {
				return []string{string(ref.UID)}, nil
			}
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("watch jobs and pods of %s: %w", namespace, err)
	}
	return w, nil
}

// Run lets the Watch start when first needed, and stops it when ctx
// ends.
func (w *Watch) Run(ctx context.Context) {
	w.mu.Lock()
	w.stop = ctx.Done()
	w.mu.Unlock()
	<-ctx.Done()
	w.jobsFactory.Shutdown()
	w.podsFactory.Shutdown()
}

// need starts watching, once, if Run has been called.
func (w *Watch) need() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started || w.stop == nil {
		return
	}
	w.started = true
	w.jobsFactory.Start(w.stop)
	w.podsFactory.Start(w.stop)
}

func (w *Watch) synced() bool { return w.jobs.HasSynced() && w.pods.HasSynced() }

// job is Job namespace/name as last seen; nil if the Watch has not seen it
// or has not synced (the first call starts it).
func (w *Watch) job(namespace, name string) *batchv1.Job {
	w.need()
	if !w.synced() {
		return nil
	}
	obj, ok, err := w.jobs.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	return obj.(*batchv1.Job)
}

// pods are the pods whose controller is the Job of uid, as last seen;
// ok is false until the Watch has synced.
func (w *Watch) podsOf(uid types.UID) (pods []*corev1.Pod, ok bool) {
	if !w.synced() {
		return nil, false
	}
	objs, err := w.pods.GetIndexer().ByIndex(byController, string(uid))
	if err != nil {
		return nil, false
	}
	for _, o := range objs {
		pods = append(pods, o.(*corev1.Pod))
	}
	return pods, true
}

// jobsOfSet are the Jobs of experiment set set as last seen; ok is false
// until the Watch has synced (the first call starts it).
func (w *Watch) jobsOfSet(set string) (jobs []*batchv1.Job, ok bool) {
	w.need()
	if !w.synced() {
		return nil, false
	}
	objs, err := w.jobs.GetIndexer().ByIndex(bySet, set)
	if err != nil {
		return nil, false
	}
	for _, o := range objs {
		jobs = append(jobs, o.(*batchv1.Job))
	}
	return jobs, true
}
