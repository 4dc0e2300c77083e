package experiments

import (
	"context"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// fakeQueues knows the queues in known; def is the default.
type fakeQueues struct {
	known map[string]bool
	def   string
	// unavailable makes every Resolve fail as if not loaded yet.
	unavailable bool
	described   []types.UID
}

func (q *fakeQueues) Resolve(_ context.Context, requested string) (string, error) {
	name := requested
	if name == "" {
		name = q.def
	}
	switch {
	case name == "":
		return "", nil
	case q.unavailable:
		return "", failure.New(failure.Unavailable, "the LocalQueues are not loaded yet")
	case !q.known[name] && requested != "":
		return "", failure.New(failure.Invalid, "queue %q does not exist", name)
	case !q.known[name]:
		return "", failure.New(failure.Unavailable, "the default queue %q does not exist", name)
	}
	return name, nil
}

func (q *fakeQueues) Describe(_ context.Context, name string, job types.UID, queued bool) *wire.Queue {
	q.described = append(q.described, job)
	if name == "" {
		name = "from-workload"
	}
	return &wire.Queue{Name: name, ClusterQueue: "cq"}
}

// A queue that cannot be used refuses the POST before the claim: nothing
// is created, nothing is claimed, so a fixed retry is a new submission.
func TestSubmitRefusesAQueueBeforeClaiming(t *testing.T) {
	for _, tt := range []struct {
		name     string
		queues   *fakeQueues
		body     string
		wantKind failure.Kind
		wantMsg  string
	}{
		{name: "unknown queue", queues: &fakeQueues{known: map[string]bool{"team-a": true}}, body: `{"experiment": {"id": "e1"}, "queue": "team-z"}`,
			wantKind: failure.Invalid, wantMsg: `queue "team-z" does not exist`},
		{name: "queues not loaded", queues: &fakeQueues{known: map[string]bool{"team-a": true}, unavailable: true}, body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`,
			wantKind: failure.Unavailable, wantMsg: "not loaded yet"},
		{name: "the default gone", queues: &fakeQueues{def: "gone"}, body: `{"experiment": {"id": "e1"}}`,
			wantKind: failure.Unavailable, wantMsg: `the default queue "gone"`},
		{name: "no queues at all", body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`,
			wantKind: failure.Invalid, wantMsg: "queues are not enabled in namespace gmini-test"},
	} {
		for _, withHistory := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: ", history"}[withHistory], func(t *testing.T) {
				ctx := context.Background()
				f := newFixture(t, withHistory)
				if tt.queues != nil {
					f.svc.Queues = tt.queues
				}
				_, err := f.svc.Submit(ctx, decode(t, tt.body), "")
				if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Submit = %v (kind %q), want %s saying %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
				}
				if jobs := f.jobs(t); len(jobs) != 0 {
					t.Errorf("%d Jobs created", len(jobs))
				}
				if f.store != nil {
					if _, err := f.store.Get(ctx, "e1"); failure.KindOf(err) != failure.NotFound {
						t.Errorf("the experiment was claimed: %v", err)
					}
				}
			})
		}
	}
}

func TestSubmitToAQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.Queues = &fakeQueues{known: map[string]bool{"team-a": true, "team-b": true}, def: "team-a"}
	res, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e1"}, "queue": "team-b"}`), "")
	if err != nil || !res.Created {
		t.Fatalf("Submit = %+v, %v", res, err)
	}
	jobs := f.jobs(t)
	if len(jobs) != 1 || jobs[0].Labels[jobspec.LabelQueue] != "team-b" || !jobspec.Queued(&jobs[0]) {
		t.Fatalf("Jobs = %+v; want one, queued in team-b", jobs)
	}
	// The queue is not part of the experiment: a retry naming another is
	// the same experiment, answered with its Job, in its first queue.
	res, err = f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e1"}, "queue": "team-a"}`), "")
	if err != nil || res.Created || res.Job != jobs[0].Name {
		t.Fatalf("retry in another queue = %+v, %v; want 200 with the existing Job", res, err)
	}
	if jobs := f.jobs(t); len(jobs) != 1 || jobs[0].Labels[jobspec.LabelQueue] != "team-b" {
		t.Errorf("the retry moved or added a Job: %+v", jobs)
	}
	// The default applies without a "queue".
	if _, err := f.svc.Submit(ctx, decode(t, `{"experiment": {"id": "e2"}}`), ""); err != nil {
		t.Fatal(err)
	}
	st, err := f.svc.Get(ctx, "e2")
	if err != nil || st.State != state.Queued || st.Queue == nil || st.Queue.Name != "team-a" {
		t.Errorf("Get(e2) = %+v, %v; want Queued in team-a", st, err)
	}
}

// A resubmitted experiment under a queue is created held (under the hold's
// queue, which Kueue cannot admit from) and let go into its queue, still
// suspended: Kueue, not the backend, starts it.
func TestResubmitUnderAQueueLeavesAdmissionToKueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.svc.Queues = &fakeQueues{known: map[string]bool{"team-a": true}}
	exp := decode(t, `{"experiment": {"id": "r1"}, "queue": "team-a"}`)
	if _, _, err := f.store.Claim(ctx, history.Record{ID: exp.ID, Hash: exp.Hash, Job: jobspec.JobName(exp.ID), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	var held *batchv1.Job
	f.client.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		held = a.(k8stesting.CreateAction).GetObject().(*batchv1.Job).DeepCopy()
		return false, nil, nil
	})
	res, err := f.svc.Submit(ctx, exp, "")
	if err != nil || !res.Created {
		t.Fatalf("Submit = %+v, %v", res, err)
	}
	if held == nil || held.Labels[jobspec.LabelQueue] != jobspec.HoldQueue || !*held.Spec.Suspend || !jobspec.HeldForSubmit(held) {
		t.Fatalf("created %+v; want held, under %s, suspended", held, jobspec.HoldQueue)
	}
	jobs := f.jobs(t)
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs", len(jobs))
	}
	j := jobs[0]
	if jobspec.HeldForSubmit(&j) || j.Labels[jobspec.LabelQueue] != "team-a" || j.Spec.Suspend == nil || !*j.Spec.Suspend {
		t.Errorf("let go: labels %v, annotations %v, suspend %v; want in team-a, not held, still suspended", j.Labels, j.Annotations, j.Spec.Suspend)
	}
}

// Records listed from history get their queue from the Workload of their
// Job while it exists; final records never.
func TestListFromHistoryDescribesQueues(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	q := &fakeQueues{}
	f.svc.Queues = q
	for _, rec := range []history.Record{
		{ID: "q1", Job: jobspec.JobName("q1"), JobUID: "uid-q1", State: history.StateQueued, CreatedAt: t0},
		{ID: "s1", Job: jobspec.JobName("s1"), JobUID: "uid-s1", State: history.StateSucceeded, CreatedAt: t0},
		{ID: "c1", Job: jobspec.JobName("c1"), State: history.StateSubmitted, CreatedAt: t0},
	} {
		if rec.State == history.StateSucceeded {
			if _, err := f.store.Finish(ctx, rec, nil); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := f.store.Update(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	page, err := f.svc.List(ctx, ListOptions{State: state.Queued})
	if err != nil || len(page.Items) != 1 || page.Items[0].Queue == nil || page.Items[0].Queue.Name != "from-workload" {
		t.Fatalf("List(Queued) = %+v, %v", page, err)
	}
	if _, err := f.svc.List(ctx, ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, uid := range q.described {
		if uid != "uid-q1" {
			t.Errorf("described %s: only a record with a Job, not final, has a queue", uid)
		}
	}
}
