// Package lifecycle reads experiments back from the cluster: their state,
// their runner's output, and cancellation. The cluster is the only store;
// the backend keeps no state of its own, so any replica can answer.
package lifecycle

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// States a Job gives, of the one vocabulary (package state).
const (
	StatePending   = state.Pending
	StateRunning   = state.Running
	StateSucceeded = state.Succeeded
	StateFailed    = state.Failed
	StateSuspended = state.Suspended
	StateDeleting  = state.Deleting
	StateQueued    = state.Queued
	StateSubmitted = state.Submitted
)

// deleteAttempts bounds Delete's retries when the Job changes between the
// get and the delete (another request deleted or re-created it).
const deleteAttempts = 3

// Status is an experiment's status, as the API answers it.
type Status = wire.Status

// PodCounts count a Job's pods, as its status does.
type PodCounts = wire.PodCounts

// Sources of a Status.
const (
	SourceJob     = "job"
	SourceHistory = "history"
)

// FromJob derives an experiment's status from its Job's status alone.
//
// The outcome is known as soon as the Job controller decides it:
// SuccessCriteriaMet and FailureTarget (Kubernetes 1.31+) come while the
// last pods are still terminating, before Complete and Failed, so the state
// goes Running → Succeeded, never back to Pending. A Job being deleted shows
// as Deleting, with the outcome's reason if it had one. A Job the backend
// holds (jobspec.HeldForSubmit) is Submitted, one waiting for Kueue's
// admission (jobspec.Queued) Queued; a Job under a queue is never
// Suspended: Kueue, not a person, resumes it.
func FromJob(job *batchv1.Job) Status {
	s := Status{
		ID:          job.Annotations[jobspec.AnnotationID],
		Job:         job.Name,
		Namespace:   job.Namespace,
		State:       StatePending,
		CreatedAt:   jobspec.SubmittedAt(job),
		PodCounts:   &PodCounts{Active: job.Status.Active, Succeeded: job.Status.Succeeded, Failed: job.Status.Failed},
		SubmittedBy: job.Annotations[jobspec.AnnotationSubmitter],
		Set:         job.Labels[jobspec.LabelSet],
		Source:      SourceJob,
	}
	if q := jobspec.QueueName(job); q != "" {
		s.Queue = &wire.Queue{Name: q}
	}
	if t := job.Status.StartTime; t != nil {
		v := t.UTC()
		s.StartedAt = &v
	}
	// A pod counts as running once it is ready, that is once its
	// containers started. An API server that does not report ready pods
	// (the field is nil) leaves only the active count.
	if ready := job.Status.Ready; job.Status.Active > 0 && (ready == nil || *ready > 0) {
		s.State = StateRunning
	}
	// Between the runner's successful end and the Job controller's
	// SuccessCriteriaMet there is a moment (a second or more on a busy
	// control plane) with no active pod and no condition: the attempt
	// that ran succeeded, and the experiment is still Running while its
	// outcome is counted, not back to Pending. (A failed attempt leaves
	// Pending: the next one is waited for.)
	if s.State == StatePending && job.Status.Active == 0 && succeededPods(job) {
		s.State = StateRunning
	}
	if s.State == StatePending && job.Status.Failed > 0 {
		s.Reason = state.ReasonRetrying
		s.Message = fmt.Sprintf("%d attempt(s) failed; the next one is starting", job.Status.Failed)
	}

	var final, decided, suspended *batchv1.JobCondition
	for i := range job.Status.Conditions {
		c := &job.Status.Conditions[i]
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete, batchv1.JobFailed:
			final = c
		case batchv1.JobSuccessCriteriaMet, batchv1.JobFailureTarget:
			decided = c
		case batchv1.JobSuspended:
			suspended = c
		}
	}
	if final != nil {
		decided = final
	}
	switch {
	case decided != nil:
		s.State = StateFailed
		if decided.Type == batchv1.JobComplete || decided.Type == batchv1.JobSuccessCriteriaMet {
			s.State = StateSucceeded
		}
		s.Reason, s.Message = decided.Reason, decided.Message
		v := decided.LastTransitionTime.UTC()
		if job.Status.CompletionTime != nil {
			v = job.Status.CompletionTime.UTC()
		}
		s.CompletedAt = &v
	case jobspec.HeldForSubmit(job):
		// Suspended by the backend itself for a moment, not by anyone
		// who would have to resume it.
		s.State = StateSubmitted
		s.Reason, s.Message = "HeldForSubmit", "created held until the experiment's record confirms it may still run"
	case jobspec.Queued(job):
		s.State = StateQueued
	case s.Queue != nil:
		// Admitted: Kueue set suspend to false; a Suspended condition
		// left from the wait is the Job controller's lag.
	case suspended != nil:
		s.State = StateSuspended
		s.Reason, s.Message = suspended.Reason, suspended.Message
	}
	if job.DeletionTimestamp != nil {
		s.State = StateDeleting
	}
	return s
}

