package main

// Finishing a row's Jobs: the spawn cluster has no node, so the benchmark
// writes what the Job controller would once a pod succeeded, and waits for
// the history rows' records.

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	batchclient "k8s.io/client-go/kubernetes/typed/batch/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// completeJobs marks every benchmark Job of namespace Complete through the
// status subresource, as the Job controller does once a Job's pod has
// succeeded: this cluster has no node, so no pod ever runs, and a backend
// with history would otherwise record each Job's end (its final write, the
// capture of its output, the release PATCH) only when clean deletes it,
// after the row's CPU is read. Every row's Jobs are marked, so the API
// server's CPU per Job counts the same status write in each.
func completeJobs(ctx context.Context, client kubernetes.Interface, namespace string, conc int) error {
	jobs := client.BatchV1().Jobs(namespace)
	list, err := jobs.List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	if err != nil {
		return fmt.Errorf("list benchmark jobs in %s: %w", namespace, err)
	}
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range max(conc, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(list.Items) || ctx.Err() != nil {
					return
				}
				if err := completeJob(ctx, jobs, &list.Items[i]); err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return cmp.Or(firstErr, ctx.Err())
}

// completeJob writes job's status as finished, re-reading it when the Job
// controller wrote its own status in between.
func completeJob(ctx context.Context, jobs batchclient.JobInterface, job *batchv1.Job) error {
	first := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			var err error
			if job, err = jobs.Get(ctx, job.Name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		first = false
		if !markComplete(&job.Status, time.Now()) {
			return nil
		}
		_, err := jobs.UpdateStatus(ctx, job, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("mark job %s Complete: %w", job.Name, err)
	}
	return nil
}

// markComplete sets st to what the Job controller writes when a Job's one
// pod has succeeded (SuccessCriteriaMet, then Complete, with a completion
// time and no active pod), in a form the API server's status validation
// accepts; it reports false if st is finished already.
func markComplete(st *batchv1.JobStatus, now time.Time) bool {
	for _, c := range st.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return false
		}
	}
	t := metav1.NewTime(now.Truncate(time.Second))
	if st.StartTime == nil {
		st.StartTime = &t
	}
	// The API keeps seconds: a completion time before the start time is
	// refused.
	if t.Before(st.StartTime) {
		t = *st.StartTime
	}
	st.CompletionTime = &t
	st.Active = 0
	st.Ready = ptr.To[int32](0)
	st.Succeeded = max(st.Succeeded, 1)
	for _, typ := range []batchv1.JobConditionType{batchv1.JobSuccessCriteriaMet, batchv1.JobComplete} {
		st.Conditions = append(st.Conditions, batchv1.JobCondition{
			Type: typ, Status: corev1.ConditionTrue, Reason: "CompletionsReached",
			Message:       "set by gmini-bench: the benchmark's cluster has no node to run the pod",
			LastProbeTime: t, LastTransitionTime: t,
		})
	}
	return true
}

// waitRecorded waits until the backend of namespace has recorded and
// released every benchmark Job there (jobspec.LabelRecorded set by the
// release PATCH), so the row's CPU counts history's whole work per Job.
// The poll is one filtered List of at most one Job: a small load on the
// API server beside the row's thousands of Jobs, counted in its CPU.
func waitRecorded(ctx context.Context, client kubernetes.Interface, namespace string) error {
	jobs := client.BatchV1().Jobs(namespace)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := jobs.List(ctx, metav1.ListOptions{LabelSelector: jobspec.RecordingSelector, Limit: 1})
		return err == nil && len(j.Items) == 0, nil
	})
	if err != nil {
		// A -compare-ref backend from before 0487001 releases Jobs
		// without the label, and ends here.
		return fmt.Errorf("wait for the backend to record and release every job in %s (label %s; backends before commit 0487001 do not set it): %w",
			namespace, jobspec.LabelRecorded, err)
	}
	return nil
}
