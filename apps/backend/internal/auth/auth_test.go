package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// apiServer answers the two reviews over HTTP as the API server would,
// for one token, "good", of user alice, for the audience gmini; alice may
// create and get. (The reviewers speak to the API server's REST endpoints
// directly, so client-go's fake clientset cannot stand in for it.)
type apiServer struct {
	client             *kubernetes.Clientset
	tokenReviews, sars atomic.Int32

	mu                   sync.Mutex
	lastAudiences        []string
	lastVerb, lastName   string
	lastGroup, lastResNS string
}

func newAPIServer(t *testing.T) *apiServer {
	a := &apiServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		a.tokenReviews.Add(1)
		var tr authenticationv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		a.lastAudiences = tr.Spec.Audiences
		a.mu.Unlock()
		ok := tr.Spec.Token == "good" && slices.Contains(tr.Spec.Audiences, "gmini")
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: ok}
		if ok {
			tr.Status.User = authenticationv1.UserInfo{Username: "alice", Groups: []string{"team"}}
			tr.Status.Audiences = []string{"gmini"}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(tr)
	})
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/subjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		a.sars.Add(1)
		var sar authorizationv1.SubjectAccessReview
		if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ra := sar.Spec.ResourceAttributes
		a.mu.Lock()
		a.lastVerb, a.lastName, a.lastGroup, a.lastResNS = ra.Verb, ra.Name, ra.Group+"/"+ra.Resource, ra.Namespace
		a.mu.Unlock()
		sar.Status.Allowed = sar.Spec.User == "alice" && (ra.Verb == VerbCreate || ra.Verb == VerbGet ||
			ra.Verb == VerbUse && ra.Resource == QueueResource && ra.Name == "team-a")
		if !sar.Status.Allowed {
			sar.Status.Reason = "no RBAC policy matched"
		}
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

func TestCheck(t *testing.T) {
	api := newAPIServer(t)
	v, err := New(api.client, "gmini", []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header, verb, id string
		wantKind               failure.Kind
		wantMsg                string
	}{
		{"no token", "", VerbCreate, "", failure.Unauthenticated, "authentication required"},
		{"not a bearer token", "Basic YWxpY2U6cHc=", VerbCreate, "", failure.Unauthenticated, "authentication required"},
		{"unknown token", "Bearer bad", VerbCreate, "", failure.Unauthenticated, "authentication required"},
		{"allowed create", "Bearer good", VerbCreate, "", "", ""},
		{"allowed get", "Bearer good", VerbGet, "e1", "", ""},
		{"denied delete", "Bearer good", VerbDelete, "e1", failure.Forbidden, `user "alice" may not delete experiment "e1" (experiments.gmini.dev) in namespace gmini: no RBAC policy matched; bind the ClusterRole gmini-canceller, or another role that grants delete on experiments.gmini.dev`},
		{"denied list", "Bearer good", VerbList, "", failure.Forbidden, `user "alice" may not list experiments.gmini.dev in namespace gmini: no RBAC policy matched; bind the ClusterRole gmini-viewer,`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/experiments", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			u, err := v.Check(r, tt.verb, tt.id)
			if tt.wantKind != "" {
				if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("Check = %v (kind %q), want %s saying %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
				}
				return
			}
			if err != nil || u.GetName() != "alice" {
				t.Fatalf("Check = %v, %v; want alice", u, err)
			}
			if api.lastGroup != "gmini.dev/experiments" || api.lastResNS != "gmini" || api.lastVerb != tt.verb || api.lastName != tt.id {
				t.Errorf("access review asked %s %s %q in %s", api.lastVerb, api.lastGroup, api.lastName, api.lastResNS)
			}
		})
	}
	// The token review asks for gmini's audience: a token for the API
	// server itself must not pass.
	if !slices.Equal(api.lastAudiences, []string{"gmini"}) {
		t.Errorf("token review audiences = %v, want [gmini]", api.lastAudiences)
	}
}

// The reviews are cached: a client's repeated requests cost one review of
// each kind, not one per request.
func TestReviewsAreCached(t *testing.T) {
	api := newAPIServer(t)
	v, err := New(api.client, "gmini", []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		r := httptest.NewRequest("POST", "/experiment", nil)
		r.Header.Set("Authorization", "Bearer good")
		if _, err := v.Check(r, VerbCreate, ""); err != nil {
			t.Fatal(err)
		}
	}
	if tr, sar := api.tokenReviews.Load(), api.sars.Load(); tr != 1 || sar != 1 {
		t.Errorf("50 requests made %d token reviews and %d access reviews, want 1 and 1", tr, sar)
	}
}

// TestRolesGrantWhatForbiddenNames: the role a 403 advises exists in
// k8s/auth/roles.yaml and grants the verb that was refused, and every verb
// has one.
func TestRolesGrantWhatForbiddenNames(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "k8s", "auth", "roles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	grants := map[string][]string{} // role → verbs on experiments.gmini.dev
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		var role rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict([]byte(doc), &role); err != nil {
			t.Fatalf("roles.yaml: %v", err)
		}
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, Group) && slices.Contains(r.Resources, Resource) {
				grants[role.Name] = append(grants[role.Name], r.Verbs...)
			}
		}
	}
	for _, verb := range []string{VerbCreate, VerbGet, VerbList, VerbDelete} {
		role, ok := roleFor[verb]
		if !ok {
			t.Errorf("no role named for %s", verb)
			continue
		}
		if !slices.Contains(grants[role], verb) {
			t.Errorf("a refused %s advises %s, which grants %v in roles.yaml", verb, role, grants[role])
		}
		// The smallest role: no other shipped role grants the verb with
		// fewer verbs.
		for other, verbs := range grants {
			if slices.Contains(verbs, verb) && len(verbs) < len(grants[role]) {
				t.Errorf("a refused %s advises %s (%v), but %s grants it with less (%v)", verb, role, grants[role], other, verbs)
			}
		}
	}
}
