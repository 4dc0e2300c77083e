package spawn

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

func TestCreateUnderAQueue(t *testing.T) {
	client := fake.NewClientset()
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	exp := decode(t, `{"experiment": {"id": "e1"}}`)
	exp.Queue = "team-a"
	res, err := s.Create(context.Background(), exp, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Job.Labels[jobspec.LabelQueue] != "team-a" || res.Job.Spec.Suspend == nil || !*res.Job.Spec.Suspend {
		t.Errorf("Job labels %v, suspend %v; want queued in team-a, suspended", res.Job.Labels, res.Job.Spec.Suspend)
	}
}

// Kueue's Job webhook has failurePolicy Fail: while Kueue's controller is
// down the API server refuses every Job create with a 500 before storing
// anything. That is a 503 to retry, and nothing was created (the claim can
// be taken back).
func TestCreateWhileAWebhookIsDown(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New(`failed calling webhook "mjob.kb.io": failed to call webhook: Post "https://kueue-webhook-service.kueue-system.svc:443/mutate-batch-v1-job?timeout=10s": dial tcp 10.96.0.9:443: connect: connection refused`))
	})
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	exp := decode(t, `{"experiment": {"id": "e1"}}`)
	exp.Queue = "team-a"
	_, err := s.Create(context.Background(), exp, "", time.Now())
	if failure.KindOf(err) != failure.Unavailable || !NothingCreated(err) {
		t.Fatalf("Create = %v (kind %q, nothing created %v); want Unavailable, nothing created", err, failure.KindOf(err), NothingCreated(err))
	}
	// Any other 500 may have stored the Job.
	client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd timed out"))
	})
	if _, err := s.Create(context.Background(), exp, "", time.Now()); NothingCreated(err) {
		t.Errorf("a 500 from storage counts as nothing created: %v", err)
	}
}

// Resume of a Job held under a queue gives it its queue and leaves it
// suspended; Discard deletes it as any held Job.
func TestResumeUnderAQueue(t *testing.T) {
	client := fake.NewClientset()
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	exp := decode(t, `{"experiment": {"id": "e1"}}`)
	exp.Queue = "team-a"
	res, err := s.CreateHeld(context.Background(), exp, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Job.Labels[jobspec.LabelQueue] != jobspec.HoldQueue {
		t.Fatalf("held Job under %q, want %s", res.Job.Labels[jobspec.LabelQueue], jobspec.HoldQueue)
	}
	job, err := s.Resume(context.Background(), res.Job)
	if err != nil {
		t.Fatal(err)
	}
	if job.Labels[jobspec.LabelQueue] != "team-a" || jobspec.HeldForSubmit(job) || !jobspec.Queued(job) {
		t.Errorf("resumed: labels %v, annotations %v, suspend %v; want queued in team-a", job.Labels, job.Annotations, job.Spec.Suspend)
	}
	if err := s.Discard(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	if _, err := client.BatchV1().Jobs(ns).Get(context.Background(), job.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after Discard: %v", err)
	}
}
