// Package spawn turns a validated experiment into a Job made from the
// template, and creates it exactly once.
package spawn

import (
	"context"
	"errors"
	"fmt"
	"maps"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
)

// Labels and annotations that mark a Job as gmini's. The ID is an
// annotation because label values cannot hold every valid ID (length, dots
// at the ends); the Job name, derived from it, is the lookup key.
const (
	LabelApp           = "app"
	LabelAppValue      = "gmini"
	LabelManagedBy     = "app.kubernetes.io/managed-by"
	LabelManagedByName = "gmini-backend"
	AnnotationID       = "gmini.dev/experiment-id"
	AnnotationHash     = "gmini.dev/experiment-sha256"

	// RunnerContainer is the container that receives the experiment.
	RunnerContainer = "runner"
)

// ManagedSelector selects every Job the backend created.
var ManagedSelector = LabelManagedBy + "=" + LabelManagedByName

// ErrConflict means another experiment already owns the Job name: the same
// ID with a different body, or (never seen) a hash collision.
var ErrConflict = errors.New("conflict")

// Spawner creates Jobs in one namespace.
type Spawner struct {
	Client    kubernetes.Interface
	Namespace string
	Templates template.Source
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
func (s *Spawner) Create(ctx context.Context, exp experiment.Experiment) (Result, error) {
	tmpl, err := s.Templates.JobTemplate()
	if err != nil {
		return Result{}, fmt.Errorf("load job template: %w", err)
	}
	job, err := BuildJob(tmpl, s.Namespace, exp)
	if err != nil {
		return Result{}, err
	}
	created, err := s.Client.BatchV1().Jobs(s.Namespace).Create(ctx, job, metav1.CreateOptions{})
	if err == nil {
		return Result{Job: created, Created: true}, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return Result{}, fmt.Errorf("create job %s/%s: %w", s.Namespace, job.Name, err)
	}
	existing, err := s.Client.BatchV1().Jobs(s.Namespace).Get(ctx, job.Name, metav1.GetOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("get existing job %s/%s: %w", s.Namespace, job.Name, err)
	}
	switch {
	case existing.Annotations[AnnotationID] != exp.ID:
		return Result{}, fmt.Errorf("%w: job %s belongs to experiment %q", ErrConflict, job.Name, existing.Annotations[AnnotationID])
	case existing.Annotations[AnnotationHash] != exp.Hash:
		return Result{}, fmt.Errorf("%w: experiment %q was already submitted with a different body (job %s); use a new ID or delete the experiment first", ErrConflict, exp.ID, job.Name)
	case existing.DeletionTimestamp != nil:
		return Result{}, fmt.Errorf("%w: the previous job %s of experiment %q is being deleted; retry in a few seconds", ErrConflict, job.Name, exp.ID)
	}
	return Result{Job: existing}, nil
}

// BuildJob makes the Job for exp from the template. The template's metadata
// and spec are kept; gmini adds its labels, annotations and the runner's
// argument.
func BuildJob(tmpl *batchv1.JobTemplateSpec, namespace string, exp experiment.Experiment) (*batchv1.Job, error) {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        experiment.JobName(exp.ID),
			Namespace:   namespace,
			Labels:      maps.Clone(tmpl.Labels),
			Annotations: maps.Clone(tmpl.Annotations),
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	if job.Labels == nil {
		job.Labels = map[string]string{}
	}
	job.Labels[LabelApp] = LabelAppValue
	job.Labels[LabelManagedBy] = LabelManagedByName
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	job.Annotations[AnnotationID] = exp.ID
	job.Annotations[AnnotationHash] = exp.Hash

	pod := &job.Spec.Template
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelApp] = LabelAppValue
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationID] = exp.ID

	containers := pod.Spec.Containers
	idx := -1
	for i := range containers {
		if containers[i].Name == RunnerContainer {
			idx = i
		}
	}
	if idx < 0 && len(containers) == 1 {
		idx = 0
	}
	if idx < 0 {
		return nil, fmt.Errorf("job template has no container named %q", RunnerContainer)
	}
	// The experiment travels as one process argument, as in the tutorial
	// (`app.py '<json>'`); the request size limit keeps it far below
	// Linux's 128 KiB cap on a single argument.
	containers[idx].Args = []string{string(exp.Body)}
	return job, nil
}
