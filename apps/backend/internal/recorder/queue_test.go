package recorder

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Records use the live Job's vocabulary: Queued while Kueue has not
// admitted the Job, Submitted (never Suspended) while the backend holds it.
func TestRecordOfQueuedAndHeldJobs(t *testing.T) {
	suspended := []batchv1.JobCondition{{Type: batchv1.JobSuspended, Status: corev1.ConditionTrue, Reason: "JobSuspended"}}
	for _, tt := range []struct {
		name string
		edit func(*batchv1.Job)
		want string
	}{
		{"queued", func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a") }, history.StateQueued},
		{"admitted", func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); j.Spec.Suspend = ptr.To(false) }, history.StatePending},
		{"held", func(j *batchv1.Job) { jobspec.HoldForSubmit(j) }, history.StateSubmitted},
		{"held under a queue", func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); jobspec.HoldForSubmit(j) }, history.StateSubmitted},
		{"suspended", func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) }, history.StateSuspended},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: jobspec.JobName("a"), Namespace: "ns",
				Labels: map[string]string{}, Annotations: map[string]string{jobspec.AnnotationID: "a"}},
				Status: batchv1.JobStatus{Conditions: suspended}}
			tt.edit(j)
			if got := recordOf("a", j).State; got != tt.want {
				t.Errorf("recordOf = %s, want %s", got, tt.want)
			}
		})
	}
}
