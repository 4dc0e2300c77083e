package spawn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

const ns = "ns1"

func decode(t *testing.T, body string) experiment.Experiment {
	t.Helper()
	exp, err := experiment.Decode(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func testTemplate() *batchv1.JobTemplateSpec {
	return &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner", Image: "runner:dev"}}},
	}}}
}

// existingJob is the Job a previous POST of body made.
func existingJob(t *testing.T, body string) *batchv1.Job {
	t.Helper()
	exp := decode(t, body)
	job, err := jobspec.Build(testTemplate(), ns, exp.ID, exp.Hash, exp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

func TestCreate(t *testing.T) {
	const body = `{"experiment": {"id": "Exp.1", "key": "k"}}`
	name := jobspec.JobName("Exp.1")
	now := metav1.Now()
	deleting := func(j *batchv1.Job) *batchv1.Job { j.DeletionTimestamp = &now; return j }
	foreign := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	edited := existingJob(t, body)
	edited.Annotations[jobspec.AnnotationID] = "Exp.2"

	tests := []struct {
		name        string
		existing    []runtime.Object
		tmpl        template.Source
		body        string
		wantCreated bool
		wantKind    failure.Kind
		wantMsg     string
	}{
		{name: "new", body: body, wantCreated: true},
		{name: "retry of the same experiment", existing: []runtime.Object{existingJob(t, body)}, body: `{"experiment":{"key":"k","id":"Exp.1"}}`},
		{name: "same ID, other body", existing: []runtime.Object{existingJob(t, body)}, body: `{"experiment": {"id": "Exp.1", "key": "other"}}`,
			wantKind: failure.Conflict, wantMsg: `experiment "Exp.1" was already submitted with a different body (job ` + name + `); use a new ID or delete the experiment first`},
		{name: "other body while the old job is being deleted", existing: []runtime.Object{deleting(existingJob(t, body))}, body: `{"experiment": {"id": "Exp.1", "key": "other"}}`,
			wantKind: failure.Conflict, wantMsg: `the previous job ` + name + ` of experiment "Exp.1" is being deleted; retry in a few seconds`},
		{name: "same body while the old job is being deleted", existing: []runtime.Object{deleting(existingJob(t, body))}, body: body,
			wantKind: failure.Conflict, wantMsg: "is being deleted; retry in a few seconds"},
		{name: "a job gmini did not make", existing: []runtime.Object{foreign}, body: body,
			wantKind: failure.Conflict, wantMsg: "job " + name + " exists but was not created by gmini (no gmini.dev/experiment-id annotation); delete or rename it"},
		{name: "an edited annotation", existing: []runtime.Object{edited}, body: body,
			wantKind: failure.Conflict, wantMsg: "job " + name + ` exists but is not gmini's experiment "Exp.1"`},
		{name: "template unusable", tmpl: template.Static{}, body: body, wantKind: failure.Unavailable, wantMsg: "not loaded yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(tt.existing...)
			if tt.tmpl == nil {
				tt.tmpl = template.Static{Template: testTemplate()}
			}
			s := &Spawner{Client: client, Namespace: ns, Templates: tt.tmpl}
			res, err := s.Create(context.Background(), decode(t, tt.body), "", time.Now())
			if tt.wantKind != "" {
				if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v (kind %q), want %q with %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Created != tt.wantCreated || res.Job.Name != name {
				t.Errorf("result = created %v job %s, want created %v job %s", res.Created, res.Job.Name, tt.wantCreated, name)
			}
		})
	}
}

// TestCreateRacingDelete: a DELETE of the same experiment that removes the
// Job between the create (AlreadyExists) and the get (NotFound) is a race
// the POST wins by creating again, not a 502.
func TestCreateRacingDelete(t *testing.T) {
	const body = `{"experiment": {"id": "e1"}}`
	old := existingJob(t, body)
	client := fake.NewClientset(old)
	gets := 0
	client.PrependReactor("get", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		gets++
		if gets > 1 {
			return false, nil, nil
		}
		// The DELETE lands here.
		gvr := batchv1.SchemeGroupVersion.WithResource("jobs")
		if err := client.Tracker().Delete(gvr, ns, old.Name); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewNotFound(gvr.GroupResource(), old.Name)
	})
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	res, err := s.Create(context.Background(), decode(t, body), "", time.Now())
	if err != nil || !res.Created {
		t.Fatalf("Create = %+v, %v; want a new Job", res, err)
	}
}

// TestCreateRaceBounded: a Job that is deleted every time it is found makes
// Create give up after createAttempts with a Conflict, not loop.
func TestCreateRaceBounded(t *testing.T) {
	client := fake.NewClientset()
	gvr := batchv1.SchemeGroupVersion.WithResource("jobs")
	creates := 0
	client.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		return true, nil, apierrors.NewAlreadyExists(gvr.GroupResource(), "x")
	})
	client.PrependReactor("get", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "x")
	})
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	_, err := s.Create(context.Background(), decode(t, `{"experiment": {"id": "e1"}}`), "", time.Now())
	if failure.KindOf(err) != failure.Conflict || !strings.Contains(err.Error(), "was deleted while it was being created, 3 times in a row; retry") {
		t.Fatalf("err = %v (kind %q)", err, failure.KindOf(err))
	}
	if creates != createAttempts {
		t.Errorf("%d creates, want %d", creates, createAttempts)
	}
}

