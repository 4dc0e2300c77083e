package jobstatus

import (
	"slices"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMarkComplete(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 10, 0, 30, 500_000_000, time.UTC)
	started := metav1.NewTime(now.Add(-20 * time.Second).Truncate(time.Second))
	later := metav1.NewTime(now.Add(time.Hour).Truncate(time.Second))
	one := int32(1)
	cases := []struct {
		name      string
		st        batchv1.JobStatus
		wantMark  bool
		wantStart metav1.Time
		wantDone  metav1.Time
	}{
		{"a pod pending", batchv1.JobStatus{StartTime: &started, Active: 1, Ready: &one}, true, started, metav1.NewTime(now.Truncate(time.Second))},
		{"start after now (clock skew)", batchv1.JobStatus{StartTime: &later}, true, later, later},
		{"finished already", batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}, false, metav1.Time{}, metav1.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := *c.st.DeepCopy()
			if got := MarkComplete(&st, now, "test"); got != c.wantMark {
				t.Fatalf("MarkComplete = %v, want %v", got, c.wantMark)
			}
			if !c.wantMark {
				if len(st.Conditions) != len(c.st.Conditions) {
					t.Errorf("a finished status changed: %+v", st)
				}
				return
			}
			if !st.StartTime.Equal(&c.wantStart) || !st.CompletionTime.Equal(&c.wantDone) {
				t.Errorf("start %v, completion %v; want %v, %v", st.StartTime, st.CompletionTime, c.wantStart, c.wantDone)
			}
			if st.Active != 0 || st.Ready == nil || *st.Ready != 0 || st.Succeeded != 1 {
				t.Errorf("active %d, ready %v, succeeded %d; want 0, 0, 1", st.Active, st.Ready, st.Succeeded)
			}
			// What the API server's validation asks of a Complete Job, and
			// what the recorder reads as finished.
			var types []batchv1.JobConditionType
			for _, cond := range st.Conditions {
				if cond.Status == corev1.ConditionTrue {
					types = append(types, cond.Type)
				}
			}
			if want := []batchv1.JobConditionType{batchv1.JobSuccessCriteriaMet, batchv1.JobComplete}; !slices.Equal(types, want) {
				t.Errorf("conditions %v, want %v", types, want)
			}
		})
	}
}
