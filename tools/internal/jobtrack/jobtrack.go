// Package jobtrack follows, for a test, the Jobs gmini makes in a namespace
// and their pods, from informers opened before the experiments start: how
// many distinct Jobs and runner pods were ever created for each experiment
// ID, how many of those Jobs could run (were ever seen not suspended), and
// the first state in which each Job was seen released after its record. A
// count read once at the end would miss what came and went in between (a
// second Job made and removed by its TTL, a pod replaced); a poll could miss
// a state that lasts less than its period.
package jobtrack

import (
	"context"
	"fmt"
	"sync"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Tracker counts what it saw since Start; safe for concurrent use.
type Tracker struct {
	mu       sync.Mutex
	jobs     map[string]map[types.UID]bool // by experiment ID
	runnable map[string]map[types.UID]bool
	pods     map[string]map[types.UID]bool
	released map[string]*batchv1.Job
	stop     context.CancelFunc
}

// Start follows namespace until Stop or ctx ends; it returns once both
// informers have listed what exists.
func Start(ctx context.Context, client kubernetes.Interface, namespace string) (*Tracker, error) {
	ctx, stop := context.WithCancel(ctx)
	tr := &Tracker{
		jobs:     map[string]map[types.UID]bool{},
		runnable: map[string]map[types.UID]bool{},
		pods:     map[string]map[types.UID]bool{},
		released: map[string]*batchv1.Job{},
		stop:     stop,
	}
	// Informers, not bare watches: when the API server closes a watch they
	// resume it from the last version seen, so what happened in between is
	// still delivered.
	jobs := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = jobspec.ManagedSelector }))
	pods := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = batchv1.JobNameLabel }))
	jobInf := jobs.Batch().V1().Jobs().Informer()
	podInf := pods.Core().V1().Pods().Informer()
	_, err := jobInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    tr.job,
		UpdateFunc: func(_, obj any) { tr.job(obj) },
		// The object of a deletion is the Job's last state, which a Job
		// removed by its TTL right after its release still shows released.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			tr.job(obj)
		},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch jobs in %s: %w", namespace, err)
	}
	_, err = podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			addUID(tr.pods, p.Annotations[jobspec.AnnotationID], p.UID)
		}
	}})
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch pods in %s: %w", namespace, err)
	}
	jobs.Start(ctx.Done())
	pods.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), jobInf.HasSynced, podInf.HasSynced) {
		stop()
		return nil, fmt.Errorf("job and pod informers in %s did not sync", namespace)
	}
	return tr, nil
}

// Stop ends the informers.
func (tr *Tracker) Stop() { tr.stop() }

func (tr *Tracker) job(obj any) {
	j, ok := obj.(*batchv1.Job)
	if !ok {
		return
	}
	id, ok := jobspec.Owns(j)
	if !ok {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	addUID(tr.jobs, id, j.UID)
	if !ptr.Deref(j.Spec.Suspend, false) {
		addUID(tr.runnable, id, j.UID)
	}
	if tr.released[id] == nil && jobspec.Released(j) && !jobspec.Held(j) {
		tr.released[id] = j.DeepCopy()
	}
}

func addUID(m map[string]map[types.UID]bool, id string, uid types.UID) {
	if m[id] == nil {
		m[id] = map[types.UID]bool{}
	}
	m[id][uid] = true
}

// Jobs is the number of distinct Jobs ever created for the experiment.
func (tr *Tracker) Jobs(id string) int { return tr.count(tr.jobs, id) }

// Runnable is the number of those ever seen not suspended: Jobs that
// could start a pod.
func (tr *Tracker) Runnable(id string) int { return tr.count(tr.runnable, id) }

// Pods is the number of runner pods ever created for the experiment.
func (tr *Tracker) Pods(id string) int { return tr.count(tr.pods, id) }

func (tr *Tracker) count(m map[string]map[types.UID]bool, id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(m[id])
}

// Released is the experiment's Job as first seen released (finalizer gone,
// LabelRecorded set), or nil if it never was.
func (tr *Tracker) Released(id string) *batchv1.Job {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.released[id]
}
