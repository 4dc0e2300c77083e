package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func setJSON(id string, items ...string) string {
	return fmt.Sprintf(`{"id": %q, "items": [%s]}`, id, strings.Join(items, ","))
}

func expJSON(id string, extra ...string) string {
	return `{"experiment": {` + strings.Join(append([]string{fmt.Sprintf(`"id": %q`, id)}, extra...), ", ") + `}}`
}

func manyJSON(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = expJSON(fmt.Sprintf("m-%04d", i))
	}
	return out
}

func (f *fixture) postSet(body string) *httptest.ResponseRecorder {
	return f.do(http.MethodPost, "/experiment-sets", "application/json", body)
}

func decodeAs[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("answer %d is not the JSON expected: %v: %s", rec.Code, err, rec.Body)
	}
	return v
}

// A set with new, invalid, conflicting and oversized items answers 200
// with every item, in order, with the code its POST alone would get; the
// same set again creates nothing.
func TestCreateSet(t *testing.T) {
	f := newFixture(t, nil, nil)
	if rec := f.post(expJSON("taken", `"k": 1`)); rec.Code != http.StatusCreated {
		t.Fatalf("POST /experiment = %d", rec.Code)
	}
	big := expJSON("big", `"pad": "`+strings.Repeat("x", DefaultMaxBodyBytes)+`"`)
	body := setJSON("sweep-1", expJSON("a"), `{"experiment": {"id": ""}}`, expJSON("taken", `"k": 2`), big, expJSON("b"))

	rec := f.postSet(body)
	if rec.Code != http.StatusOK || rec.Header().Get("Location") != "/experiment-sets/sweep-1" || rec.Header().Get("Retry-After") != "" {
		t.Fatalf("POST = %d, Location %q, Retry-After %q: %s", rec.Code, rec.Header().Get("Location"), rec.Header().Get("Retry-After"), rec.Body)
	}
	got := decodeAs[wire.SetSubmission](t, rec)
	type brief struct {
		Index         int
		ID, Outcome   string
		Code          int
		Job, Says     string
		HasNoMessages bool
	}
	var items []brief
	for _, it := range got.Items {
		says := it.Message
		if len(says) > 30 {
			says = says[:30]
		}
		items = append(items, brief{it.Index, it.ID, it.Outcome, it.Code, it.Job, says, it.Message == ""})
	}
	want := []brief{
		{0, "a", wire.OutcomeCreated, 201, jobspec.JobName("a"), "", true},
		{1, "", wire.OutcomeInvalid, 400, "", `"experiment.id" is empty`, false},
		{2, "taken", wire.OutcomeConflict, 409, jobspec.JobName("taken"), `experiment "taken" was already`, false},
		{3, "big", wire.OutcomeInvalid, 413, "", "item 3 is 65576 bytes; the lim", false},
		{4, "b", wire.OutcomeCreated, 201, jobspec.JobName("b"), "", true},
	}
	if d := cmp.Diff(want, items); d != "" {
		t.Errorf("items (-want +got):\n%s", d)
	}
	if wantO := (wire.SetOutcomes{Created: 2, Conflict: 1, Invalid: 2}); got.Outcomes != wantO || got.ID != "sweep-1" || got.Namespace != ns || got.Status != "/experiment-sets/sweep-1" {
		t.Errorf("answer = %+v", got)
	}
	for _, job := range f.jobs(t) {
		if id := job.Annotations[jobspec.AnnotationID]; (id == "a" || id == "b") && job.Labels[jobspec.LabelSet] != "sweep-1" {
			t.Errorf("job of %s has labels %v, want %s=sweep-1", id, job.Labels, jobspec.LabelSet)
		}
	}

	rec = f.postSet(body)
	again := decodeAs[wire.SetSubmission](t, rec)
	if wantO := (wire.SetOutcomes{Existing: 2, Conflict: 1, Invalid: 2}); rec.Code != http.StatusOK || again.Outcomes != wantO {
		t.Errorf("sent again = %d %+v; want the two existing, nothing created", rec.Code, again.Outcomes)
	}
	if n := len(f.jobs(t)); n != 3 {
		t.Errorf("%d Jobs, want 3", n)
	}
	if n := testutil.ToFloat64(f.metrics.Sets); n != 2 {
		t.Errorf("gmini_experiment_sets_total = %v, want 2", n)
	}
	for outcome, n := range map[string]float64{"created": 2, "existing": 2, "conflict": 2, "invalid": 4} {
		if v := testutil.ToFloat64(f.metrics.SetItems.WithLabelValues(outcome)); v != n {
			t.Errorf("gmini_experiment_set_items_total{outcome=%q} = %v, want %v", outcome, v, n)
		}
	}
	if c, e := testutil.ToFloat64(f.metrics.JobsCreated), testutil.ToFloat64(f.metrics.JobsExisting); c != 3 || e != 2 {
		t.Errorf("jobs created %v, existing %v; want 3 (one POST, two set items) and 2", c, e)
	}
}

