package jobspec

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestSetQueue(t *testing.T) {
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: podTemplate("runner")}}
	tmpl.Labels = map[string]string{LabelQueue: "from-template"}
	if got := TemplateQueue(tmpl); got != "from-template" {
		t.Errorf("TemplateQueue = %q", got)
	}
	job, err := Build(tmpl, "ns", "e1", "h", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	SetQueue(job, "team-a")
	if job.Labels[LabelQueue] != "team-a" || job.Spec.Suspend == nil || !*job.Spec.Suspend {
		t.Errorf("SetQueue: label %q, suspend %v; want team-a, suspended until Kueue admits it", job.Labels[LabelQueue], job.Spec.Suspend)
	}
	if tmpl.Labels[LabelQueue] != "from-template" || tmpl.Spec.Suspend != nil {
		t.Error("SetQueue changed the template")
	}
	if QueueName(job) != "team-a" || !Queued(job) {
		t.Errorf("QueueName = %q, Queued = %v", QueueName(job), Queued(job))
	}
	job.Spec.Suspend = ptr.To(false) // Kueue admitted it
	if Queued(job) || QueueName(job) != "team-a" {
		t.Errorf("admitted: Queued = %v, QueueName = %q; want false, team-a", Queued(job), QueueName(job))
	}
}

// A held Job under a queue waits in HoldQueue, which no LocalQueue
// serves, so Kueue cannot start it before the backend lets it go; the
// resume gives the queue back and leaves suspend to Kueue.
func TestHoldAndResumeUnderAQueue(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", UID: "uid-1", Labels: map[string]string{"app": "gmini"}}}
	SetQueue(job, "team-a")
	HoldForSubmit(job)
	if !HeldForSubmit(job) || job.Labels[LabelQueue] != HoldQueue || !*job.Spec.Suspend {
		t.Fatalf("held: held %v, label %q, suspend %v; want held under %s, suspended", HeldForSubmit(job), job.Labels[LabelQueue], *job.Spec.Suspend, HoldQueue)
	}
	if QueueName(job) != "team-a" || Queued(job) {
		t.Errorf("held: QueueName %q, Queued %v; want team-a, not queued (held)", QueueName(job), Queued(job))
	}
	HoldForSubmit(job) // twice keeps the real queue
	patch, err := ResumePatch(job)
	if err != nil {
		t.Fatal(err)
	}
	got := applyPatch(t, job, patch)
	if HeldForSubmit(&got) || got.Labels[LabelQueue] != "team-a" || got.Labels["app"] != "gmini" {
		t.Errorf("resumed: held %v, labels %v; want not held, queue team-a, other labels kept (patch %s)", HeldForSubmit(&got), got.Labels, patch)
	}
	if _, ok := got.Annotations[AnnotationHeldQueue]; ok {
		t.Errorf("resumed: %s left", AnnotationHeldQueue)
	}
	if got.Spec.Suspend == nil || !*got.Spec.Suspend || !Queued(&got) {
		t.Errorf("resumed: suspend %v; want still suspended, for Kueue to admit (patch %s)", got.Spec.Suspend, patch)
	}
	if got.UID != job.UID {
		t.Errorf("the patch changed the UID precondition: %q", got.UID)
	}

	job.Annotations[AnnotationHeldQueue] = ""
	if _, err := ResumePatch(job); err == nil {
		t.Error("ResumePatch accepted an empty held queue")
	}
}

func TestQueueNameOfALeftoverHoldLabel(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelQueue: HoldQueue}}}
	if q := QueueName(job); q != "" {
		t.Errorf("QueueName = %q; the hold's queue is no queue", q)
	}
}
