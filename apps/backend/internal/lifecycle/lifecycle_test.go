package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

const ns = "ns"

func TestFromJob(t *testing.T) {
	t.Parallel()
	t0 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(4 * time.Second))
	t2 := metav1.NewTime(t0.Add(6 * time.Second))
	one, zero := int32(1), int32(0)
	cond := func(typ batchv1.JobConditionType, status corev1.ConditionStatus, reason, message string, at metav1.Time) batchv1.JobCondition {
		return batchv1.JobCondition{Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: at}
	}
	conds := func(c ...batchv1.JobCondition) []batchv1.JobCondition { return c }
	at := func(m metav1.Time) *time.Time { v := m.UTC(); return &v }
	// base is what every case shares; each case states the rest.
	base := Status{ID: "A", Job: "exp-a-x", Namespace: ns, CreatedAt: t0.Time, Source: SourceJob}
	with := func(f func(*Status)) Status { s := base; s.PodCounts = &PodCounts{}; f(&s); return s }

	tests := []struct {
		name     string
		status   batchv1.JobStatus
		deleting bool
		want     Status
	}{
		{"new", batchv1.JobStatus{}, false, with(func(s *Status) { s.State = StatePending })},
		{"pod not ready", batchv1.JobStatus{Active: 1, Ready: &zero, StartTime: &t0}, false,
			with(func(s *Status) { s.State, s.Active, s.StartedAt = StatePending, 1, at(t0) })},
		{"pod ready", batchv1.JobStatus{Active: 1, Ready: &one, StartTime: &t0}, false,
			with(func(s *Status) { s.State, s.Active, s.StartedAt = StateRunning, 1, at(t0) })},
		{"active, ready pods not reported", batchv1.JobStatus{Active: 1, StartTime: &t0}, false,
			with(func(s *Status) { s.State, s.Active, s.StartedAt = StateRunning, 1, at(t0) })},
		{"retry pod not ready after a failure", batchv1.JobStatus{Active: 1, Ready: &zero, Failed: 1, StartTime: &t0}, false,
			with(func(s *Status) {
				s.State, s.Active, s.Failed, s.StartedAt = StatePending, 1, 1, at(t0)
				s.Reason, s.Message = state.ReasonRetrying, "1 attempt(s) failed; the next one is starting"
			})},
		{"the pod succeeded, not counted yet, no condition", batchv1.JobStatus{Ready: &zero, StartTime: &t0,
			UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{Succeeded: []types.UID{"p1"}}}, false,
			with(func(s *Status) { s.State, s.StartedAt = StateRunning, at(t0) })},
		{"the pod succeeded and counted, no condition yet", batchv1.JobStatus{Succeeded: 1, Ready: &zero, StartTime: &t0}, false,
			with(func(s *Status) { s.State, s.Succeeded, s.StartedAt = StateRunning, 1, at(t0) })},
		{"the pod failed, the next one not made yet", batchv1.JobStatus{Failed: 1, Ready: &zero, StartTime: &t0}, false,
			with(func(s *Status) {
				s.State, s.Failed, s.StartedAt = StatePending, 1, at(t0)
				s.Reason, s.Message = state.ReasonRetrying, "1 attempt(s) failed; the next one is starting"
			})},
		{"success criteria met, pod terminating", batchv1.JobStatus{Succeeded: 1, Ready: &zero, StartTime: &t0,
			Conditions: conds(cond(batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue, "CompletionsReached", "Reached expected number of succeeded pods", t1))}, false,
			with(func(s *Status) {
				s.State, s.Succeeded, s.StartedAt, s.CompletedAt = StateSucceeded, 1, at(t0), at(t1)
				s.Reason, s.Message = "CompletionsReached", "Reached expected number of succeeded pods"
			})},
		{"complete", batchv1.JobStatus{Succeeded: 1, StartTime: &t0, CompletionTime: &t2,
			Conditions: conds(cond(batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue, "CompletionsReached", "", t1), cond(batchv1.JobComplete, corev1.ConditionTrue, "CompletionsReached", "done", t2))}, false,
			with(func(s *Status) {
				s.State, s.Succeeded, s.StartedAt, s.CompletedAt = StateSucceeded, 1, at(t0), at(t2)
				s.Reason, s.Message = "CompletionsReached", "done"
			})},
		{"failure target, pod terminating", batchv1.JobStatus{Active: 1, Ready: &one, Failed: 1, StartTime: &t0,
			Conditions: conds(cond(batchv1.JobFailureTarget, corev1.ConditionTrue, "PodFailurePolicy", "exit code 2", t1))}, false,
			with(func(s *Status) {
				s.State, s.Active, s.Failed, s.StartedAt, s.CompletedAt = StateFailed, 1, 1, at(t0), at(t1)
				s.Reason, s.Message = "PodFailurePolicy", "exit code 2"
			})},
		{"failed by podFailurePolicy", batchv1.JobStatus{Failed: 1, StartTime: &t0,
			Conditions: conds(cond(batchv1.JobFailureTarget, corev1.ConditionTrue, "PodFailurePolicy", "target", t1), cond(batchv1.JobFailed, corev1.ConditionTrue, "PodFailurePolicy", "failed", t2))}, false,
			with(func(s *Status) {
				s.State, s.Failed, s.StartedAt, s.CompletedAt = StateFailed, 1, at(t0), at(t2)
				s.Reason, s.Message = "PodFailurePolicy", "failed"
			})},
		{"deadline exceeded", batchv1.JobStatus{Failed: 1, StartTime: &t0,
			Conditions: conds(cond(batchv1.JobFailed, corev1.ConditionTrue, "DeadlineExceeded", "Job was active longer than specified deadline", t2))}, false,
			with(func(s *Status) {
				s.State, s.Failed, s.StartedAt, s.CompletedAt = StateFailed, 1, at(t0), at(t2)
				s.Reason, s.Message = "DeadlineExceeded", "Job was active longer than specified deadline"
			})},
		{"suspended", batchv1.JobStatus{Conditions: conds(cond(batchv1.JobSuspended, corev1.ConditionTrue, "JobSuspended", "Job suspended", t1))}, false,
			with(func(s *Status) { s.State, s.Reason, s.Message = StateSuspended, "JobSuspended", "Job suspended" })},
		{"resumed", batchv1.JobStatus{Active: 1, Ready: &one, Conditions: conds(cond(batchv1.JobSuspended, corev1.ConditionFalse, "JobResumed", "Job resumed", t1))}, false,
			with(func(s *Status) { s.State, s.Active = StateRunning, 1 })},
		{"condition not true", batchv1.JobStatus{Active: 1, Ready: &one, Conditions: conds(cond(batchv1.JobFailed, corev1.ConditionFalse, "x", "", t1))}, false,
			with(func(s *Status) { s.State, s.Active = StateRunning, 1 })},
		{"deleting while running", batchv1.JobStatus{Active: 1, Ready: &one, StartTime: &t0}, true,
			with(func(s *Status) { s.State, s.Active, s.StartedAt = StateDeleting, 1, at(t0) })},
		{"deleting after success keeps the outcome's reason", batchv1.JobStatus{Succeeded: 1, StartTime: &t0, CompletionTime: &t2,
			Conditions: conds(cond(batchv1.JobComplete, corev1.ConditionTrue, "CompletionsReached", "done", t2))}, true,
			with(func(s *Status) {
				s.State, s.Succeeded, s.StartedAt, s.CompletedAt = StateDeleting, 1, at(t0), at(t2)
				s.Reason, s.Message = "CompletionsReached", "done"
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			job := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Name: "exp-a-x", Namespace: ns, CreationTimestamp: t0,
					Annotations: map[string]string{jobspec.AnnotationID: "A"}},
				Status: tt.status,
			}
			if tt.deleting {
				job.DeletionTimestamp = &t2
			}
			if diff := cmp.Diff(tt.want, FromJob(job)); diff != "" {
				t.Errorf("FromJob (-want +got):\n%s", diff)
			}
		})
	}
}

