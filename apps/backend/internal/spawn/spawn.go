// Package spawn turns a validated experiment into a Job made from the
// template, and creates it exactly once.
package spawn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// createAttempts bounds Create's retries when a DELETE of the same
// experiment removes the Job between the create that found it and the get
// that reads it. Each retry is one more race lost against a DELETE; three
// in a row means something keeps deleting the Job.
const createAttempts = 3

// quotaConflictRetries bounds the creates retried after a 409 Conflict that
// is not AlreadyExists: the quota admission plugin refused because another
// create updated the namespace's ResourceQuota usage at the same moment
// (optimistic concurrency on the quota object). Nothing was created, so a
// retry is safe; the API server retries a few times itself and gives up
// under heavy concurrency (seen with 50 concurrent POSTs).
const quotaConflictRetries = 6

// Spawner creates Jobs in one namespace.
type Spawner struct {
	Client    kubernetes.Interface
	Namespace string
	Templates template.Source
	// Hold makes each Job wait for its history record
	// (jobspec.HoldForHistory): set when history is on.
	Hold bool
}

// Result says what Create did.
type Result struct {
	Job *batchv1.Job
	// Created is false when the Job already existed for this very
	// experiment (a retried POST).
	Created bool
}

// Create creates the experiment's Job, or returns the existing one when the
// same experiment was already submitted. It never creates two Jobs for one
// ID: the name is derived from the ID, and the API server rejects a second
// create of the same name.
//
// submitter, when not empty, is kept on the Job (jobspec.AnnotationSubmitter),
// and at, when the experiment was submitted (jobspec.AnnotationSubmittedAt).
// An error for which NothingCreated is true made no Job.
func (s *Spawner) Create(ctx context.Context, exp experiment.Experiment, submitter string, at time.Time) (Result, error) {
	return s.create(ctx, exp, submitter, at, false)
}

// CreateHeld is Create, but a Job it makes starts suspended and marked
// (jobspec.AnnotationHeldForSubmit), so no pod runs before the caller has
// checked that the experiment may still run; Resume starts it. An existing
// Job is returned as it is, held or not.
func (s *Spawner) CreateHeld(ctx context.Context, exp experiment.Experiment, submitter string, at time.Time) (Result, error) {
	return s.create(ctx, exp, submitter, at, true)
}

// Resume starts a Job that CreateHeld made, unless the template itself
// asked for a suspended Job; only the Job with that UID is changed.
func (s *Spawner) Resume(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	patch, err := jobspec.ResumePatch(job)
	if err != nil {
		return nil, err
	}
	resumed, err := s.Client.BatchV1().Jobs(s.Namespace).Patch(ctx, job.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("start held job %s/%s: %w", s.Namespace, job.Name, err)
	}
	return resumed, nil
}

// Discard deletes a Job that CreateHeld made and that must not run; only
// the Job with that UID, so a newer Job of the same name is left alone.
func (s *Spawner) Discard(ctx context.Context, job *batchv1.Job) error {
	bg := metav1.DeletePropagationBackground
	err := s.Client.BatchV1().Jobs(s.Namespace).Delete(ctx, job.Name, metav1.DeleteOptions{
		Preconditions:     &metav1.Preconditions{UID: &job.UID},
		PropagationPolicy: &bg,
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete held job %s/%s: %w", s.Namespace, job.Name, err)
	}
	return nil
}

func (s *Spawner) create(ctx context.Context, exp experiment.Experiment, submitter string, at time.Time, held bool) (Result, error) {
	tmpl, err := s.Templates.JobTemplate()
	if err != nil {
		return Result{}, nothingCreated(err)
	}
	job, err := jobspec.Build(tmpl, s.Namespace, exp.ID, exp.Hash, exp.Body)
	if err != nil {
		return Result{}, nothingCreated(failure.Wrap(failure.Unavailable, err, "build the job of experiment %q from the template", exp.ID))
	}
	if submitter != "" {
		job.Annotations[jobspec.AnnotationSubmitter] = submitter
	}
	job.Annotations[jobspec.AnnotationSubmittedAt] = at.UTC().Format(jobspec.SubmittedAtFormat)
	if exp.Queue != "" {
		jobspec.SetQueue(job, exp.Queue)
	}
	if exp.Set != "" {
		job.Labels[jobspec.LabelSet] = exp.Set
	}
	if s.Hold {
		jobspec.HoldForHistory(job)
	}
	if held {
		jobspec.HoldForSubmit(job)
	}
	jobs := s.Client.BatchV1().Jobs(s.Namespace)
	for range createAttempts {
		created, err := createJob(ctx, jobs, job)
		if err == nil {
			return Result{Job: created, Created: true}, nil
		}
		// The API server checks a ResourceQuota before it finds the name
		// taken: a retry of an experiment whose Job exists would get the
		// quota's refusal. Look first, then answer the quota.
		if failure.KindOf(err) == failure.TooManyRequests && apierrors.IsForbidden(err) {
			if existing, gerr := jobs.Get(ctx, job.Name, metav1.GetOptions{}); gerr == nil {
				if err := sameExperiment(existing, exp); err != nil {
					return Result{}, nothingCreated(err)
				}
				return Result{Job: existing}, nil
			}
		}
		if !apierrors.IsAlreadyExists(err) {
			if webhookFailed(err) {
				return Result{}, nothingCreated(failure.Wrap(failure.Unavailable, err,
					"create job %s/%s: an admission webhook (Kueue's, for a Job under a queue) could not be called; retry once it is back", s.Namespace, job.Name))
			}
			err = fmt.Errorf("create job %s/%s: %w", s.Namespace, job.Name, err)
			if refused(err) {
				err = nothingCreated(err)
			}
			return Result{}, err
		}
		existing, err := jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // deleted since the create saw it: create again
		}
		if err != nil {
			return Result{}, nothingCreated(fmt.Errorf("get existing job %s/%s: %w", s.Namespace, job.Name, err))
		}
		if err := sameExperiment(existing, exp); err != nil {
			return Result{}, nothingCreated(err)
		}
		return Result{Job: existing}, nil
	}
	return Result{}, nothingCreated(failure.New(failure.Conflict,
		"job %s of experiment %q was deleted while it was being created, %d times in a row; retry", job.Name, exp.ID, createAttempts))
}