// TestCreateUnderAFullQuota: the API server refuses a create over a
// ResourceQuota before it notices the name is taken. A retry of an
// experiment whose Job exists still gets that Job (200), and only a new
// experiment gets the quota's refusal (429).
func TestCreateUnderAFullQuota(t *testing.T) {
	const body = `{"experiment": {"id": "e1"}}`
	gvr := batchv1.SchemeGroupVersion.WithResource("jobs")
	overQuota := func(name string) error {
		return apierrors.NewForbidden(gvr.GroupResource(), name,
			errors.New("exceeded quota: gmini, requested: count/jobs.batch=1, used: count/jobs.batch=5, limited: count/jobs.batch=5"))
	}
	client := fake.NewClientset(existingJob(t, body))
	client.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, overQuota(a.(k8stesting.CreateAction).GetObject().(*batchv1.Job).Name)
	})
	s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
	res, err := s.Create(context.Background(), decode(t, body), "", time.Now())
	if err != nil || res.Created || res.Job == nil {
		t.Errorf("retry of an existing experiment under a full quota = %+v, %v; want its Job", res, err)
	}
	_, err = s.Create(context.Background(), decode(t, `{"experiment": {"id": "e2"}}`), "", time.Now())
	if failure.KindOf(err) != failure.TooManyRequests || !strings.Contains(err.Error(), "exceeded quota: gmini") {
		t.Errorf("a new experiment under a full quota = %v (kind %q), want TooManyRequests naming the quota", err, failure.KindOf(err))
	}
}

func TestCreateRetriesQuotaConflicts(t *testing.T) {
	quotaConflict := apierrors.NewConflict(corev1.Resource("resourcequotas"), "gmini",
		errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	tests := []struct {
		name      string
		conflicts int
		wantKind  failure.Kind // "" for success
		wantCalls int
	}{
		{"one conflict, then created", 1, "", 2},
		{"as many conflicts as retries, then created", quotaConflictRetries, "", quotaConflictRetries + 1},
		{"conflicts every time: 503", 100, failure.Unavailable, quotaConflictRetries + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fake.NewClientset()
			calls := 0
			client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
				calls++
				if calls <= tt.conflicts {
					return true, nil, quotaConflict
				}
				return false, nil, nil
			})
			s := &Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}}
			res, err := s.Create(context.Background(), decode(t, `{"experiment": {"id": "e1"}}`), "", time.Now())
			if calls != tt.wantCalls {
				t.Errorf("%d creates, want %d", calls, tt.wantCalls)
			}
			if tt.wantKind == "" {
				if err != nil || !res.Created {
					t.Errorf("Create = %+v, %v; want created", res, err)
				}
				return
			}
			if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), "ResourceQuota") {
				t.Errorf("Create = %v (kind %q), want %q naming the ResourceQuota", err, failure.KindOf(err), tt.wantKind)
			}
			if jobs, _ := client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{}); len(jobs.Items) != 0 {
				t.Errorf("%d Jobs after a refused create", len(jobs.Items))
			}
		})
	}
}