// succeededPods reports whether a pod of the Job succeeded, counted or not
// yet.
func succeededPods(job *batchv1.Job) bool {
	u := job.Status.UncountedTerminatedPods
	return job.Status.Succeeded > 0 || u != nil && len(u.Succeeded) > 0
}

// Store reads and deletes experiments in one namespace.
type Store struct {
	Client    kubernetes.Interface
	Namespace string
	// Queues, when set, completes the queue of a status read from a Job
	// (package queue): its ClusterQueue and, while Queued, Kueue's reason,
	// position and an estimated start.
	Queues QueueDescriber
	// PodLogs opens the runner's log for Follow; nil: the API server's
	// pods/log.
	PodLogs PodLogs
	// Watch, when set and synced, is where Follow reads an unfinished
	// Job and its pods, instead of the API server each poll.
	Watch *Watch
}

// QueueDescriber describes the queue of a Job under one.
type QueueDescriber interface {
	// Describe returns what is known of LocalQueue name, where the Job
	// of UID job waits (queued) or ran; name may be empty to find it
	// from the Job's Workload. nil when there is no queue to speak of.
	Describe(ctx context.Context, name string, job types.UID, queued bool) *wire.Queue
}

// describeQueue completes st.Queue from s.Queues.
func (s *Store) describeQueue(ctx context.Context, job *batchv1.Job, st *Status) {
	if s.Queues == nil || st.Queue == nil {
		return
	}
	if q := s.Queues.Describe(ctx, st.Queue.Name, job.UID, st.State == StateQueued); q != nil {
		st.Queue = q
	}
}

