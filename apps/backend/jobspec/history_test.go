package jobspec

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/utils/ptr"
)

func TestHoldAndRelease(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	recorded := map[string]string{LabelRecorded: "true"}
	tests := []struct {
		name string
		job  batchv1.Job
		// after HoldForHistory
		held batchv1.Job
		// after HoldForHistory, then the release patch
		released batchv1.Job
	}{
		{
			name:     "TTL deferred, then restored",
			job:      batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Finalizers: []string{"other"}}, Spec: batchv1.JobSpec{TTLSecondsAfterFinished: ptr.To[int32](60)}},
			held:     batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Finalizers: []string{"other", FinalizerHistory}, Annotations: map[string]string{AnnotationTTL: "60"}}},
			released: batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Labels: recorded, Finalizers: []string{"other"}, Annotations: map[string]string{AnnotationTTL: "60"}}, Spec: batchv1.JobSpec{TTLSecondsAfterFinished: ptr.To[int32](60)}},
		},
		{
			name:     "no TTL in the template",
			job:      batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j"}},
			held:     batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Finalizers: []string{FinalizerHistory}, Annotations: map[string]string{AnnotationTTL: ""}}},
			released: batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Labels: recorded, Finalizers: []string{}, Annotations: map[string]string{AnnotationTTL: ""}}},
		},
		{
			name:     "being deleted: only the finalizer goes",
			job:      batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", DeletionTimestamp: &now}, Spec: batchv1.JobSpec{TTLSecondsAfterFinished: ptr.To[int32](0)}},
			held:     batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", DeletionTimestamp: &now, Finalizers: []string{FinalizerHistory}, Annotations: map[string]string{AnnotationTTL: "0"}}},
			released: batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", DeletionTimestamp: &now, Labels: recorded, Finalizers: []string{}, Annotations: map[string]string{AnnotationTTL: "0"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := tt.job.DeepCopy()
			HoldForHistory(job)
			HoldForHistory(job) // twice is once
			if diff := cmp.Diff(&tt.held, job); diff != "" {
				t.Errorf("held job (-want +got):\n%s", diff)
			}
			if !Held(job) {
				t.Error("Held = false after HoldForHistory")
			}
			patch, err := ReleasePatch(job)
			if err != nil {
				t.Fatal(err)
			}
			got := applyPatch(t, job, patch)
			if diff := cmp.Diff(&tt.released, &got); diff != "" {
				t.Errorf("released job (-want +got), patch %s:\n%s", patch, diff)
			}
			if Held(&got) || !Released(&got) {
				t.Error("still held after the release patch")
			}
			if Released(&tt.job) {
				t.Error("a Job never held counts as released")
			}
		})
	}
}

func TestReleasePatchRefusesABadTTL(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Annotations: map[string]string{AnnotationTTL: "soon"}}}
	if _, err := ReleasePatch(job); err == nil {
		t.Error("ReleasePatch accepted a TTL annotation that is not a number")
	}
}

// A Job whose finalizer someone removed by hand still has its record to
// store: only the release patch's label says it is recorded.
func TestReleasedOnlyByTheLabel(t *testing.T) {
	job := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Annotations: map[string]string{AnnotationTTL: "60"}}}
	HoldForHistory(&job)
	job.Finalizers = nil // removed by hand
	if Released(&job) {
		t.Error("a Job whose finalizer was removed by hand counts as released")
	}
	job.Labels = map[string]string{LabelRecorded: "true"}
	if !Released(&job) {
		t.Error("a Job with the recorded label does not count as released")
	}
}

func TestHoldForSubmitAndResume(t *testing.T) {
	for _, tt := range []struct {
		name        string
		template    *bool
		wantSuspend bool
	}{
		{name: "template runs at once", template: nil, wantSuspend: false},
		{name: "template not suspended", template: ptr.To(false), wantSuspend: false},
		{name: "template suspended", template: ptr.To(true), wantSuspend: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", UID: "uid-1"}, Spec: batchv1.JobSpec{Suspend: tt.template}}
			HoldForSubmit(job)
			if !HeldForSubmit(job) || job.Spec.Suspend == nil || !*job.Spec.Suspend {
				t.Fatalf("after HoldForSubmit: held %v, suspend %v; want held and suspended", HeldForSubmit(job), job.Spec.Suspend)
			}
			HoldForSubmit(job) // twice must keep the template's value
			patch, err := ResumePatch(job)
			if err != nil {
				t.Fatal(err)
			}
			got := applyPatch(t, job, patch)
			if HeldForSubmit(&got) || got.Spec.Suspend == nil || *got.Spec.Suspend != tt.wantSuspend {
				t.Errorf("resumed: held %v, suspend %v; want not held, suspend %v (patch %s)", HeldForSubmit(&got), got.Spec.Suspend, tt.wantSuspend, patch)
			}
			if got.UID != job.UID {
				t.Errorf("the patch changed the UID precondition: %q", got.UID)
			}
		})
	}
}

// applyPatch applies a strategic merge patch to job as the API server does.
func applyPatch(t *testing.T, job *batchv1.Job, patch []byte) batchv1.Job {
	t.Helper()
	orig, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	out, err := strategicpatch.StrategicMergePatch(orig, patch, batchv1.Job{})
	if err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	var got batchv1.Job
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return got
}
