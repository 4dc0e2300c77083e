package sets

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const ns = "gmini-test"

// The fixture is internal/experiments' own: the service over the fake
// clientset, with a real SQLite history or none.
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
	exps   *experiments.Service
	sets   *Service
}

func newFixture(t testing.TB, withHistory bool) *fixture {
	t.Helper()
	client := fake.NewClientset()
	f := &fixture{client: client}
	f.exps = &experiments.Service{
		Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: tmpl()}, Hold: withHistory},
		Live:    &lifecycle.Store{Client: client, Namespace: ns},
	}
	if withHistory {
		st, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f.store, f.exps.History = st, st
	}
	f.sets = &Service{Experiments: f.exps, ItemTimeout: 5 * time.Second}
	return f
}

func modes(t *testing.T, fn func(t *testing.T, withHistory bool)) {
	for _, h := range []bool{false, true} {
		t.Run(map[bool]string{false: "without history", true: "with history"}[h], func(t *testing.T) { fn(t, h) })
	}
}

func (f *fixture) jobs(t testing.TB) []batchv1.Job {
	t.Helper()
	list, err := f.client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// setBody is a set of the given items, each an item's JSON.
func setBody(id string, items ...string) string {
	return fmt.Sprintf(`{"id": %q, "items": [%s]}`, id, strings.Join(items, ", "))
}

func item(id string, extra ...string) string {
	fields := append([]string{fmt.Sprintf(`"id": %q`, id)}, extra...)
	return `{"experiment": {` + strings.Join(fields, ", ") + `}}`
}

func items(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = item(fmt.Sprintf("%s-%04d", prefix, i))
	}
	return out
}

func decodeSet(t testing.TB, body string) Request {
	t.Helper()
	req, err := Decode(strings.NewReader(body), 64<<10)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return req
}

// submit submits a set and returns each item's outcome, in order, as
// "id:kind" ("created", "existing", or the error's kind).
func (f *fixture) submit(t testing.TB, body string) ([]string, []Result) {
	t.Helper()
	res := f.sets.Submit(context.Background(), decodeSet(t, body), "alice")
	out := make([]string, len(res))
	for i, r := range res {
		if r.Index != i {
			t.Fatalf("result %d has index %d: not in request order", i, r.Index)
		}
		switch {
		case r.Err != nil:
			out[i] = r.ID + ":" + string(failure.KindOf(r.Err))
		case r.Sub.Created:
			out[i] = r.ID + ":created"
		default:
			out[i] = r.ID + ":existing"
		}
	}
	return out, res
}