// A set refused as a whole creates nothing, and says why.
func TestCreateSetRefused(t *testing.T) {
	f := newFixture(t, nil, nil)
	for _, tt := range []struct {
		name, contentType, body string
		code                    int
		says                    string
	}{
		{"1,001 items", "application/json", setJSON("s", manyJSON(1001)...), 400, "more than 1000 items"},
		{"an ID twice", "application/json", setJSON("s", expJSON("a"), expJSON("b"), expJSON("a")), 400, `"a" (items 0, 2)`},
		{"bad set ID", "application/json", setJSON("not/a/label", expJSON("a")), 400, `the character '/'`},
		{"set ID too long", "application/json", setJSON(strings.Repeat("s", 64), expJSON("a")), 400, "the limit is 63"},
		{"no items", "application/json", `{"id": "s", "items": []}`, 400, `no "items"`},
		{"not JSON", "application/json", `{"id": "s", "items": [`, 400, "malformed JSON"},
		{"text", "text/plain", setJSON("s", expJSON("a")), 415, "Content-Type must be application/json"},
		{"over the set limit", "application/json", setJSON("s", expJSON("a", `"pad": "`+strings.Repeat("x", DefaultMaxSetBytes)+`"`)), 413, "the limit of a set is"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.do(http.MethodPost, "/experiment-sets", tt.contentType, tt.body)
			if msg := errorMessage(t, rec); rec.Code != tt.code || !strings.Contains(msg, tt.says) {
				t.Errorf("POST = %d %q; want %d saying %q", rec.Code, msg, tt.code, tt.says)
			}
		})
	}
	// Chunked, without a Content-Length: the limit still holds.
	req := httptest.NewRequest(http.MethodPost, "/experiment-sets", io.MultiReader(strings.NewReader(`{"id": "s", "items": [`),
		strings.NewReader(strings.Repeat(expJSON("x")+",", DefaultMaxSetBytes/20))))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked set over the limit = %d %s, want 413", rec.Code, rec.Body)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs made by refused sets, want 0", n)
	}
	if n := testutil.ToFloat64(f.metrics.Sets); n != 0 {
		t.Errorf("gmini_experiment_sets_total = %v, want 0", n)
	}
}

// Sets beyond MaxInflightSets are refused at once with 429, Retry-After.
func TestCreateSetBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	client := fake.NewClientset()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return false, nil, nil
	})
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}},
			Live:    &lifecycle.Store{Client: client, Namespace: ns},
		},
		Metrics:         metrics.New(),
		Ready:           func(context.Context) error { return nil },
		MaxInflightSets: 1,
	})
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/experiment-sets", strings.NewReader(setJSON("s", expJSON("a"))))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post() }()
	<-started
	if rec := post(); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "--max-inflight-sets") {
		t.Errorf("second set while one is processed = %d %s, want 429 naming --max-inflight-sets", rec.Code, rec.Body)
	}
	close(release)
	if rec := <-first; rec.Code != http.StatusOK {
		t.Errorf("first set = %d %s", rec.Code, rec.Body)
	}
}

