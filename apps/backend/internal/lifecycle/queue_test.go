package lifecycle

import (
	"context"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// The states of Jobs the backend holds or Kueue queues: a held Job is
// Submitted, never Suspended; a Job under a queue is Queued while Kueue
// keeps it suspended, and once admitted is Pending or Running as any Job,
// even while the Job controller's Suspended condition lags behind.
func TestFromJobQueuedAndHeld(t *testing.T) {
	t.Parallel()
	t1 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	suspendedCond := []batchv1.JobCondition{{Type: batchv1.JobSuspended, Status: corev1.ConditionTrue, Reason: "JobSuspended", Message: "Job suspended", LastTransitionTime: t1}}
	one := int32(1)
	for _, tt := range []struct {
		name      string
		job       func(*batchv1.Job)
		status    batchv1.JobStatus
		wantState string
		wantQueue string
		wantWhy   string
	}{
		{name: "queued, no condition yet", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a") }, wantState: StateQueued, wantQueue: "team-a"},
		{name: "queued", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a") }, status: batchv1.JobStatus{Conditions: suspendedCond},
			wantState: StateQueued, wantQueue: "team-a"},
		{name: "admitted, the condition not yet updated", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); j.Spec.Suspend = ptr.To(false) },
			status: batchv1.JobStatus{Conditions: suspendedCond}, wantState: StatePending, wantQueue: "team-a"},
		{name: "admitted and running", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); j.Spec.Suspend = ptr.To(false) },
			status: batchv1.JobStatus{Active: 1, Ready: &one}, wantState: StateRunning, wantQueue: "team-a"},
		{name: "preempted: suspended again", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a") },
			status: batchv1.JobStatus{Active: 1, Ready: &one}, wantState: StateQueued, wantQueue: "team-a"},
		{name: "held, no queue", job: func(j *batchv1.Job) { jobspec.HoldForSubmit(j) }, status: batchv1.JobStatus{Conditions: suspendedCond},
			wantState: StateSubmitted, wantWhy: "HeldForSubmit"},
		{name: "held under a queue", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); jobspec.HoldForSubmit(j) },
			status: batchv1.JobStatus{Conditions: suspendedCond}, wantState: StateSubmitted, wantQueue: "team-a", wantWhy: "HeldForSubmit"},
		{name: "suspended by its template or a person", job: func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) },
			status: batchv1.JobStatus{Conditions: suspendedCond}, wantState: StateSuspended, wantWhy: "JobSuspended"},
		{name: "a queued Job being deleted", job: func(j *batchv1.Job) { jobspec.SetQueue(j, "team-a"); j.DeletionTimestamp = &t1 },
			wantState: StateDeleting, wantQueue: "team-a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			job := ownedJob("A", "uid-a")
			job.Status = tt.status
			tt.job(job)
			st := FromJob(job)
			var q string
			if st.Queue != nil {
				q = st.Queue.Name
			}
			if st.State != tt.wantState || q != tt.wantQueue || st.Reason != tt.wantWhy {
				t.Errorf("FromJob = state %s, queue %q, reason %q; want %s, %q, %q", st.State, q, st.Reason, tt.wantState, tt.wantQueue, tt.wantWhy)
			}
		})
	}
}

// describer records what the Store asked.
type describer struct{ asked []string }

func (d *describer) Describe(_ context.Context, name string, job types.UID, queued bool) *wire.Queue {
	d.asked = append(d.asked, name+"/"+string(job))
	if !queued {
		return &wire.Queue{Name: name, ClusterQueue: "cq"}
	}
	pos := int32(3)
	return &wire.Queue{Name: name, ClusterQueue: "cq", Position: &pos, Reason: "waiting"}
}

// Get and List complete the queue of a Job under one, and only of such.
func TestStoreDescribesQueues(t *testing.T) {
	t.Parallel()
	queued, plain := ownedJob("q1", "uid-q1"), ownedJob("p1", "uid-p1")
	jobspec.SetQueue(queued, "team-a")
	d := &describer{}
	s := &Store{Client: fake.NewClientset(queued, plain), Namespace: ns, Queues: d}
	st, err := s.Get(context.Background(), "q1")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateQueued || st.Queue == nil || st.Queue.Position == nil || *st.Queue.Position != 3 || st.Queue.ClusterQueue != "cq" {
		t.Errorf("Get = %+v, queue %+v; want Queued at position 3 in cq", st, st.Queue)
	}
	page, err := s.List(context.Background(), 10, "", StateQueued)
	if err != nil || len(page.Items) != 1 || page.Items[0].Queue == nil || page.Items[0].Queue.Reason != "waiting" {
		t.Fatalf("List(Queued) = %+v, %v", page, err)
	}
	if _, err := s.Get(context.Background(), "p1"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"team-a/uid-q1", "team-a/uid-q1"}; len(d.asked) != 2 || d.asked[0] != want[0] || d.asked[1] != want[1] {
		t.Errorf("asked %v, want %v (nothing for a Job under no queue)", d.asked, want)
	}
}
