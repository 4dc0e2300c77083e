// Package lifecycle reads experiments back from the cluster: their state,
// their runner's output, and cancellation. The cluster is the only store;
// the backend keeps no state of its own, so any replica can answer.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
)

// States of an experiment, derived from its Job.
const (
	StatePending   = "Pending"
	StateRunning   = "Running"
	StateSucceeded = "Succeeded"
	StateFailed    = "Failed"
)

// ErrNotFound means no Job exists for the experiment (never created, or
// removed by its TTL or a DELETE).
var ErrNotFound = errors.New("not found")

// ErrNoOutput means the experiment exists but no runner has produced output
// yet.
var ErrNoOutput = errors.New("no output yet")

// maxLogBytes bounds what GET /experiments/{id}/logs returns.
const maxLogBytes = 1 << 20

// Status is an experiment as the API shows it.
type Status struct {
	ID          string     `json:"id"`
	Job         string     `json:"job"`
	Namespace   string     `json:"namespace"`
	State       string     `json:"state"`
	Reason      string     `json:"reason,omitempty"`
	Message     string     `json:"message,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	StartedAt   *time.Time `json:"startedAt,omitempty"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
	Active      int32      `json:"active"`
	Succeeded   int32      `json:"succeeded"`
	Failed      int32      `json:"failed"`
}

// FromJob derives an experiment's status from its Job.
func FromJob(job *batchv1.Job) Status {
	s := Status{
		ID:        job.Annotations[spawn.AnnotationID],
		Job:       job.Name,
		Namespace: job.Namespace,
		State:     StatePending,
		CreatedAt: job.CreationTimestamp.UTC(),
		Active:    job.Status.Active,
		Succeeded: job.Status.Succeeded,
		Failed:    job.Status.Failed,
	}
	if t := job.Status.StartTime; t != nil {
		v := t.UTC()
		s.StartedAt = &v
	}
	if job.Status.Ready != nil && *job.Status.Ready > 0 {
		s.State = StateRunning
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			s.State = StateSucceeded
		case batchv1.JobFailed:
			s.State = StateFailed
		default:
			continue
		}
		s.Reason, s.Message = c.Reason, c.Message
		v := c.LastTransitionTime.UTC()
		if job.Status.CompletionTime != nil {
			v = job.Status.CompletionTime.UTC()
		}
		s.CompletedAt = &v
	}
	return s
}

// Store reads and deletes experiments in one namespace.
type Store struct {
	Client    kubernetes.Interface
	Namespace string
}

// job fetches the experiment's Job and checks it is really this
// experiment's.
func (s *Store) job(ctx context.Context, id string) (*batchv1.Job, error) {
	name := experiment.JobName(id)
	job, err := s.Client.BatchV1().Jobs(s.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("experiment %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s/%s: %w", s.Namespace, name, err)
	}
	if job.Annotations[spawn.AnnotationID] != id {
		return nil, fmt.Errorf("experiment %q: %w", id, ErrNotFound)
	}
	return job, nil
}

// Get returns one experiment's status.
func (s *Store) Get(ctx context.Context, id string) (Status, error) {
	job, err := s.job(ctx, id)
	if err != nil {
		return Status{}, err
	}
	return FromJob(job), nil
}

// List returns every experiment in the namespace, newest first.
func (s *Store) List(ctx context.Context) ([]Status, error) {
	jobs, err := s.Client.BatchV1().Jobs(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: spawn.ManagedSelector})
	if err != nil {
		return nil, fmt.Errorf("list jobs in %s: %w", s.Namespace, err)
	}
	out := make([]Status, 0, len(jobs.Items))
	for i := range jobs.Items {
		out = append(out, FromJob(&jobs.Items[i]))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Job < out[j].Job
	})
	return out, nil
}

// Logs copies the runner's output of the experiment's newest pod to w.
func (s *Store) Logs(ctx context.Context, id string, w io.Writer) error {
	job, err := s.job(ctx, id)
	if err != nil {
		return err
	}
	pods, err := s.Client.CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: batchv1.JobNameLabel + "=" + job.Name,
	})
	if err != nil {
		return fmt.Errorf("list pods of job %s: %w", job.Name, err)
	}
	var newest *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if newest == nil || p.CreationTimestamp.After(newest.CreationTimestamp.Time) {
			newest = p
		}
	}
	if newest == nil {
		return fmt.Errorf("experiment %q: no runner pod exists (yet or any more): %w", id, ErrNoOutput)
	}
	if newest.Status.Phase == corev1.PodPending {
		return fmt.Errorf("experiment %q: runner pod %s has not started: %w", id, newest.Name, ErrNoOutput)
	}
	limit := int64(maxLogBytes)
	req := s.Client.CoreV1().Pods(s.Namespace).GetLogs(newest.Name, &corev1.PodLogOptions{
		Container:  spawn.RunnerContainer,
		LimitBytes: &limit,
	})
	stream, err := req.Stream(ctx)
	if err != nil {
		return fmt.Errorf("read logs of pod %s: %w", newest.Name, err)
	}
	defer stream.Close()
	if _, err := io.Copy(w, stream); err != nil {
		return fmt.Errorf("copy logs of pod %s: %w", newest.Name, err)
	}
	return nil
}

// Delete cancels an experiment: the Job goes at once and the garbage
// collector removes its pods (background propagation), so a running runner
// is stopped.
func (s *Store) Delete(ctx context.Context, id string) (Status, error) {
	job, err := s.job(ctx, id)
	if err != nil {
		return Status{}, err
	}
	policy := metav1.DeletePropagationBackground
	err = s.Client.BatchV1().Jobs(s.Namespace).Delete(ctx, job.Name, metav1.DeleteOptions{
		PropagationPolicy: &policy,
		// Delete exactly the Job we checked, not a new one of the same name.
		Preconditions: &metav1.Preconditions{UID: &job.UID},
	})
	if apierrors.IsNotFound(err) {
		return Status{}, fmt.Errorf("experiment %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Status{}, fmt.Errorf("delete job %s/%s: %w", s.Namespace, job.Name, err)
	}
	return FromJob(job), nil
}