// Items the API server cannot take now answer 503 inside a 200, which
// carries Retry-After: sending the set again may do more.
func TestCreateSetTemplateGone(t *testing.T) {
	f := newFixture(t, template.Static{}, nil)
	rec := f.postSet(setJSON("s", manyJSON(40)...))
	got := decodeAs[wire.SetSubmission](t, rec)
	if rec.Code != http.StatusOK || rec.Header().Get("Retry-After") != retryAfterSeconds || got.Outcomes.Error != 40 {
		t.Fatalf("POST = %d (Retry-After %q) %+v", rec.Code, rec.Header().Get("Retry-After"), got.Outcomes)
	}
	for _, it := range got.Items {
		if it.Code != http.StatusServiceUnavailable || it.Outcome != wire.OutcomeError || it.Message == "" {
			t.Errorf("item %d = %+v, want 503 with a message", it.Index, it)
		}
	}
}

func TestGetAndDeleteSet(t *testing.T) {
	f := newFixture(t, nil, nil)
	if rec := f.postSet(setJSON("s", manyJSON(5)...)); rec.Code != http.StatusOK {
		t.Fatalf("POST = %d %s", rec.Code, rec.Body)
	}
	rec := f.do(http.MethodGet, "/experiment-sets/s?limit=10", "", "")
	set := decodeAs[wire.Set](t, rec)
	if rec.Code != http.StatusOK || set.ID != "s" || set.Total != 5 || set.Counts["Pending"] != 5 || len(set.Items) != 5 || set.Source != "job" || set.Items[0].Set != "s" {
		t.Errorf("GET = %d %+v", rec.Code, set)
	}
	for _, tt := range []struct {
		method, path string
		code         int
		says         string
	}{
		{http.MethodGet, "/experiment-sets/nope", 404, `experiment set "nope" not found`},
		{http.MethodDelete, "/experiment-sets/nope", 404, `experiment set "nope" not found`},
		{http.MethodGet, "/experiment-sets/-bad", 400, "must start and end with a letter or a digit"},
		{http.MethodDelete, "/experiment-sets/" + strings.Repeat("s", 64), 400, "the limit is 63"},
		{http.MethodGet, "/experiment-sets/s?limit=0", 400, "limit"},
		{http.MethodGet, "/experiment-sets/s?state=Sleeping", 400, "state"},
		{http.MethodGet, "/experiment-sets/", 404, "no such route"},
		{http.MethodGet, "/experiment-sets", 405, "not allowed"},
		{http.MethodPut, "/experiment-sets/s", 405, "not allowed"},
	} {
		rec := f.do(tt.method, tt.path, "", "")
		if msg := errorMessage(t, rec); rec.Code != tt.code || !strings.Contains(msg, tt.says) {
			t.Errorf("%s %s = %d %q; want %d saying %q", tt.method, tt.path, rec.Code, msg, tt.code, tt.says)
		}
	}

	rec = f.do(http.MethodDelete, "/experiment-sets/s", "", "")
	res := decodeAs[wire.SetCancellation](t, rec)
	if want := (wire.SetCancellation{ID: "s", Total: 5, Cancelled: 5}); rec.Code != http.StatusOK || !cmp.Equal(want, res) {
		t.Errorf("DELETE = %d %+v, want %+v", rec.Code, res, want)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d Jobs after DELETE of the set, want 0", n)
	}
}