// notCreated marks an error after which Create is sure it made no Job.
type notCreated struct{ error }

func (e notCreated) Unwrap() error { return e.error }

func nothingCreated(err error) error { return notCreated{err} }

// NothingCreated reports whether Create failed with err before any Job of
// its making existed: the template was unusable, the API server refused the
// create (a quota, RBAC, validation, its flow control), or the name belongs
// to another Job. A timeout or a lost connection is not such an error: the
// create may have happened.
func NothingCreated(err error) bool {
	var nc notCreated
	return errors.As(err, &nc)
}

// refused reports whether the API server answered a create with a refusal
// (a 4xx other than a timeout): it made nothing. A 5xx or no answer at all
// leaves open whether the object was stored.
func refused(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := status.Status().Code
	return code >= 400 && code < 500 && code != 408 && !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err)
}

// webhookFailed reports the API server's 500 for an admission webhook it
// could not call (with failurePolicy Fail, as Kueue's Job webhook has):
// admission runs before the object is stored, so nothing was created, and
// the webhook's server (Kueue's controller) is down or restarting.
func webhookFailed(err error) bool {
	return apierrors.IsInternalError(err) && strings.Contains(err.Error(), "failed calling webhook")
}

// createJob creates job, retrying a create the quota's concurrent updates
// refused (see quotaConflictRetries) after a short, jittered, growing pause.
// Still refused, it is Unavailable: answered 503 with Retry-After.
func createJob(ctx context.Context, jobs jobCreator, job *batchv1.Job) (*batchv1.Job, error) {
	delay := 10 * time.Millisecond
	for i := 0; ; i++ {
		created, err := jobs.Create(ctx, job, metav1.CreateOptions{})
		if !apierrors.IsConflict(err) {
			return created, err
		}
		if i == quotaConflictRetries {
			return nil, nothingCreated(failure.Wrap(failure.Unavailable, err, "refused %d times in a row while other creates updated the namespace's ResourceQuota; retry", i+1))
		}
		select {
		case <-ctx.Done():
			return nil, nothingCreated(failure.Wrap(failure.Unavailable, err, "gave up retrying a create the ResourceQuota's concurrent updates refused"))
		case <-time.After(delay/2 + rand.N(delay)):
		}
		delay *= 2
	}
}

// jobCreator is the part of the Jobs client createJob calls.
type jobCreator interface {
	Create(ctx context.Context, job *batchv1.Job, opts metav1.CreateOptions) (*batchv1.Job, error)
}

// sameExperiment tells a retry of exp (nil) from a Job that cannot serve
// as exp's: another owner, a Job on its way out, or another body.
func sameExperiment(existing *batchv1.Job, exp experiment.Experiment) error {
	owner, ok := jobspec.Owns(existing)
	switch {
	case !ok && existing.Annotations[jobspec.AnnotationID] == "":
		return failure.New(failure.Conflict, "job %s exists but was not created by gmini (no %s annotation); delete or rename it",
			existing.Name, jobspec.AnnotationID)
	case !ok:
		return failure.New(failure.Conflict, "job %s exists but is not gmini's experiment %q (label %s=%q, annotation %s=%q); delete or rename it",
			existing.Name, exp.ID, jobspec.LabelManagedBy, existing.Labels[jobspec.LabelManagedBy], jobspec.AnnotationID, existing.Annotations[jobspec.AnnotationID])
	case owner != exp.ID:
		// Only two IDs whose 50-bit name hashes collide get here.
		return failure.New(failure.Conflict, "job %s belongs to experiment %q; use another ID", existing.Name, owner)
	case existing.DeletionTimestamp != nil:
		return failure.New(failure.Conflict, "the previous job %s of experiment %q is being deleted; retry in a few seconds", existing.Name, exp.ID)
	case existing.Annotations[jobspec.AnnotationHash] != exp.Hash:
		return failure.New(failure.Conflict, "experiment %q was already submitted with a different body (job %s); use a new ID or delete the experiment first", exp.ID, existing.Name)
	}
	return nil
}
