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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	batchv1client "k8s.io/client-go/kubernetes/typed/batch/v1"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/internal/jobstatus"
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
				j := &list.Items[i]
				if j.Status.StartTime == nil {
					var err error
					if j, err = waitStarted(ctx, jobs, j.Name); err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, err)
						mu.Unlock()
						return
					}
				}
				if err := jobstatus.Complete(ctx, jobs, j.Name, j, "set by gmini-bench: the benchmark's cluster has no node to run the pod"); err != nil {
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

// waitStarted waits until the Job controller has started the Job (its
// startTime set), which the status write needs. It lags behind creates
// well above a few hundred Jobs (the controller-manager's own client
// limit), longer than jobstatus.Complete waits by itself. One GET of the
// Job every 250 ms, counted in the row's API-server CPU.
func waitStarted(ctx context.Context, jobs batchv1client.JobInterface, name string) (*batchv1.Job, error) {
	var job *batchv1.Job
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		job = j
		return j.Status.StartTime != nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("job %s not started by the Job controller: %w", name, err)
	}
	return job, nil
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
