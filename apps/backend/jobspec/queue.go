package jobspec

import (
	batchv1 "k8s.io/api/batch/v1"
)

// Kueue (sigs.k8s.io/kueue) queues a plain batch/v1 Job that carries
// LabelQueue: its webhook creates the Job suspended, it makes a Workload
// for it in the named LocalQueue, and it admits the Workload by setting
// the Job's spec.suspend to false. Nothing else of Kueue's is needed on
// the Job.
const (
	// LabelQueue names the LocalQueue a Job waits in (Kueue's
	// constants.QueueLabel).
	LabelQueue = "kueue.x-k8s.io/queue-name"

	// HoldQueue is the LocalQueue a Job under a queue names while
	// HoldForSubmit holds it. No LocalQueue of that name may exist, so
	// Kueue keeps the Job's Workload pending: Kueue unsuspends what it
	// admits, and a held Job must start no pod before ResumePatch. A
	// Job without the label is no safer: in a namespace with a LocalQueue
	// named "default", Kueue's webhook labels it with that one.
	HoldQueue = "gmini-held-for-submit"
	// AnnotationHeldQueue keeps the Job's real queue while LabelQueue
	// names HoldQueue; ResumePatch moves it back into the label.
	AnnotationHeldQueue = "gmini.dev/held-queue"
)

// SetQueue puts job under LocalQueue queue. The Job is created suspended,
// as Kueue's webhook would make it: should the webhook not run (Kueue
// down with a failurePolicy of Ignore), the Job waits instead of running
// past the queue's quota.
func SetQueue(job *batchv1.Job, queue string) {
	if job.Labels == nil {
		job.Labels = map[string]string{}
	}
	job.Labels[LabelQueue] = queue
	suspend := true
	job.Spec.Suspend = &suspend
}

// QueueName is the LocalQueue job waits or ran in, "" for none: the
// label, or for a Job HoldForSubmit holds, the queue it will go to.
func QueueName(job *batchv1.Job) string {
	if q, held := job.Annotations[AnnotationHeldQueue]; held {
		return q
	}
	if q := job.Labels[LabelQueue]; q != HoldQueue {
		return q
	}
	return ""
}

// TemplateQueue is the LocalQueue the template's own Jobs go to, "" for
// none.
func TemplateQueue(tmpl *batchv1.JobTemplateSpec) string {
	if tmpl == nil {
		return ""
	}
	return tmpl.Labels[LabelQueue]
}

// Queued reports whether job waits for Kueue's admission: it is under a
// queue, suspended, and not held by the backend itself. Kueue admits by
// setting spec.suspend to false, so the spec, not the Suspended
// condition (which the Job controller sets a moment later), tells.
func Queued(job *batchv1.Job) bool {
	return QueueName(job) != "" && !HeldForSubmit(job) && job.Spec.Suspend != nil && *job.Spec.Suspend
}