// ownedJob is the Job gmini made for id.
func ownedJob(id string, uid types.UID) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: jobspec.JobName(id), Namespace: ns, UID: uid,
		Labels:      map[string]string{jobspec.LabelManagedBy: jobspec.LabelManagedByName},
		Annotations: map[string]string{jobspec.AnnotationID: id},
	}}
}

// TestListBadContinue: a continue token the API server refuses, or one far
// too long to be its own, is the client's to drop (400, Invalid), with a
// message that repeats at most the token's start; other failures keep their
// kind.
func TestListBadContinue(t *testing.T) {
	t.Parallel()
	tooLarge := apierrors.NewTimeoutError("Too large resource version: 9223372036854775000, current: 1200", 1)
	tooLarge.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: metav1.CauseTypeResourceVersionTooLarge, Message: "Too large resource version"}}
	forged := "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6OTIyMzM3MjAzNjg1NDc3NTAwMCwic3RhcnQiOiJleHAtYVx1MDAwMCJ9"
	huge := strings.Repeat("A", 7000)
	tests := []struct {
		name      string
		cont      string
		apiErr    error // what the API server answers; nil: the list must not reach it
		wantKind  failure.Kind
		wantMsg   string
		wantCalls int
	}{
		{"huge resourceVersion", forged, tooLarge, failure.Invalid, "names a resourceVersion the API server has not reached", 1},
		{"expired", forged, apierrors.NewResourceExpired("The provided continue parameter is too old"), failure.Invalid, "has expired", 1},
		{"malformed", "not-a-token", apierrors.NewBadRequest("continue key is not valid: illegal base64 data"), failure.Invalid, `continue token "not-a-token" is not valid`, 1},
		{"7,000 characters", huge, nil, failure.Invalid, "is too long", 0},
		{"a plain timeout stays unavailable", forged, apierrors.NewTimeoutError("request did not complete", 1), failure.Unavailable, "list jobs in ns", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset()
			calls := 0
			client.PrependReactor("list", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
				calls++
				return tt.apiErr != nil, nil, tt.apiErr
			})
			_, err := (&Store{Client: client, Namespace: ns}).List(context.Background(), 100, tt.cont, "")
			if failure.KindOf(err) != tt.wantKind || !strings.Contains(failure.MessageOf(err), tt.wantMsg) {
				t.Fatalf("List = %v (kind %q), want %q saying %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
			}
			if msg := failure.MessageOf(err); len(tt.cont) > failure.MaxQuoted && strings.Contains(msg, tt.cont[:failure.MaxQuoted+1]) {
				t.Errorf("message repeats more than %d characters of the token: %.200s", failure.MaxQuoted, msg)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d list calls to the API server, want %d", calls, tt.wantCalls)
			}
		})
	}
}

