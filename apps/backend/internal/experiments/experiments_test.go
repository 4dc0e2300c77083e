package experiments

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

const ns = "gmini-test"

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func tmpl() *batchv1.JobTemplateSpec {
	return &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
		TTLSecondsAfterFinished: ptr.To[int32](60),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
		}},
	}}
}

type fixture struct {
	client *fake.Clientset
	store  history.Store
	svc    *Service
}

// newFixture is the service with a real SQLite history (history != nil)
// or none, over the fake clientset.
func newFixture(t *testing.T, withHistory bool) *fixture {
	t.Helper()
	client := fake.NewClientset()
	f := &fixture{client: client}
	f.svc = &Service{
		Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: tmpl()}, Hold: withHistory},
		Live:    &lifecycle.Store{Client: client, Namespace: ns},
		Now:     func() time.Time { return t0 },
	}
	if withHistory {
		st, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f.store, f.svc.History = st, st
	}
	return f
}

func decode(t *testing.T, body string) experiment.Experiment {
	t.Helper()
	exp, err := experiment.Decode(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func (f *fixture) jobs(t *testing.T) []batchv1.Job {
	t.Helper()
	list, err := f.client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// finish stands for the recorder: the outcome stored, the Job gone.
func (f *fixture) finish(t *testing.T, id, state string, logs string) {
	t.Helper()
	ctx := context.Background()
	done := t0.Add(time.Minute)
	if _, err := f.store.Finish(ctx, history.Record{ID: id, State: state, FinishedAt: &done}, []byte(logs)); err != nil {
		t.Fatal(err)
	}
	if err := f.client.BatchV1().Jobs(ns).Delete(ctx, jobspec.JobName(id), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestSubmitWithHistory(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	body := `{"experiment": {"id": "e1", "key": "a"}}`

	res, err := f.svc.Submit(ctx, decode(t, body), "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := Submitted{ID: "e1", Job: jobspec.JobName("e1"), Namespace: ns, Created: true, Source: lifecycle.SourceJob}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("first submit (-want +got):\n%s", diff)
	}
	rec, err := f.store.Get(ctx, "e1")
	if err != nil || rec.State != history.StateSubmitted || rec.Submitter != "alice" || !rec.CreatedAt.Equal(t0) {
		t.Errorf("claim = %+v, %v", rec, err)
	}
	job := f.jobs(t)[0]
	if !jobspec.Held(&job) || job.Spec.TTLSecondsAfterFinished != nil || job.Annotations[jobspec.AnnotationTTL] != "60" ||
		job.Annotations[jobspec.AnnotationSubmitter] != "alice" {
		t.Errorf("job not held for its record: finalizers %v, ttl %v, annotations %v", job.Finalizers, job.Spec.TTLSecondsAfterFinished, job.Annotations)
	}

	// A retry while the Job exists finds it.
	res, err = f.svc.Submit(ctx, decode(t, body), "alice")
	if err != nil || res.Created || res.Source != lifecycle.SourceJob {
		t.Errorf("retry with the Job there = %+v, %v", res, err)
	}

	// After the outcome is recorded and the Job is gone (TTL), a retry is
	// answered from the record: nothing runs again.
	f.finish(t, "e1", history.StateSucceeded, "Running Experiment: e1\n")
	res, err = f.svc.Submit(ctx, decode(t, body), "alice")
	want = Submitted{ID: "e1", Job: jobspec.JobName("e1"), Namespace: ns, State: history.StateSucceeded, Source: lifecycle.SourceHistory}
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("retry after the TTL (-want +got):\n%s", diff)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs after a retry of a finished experiment, want 0", n)
	}
	// Another body under the same ID is refused, also after the TTL.
	_, err = f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e1", "key": "b"}}`), "bob")
	if failure.KindOf(err) != failure.Conflict || !strings.Contains(err.Error(), "a re-run needs a new ID") {
		t.Errorf("other body = %v, want a conflict", err)
	}
}

// A claim whose Job was never made (the create failed after the claim)
// gets its Job on the retry.
func TestSubmitRetriesAFailedCreate(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.Spawner.Templates = template.Static{} // no template: 503
	body := `{"experiment": {"id": "e2"}}`
	if _, err := f.svc.Submit(ctx, decode(t, body), ""); failure.KindOf(err) != failure.Unavailable {
		t.Fatalf("submit without a template = %v, want Unavailable", err)
	}
	f.svc.Spawner.Templates = template.Static{Template: tmpl()}
	res, err := f.svc.Submit(ctx, decode(t, body), "")
	if err != nil || !res.Created {
		t.Errorf("retry = %+v, %v; want the Job created", res, err)
	}
}

// down is a store whose database cannot be reached: every call fails as
// the real stores classify a lost connection.
type down struct{ history.Store }

func (down) Claim(context.Context, history.Record) (history.Record, bool, error) {
	return history.Record{}, false, failure.New(failure.Unavailable, "history: claim: connection refused")
}

func TestSubmitWithoutAStore(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.History = down{f.store}
	_, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e3"}}`), "")
	if failure.KindOf(err) != failure.Unavailable {
		t.Errorf("submit with the store closed = %v (kind %s), want Unavailable", err, failure.KindOf(err))
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs created without a claim, want 0", n)
	}
}

func TestReadsFallBackToHistory(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	if _, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e4"}}`), "carol"); err != nil {
		t.Fatal(err)
	}
	st, err := f.svc.Get(ctx, "e4")
	if err != nil || st.Source != lifecycle.SourceJob {
		t.Errorf("Get with the Job there = %+v, %v", st, err)
	}
	f.finish(t, "e4", history.StateFailed, "boom\n")

	st, err = f.svc.Get(ctx, "e4")
	if err != nil || st.Source != lifecycle.SourceHistory || st.State != history.StateFailed || st.SubmittedBy != "carol" || st.CompletedAt == nil {
		t.Errorf("Get after the TTL = %+v, %v", st, err)
	}
	var buf bytes.Buffer
	if err := f.svc.Logs(ctx, "e4", &buf); err != nil || buf.String() != "boom\n" {
		t.Errorf("Logs after the TTL = %q, %v", buf.String(), err)
	}
	if _, err := f.svc.Get(ctx, "never"); failure.KindOf(err) != failure.NotFound {
		t.Errorf("Get of an unknown ID = %v, want NotFound", err)
	}
	if err := f.svc.Logs(ctx, "never", &buf); failure.KindOf(err) != failure.NotFound {
		t.Errorf("Logs of an unknown ID = %v, want NotFound", err)
	}
	c, err := f.svc.Cancel(ctx, "e4")
	if err != nil || c.Deleted || c.State != history.StateFailed {
		t.Errorf("Cancel of a finished experiment = %+v, %v; want nothing deleted, state Failed", c, err)
	}
	if _, err := f.svc.Cancel(ctx, "never"); failure.KindOf(err) != failure.NotFound {
		t.Errorf("Cancel of an unknown ID = %v, want NotFound", err)
	}
}

func TestListFromHistory(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	for i, id := range []string{"a", "b", "c", "d", "e"} {
		f.svc.Now = func() time.Time { return t0.Add(time.Duration(i) * time.Second) }
		if _, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "`+id+`"}}`), ""); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	opts := ListOptions{Limit: 2}
	for {
		page, err := f.svc.List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			got = append(got, it.ID)
			if it.Source != lifecycle.SourceHistory {
				t.Errorf("%s: source %q", it.ID, it.Source)
			}
		}
		if page.Continue == "" {
			break
		}
		opts.Continue = page.Continue
	}
	if diff := cmp.Diff([]string{"e", "d", "c", "b", "a"}, got); diff != "" {
		t.Errorf("listed newest first (-want +got):\n%s", diff)
	}
	if _, err := f.svc.List(ctx, ListOptions{State: "Sleeping"}); failure.KindOf(err) != failure.Invalid {
		t.Errorf("unknown state = %v, want Invalid", err)
	}
	if page, err := f.svc.List(ctx, ListOptions{State: "Deleting"}); err != nil || len(page.Items) != 0 {
		t.Errorf("List(state Deleting) from history = %+v, %v; want an empty page (no record is Deleting)", page, err)
	}
	// A client's value is repeated in part only, however long.
	for _, bad := range []ListOptions{{State: strings.Repeat("S", 7000)}, {Continue: strings.Repeat("C", 7000)}} {
		_, err := f.svc.List(ctx, bad)
		if msg := failure.MessageOf(err); failure.KindOf(err) != failure.Invalid || len(msg) > 400 {
			t.Errorf("List of a 7,000-character value = %.300s (kind %q, %d bytes), want Invalid, shortened", msg, failure.KindOf(err), len(msg))
		}
	}
}

func TestWithoutHistory(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, false)
	body := `{"experiment": {"id": "e5"}}`
	if _, err := f.svc.Submit(ctx, decode(t, body), ""); err != nil {
		t.Fatal(err)
	}
	job := f.jobs(t)[0]
	if jobspec.Held(&job) || job.Spec.TTLSecondsAfterFinished == nil {
		t.Errorf("without history the Job must keep its TTL and carry no finalizer: %+v", job.ObjectMeta)
	}
	page, err := f.svc.List(ctx, ListOptions{})
	if err != nil || len(page.Items) != 1 || page.Items[0].Source != lifecycle.SourceJob {
		t.Errorf("List = %+v, %v", page, err)
	}
	for _, bad := range []ListOptions{{Limit: -1}, {Limit: history.MaxPageSize + 1}, {State: "Sleeping"}, {State: "cancelled"}} {
		if _, err := f.svc.List(ctx, bad); failure.KindOf(err) != failure.Invalid {
			t.Errorf("List(%+v) = %v, want Invalid", bad, err)
		}
	}
	// One vocabulary: a state live Jobs never show is no error, it lists
	// nothing.
	if page, err := f.svc.List(ctx, ListOptions{State: "Cancelled"}); err != nil || len(page.Items) != 0 {
		t.Errorf("List(state Cancelled) without history = %+v, %v; want an empty page", page, err)
	}
	if _, err := f.svc.Cancel(ctx, "e5"); err != nil {
		t.Fatal(err)
	}
	// The window without history: the Job gone, the same POST runs again.
	res, err := f.svc.Submit(ctx, decode(t, body), "")
	if err != nil || !res.Created {
		t.Errorf("submit after the Job is gone, without history = %+v, %v; want created again", res, err)
	}
}

// A POST the API server refused created nothing, so it leaves nothing
// behind: a fixed retry, even with another body, runs, and a DELETE finds
// nothing to cancel.
func TestRefusedSubmitLeavesNoClaim(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	quotaFull := true
	f.client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !quotaFull {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(batchv1.Resource("jobs"), "x",
			errors.New("exceeded quota: gmini, requested: count/jobs.batch=1, used: count/jobs.batch=20, limited: count/jobs.batch=20"))
	})
	_, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "q1", "key": "a"}}`), "")
	if failure.KindOf(err) != failure.TooManyRequests {
		t.Fatalf("submit with the quota full = %v (kind %s), want TooManyRequests", err, failure.KindOf(err))
	}
	if rec, err := f.store.Get(ctx, "q1"); failure.KindOf(err) != failure.NotFound {
		t.Errorf("record after a refused POST = %+v, %v; want none", rec, err)
	}
	if _, err := f.svc.Cancel(ctx, "q1"); failure.KindOf(err) != failure.NotFound {
		t.Errorf("DELETE after a refused POST = %v, want NotFound", err)
	}
	quotaFull = false
	res, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "q1", "key": "fixed"}}`), "")
	if err != nil || !res.Created {
		t.Errorf("fixed retry = %+v, %v; want the Job created", res, err)
	}
}

// A POST that finds a claim not yet final makes its Job held, and starts it
// only if the record still allows it: a DELETE that finished the record in
// between wins, and the Job is deleted before any pod could start.
func TestResubmitChecksTheRecordBeforeStarting(t *testing.T) {
	for _, tt := range []struct {
		name string
		// during is what happens while the held Job is being created
		during      func(t *testing.T, f *fixture, id string)
		wantCreated bool
		wantState   string
		wantJobs    int
	}{
		{name: "claim still open", wantCreated: true, wantJobs: 1},
		{name: "cancelled meanwhile", wantState: history.StateCancelled, during: func(t *testing.T, f *fixture, id string) {
			if _, err := f.store.Finish(context.Background(), history.Record{ID: id, State: history.StateCancelled}, []byte{}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, true)
			body := `{"experiment": {"id": "r1"}}`
			exp := decode(t, body)
			// An earlier POST's claim whose Job does not exist (any more).
			if _, _, err := f.store.Claim(ctx, history.Record{ID: exp.ID, Hash: exp.Hash, Job: jobspec.JobName(exp.ID), CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
			var held *batchv1.Job
			f.client.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
				held = a.(k8stesting.CreateAction).GetObject().(*batchv1.Job).DeepCopy()
				if tt.during != nil {
					tt.during(t, f, exp.ID)
				}
				return false, nil, nil
			})
			res, err := f.svc.Submit(ctx, exp, "")
			if err != nil {
				t.Fatal(err)
			}
			if held == nil || held.Spec.Suspend == nil || !*held.Spec.Suspend || !jobspec.HeldForSubmit(held) {
				t.Fatalf("the Job was not created held: %+v", held)
			}
			if res.Created != tt.wantCreated || res.State != tt.wantState {
				t.Errorf("submit = %+v; want created %v, state %q", res, tt.wantCreated, tt.wantState)
			}
			jobs := f.jobs(t)
			if len(jobs) != tt.wantJobs {
				t.Fatalf("%d Jobs, want %d", len(jobs), tt.wantJobs)
			}
			for _, j := range jobs {
				if jobspec.HeldForSubmit(&j) || (j.Spec.Suspend != nil && *j.Spec.Suspend) {
					t.Errorf("the Job was left held: annotations %v, suspend %v", j.Annotations, j.Spec.Suspend)
				}
			}
		})
	}
}

// A DELETE that finds a claim without a Job answers Conflict while the
// claiming POST may still create it, and cancels it once that POST must
// have given up: a retried POST then runs nothing.
func TestCancelAClaimWithoutAJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.ClaimGrace = 10 * time.Second
	exp := decode(t, `{"experiment": {"id": "c1"}}`)
	if _, _, err := f.store.Claim(ctx, history.Record{ID: exp.ID, Hash: exp.Hash, Job: jobspec.JobName(exp.ID), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	f.svc.Now = func() time.Time { return t0.Add(time.Second) }
	if _, err := f.svc.Cancel(ctx, exp.ID); failure.KindOf(err) != failure.Conflict {
		t.Errorf("DELETE of a young claim = %v, want Conflict", err)
	}
	f.svc.Now = func() time.Time { return t0.Add(11 * time.Second) }
	c, err := f.svc.Cancel(ctx, exp.ID)
	if err != nil || c.Deleted || c.State != history.StateCancelled {
		t.Errorf("DELETE of an abandoned claim = %+v, %v; want state Cancelled, nothing deleted", c, err)
	}
	res, err := f.svc.Submit(ctx, exp, "")
	if err != nil || res.Created || res.State != history.StateCancelled {
		t.Errorf("retry after the cancel = %+v, %v; want Cancelled from history", res, err)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs after cancelling a claim, want 0", n)
	}
}

// An experiment reads the same from its Job and from its record: the
// claim's time as createdAt in both, and no pod counts made up by the
// record (it has none).
func TestStatusReadsTheSameFromJobAndRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	claimed := t0.Add(123456 * time.Microsecond)
	f.svc.Now = func() time.Time { return claimed }
	if _, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "same-1"}}`), "dana"); err != nil {
		t.Fatal(err)
	}
	live, err := f.svc.Get(ctx, "same-1")
	if err != nil || live.Source != lifecycle.SourceJob {
		t.Fatalf("Get with the Job there = %+v, %v", live, err)
	}
	f.finish(t, "same-1", history.StateSucceeded, "")
	rec, err := f.svc.Get(ctx, "same-1")
	if err != nil || rec.Source != lifecycle.SourceHistory {
		t.Fatalf("Get after the TTL = %+v, %v", rec, err)
	}
	if !live.CreatedAt.Equal(claimed) || !rec.CreatedAt.Equal(claimed) {
		t.Errorf("createdAt from the Job %s, from the record %s; want both the claim's %s", live.CreatedAt, rec.CreatedAt, claimed)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"active"`, `"succeeded"`, `"failed"`} {
		if strings.Contains(string(b), field) {
			t.Errorf("a status from history shows %s, which only the Job knows: %s", field, b)
		}
	}
	if b, _ := json.Marshal(live); !strings.Contains(string(b), `"active":0`) {
		t.Errorf("a status from the Job lacks its pod counts: %s", b)
	}
}
