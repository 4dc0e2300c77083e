// Package jobstatus writes a Job's status as the Job controller would once
// its pod succeeded. The reliability suite and the benchmark run clusters
// without a node, where no pod ever runs, and still need Jobs that finish.
package jobstatus

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	batchclient "k8s.io/client-go/kubernetes/typed/batch/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// MarkComplete sets st to what the Job controller writes when a Job's one
// pod has succeeded (SuccessCriteriaMet, then Complete, a completion time,
// no active, ready or terminating pod), in a form the API server's status
// validation accepts. It reports false when st is finished already. The
// start time must be the controller's: the API server refuses to set or
// change it on a Job that is not being resumed.
func MarkComplete(st *batchv1.JobStatus, now time.Time, message string) bool {
	for _, c := range st.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return false
		}
	}
	t := metav1.NewTime(now.Truncate(time.Second))
	// The API keeps seconds: a completion time before the start time is
	// refused.
	if st.StartTime != nil && t.Before(st.StartTime) {
		t = *st.StartTime
	}
	st.CompletionTime = &t
	st.Active = 0
	st.Ready = ptr.To[int32](0)
	st.Terminating = ptr.To[int32](0)
	st.UncountedTerminatedPods = nil
	st.Succeeded = max(st.Succeeded, 1)
	for _, typ := range []batchv1.JobConditionType{batchv1.JobSuccessCriteriaMet, batchv1.JobComplete} {
		st.Conditions = append(st.Conditions, batchv1.JobCondition{
			Type: typ, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: message,
			LastProbeTime: t, LastTransitionTime: t,
		})
	}
	return true
}

// errNotStarted: the Job controller has not set the start time yet.
var errNotStarted = errors.New("the Job controller has not started the job yet")

// startWait bounds the wait for the Job controller's start time, which it
// sets at its first sync of the Job: seconds, even behind thousands.
var startWait = wait.Backoff{Duration: 50 * time.Millisecond, Factor: 1.5, Jitter: 0.1, Steps: 20, Cap: 5 * time.Second}

// Complete marks the Job Complete through the status subresource once the
// Job controller has started it, re-reading it when the controller wrote
// its own status in between. job, if not nil, is a copy already read. A
// Job that is gone is no error.
func Complete(ctx context.Context, jobs batchclient.JobInterface, name string, job *batchv1.Job, message string) error {
	err := retry.OnError(startWait, func(err error) bool {
		return apierrors.IsConflict(err) || errors.Is(err, errNotStarted)
	}, func() error {
		if job == nil {
			var err error
			if job, err = jobs.Get(ctx, name, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		cur := job
		job = nil // a retry reads it again
		if cur.Status.StartTime == nil {
			return errNotStarted
		}
		if !MarkComplete(&cur.Status, time.Now(), message) {
			return nil
		}
		_, err := jobs.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("mark job %s Complete: %w", name, err)
	}
	return nil
}