func TestDecode(t *testing.T) {
	big := `{"experiment": {"id": "big", "pad": "` + strings.Repeat("x", 70<<10) + `"}}`
	for _, tt := range []struct {
		name, body string
		// err is what the whole set fails with; else items are the
		// items' IDs and kinds ("" for a valid one).
		err   string
		items []string
	}{
		{name: "a set", body: setBody("sweep-1", item("a", `"lr": 0.1`), item("b")), items: []string{"a:", "b:"}},
		{name: "keys in any order", body: `{"items": [` + item("a") + `], "id": "s"}`, items: []string{"a:"}},
		{name: "mixed case and punctuation", body: setBody("Sweep_2.b-1", item("a")), items: []string{"a:"}},
		{name: "63 characters", body: setBody(strings.Repeat("s", 63), item("a")), items: []string{"a:"}},
		{name: "bad items stay items", body: setBody("s",
			item("ok"), `{"experiment": {"id": "has space"}}`, `{"experiment": {"id": "x"}, "extra": 1}`,
			`{"experiment": {"id": "d", "id": "d"}}`, `[1, 2]`, `"text"`, `{}`, big),
			items: []string{"ok:", ":invalid", "x:invalid", "d:invalid", ":invalid", ":invalid", ":invalid", "big:too large"}},
		{name: "1,000 items", body: setBody("s", items("e", 1000)...)},
		{name: "1,001 items", body: setBody("s", items("e", 1001)...), err: "more than 1000 items"},
		{name: "the same ID twice", body: setBody("s", item("a"), item("b"), item("a", `"k": 2`), item("c"), item("b")),
			err: `experiment IDs appear more than once in the set: "a" (items 0, 2), "b" (items 1, 4); nothing was submitted`},
		{name: "IDs differing in case are distinct", body: setBody("s", item("a"), item("A")), items: []string{"a:", "A:"}},
		{name: "empty", body: " ", err: "empty body"},
		{name: "not an object", body: `[{"id": "s"}]`, err: "must be a JSON object"},
		{name: "no id", body: `{"items": [` + item("a") + `]}`, err: `"id" is missing`},
		{name: "no items", body: `{"id": "s"}`, err: `no "items"`},
		{name: "empty items", body: `{"id": "s", "items": []}`, err: `no "items"`},
		{name: "items not an array", body: `{"id": "s", "items": {}}`, err: `"items" must be an array`},
		{name: "id not a string", body: `{"id": 7, "items": [` + item("a") + `]}`, err: `"id" must be a string`},
		{name: "empty id", body: setBody("", item("a")), err: `the set "id" is empty`},
		{name: "id over 63", body: setBody(strings.Repeat("s", 64), item("a")), err: "64 characters long; the limit is 63"},
		{name: "id starting with a dash", body: setBody("-s", item("a")), err: "must start and end with a letter or a digit"},
		{name: "id ending with a dot", body: setBody("s.", item("a")), err: "must start and end with a letter or a digit"},
		{name: "id with a slash", body: setBody("a/b", item("a")), err: `the character '/'`},
		{name: "unknown field", body: `{"id": "s", "items": [` + item("a") + `], "queue": "q"}`, err: `unknown field "queue"`},
		{name: "duplicated key", body: `{"id": "s", "id": "t", "items": [` + item("a") + `]}`, err: `duplicated key "id"`},
		{name: "truncated", body: `{"id": "s", "items": [` + item("a"), err: "unexpected end of input"},
		{name: "an item that is not JSON", body: `{"id": "s", "items": [{"experiment": ]}`, err: "malformed JSON: item 0"},
		{name: "trailing data", body: setBody("s", item("a")) + " {}", err: "unexpected data after the set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Decode(strings.NewReader(tt.body), 64<<10)
			if tt.err != "" {
				if failure.KindOf(err) != failure.Invalid || !strings.Contains(failure.MessageOf(err), tt.err) {
					t.Fatalf("Decode = %v (kind %q); want Invalid saying %q", err, failure.KindOf(err), tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.items == nil {
				return
			}
			var got []string
			for i, it := range req.Items {
				if it.Index != i {
					t.Errorf("item %d has index %d", i, it.Index)
				}
				got = append(got, it.ID+":"+string(failure.KindOf(it.Err)))
				if it.Err == nil && (it.Exp.Set != req.ID || it.Exp.ID != it.ID || it.Exp.Hash == "") {
					t.Errorf("item %d decoded as %+v, want set %q", i, it.Exp, req.ID)
				}
			}
			if d := cmp.Diff(tt.items, got); d != "" {
				t.Errorf("items (-want +got):\n%s", d)
			}
		})
	}
}

// A set of new, invalid, conflicting and foreign items: each is answered
// in request order as a POST of it alone would be, the valid ones are
// created and labelled with the set, and the set sent again creates
// nothing.
func TestSubmitMixedSet(t *testing.T) {
	modes(t, func(t *testing.T, withHistory bool) {
		ctx := context.Background()
		f := newFixture(t, withHistory)
		// Before the set: "taken" with another body, "alone" on its own,
		// "elsewhere" in another set.
		for _, body := range []string{item("taken", `"k": 1`), item("alone")} {
			exp := decodeSet(t, setBody("x", body)).Items[0].Exp
			exp.Set = ""
			if _, err := f.exps.Submit(ctx, exp, ""); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := f.submit(t, setBody("other", item("elsewhere"))); got[0] != "elsewhere:created" {
			t.Fatalf("other set = %v", got)
		}

		body := setBody("sweep", item("a", `"lr": 0.1`), `{"experiment": {"id": "bad id"}}`, item("taken", `"k": 2`),
			item("b"), item("alone"), item("elsewhere"), `{"experiment": {"id": "c"}, "extra": true}`, item("d"))
		got, res := f.submit(t, body)
		want := []string{"a:created", ":invalid", "taken:conflict", "b:created", "alone:conflict", "elsewhere:conflict", "c:invalid", "d:created"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("first send (-want +got):\n%s", d)
		}
		for _, i := range []int{4, 5} {
			if msg := failure.MessageOf(res[i].Err); !strings.Contains(msg, "belongs to") || res[i].Sub.Job != jobspec.JobName(res[i].ID) {
				t.Errorf("item %d: %q, job %q; want it to say where it belongs and name its job", i, msg, res[i].Sub.Job)
			}
		}
		inSet := 0
		for _, job := range f.jobs(t) {
			if job.Labels[jobspec.LabelSet] == "sweep" {
				inSet++
			}
		}
		if inSet != 3 {
			t.Errorf("%d Jobs labelled %s=sweep, want 3 (a, b, d)", inSet, jobspec.LabelSet)
		}
		if withHistory {
			if rec, err := f.store.Get(ctx, "a"); err != nil || rec.Set != "sweep" {
				t.Errorf("record of a = %+v, %v; want set sweep", rec, err)
			}
		}

		jobs := len(f.jobs(t))
		got, _ = f.submit(t, body)
		want = []string{"a:existing", ":invalid", "taken:conflict", "b:existing", "alone:conflict", "elsewhere:conflict", "c:invalid", "d:existing"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("sent again (-want +got):\n%s", d)
		}
		if n := len(f.jobs(t)); n != jobs {
			t.Errorf("%d Jobs after sending the set again, want %d: nothing new", n, jobs)
		}
	})
}

// fakeQueues knows the LocalQueues team-a (the default) and team-b.
type fakeQueues struct{}

func (fakeQueues) Resolve(_ context.Context, requested string) (string, error) {
	switch requested {
	case "":
		return "team-a", nil
	case "team-a", "team-b":
		return requested, nil
	}
	return "", failure.New(failure.Invalid, "queue %q does not exist: use team-a or team-b", requested)
}

func (fakeQueues) Describe(context.Context, string, types.UID, bool) *wire.Queue { return nil }

// Each item goes to its own queue, judged as POST /experiment judges it.
func TestSetItemsGoToTheirQueues(t *testing.T) {
	f := newFixture(t, false)
	f.exps.Queues = fakeQueues{}
	got, _ := f.submit(t, setBody("s", item("a"), `{"experiment": {"id": "b"}, "queue": "team-b"}`,
		`{"experiment": {"id": "c"}, "queue": "team-z"}`, `{"experiment": {"id": "d"}, "queue": "Not A Label"}`))
	if d := cmp.Diff([]string{"a:created", "b:created", "c:invalid", "d:invalid"}, got); d != "" {
		t.Errorf("items (-want +got):\n%s", d)
	}
	queues := map[string]string{}
	for _, job := range f.jobs(t) {
		queues[job.Annotations[jobspec.AnnotationID]] = jobspec.QueueName(&job)
	}
	if d := cmp.Diff(map[string]string{"a": "team-a", "b": "team-b"}, queues); d != "" {
		t.Errorf("queues of the Jobs (-want +got):\n%s", d)
	}
}

// With history, a set sent again after its experiments finished and their
// Jobs are gone is answered from the records: nothing runs again.
func TestResendAfterTheJobsAreGone(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	body := setBody("s", items("e", 5)...)
	f.submit(t, body)
	for _, job := range f.jobs(t) {
		id := job.Annotations[jobspec.AnnotationID]
		if _, err := f.store.Finish(ctx, history.Record{ID: id, State: state.Succeeded}, []byte("ok")); err != nil {
			t.Fatal(err)
		}
		if err := f.client.BatchV1().Jobs(ns).Delete(ctx, job.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, res := f.submit(t, body)
	for _, r := range res {
		if r.Err != nil || r.Sub.Created || r.Sub.State != state.Succeeded || r.Sub.Source != lifecycle.SourceHistory {
			t.Errorf("item %d sent again = %+v, %v; want existing, Succeeded from history", r.Index, r.Sub, r.Err)
		}
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs made by sending a finished set again, want 0", n)
	}
}

// Once an item fails in a way a retry may cure, the items not yet
// started are not tried: they fail the same way, saying why.
func TestSubmitStopsAtTheFirstRetryableFailure(t *testing.T) {
	f := newFixture(t, false)
	f.sets.Concurrency = 1
	f.exps.Spawner.Templates = template.Static{} // no template: Unavailable
	_, res := f.submit(t, setBody("s", append([]string{`{"bad": 1}`}, items("e", 20)...)...))
	if failure.KindOf(res[0].Err) != failure.Invalid {
		t.Errorf("item 0 = %v, want Invalid", res[0].Err)
	}
	for _, r := range res[1:] {
		if failure.KindOf(r.Err) != failure.Unavailable {
			t.Errorf("item %d = %v, want Unavailable", r.Index, r.Err)
		}
	}
	if msg := failure.MessageOf(res[5].Err); !strings.Contains(msg, `not tried: item 1 ("e-0000") failed first`) {
		t.Errorf("an item not tried says %q, want it to name the first failure", msg)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs, want 0", n)
	}
}

// succeed marks the Job of id as finished, as the Job controller would.
func (f *fixture) succeed(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	job, err := f.client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue})
	if _, err := f.client.BatchV1().Jobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if f.store != nil {
		if _, err := f.store.Finish(ctx, history.Record{ID: id, State: state.Succeeded}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func counts(c map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range c {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestGet(t *testing.T) {
	modes(t, func(t *testing.T, withHistory bool) {
		ctx := context.Background()
		f := newFixture(t, withHistory)
		f.submit(t, setBody("s", items("e", 25)...))
		f.submit(t, setBody("t", item("other")))
		for i := range 4 {
			f.succeed(t, fmt.Sprintf("e-%04d", i))
		}
		set, err := f.sets.Get(ctx, "s", experiments.ListOptions{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		pending := state.Pending
		if withHistory {
			pending = state.Submitted // as recorded: no recorder runs here
		}
		if d := cmp.Diff(map[string]int{pending: 21, state.Succeeded: 4}, counts(set.Counts)); d != "" || set.Total != 25 {
			t.Errorf("counts (-want +got):\n%s total %d", d, set.Total)
		}
		if len(set.Counts) != len(state.All()) {
			t.Errorf("counts name %d states, want every state of the vocabulary (%d)", len(set.Counts), len(state.All()))
		}
		if want := map[bool]string{false: lifecycle.SourceJob, true: lifecycle.SourceHistory}[withHistory]; set.Source != want {
			t.Errorf("source %q, want %q", set.Source, want)
		}
		// Every page: the set's 25, once each. (The fake clientset
		// answers a list whole, so without history one page holds all.)
		seen := map[string]bool{}
		opts := experiments.ListOptions{Limit: 10}
		pages := 0
		for {
			set, err := f.sets.Get(ctx, "s", opts)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, st := range set.Items {
				if seen[st.ID] || st.Set != "s" {
					t.Errorf("item %s (set %q) listed twice or not of the set", st.ID, st.Set)
				}
				seen[st.ID] = true
			}
			if set.Continue == "" {
				break
			}
			opts.Continue = set.Continue
		}
		if len(seen) != 25 || withHistory && pages != 3 {
			t.Errorf("%d experiments in %d pages, want 25 (with history in 3 pages of 10)", len(seen), pages)
		}
		set, err = f.sets.Get(ctx, "s", experiments.ListOptions{State: state.Succeeded})
		if err != nil || len(set.Items) != 4 || set.Total != 25 {
			t.Errorf("Get(state Succeeded) = %d items of %d, %v; want 4 of 25", len(set.Items), set.Total, err)
		}
		bad := []experiments.ListOptions{{State: "Sleeping"}, {Limit: 1001}}
		if withHistory { // the fake clientset ignores continue tokens
			bad = append(bad, experiments.ListOptions{Continue: "garbled"})
		}
		for _, bad := range bad {
			if _, err := f.sets.Get(ctx, "s", bad); failure.KindOf(err) != failure.Invalid {
				t.Errorf("Get(%+v) = %v, want Invalid", bad, err)
			}
		}
		if _, err := f.sets.Get(ctx, "nope", experiments.ListOptions{}); failure.KindOf(err) != failure.NotFound {
			t.Errorf("Get of an unknown set = %v, want NotFound", err)
		}
	})
}

// With history the set outlives its Jobs.
func TestGetAfterTheJobsAreGone(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	f.submit(t, setBody("s", items("e", 3)...))
	for _, job := range f.jobs(t) {
		f.succeed(t, job.Annotations[jobspec.AnnotationID])
		if err := f.client.BatchV1().Jobs(ns).Delete(ctx, job.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	set, err := f.sets.Get(ctx, "s", experiments.ListOptions{})
	if err != nil || set.Total != 3 || set.Counts[state.Succeeded] != 3 || len(set.Items) != 3 || set.Items[0].Source != lifecycle.SourceHistory {
		t.Errorf("Get after the Jobs are gone = %+v, %v; want 3 Succeeded from history", set, err)
	}
}

func TestCancel(t *testing.T) {
	modes(t, func(t *testing.T, withHistory bool) {
		ctx := context.Background()
		f := newFixture(t, withHistory)
		f.submit(t, setBody("s", items("e", 10)...))
		f.submit(t, setBody("t", item("other")))
		for i := range 3 {
			f.succeed(t, fmt.Sprintf("e-%04d", i))
		}
		res, err := f.sets.Cancel(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != 10 || res.Cancelled != 7 || res.Finished != 3 || len(res.Failed) != 0 {
			t.Errorf("Cancel = %+v; want 7 of 10 cancelled, 3 finished", res)
		}
		left := map[string]bool{}
		for _, job := range f.jobs(t) {
			left[job.Annotations[jobspec.AnnotationID]] = true
		}
		if d := cmp.Diff(map[string]bool{"e-0000": true, "e-0001": true, "e-0002": true, "other": true}, left); d != "" {
			t.Errorf("Jobs left (-want +got):\n%s", d)
		}
		if _, err := f.sets.Cancel(ctx, "nope"); failure.KindOf(err) != failure.NotFound {
			t.Errorf("Cancel of an unknown set = %v, want NotFound", err)
		}
		// The records stay, which the recorder (standing in here) makes
		// Cancelled: the set is still all there, with nothing left to do.
		want := 3
		if withHistory {
			want = 10
			for i := 3; i < 10; i++ {
				if _, err := f.store.Finish(ctx, history.Record{ID: fmt.Sprintf("e-%04d", i), State: state.Cancelled}, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		res, err = f.sets.Cancel(ctx, "s")
		if err != nil || res.Total != want || res.Finished != want || res.Cancelled != 0 || len(res.Failed) != 0 {
			t.Errorf("Cancel again = %+v, %v; want %d finished, nothing to do", res, err, want)
		}
	})
}

// A claim younger than the claim grace, with no Job yet (its POST may
// still create it), is not cancelled: it is reported with a Conflict
// (409, retry), never an error of the server.
func TestCancelReportsClaimsInFlight(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, true)
	if _, _, err := f.store.Claim(ctx, history.Record{ID: "inflight", Hash: "h", Set: "s", Namespace: ns, Job: jobspec.JobName("inflight")}); err != nil {
		t.Fatal(err)
	}
	f.submit(t, setBody("s", item("a")))
	res, err := f.sets.Cancel(ctx, "s")
	if err != nil || res.Total != 2 || res.Cancelled != 1 || len(res.Failed) != 1 ||
		res.Failed[0].ID != "inflight" || failure.KindOf(res.Failed[0].Err) != failure.Conflict {
		t.Errorf("Cancel = %+v, %v; want a cancelled and the claim in flight failed with Conflict", res, err)
	}
}

// A POST and a DELETE of one set racing, over and over: neither ever
// fails with an error of the server (what a 5xx would answer), only with
// Conflict (409: retry) on some items.
func TestPostRacingDeleteOfASet(t *testing.T) {
	modes(t, func(t *testing.T, withHistory bool) {
		ctx := context.Background()
		f := newFixture(t, withHistory)
		f.sets.Concurrency = 8
		req := decodeSet(t, setBody("race", items("r", 60)...))
		serverError := func(err error) bool {
			switch failure.KindOf(err) {
			case "", failure.Conflict, failure.NotFound:
				return false
			}
			return true
		}
		rounds := 5
		if testing.Short() {
			rounds = 3 // each round costs the fake clientset about a second
		}
		for round := range rounds {
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					for _, r := range f.sets.Submit(ctx, req, "") {
						if serverError(r.Err) {
							t.Errorf("round %d: POST item %s: %v (kind %s)", round, r.ID, r.Err, failure.KindOf(r.Err))
						}
					}
				})
				wg.Go(func() {
					res, err := f.sets.Cancel(ctx, "race")
					if serverError(err) {
						t.Errorf("round %d: DELETE: %v", round, err)
					}
					for _, e := range res.Failed {
						if serverError(e.Err) {
							t.Errorf("round %d: DELETE item %s: %v (kind %s)", round, e.ID, e.Err, failure.KindOf(e.Err))
						}
					}
				})
			}
			wg.Wait()
		}
	})
}

// BenchmarkSubmitSet submits sets of 1,000 new experiments against the
// fake clientset, with history in SQLite or none: the backend's own cost
// per item (decode, claim, build, create), without an API server's. The
// fake's creates are answered by a reactor that keeps nothing: its object
// tracker builds a REST mapper on every create (about 4 ms), which would
// be all this measured.
func BenchmarkSubmitSet(b *testing.B) {
	for _, withHistory := range []bool{false, true} {
		b.Run(map[bool]string{false: "without history", true: "with history"}[withHistory], func(b *testing.B) {
			f := newFixture(b, withHistory)
			f.client.PrependReactor("create", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, a.(k8stesting.CreateAction).GetObject(), nil
			})
			ctx := context.Background()
			n := 0
			start := time.Now()
			for round := 0; b.Loop(); round++ {
				req, err := Decode(strings.NewReader(setBody("bench", items(fmt.Sprintf("b%d", round), 1000)...)), 64<<10)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range f.sets.Submit(ctx, req, "") {
					if r.Err != nil || !r.Sub.Created {
						b.Fatalf("item %d: %+v, %v", r.Index, r.Sub, r.Err)
					}
				}
				n += len(req.Items)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "items/s")
		})
	}
}
