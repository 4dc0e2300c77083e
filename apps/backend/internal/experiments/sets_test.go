package experiments

import (
	"context"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// An experiment submitted in a set keeps that set: on its claim, its Job's
// label and what a later submission of it (alone, or in another set) is
// answered, also when the Job has to be made again for an open claim.
func TestSubmitKeepsTheFirstSet(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	exp := decode(t, `{"experiment": {"id": "s1"}}`)
	exp.Set = "sweep"
	res, err := f.svc.Submit(ctx, exp, "")
	if err != nil || !res.Created || res.Set != "sweep" {
		t.Fatalf("submit in a set = %+v, %v", res, err)
	}
	if rec, err := f.store.Get(ctx, "s1"); err != nil || rec.Set != "sweep" {
		t.Errorf("claim = %+v, %v; want set sweep", rec, err)
	}
	// The Job gone, its claim still open: a POST of it alone re-makes
	// the Job, which keeps the set.
	if err := f.client.BatchV1().Jobs(ns).Delete(ctx, jobspec.JobName("s1"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	alone := exp
	alone.Set = ""
	res, err = f.svc.Submit(ctx, alone, "")
	if err != nil || !res.Created || res.Set != "sweep" {
		t.Errorf("submit alone with the Job gone = %+v, %v; want the Job made again, in set sweep", res, err)
	}
	if jobs := f.jobs(t); len(jobs) != 1 || jobs[0].Labels[jobspec.LabelSet] != "sweep" {
		t.Errorf("jobs = %d, labels %v; want one, in set sweep", len(jobs), jobs[0].Labels)
	}
	// Finished and gone: answered from the record, set included.
	f.finish(t, "s1", history.StateSucceeded, "")
	other := exp
	other.Set = "other"
	if res, err = f.svc.Submit(ctx, other, ""); err != nil || res.Created || res.Set != "sweep" {
		t.Errorf("submit in another set after it finished = %+v, %v; want existing, in set sweep", res, err)
	}
}

// A held Job deleted before it is started (a DELETE racing the POST) is a
// race lost, answered Conflict (409, retry), not the API server's failure.
func TestResumeOfADeletedHeldJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	exp := decode(t, `{"experiment": {"id": "h1"}}`)
	if _, _, err := f.store.Claim(ctx, history.Record{ID: exp.ID, Hash: exp.Hash, Job: jobspec.JobName(exp.ID), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	f.client.PrependReactor("patch", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(batchv1.Resource("jobs"), jobspec.JobName(exp.ID))
	})
	_, err := f.svc.Submit(ctx, exp, "")
	if failure.KindOf(err) != failure.Conflict {
		t.Errorf("submit whose held Job vanished = %v (kind %s), want Conflict", err, failure.KindOf(err))
	}
}
