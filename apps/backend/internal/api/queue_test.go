package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// stubQueues has the LocalQueues team-a and team-b; def is the default.
// loading answers as before the LocalQueues are listed.
type stubQueues struct {
	def     string
	loading bool
}

func (q stubQueues) Resolve(_ context.Context, requested string) (string, error) {
	name := requested
	if name == "" {
		name = q.def
	}
	switch {
	case name == "":
		return "", nil
	case q.loading:
		return "", failure.New(failure.Unavailable, "the LocalQueues of namespace %s are not loaded yet; retry", ns)
	case name != "team-a" && name != "team-b":
		return "", failure.New(failure.Invalid, "queue %q does not exist in namespace %s: its queues are team-a, team-b", name, ns)
	}
	return name, nil
}

func (q stubQueues) Describe(_ context.Context, name string, _ types.UID, queued bool) *wire.Queue {
	out := &wire.Queue{Name: name, ClusterQueue: "shared"}
	if queued {
		pos := int32(4)
		out.Position, out.Reason = &pos, "insufficient unused quota"
	}
	return out
}

// newQueueReviewServer: alice may create experiments and use queue
// team-a, not team-b.
func newQueueReviewServer(t *testing.T) *reviewServer {
	return newReviewServerAllowing(t, func(_ string, ra *authorizationv1.ResourceAttributes) bool {
		return ra.Verb == auth.VerbCreate || ra.Verb == auth.VerbUse && ra.Name == "team-a"
	})
}

// queueFixture is the handler with history, queues, and optionally auth.
func queueFixture(t *testing.T, q experiments.Queues, reviewer *auth.Reviewer) (*fixture, history.Store) {
	t.Helper()
	gin.SetMode(gin.TestMode)
	client := fake.NewClientset()
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m := metrics.New()
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: template.Static{Template: testTemplate()}, Hold: true},
			Live:    &lifecycle.Store{Client: client, Namespace: ns, Queues: q},
			History: store,
			Queues:  q,
		},
		Metrics: m,
		Logger:  slog.New(slog.DiscardHandler),
		Ready:   func(context.Context) error { return nil },
		Auth:    reviewer,
	})
	return &fixture{client: client, handler: h, metrics: m}, store
}

func (f *fixture) postAs(token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/experiment", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// A POST whose queue cannot be used is refused before anything happens:
// no Job, no claim in the history (a fixed retry is a new submission).
func TestCreateExperimentQueueRefused(t *testing.T) {
	for _, tt := range []struct {
		name       string
		queues     experiments.Queues
		withAuth   bool
		body       string
		wantCode   int
		wantMsg    string
		wantRetry  bool
		wantQueue  string // of the Job made, for a 201
		wantReview []string
	}{
		{name: "unknown queue", queues: stubQueues{}, body: `{"experiment": {"id": "e1"}, "queue": "team-z"}`,
			wantCode: http.StatusBadRequest, wantMsg: `queue "team-z" does not exist in namespace gmini-test: its queues are team-a, team-b`},
		{name: "queues not enabled", body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`,
			wantCode: http.StatusBadRequest, wantMsg: "queues are not enabled in namespace gmini-test"},
		{name: "not a queue name", queues: stubQueues{}, body: `{"experiment": {"id": "e1"}, "queue": "Team A"}`,
			wantCode: http.StatusBadRequest, wantMsg: "not a valid queue name"},
		{name: "queues not loaded", queues: stubQueues{loading: true}, body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`,
			wantCode: http.StatusServiceUnavailable, wantMsg: "not loaded yet", wantRetry: true},
		{name: "a queue the caller may use", queues: stubQueues{}, withAuth: true, body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`,
			wantCode: http.StatusCreated, wantQueue: "team-a", wantReview: []string{"create experiments ", "use queues team-a"}},
		{name: "a queue the caller may not use", queues: stubQueues{}, withAuth: true, body: `{"experiment": {"id": "e1"}, "queue": "team-b"}`,
			wantCode: http.StatusForbidden, wantMsg: `user "alice" may not use queue "team-b" (queues.gmini.dev) in namespace gmini-test`,
			wantReview: []string{"create experiments ", "use queues team-b"}},
		{name: "the default queue needs use too", queues: stubQueues{def: "team-b"}, withAuth: true, body: `{"experiment": {"id": "e1"}}`,
			wantCode: http.StatusForbidden, wantMsg: `may not use queue "team-b"`, wantReview: []string{"create experiments ", "use queues team-b"}},
		{name: "no queue, no second review", queues: stubQueues{}, withAuth: true, body: `{"experiment": {"id": "e1"}}`,
			wantCode: http.StatusCreated, wantReview: []string{"create experiments "}},
		{name: "an unknown queue is a 400 before any use review", queues: stubQueues{}, withAuth: true, body: `{"experiment": {"id": "e1"}, "queue": "team-z"}`,
			wantCode: http.StatusBadRequest, wantMsg: `queue "team-z" does not exist`, wantReview: []string{"create experiments "}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var reviewer *auth.Reviewer
			var reviews *reviewServer
			if tt.withAuth {
				reviews = newQueueReviewServer(t)
				var err error
				if reviewer, err = auth.New(reviews.client, ns, []string{"gmini"}); err != nil {
					t.Fatal(err)
				}
			}
			f, store := queueFixture(t, tt.queues, reviewer)
			rec := f.postAs("good", tt.body)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST = %d %s, want %d", rec.Code, rec.Body, tt.wantCode)
			}
			if tt.wantMsg != "" {
				if msg := errorMessage(t, rec); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message %q, want it to say %q", msg, tt.wantMsg)
				}
			}
			if got := rec.Header().Get("Retry-After") != ""; got != tt.wantRetry {
				t.Errorf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
			if reviews != nil {
				if d := cmp.Diff(tt.wantReview, reviews.reviews()); d != "" {
					t.Errorf("access reviews (-want +got):\n%s", d)
				}
			}
			jobs := f.jobs(t)
			if tt.wantCode != http.StatusCreated {
				if len(jobs) != 0 {
					t.Errorf("%d Jobs made for a refused POST", len(jobs))
				}
				if _, err := store.Get(context.Background(), "e1"); failure.KindOf(err) != failure.NotFound {
					t.Errorf("a refused POST claimed the experiment: %v", err)
				}
				return
			}
			if len(jobs) != 1 || jobs[0].Labels[jobspec.LabelQueue] != tt.wantQueue {
				t.Errorf("Jobs %+v; want one under queue %q", jobs, tt.wantQueue)
			}
		})
	}
}

// The status of a queued experiment says where it waits.
func TestQueuedStatus(t *testing.T) {
	f, _ := queueFixture(t, stubQueues{def: "team-a"}, nil)
	if rec := f.post(`{"experiment": {"id": "e1"}}`); rec.Code != http.StatusCreated {
		t.Fatalf("POST = %d %s", rec.Code, rec.Body)
	}
	rec := f.do(http.MethodGet, "/experiments/e1", "", "")
	var st wire.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("GET = %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"queue":{"name":"team-a","clusterQueue":"shared","position":4,"reason":"insufficient unused quota"}`) || st.State != "Queued" {
		t.Errorf("GET = %s; want Queued with its queue", rec.Body)
	}
	// With history the list is the records': the recorder has not run
	// here, so the record still says Submitted.
	rec = f.do(http.MethodGet, "/experiments?state=Submitted", "", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"e1"`) {
		t.Errorf("GET ?state=Submitted = %d %s", rec.Code, rec.Body)
	}
}
