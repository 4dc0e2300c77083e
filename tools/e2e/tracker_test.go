//go:build e2e

package e2e

import (
	"context"
	"sync"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// tracker follows, from informers opened before the experiments start, the
// Jobs gmini made in a namespace and their pods: how many distinct Jobs and
// runner pods were ever created for each experiment ID, and the first state
// in which each Job was seen released after its record. A count read once
// at the end would miss what came and went in between (a second Job made
// and removed by its TTL, a pod replaced); a poll could miss a state that
// lasts less than its period.
type tracker struct {
	mu       sync.Mutex
	jobs     map[string]map[types.UID]bool // by experiment ID
	pods     map[string]map[types.UID]bool
	released map[string]*batchv1.Job
	stop     context.CancelFunc
}

// track starts following namespace; call stop when done.
func track(ctx context.Context, t *testing.T, cfg *envconf.Config, namespace string) *tracker {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	tr := &tracker{
		jobs:     map[string]map[types.UID]bool{},
		pods:     map[string]map[types.UID]bool{},
		released: map[string]*batchv1.Job{},
		stop:     stop,
	}
	// Informers, not bare watches: when the API server closes a watch they
	// resume it from the last version seen, so what happened in between is
	// still delivered (unless etcd compacted that version away meanwhile,
	// which takes a watch down for minutes).
	jobs := informers.NewSharedInformerFactoryWithOptions(clientset(t, cfg), 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = jobspec.ManagedSelector }))
	pods := informers.NewSharedInformerFactoryWithOptions(clientset(t, cfg), 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = batchv1.JobNameLabel }))
	jobInf := jobs.Batch().V1().Jobs().Informer()
	podInf := pods.Core().V1().Pods().Informer()
	_, err := jobInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { tr.job(obj) },
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
		t.Fatalf("watch jobs in %s: %v", namespace, err)
	}
	_, err = podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		addUID(tr.pods, p.Annotations[jobspec.AnnotationID], p.UID)
	}})
	if err != nil {
		t.Fatalf("watch pods in %s: %v", namespace, err)
	}
	jobs.Start(ctx.Done())
	pods.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), jobInf.HasSynced, podInf.HasSynced) {
		stop()
		t.Fatalf("job and pod informers in %s did not sync", namespace)
	}
	return tr
}

func (tr *tracker) job(obj any) {
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

// podsOf is the number of runner pods ever created for the experiment.
func (tr *tracker) podsOf(id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.pods[id])
}

// jobsOf is the number of distinct Jobs ever created for the experiment.
func (tr *tracker) jobsOf(id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.jobs[id])
}

// releasedOf is the experiment's Job as first seen released (finalizer
// gone, LabelRecorded set), or nil if it never was.
func (tr *tracker) releasedOf(id string) *batchv1.Job {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.released[id]
}
