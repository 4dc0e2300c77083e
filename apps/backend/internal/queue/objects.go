package queue

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Kueue's Workload conditions this package reads (apis/kueue/v1beta2).
const (
	condQuotaReserved = "QuotaReserved"
	condAdmitted      = "Admitted"
	condEvicted       = "Evicted"
)

// localQueue is what the cache keeps of a LocalQueue.
type localQueue struct {
	metav1.ObjectMeta
	clusterQueue string
}

// workload is what the cache keeps of a Workload. A Workload holds the
// Job's whole pod template (the experiment's body included): the cache
// keeps a few fields of it, so thousands of queued experiments cost
// little memory.
type workload struct {
	metav1.ObjectMeta
	queueName string
	// clusterQueue is where it was admitted (status.admission), "" while
	// it waits.
	clusterQueue string
	conditions   []metav1.Condition
}

// slimLocalQueue is the LocalQueue informer's transform; anything that
// is not an *unstructured.Unstructured (a tombstone) passes as it is.
func slimLocalQueue(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	cq, _, _ := unstructured.NestedString(u.Object, "spec", "clusterQueue")
	return &localQueue{ObjectMeta: slimMeta(u), clusterQueue: cq}, nil
}

// slimWorkload is the Workload informer's transform.
func slimWorkload(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	w := &workload{ObjectMeta: slimMeta(u)}
	w.queueName, _, _ = unstructured.NestedString(u.Object, "spec", "queueName")
	w.clusterQueue, _, _ = unstructured.NestedString(u.Object, "status", "admission", "clusterQueue")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		var cond metav1.Condition
		if runtime.DefaultUnstructuredConverter.FromUnstructured(m, &cond) != nil {
			continue
		}
		switch cond.Type {
		case condQuotaReserved, condAdmitted, condEvicted:
			w.conditions = append(w.conditions, cond)
		}
	}
	return w, nil
}

// slimMeta keeps the metadata the caches read: the key, the times, and
// the owning Jobs.
func slimMeta(u *unstructured.Unstructured) metav1.ObjectMeta {
	m := metav1.ObjectMeta{
		Name:              u.GetName(),
		Namespace:         u.GetNamespace(),
		UID:               u.GetUID(),
		ResourceVersion:   u.GetResourceVersion(),
		CreationTimestamp: u.GetCreationTimestamp(),
		DeletionTimestamp: u.GetDeletionTimestamp(),
	}
	for _, o := range u.GetOwnerReferences() {
		if o.APIVersion == "batch/v1" && o.Kind == "Job" {
			m.OwnerReferences = append(m.OwnerReferences, metav1.OwnerReference{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, UID: o.UID})
		}
	}
	return m
}

// byJob indexes Workloads by the UID of the Job that owns them: Kueue's
// owner reference, which a new Job of the same name does not share.
const byJob = "job"

func jobIndex(obj any) ([]string, error) {
	w, ok := obj.(*workload)
	if !ok {
		return nil, nil
	}
	var uids []string
	for _, o := range w.OwnerReferences {
		uids = append(uids, string(o.UID))
	}
	return uids, nil
}

func (w *workload) condition(t string) *metav1.Condition {
	for i := range w.conditions {
		if w.conditions[i].Type == t {
			return &w.conditions[i]
		}
	}
	return nil
}

// admittedAt is when Kueue admitted the Workload (and so started its Job).
func (w *workload) admittedAt() (time.Time, bool) {
	c := w.condition(condAdmitted)
	if c == nil || c.Status != metav1.ConditionTrue {
		return time.Time{}, false
	}
	return c.LastTransitionTime.Time, true
}

// reason is why a waiting Workload is not admitted, in Kueue's words:
// the quota it could not reserve (such as "couldn't assign flavors to pod
// set main: insufficient unused quota for cpu in flavor default, 1 more
// needed"), the admission checks it waits for, or the eviction that sent
// it back.
func (w *workload) reason() string {
	if c := w.condition(condQuotaReserved); c != nil && c.Status == metav1.ConditionFalse && c.Message != "" {
		return c.Message
	}
	if c := w.condition(condAdmitted); c != nil && c.Status == metav1.ConditionFalse && c.Message != "" {
		return c.Message
	}
	if c := w.condition(condEvicted); c != nil && c.Status == metav1.ConditionTrue && c.Message != "" {
		return c.Message
	}
	if len(w.conditions) == 0 {
		return "waiting for Kueue to consider it"
	}
	return ""
}