// With history the set outlives its Jobs: GET answers from the records.
func TestGetSetFromHistory(t *testing.T) {
	gin.SetMode(gin.TestMode)
	client := fake.NewClientset()
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}, Hold: true},
			Live:    &lifecycle.Store{Client: client, Namespace: ns},
			History: store,
		},
		Metrics: metrics.New(),
		Ready:   func(context.Context) error { return nil },
	})
	f := &fixture{client: client, handler: h}
	if rec := f.postSet(setJSON("s", manyJSON(3)...)); rec.Code != http.StatusOK {
		t.Fatalf("POST = %d %s", rec.Code, rec.Body)
	}
	for _, job := range f.jobs(t) {
		if _, err := store.Finish(context.Background(), history.Record{ID: job.Annotations[jobspec.AnnotationID], State: history.StateSucceeded}, nil); err != nil {
			t.Fatal(err)
		}
		if err := client.BatchV1().Jobs(ns).Delete(context.Background(), job.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	path := "/experiment-sets/s?limit=2"
	for {
		rec := f.do(http.MethodGet, path, "", "")
		set := decodeAs[wire.Set](t, rec)
		if rec.Code != http.StatusOK || set.Total != 3 || set.Counts[history.StateSucceeded] != 3 || set.Source != "history" {
			t.Fatalf("GET %s = %d %+v", path, rec.Code, set)
		}
		for _, st := range set.Items {
			ids = append(ids, st.ID)
		}
		if set.Continue == "" {
			break
		}
		path = "/experiment-sets/s?limit=2&continue=" + set.Continue
	}
	if len(ids) != 3 {
		t.Errorf("pages listed %v, want the 3 experiments", ids)
	}
	rec := f.do(http.MethodDelete, "/experiment-sets/s", "", "")
	res := decodeAs[wire.SetCancellation](t, rec)
	if rec.Code != http.StatusOK || res.Total != 3 || res.Finished != 3 || res.Cancelled != 0 {
		t.Errorf("DELETE of a finished set = %d %+v, want 3 finished", rec.Code, res)
	}
}

// One authorization check for a whole set, on the collection: the set's
// ID is not taken for an experiment's name.
func TestSetsAreAuthorizedOnce(t *testing.T) {
	api := newReviewServer(t)
	reviewer, err := auth.New(api.client, ns, []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.TestMode)
	client := fake.NewClientset()
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}},
			Live:    &lifecycle.Store{Client: client, Namespace: ns},
		},
		Metrics: metrics.New(),
		Logger:  slog.New(slog.DiscardHandler),
		Ready:   func(context.Context) error { return nil },
		Auth:    reviewer,
	})
	send := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer good")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := send(http.MethodPost, "/experiment-sets", setJSON("s", manyJSON(50)...)); rec.Code != http.StatusOK {
		t.Fatalf("POST = %d %s", rec.Code, rec.Body)
	}
	if rec := send(http.MethodGet, "/experiment-sets/s", ""); rec.Code != http.StatusOK {
		t.Fatalf("GET = %d %s", rec.Code, rec.Body)
	}
	rec := send(http.MethodDelete, "/experiment-sets/s", "")
	if msg := errorMessage(t, rec); rec.Code != http.StatusForbidden || !strings.Contains(msg, "may not delete experiments.gmini.dev") {
		t.Errorf("DELETE by a user who may not delete = %d %q, want 403", rec.Code, msg)
	}
	want := []string{"create experiments ", "list experiments ", "delete experiments "}
	if d := cmp.Diff(want, api.reviews()); d != "" {
		t.Errorf("access reviews, verb and name (-want +got):\n%s", d)
	}
	jobs, err := client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 50 {
		t.Fatalf("%d Jobs, %v; want 50", len(jobs.Items), err)
	}
	for _, job := range jobs.Items {
		if job.Annotations[jobspec.AnnotationSubmitter] != "alice" {
			t.Errorf("job %s submitted by %q, want alice", job.Name, job.Annotations[jobspec.AnnotationSubmitter])
		}
	}
}

// reviewServer answers TokenReviews (one token, "good", of alice) and
// SubjectAccessReviews as allow decides, recording each access review as
// "verb resource name".
type reviewServer struct {
	client *kubernetes.Clientset
	mu     sync.Mutex
	asked  []string
}

func (a *reviewServer) reviews() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.asked...)
}

// newReviewServer: alice may create, get and list experiments.
func newReviewServer(t *testing.T) *reviewServer {
	return newReviewServerAllowing(t, func(user string, ra *authorizationv1.ResourceAttributes) bool {
		return user == "alice" && ra.Verb != auth.VerbDelete
	})
}

func newReviewServerAllowing(t *testing.T, allow func(user string, ra *authorizationv1.ResourceAttributes) bool) *reviewServer {
	a := &reviewServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		var tr authenticationv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if tr.Spec.Token == "good" {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "alice"}, Audiences: []string{"gmini"}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(tr)
	})
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/subjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		var sar authorizationv1.SubjectAccessReview
		if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ra := sar.Spec.ResourceAttributes
		a.mu.Lock()
		a.asked = append(a.asked, ra.Verb+" "+ra.Resource+" "+ra.Name)
		a.mu.Unlock()
		sar.Status.Allowed = allow(sar.Spec.User, ra)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sar)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	a.client = client
	return a
}