// job fetches the experiment's Job and checks, by jobspec.Owns, that it is
// really this experiment's.
func (s *Store) job(ctx context.Context, id string) (*batchv1.Job, error) {
	name := jobspec.JobName(id)
	job, err := s.Client.BatchV1().Jobs(s.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, failure.New(failure.NotFound, "experiment %q not found: no job %s (never created, or removed by its TTL or a DELETE)", id, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s/%s: %w", s.Namespace, name, err)
	}
	if owner, ok := jobspec.Owns(job); !ok || owner != id {
		return nil, failure.New(failure.NotFound, "experiment %q not found: job %s is not this experiment's", id, name)
	}
	return job, nil
}

// Get returns one experiment's status.
func (s *Store) Get(ctx context.Context, id string) (Status, error) {
	job, err := s.job(ctx, id)
	if err != nil {
		return Status{}, err
	}
	st := FromJob(job)
	s.describeQueue(ctx, job, &st)
	return st, nil
}

// Page is one page of experiments read from the live Jobs.
type Page struct {
	Items []Status
	// Continue is the API server's token for the next page; empty on the
	// last one.
	Continue string
}

// List returns one page of the experiments that Get would answer for, and
// only those, in the API server's order (by Job name): live Jobs cannot be
// read newest first without reading them all, which is what history's list
// does instead. limit bounds the Jobs read, so memory stays bounded however
// many Jobs exist; a state filter can make a page shorter than limit.
func (s *Store) List(ctx context.Context, limit int64, cont, state string) (Page, error) {
	return s.ListSelected(ctx, jobspec.ManagedSelector, limit, cont, state)
}

// ListSelected is List of the Jobs selector selects (narrower than
// jobspec.ManagedSelector, such as jobspec.SetSelector).
func (s *Store) ListSelected(ctx context.Context, selector string, limit int64, cont, state string) (Page, error) {
	if len(cont) > maxContinueLen {
		return Page{}, badContinue(cont, "is too long to be the API server's")
	}
	jobs, err := s.Client.BatchV1().Jobs(s.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: selector,
		Limit:         limit,
		Continue:      cont,
	})
	switch {
	case apierrors.IsResourceExpired(err):
		return Page{}, badContinue(cont, "has expired")
	case apierrors.IsBadRequest(err):
		return Page{}, badContinue(cont, "is not valid")
	case apierrors.IsTimeout(err) && apierrors.HasStatusCause(err, metav1.CauseTypeResourceVersionTooLarge):
		// The token's resourceVersion lies ahead of what the API server
		// has seen even after waiting for it: forged or garbled, unless
		// an API server far behind the one that made it answered. The
		// API server calls it a timeout, but a retry of the same token
		// is almost always refused again; the first page is what works.
		return Page{}, badContinue(cont, "names a resourceVersion the API server has not reached")
	case err != nil:
		return Page{}, fmt.Errorf("list jobs in %s: %w", s.Namespace, err)
	}
	out := Page{Items: make([]Status, 0, len(jobs.Items)), Continue: jobs.Continue}
	for i := range jobs.Items {
		if _, ok := jobspec.Owns(&jobs.Items[i]); !ok {
			continue
		}
		if st := FromJob(&jobs.Items[i]); state == "" || st.State == state {
			s.describeQueue(ctx, &jobs.Items[i], &st)
			out.Items = append(out.Items, st)
		}
	}
	return out, nil
}

// maxContinueLen bounds the continue tokens passed on to the API server.
// Its tokens hold a resourceVersion and the name of the next Job (at most
// 63 characters), encoded: a few hundred bytes at most.
const maxContinueLen = 1024

// badContinue refuses a continue token the client must drop. The API
// server's own message is left out: it may repeat the token.
func badContinue(cont, why string) error {
	return failure.New(failure.Invalid, "continue token %s %s: pass the continue value of the previous page unchanged, or none to start from the first page",
		failure.Quote(cont), why)
}

// Delete cancels an experiment: the Job goes at once and the garbage
// collector removes its pods (background propagation), so a running runner
// is stopped. A DELETE or POST of the same experiment racing this one is
// an ordinary race, answered as such: the Job is looked up again.
func (s *Store) Delete(ctx context.Context, id string) (Status, error) {
	policy := metav1.DeletePropagationBackground
	for range deleteAttempts {
		job, err := s.job(ctx, id)
		if err != nil {
			return Status{}, err
		}
		err = s.Client.BatchV1().Jobs(s.Namespace).Delete(ctx, job.Name, metav1.DeleteOptions{
			PropagationPolicy: &policy,
			// Delete exactly the Job we checked, not a new one of the same name.
			Preconditions: &metav1.Preconditions{UID: &job.UID},
		})
		switch {
		case err == nil:
			return FromJob(job), nil
		case apierrors.IsNotFound(err):
			return Status{}, failure.New(failure.NotFound, "experiment %q not found: its job %s was deleted by another request", id, job.Name)
		case apierrors.IsConflict(err):
			// The UID precondition failed: the Job was deleted, or
			// deleted and created again, since the get.
			continue
		}
		return Status{}, fmt.Errorf("delete job %s/%s: %w", s.Namespace, job.Name, err)
	}
	return Status{}, failure.New(failure.Conflict, "the job of experiment %q was replaced during the delete %d times in a row; retry", id, deleteAttempts)
}