// TestListAndGetAgree: GET /experiments lists exactly the Jobs that GET
// /experiments/{id} finds (jobspec.Owns).
func TestListAndGetAgree(t *testing.T) {
	t.Parallel()
	noAnnotation := ownedJob("NoAnn", "u2")
	delete(noAnnotation.Annotations, jobspec.AnnotationID)
	edited := ownedJob("Edited", "u3")
	edited.Annotations[jobspec.AnnotationID] = "Other"
	unlabelled := ownedJob("Unlabelled", "u4")
	delete(unlabelled.Labels, jobspec.LabelManagedBy)
	client := fake.NewClientset(ownedJob("Mine", "u1"), noAnnotation, edited, unlabelled)
	s := &Store{Client: client, Namespace: ns}
	ctx := context.Background()

	page, err := s.List(ctx, 100, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, it := range page.Items {
		listed = append(listed, it.ID)
	}
	if diff := cmp.Diff([]string{"Mine"}, listed); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
	for _, id := range []string{"NoAnn", "Edited", "Other", "Unlabelled"} {
		if _, err := s.Get(ctx, id); failure.KindOf(err) != failure.NotFound {
			t.Errorf("Get(%q) = %v, want NotFound", id, err)
		}
	}
	if _, err := s.Get(ctx, "Mine"); err != nil {
		t.Errorf("Get(Mine) = %v", err)
	}
}

func TestDeleteRaces(t *testing.T) {
	t.Parallel()
	gvr := batchv1.SchemeGroupVersion.WithResource("jobs")
	tests := []struct {
		name     string
		race     func(client *fake.Clientset) k8stesting.ReactionFunc
		wantKind failure.Kind
		wantMsg  string
		wantLeft int // Jobs left
	}{
		{
			name: "another DELETE won between get and delete",
			race: func(client *fake.Clientset) k8stesting.ReactionFunc {
				return func(k8stesting.Action) (bool, runtime.Object, error) {
					_ = client.Tracker().Delete(gvr, ns, jobspec.JobName("e1"))
					return true, nil, apierrors.NewNotFound(gvr.GroupResource(), jobspec.JobName("e1"))
				}
			},
			wantKind: failure.NotFound, wantMsg: `experiment "e1" not found: its job ` + jobspec.JobName("e1") + ` was deleted by another request`,
		},
		{
			name: "UID precondition failed: the Job is gone by the second look",
			race: func(client *fake.Clientset) k8stesting.ReactionFunc {
				return func(k8stesting.Action) (bool, runtime.Object, error) {
					_ = client.Tracker().Delete(gvr, ns, jobspec.JobName("e1"))
					return true, nil, apierrors.NewConflict(gvr.GroupResource(), jobspec.JobName("e1"), nil)
				}
			},
			wantKind: failure.NotFound, wantMsg: `experiment "e1" not found: no job`,
		},
		{
			name: "UID precondition failed: a POST re-created the Job, which is deleted",
			race: func(client *fake.Clientset) k8stesting.ReactionFunc {
				done := false
				return func(k8stesting.Action) (bool, runtime.Object, error) {
					if done {
						return false, nil, nil
					}
					done = true
					_ = client.Tracker().Delete(gvr, ns, jobspec.JobName("e1"))
					_ = client.Tracker().Add(ownedJob("e1", "u-new"))
					return true, nil, apierrors.NewConflict(gvr.GroupResource(), jobspec.JobName("e1"), nil)
				}
			},
		},
		{
			name: "the Job is replaced at every attempt",
			race: func(client *fake.Clientset) k8stesting.ReactionFunc {
				return func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewConflict(gvr.GroupResource(), jobspec.JobName("e1"), nil)
				}
			},
			wantKind: failure.Conflict, wantMsg: "replaced during the delete 3 times in a row; retry", wantLeft: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(ownedJob("e1", "u1"))
			client.PrependReactor("delete", "jobs", tt.race(client))
			s := &Store{Client: client, Namespace: ns}
			_, err := s.Delete(context.Background(), "e1")
			if tt.wantKind == "" && err != nil || tt.wantKind != "" && (failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Fatalf("err = %v (kind %q), want %q %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
			}
			jobs, _ := client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
			if len(jobs.Items) != tt.wantLeft {
				t.Errorf("%d jobs left, want %d", len(jobs.Items), tt.wantLeft)
			}
		})
	}
}
