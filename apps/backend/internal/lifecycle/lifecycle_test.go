package lifecycle

import (
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestFromJob(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(4 * time.Second))
	one := int32(1)
	zero := int32(0)
	cond := func(typ batchv1.JobConditionType, status corev1.ConditionStatus, reason string) batchv1.JobCondition {
		return batchv1.JobCondition{Type: typ, Status: status, Reason: reason, LastTransitionTime: t1}
	}
	tests := []struct {
		name       string
		status     batchv1.JobStatus
		wantState  string
		wantReason string
		wantDone   bool
	}{
		{"new", batchv1.JobStatus{}, StatePending, "", false},
		{"pod not ready", batchv1.JobStatus{Active: 1, Ready: &zero, StartTime: &t0}, StatePending, "", false},
		{"pod ready", batchv1.JobStatus{Active: 1, Ready: &one, StartTime: &t0}, StateRunning, "", false},
		{"complete", batchv1.JobStatus{Succeeded: 1, StartTime: &t0, CompletionTime: &t1,
			Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet, corev1.ConditionTrue, "CompletionsReached"), cond(batchv1.JobComplete, corev1.ConditionTrue, "CompletionsReached")}},
			StateSucceeded, "CompletionsReached", true},
		{"failed by podFailurePolicy", batchv1.JobStatus{Failed: 1, StartTime: &t0,
			Conditions: []batchv1.JobCondition{cond(batchv1.JobFailureTarget, corev1.ConditionTrue, "PodFailurePolicy"), cond(batchv1.JobFailed, corev1.ConditionTrue, "PodFailurePolicy")}},
			StateFailed, "PodFailurePolicy", true},
		{"condition not true", batchv1.JobStatus{Active: 1, Ready: &one,
			Conditions: []batchv1.JobCondition{cond(batchv1.JobFailed, corev1.ConditionFalse, "x")}},
			StateRunning, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Name: "exp-a-x", Namespace: "ns", CreationTimestamp: t0,
					Annotations: map[string]string{"gmini.dev/experiment-id": "A"}},
				Status: tt.status,
			}
			s := FromJob(job)
			if s.State != tt.wantState || s.Reason != tt.wantReason || (s.CompletedAt != nil) != tt.wantDone {
				t.Errorf("FromJob = %+v, want state %s reason %q done %v", s, tt.wantState, tt.wantReason, tt.wantDone)
			}
			if s.ID != "A" || s.Job != "exp-a-x" || !s.CreatedAt.Equal(t0.Time) {
				t.Errorf("identity = %+v", s)
			}
		})
	}
}
