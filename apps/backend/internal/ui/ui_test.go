package ui_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/internal/ui"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const ns = "gmini-test"

// env is the backend's whole handler, the JSON API with the status page
// mounted, over a fake clientset and a SQLite history.
type env struct {
	handler http.Handler
	kube    *fake.Clientset
	store   history.Store
	log     *bytes.Buffer
}

func newEnv(t *testing.T, reviewer *auth.Reviewer) *env {
	t.Helper()
	return newEnvWithQueues(t, reviewer, nil)
}

// newEnvWithQueues is newEnv whose experiments may wait in queues.
func newEnvWithQueues(t *testing.T, reviewer *auth.Reviewer, queues experiments.Queues) *env {
	t.Helper()
	gin.SetMode(gin.TestMode)
	kube := fake.NewClientset()
	store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever,
		Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
	}}}}
	svc := &experiments.Service{
		Spawner: &spawn.Spawner{Client: kube, Namespace: ns, Templates: template.Static{Template: tmpl}, Hold: true},
		Live:    &lifecycle.Store{Client: kube, Namespace: ns},
		History: store,
	}
	if queues != nil {
		svc.Queues, svc.Live.Queues = queues, queues
	}
	logBuf := &bytes.Buffer{}
	log := slog.New(slog.NewJSONHandler(logBuf, nil))
	// The status streams the page's script reads, as the backend serves
	// them.
	hub := events.NewHub(store, events.Options{Poll: 20 * time.Millisecond, Log: log})
	go hub.Run(t.Context())
	h := api.NewHandler(api.Config{
		Events:      hub,
		History:     store,
		Experiments: svc,
		Metrics:     metrics.New(),
		Logger:      log,
		Ready:       func(context.Context) error { return nil },
		Auth:        reviewer,
		// A set's items one at a time: they list in their order.
		SetConcurrency: 1,
		UI: ui.New(ui.Config{
			Experiments: svc,
			Sets:        &sets.Service{Experiments: svc},
			Auth:        reviewer,
			Logger:      log,
		}),
	})
	return &env{handler: h, kube: kube, store: store, log: logBuf}
}

// request is one request to the handler.
type request struct {
	method, path string
	body         string
	header       map[string]string
	cookies      []*http.Cookie
	tls          bool
}

func (e *env) do(t *testing.T, r request) *httptest.ResponseRecorder {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	req := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	for _, c := range r.cookies {
		req.AddCookie(c)
	}
	if r.tls {
		req.TLS = &tls.ConnectionState{}
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

func (e *env) get(t *testing.T, path string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	t.Helper()
	return e.do(t, request{path: path, cookies: cookies})
}

// submit POSTs experiments through the API, as "good" when the backend
// authenticates, one after the other so that they list newest last.
func (e *env) submit(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		rec := e.do(t, request{method: http.MethodPost, path: "/experiment", body: fmt.Sprintf(`{"experiment": {"id": %q}}`, id),
			header: map[string]string{"Content-Type": "application/json", "Authorization": "Bearer good"}})
		if rec.Code != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", id, rec.Code, rec.Body)
		}
	}
}

// record moves an experiment's record to a state, as the recorder would.
func (e *env) record(t *testing.T, rec history.Record) {
	t.Helper()
	if err := e.store.Update(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
}

// rowIDs are the experiments a list page shows, in its order.
func rowIDs(body string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`<tr data-id="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// link is the href of the first <a> with rel or text, unescaped.
func link(t *testing.T, body, text string) string {
	t.Helper()
	m := regexp.MustCompile(`<a href="([^"]*)"[^>]*>` + regexp.QuoteMeta(text) + `</a>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link %q in\n%s", text, body)
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`data-csrf="([^"]*)"`).FindStringSubmatch(body)
	if m == nil || m[1] == "" {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	return m[1]
}

func cookieOf(rec *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestListPage(t *testing.T) {
	e := newEnv(t, nil)
	e.submit(t, "e1", "e2", "e3", "e4", "e5")
	e.record(t, history.Record{ID: "e2", State: history.StateRunning})
	e.record(t, history.Record{ID: "e4", State: history.StateRunning})
	e.record(t, history.Record{ID: "e5", State: history.StateSucceeded})
	rec := e.do(t, request{method: http.MethodPost, path: "/experiment-sets", body: `{"id": "sweep", "items": [{"experiment": {"id": "s1"}}, {"experiment": {"id": "s2"}}]}`,
		header: map[string]string{"Content-Type": "application/json"}})
	if rec.Code != http.StatusOK {
		t.Fatalf("POST set = %d %s", rec.Code, rec.Body)
	}

	tests := []struct {
		name     string
		path     string
		wantCode int
		wantIDs  []string
		want     []string // substrings of the body
	}{
		{name: "newest first", path: "/ui/", wantCode: 200, wantIDs: []string{"s2", "s1", "e5", "e4", "e3", "e2", "e1"},
			want: []string{`data-events="./../events?after=`, `<a href="experiments/e1">e1</a>`, `<a href="sets/sweep">sweep</a>`}},
		{name: "by state", path: "/ui/?state=Running", wantCode: 200, wantIDs: []string{"e4", "e2"},
			want: []string{`<option selected>Running</option>`, `data-state="Running"`}},
		{name: "by set", path: "/ui/?set=sweep", wantCode: 200, wantIDs: []string{"s2", "s1"},
			want: []string{`&amp;set=sweep"`, `value="sweep"`}},
		{name: "by set and state, none", path: "/ui/?set=sweep&state=Failed", wantCode: 200, want: []string{"No experiments in state Failed in set sweep."}},
		{name: "a set nobody submitted", path: "/ui/?set=nobody", wantCode: 200, want: []string{`experiment set &#34;nobody&#34; not found`}},
		{name: "finished rows have no cancel button", path: "/ui/?state=Succeeded", wantCode: 200, wantIDs: []string{"e5"}},
		{name: "unknown state", path: "/ui/?state=Sleeping", wantCode: 400, want: []string{"state &#34;Sleeping&#34; is not one of"}},
		{name: "bad limit", path: "/ui/?limit=0", wantCode: 400, want: []string{"limit &#34;0&#34;: want 1 to 1000"}},
		{name: "bad set", path: "/ui/?set=a/b", wantCode: 400, want: []string{"400 Bad Request"}},
		{name: "bad continue", path: "/ui/?continue=garbage", wantCode: 400},
		{name: "no such page", path: "/ui/nothing/here", wantCode: 404, want: []string{"no such page", `href="../"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.get(t, tt.path)
			body := rec.Body.String()
			if rec.Code != tt.wantCode {
				t.Fatalf("GET %s = %d, want %d\n%s", tt.path, rec.Code, tt.wantCode, body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if tt.wantIDs != nil || tt.wantCode == 200 {
				if got := rowIDs(body); !slices.Equal(got, tt.wantIDs) {
					t.Errorf("rows %v, want %v", got, tt.wantIDs)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q:\n%s", w, body)
				}
			}
			if tt.name == "finished rows have no cancel button" && strings.Contains(body, `class="cancel"`) {
				t.Error("a finished experiment has a cancel button")
			}
		})
	}
}

// Pages follow the store's continue tokens, keeping the filters.
func TestListPaging(t *testing.T) {
	e := newEnv(t, nil)
	e.submit(t, "e1", "e2", "e3", "e4", "e5")
	for _, id := range []string{"e1", "e2", "e4", "e5"} {
		e.record(t, history.Record{ID: id, State: history.StateRunning})
	}
	var got [][]string
	path := "/ui/?state=Running&limit=3"
	for range 5 {
		rec := e.get(t, path)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, rec.Code, rec.Body)
		}
		body := rec.Body.String()
		got = append(got, rowIDs(body))
		if !strings.Contains(body, `rel="next"`) {
			if newest := link(t, body, "Newest"); newest != "?limit=3&state=Running" {
				t.Errorf("Newest links to %q", newest)
			}
			break
		}
		next := link(t, body, "Next page")
		u, err := url.Parse(next)
		if err != nil || u.Path != "" || u.Query().Get("state") != "Running" || u.Query().Get("limit") != "3" || u.Query().Get("continue") == "" {
			t.Fatalf("next page link %q: want the same filters and a continue token", next)
		}
		path = "/ui/" + next
	}
	want := [][]string{{"e5", "e4", "e2"}, {"e1"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages %v, want %v", got, want)
	}
}

func TestExperimentPage(t *testing.T) {
	e := newEnv(t, nil)
	e.submit(t, "e1")
	tests := []struct {
		name     string
		path     string
		wantCode int
		want     []string
	}{
		{name: "fields, streams and cancel", path: "/ui/experiments/e1", wantCode: 200, want: []string{
			`<h1>Experiment <code>e1</code></h1>`,
			`data-events="../../experiments/e1/events"`,
			`data-logs="../../experiments/e1/logs?follow=true"`,
			`<form method="post" action="e1/cancel" class="cancel" id="cancel"`,
			`<code>gmini-test/` + jobspec.JobName("e1") + `</code>`,
			`src="../static/ui.js?v=`,
		}},
		{name: "unknown", path: "/ui/experiments/nope", wantCode: 404, want: []string{"experiment &#34;nope&#34; not found"}},
		{name: "invalid ID", path: "/ui/experiments/-x", wantCode: 400, want: []string{"&#34;-x&#34; must start with a letter or a digit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.get(t, tt.path)
			body := rec.Body.String()
			if rec.Code != tt.wantCode {
				t.Fatalf("GET %s = %d, want %d\n%s", tt.path, rec.Code, tt.wantCode, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q:\n%s", w, body)
				}
			}
		})
	}
}

func TestSetPage(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do(t, request{method: http.MethodPost, path: "/experiment-sets", body: `{"id": "sweep", "items": [{"experiment": {"id": "a"}}, {"experiment": {"id": "b"}}, {"experiment": {"id": "c"}}, {"experiment": {"id": "d"}}]}`,
		header: map[string]string{"Content-Type": "application/json"}})
	if rec.Code != http.StatusOK {
		t.Fatalf("POST set = %d %s", rec.Code, rec.Body)
	}
	if _, err := e.store.Finish(context.Background(), history.Record{ID: "a", State: history.StateSucceeded}, nil); err != nil {
		t.Fatal(err)
	}
	e.record(t, history.Record{ID: "b", State: history.StateRunning})

	rec = e.get(t, "/ui/sets/sweep")
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("GET = %d %s", rec.Code, body)
	}
	for _, w := range []string{
		`<span id="finished">1</span> of <span id="total">4</span> finished`,
		`<tr data-state="Submitted"><th><span class="badge state-Submitted">Submitted</span></th><td class="count">2</td></tr>`,
		`<tr data-state="Running"><th><span class="badge state-Running">Running</span></th><td class="count">1</td></tr>`,
		`<tr data-state="Succeeded"><th><span class="badge state-Succeeded">Succeeded</span></th><td class="count">1</td></tr>`,
		`data-events="../../events?after=`,
		`&amp;set=sweep"`,
		`data-status="../../experiment-sets/sweep?limit=1"`,
		`<a href="../experiments/a">a</a>`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q:\n%s", w, body)
		}
	}
	if got := rowIDs(body); !slices.Equal(got, []string{"d", "c", "b", "a"}) {
		t.Errorf("rows %v", got)
	}
	if rec := e.get(t, "/ui/sets/sweep?state=Running"); !slices.Equal(rowIDs(rec.Body.String()), []string{"b"}) {
		t.Errorf("rows by state %v", rowIDs(rec.Body.String()))
	}
	if rec := e.get(t, "/ui/sets/nobody"); rec.Code != http.StatusNotFound {
		t.Errorf("an unknown set = %d", rec.Code)
	}
}

// placedQueues knows every queue and places every waiting Job first.
type placedQueues struct{}

func (placedQueues) Resolve(_ context.Context, requested string) (string, error) {
	return requested, nil
}

func (placedQueues) Describe(_ context.Context, name string, _ types.UID, queued bool) *wire.Queue {
	q := &wire.Queue{Name: name, ClusterQueue: "cq"}
	if queued {
		q.Position = new(int32)
	}
	return q
}

// A set's items read from their records carry no queue; the page shows the
// place of those that wait, from their Jobs.
func TestSetPageShowsPlacesInTheQueue(t *testing.T) {
	e := newEnvWithQueues(t, nil, placedQueues{})
	rec := e.do(t, request{method: http.MethodPost, path: "/experiment-sets",
		body:   `{"id": "q", "items": [{"experiment": {"id": "w"}, "queue": "team-a"}, {"experiment": {"id": "r"}, "queue": "team-a"}]}`,
		header: map[string]string{"Content-Type": "application/json"}})
	if rec.Code != http.StatusOK {
		t.Fatalf("POST set = %d %s", rec.Code, rec.Body)
	}
	e.record(t, history.Record{ID: "w", State: history.StateQueued})
	e.record(t, history.Record{ID: "r", State: history.StateRunning})
	body := e.get(t, "/ui/sets/q").Body.String()
	for _, want := range []string{
		`<tr data-id="w" data-state="Queued">`,
		`<td class="queue">team-a</td>
      <td class="position">1</td>`,
		`<tr data-id="r" data-state="Running">`,
		`<td class="queue"></td>
      <td class="position"></td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
}

// What an experiment says about itself reaches the page as text, never as
// markup: html/template escapes it in each context.
func TestHostileTextIsEscaped(t *testing.T) {
	e := newEnv(t, nil)
	e.submit(t, "e1")
	const hostile = `"><script>alert(1)</script><img src=x onerror=alert(2)>`
	e.record(t, history.Record{ID: "e1", State: history.StateRunning, Reason: hostile, Message: hostile})
	// The experiment's page reads the record once its Job is gone.
	if err := e.kube.BatchV1().Jobs(ns).Delete(context.Background(), jobspec.JobName("e1"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/ui/", "/ui/experiments/e1", "/ui/experiments/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/ui/?state=%3Cscript%3Ealert"} {
		rec := e.get(t, path)
		body := rec.Body.String()
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
			t.Errorf("GET %s (%d) carries the markup unescaped:\n%s", path, rec.Code, body)
		}
		if !strings.Contains(body, "&lt;script&gt;alert") {
			t.Errorf("GET %s (%d) lacks the escaped text:\n%s", path, rec.Code, body)
		}
	}
}

func TestRedirectsAndAssets(t *testing.T) {
	e := newEnv(t, nil)
	for _, path := range []string{"/", "/ui"} {
		rec := e.get(t, path)
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != "ui/" {
			t.Errorf("GET %s = %d Location %q, want 302 to the relative ui/", path, rec.Code, rec.Header().Get("Location"))
		}
	}
	page := e.get(t, "/ui/").Body.String()
	m := regexp.MustCompile(`src="\./(static/ui\.js\?v=[0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no versioned script in\n%s", page)
	}
	rec := e.get(t, "/ui/"+m[1])
	if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), "javascript") ||
		!strings.Contains(rec.Header().Get("Cache-Control"), "immutable") || !strings.Contains(rec.Body.String(), "EventSource") {
		t.Errorf("GET the script = %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"))
	}
	if rec := e.get(t, "/ui/static/ui.js?v=old"); rec.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("an old version is cached: %q", rec.Header().Get("Cache-Control"))
	}
	if rec := e.get(t, "/ui/static/nothing.js"); rec.Code != http.StatusNotFound {
		t.Errorf("an unknown asset = %d", rec.Code)
	}
}

// Without authentication, the cancel button still proves it comes from
// the page: a session cookie, its CSRF token, and a same-origin request.
func TestCancelWithoutAuth(t *testing.T) {
	e := newEnv(t, nil)
	e.submit(t, "e1", "e2", "e3", "e4")
	page := e.get(t, "/ui/")
	session := cookieOf(page, "gmini_session")
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict", session)
	}
	csrf := csrfOf(t, page.Body.String())
	form := "application/x-www-form-urlencoded"

	tests := []struct {
		name     string
		id       string
		req      request
		wantCode int
		wantLoc  string
		gone     bool
	}{
		{name: "no CSRF token", id: "e1", req: request{cookies: []*http.Cookie{session}}, wantCode: 403},
		{name: "a wrong CSRF token", id: "e1", req: request{body: "csrf=x", cookies: []*http.Cookie{session}}, wantCode: 403},
		{name: "no session", id: "e1", req: request{body: "csrf=" + csrf}, wantCode: 403},
		{name: "cross-site, by Sec-Fetch-Site", id: "e1", req: request{body: "csrf=" + csrf, cookies: []*http.Cookie{session},
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, wantCode: 403},
		{name: "cross-site, by Origin", id: "e1", req: request{body: "csrf=" + csrf, cookies: []*http.Cookie{session},
			header: map[string]string{"Origin": "https://evil.example"}}, wantCode: 403},
		{name: "the form", id: "e1", req: request{body: "csrf=" + csrf, cookies: []*http.Cookie{session},
			header: map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}}, wantCode: 303, wantLoc: "../e1", gone: true},
		{name: "the script", id: "e2", req: request{cookies: []*http.Cookie{session},
			header: map[string]string{"X-CSRF-Token": csrf, "Accept": "application/json", "Sec-Fetch-Site": "same-origin"}}, wantCode: 200, gone: true},
		{name: "the script, refused as JSON", id: "e3", req: request{cookies: []*http.Cookie{session},
			header: map[string]string{"Accept": "application/json"}}, wantCode: 403},
		{name: "unknown experiment", id: "nope", req: request{body: "csrf=" + csrf, cookies: []*http.Cookie{session}}, wantCode: 404, gone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			r.method, r.path = http.MethodPost, "/ui/experiments/"+tt.id+"/cancel"
			if r.header == nil {
				r.header = map[string]string{}
			}
			r.header["Content-Type"] = form
			rec := e.do(t, r)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST = %d, want %d\n%s", rec.Code, tt.wantCode, rec.Body)
			}
			if loc := rec.Header().Get("Location"); loc != tt.wantLoc {
				t.Errorf("Location %q, want %q", loc, tt.wantLoc)
			}
			if strings.Contains(r.header["Accept"], "json") {
				var v map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
					t.Errorf("the script's answer is not JSON: %s", rec.Body)
				}
			}
			_, err := e.kube.BatchV1().Jobs(ns).Get(context.Background(), jobspec.JobName(tt.id), metav1.GetOptions{})
			if gone := err != nil; gone != tt.gone {
				t.Errorf("job gone: %v, want %v", gone, tt.gone)
			}
		})
	}
}

// reviewServer answers TokenReviews and SubjectAccessReviews as the API
// server would: "good" is alice, who may do anything with experiments;
// "viewer" is bob, who may get and list them; "nothing" is carol, who may
// do nothing.
func reviewServer(t *testing.T) kubernetes.Interface {
	t.Helper()
	users := map[string]string{"good": "alice", "viewer": "bob", "nothing": "carol"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", func(w http.ResponseWriter, r *http.Request) {
		var tr authenticationv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if u, ok := users[tr.Spec.Token]; ok && slices.Contains(tr.Spec.Audiences, "gmini") {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: u}, Audiences: []string{"gmini"}}
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
		sar.Status.Allowed = ra.Group == auth.Group && (sar.Spec.User == "alice" ||
			sar.Spec.User == "bob" && (ra.Verb == auth.VerbGet || ra.Verb == auth.VerbList))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sar)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func newAuthEnv(t *testing.T) *env {
	t.Helper()
	reviewer, err := auth.New(reviewServer(t), ns, []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, reviewer)
}

func tokenCookie(token string) *http.Cookie { return &http.Cookie{Name: auth.CookieName, Value: token} }

// With --auth kubernetes: a page without a token is the sign-in form, the
// cookie is reviewed on every request, and the API takes it for reads
// only.
func TestAuthPages(t *testing.T) {
	e := newAuthEnv(t)
	e.submit(t, "e1")
	tests := []struct {
		name     string
		req      request
		wantCode int
		want     string
		// clears: the answer removes the token cookie.
		clears bool
	}{
		{name: "a page without a token is the sign-in form", req: request{path: "/ui/"}, wantCode: 401, want: `<form method="post" action="./login" class="login" id="login">`},
		{name: "the form comes back to the page asked for", req: request{path: "/ui/experiments/e1?x=1"}, wantCode: 401, want: `<input type="hidden" name="next" value="experiments/e1?x=1">`},
		{name: "a page with the cookie", req: request{path: "/ui/", cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 200, want: `<span class="user" title="signed in as">alice</span>`},
		{name: "a page with a token the API server refuses", req: request{path: "/ui/", cookies: []*http.Cookie{tokenCookie("expired")}}, wantCode: 401, want: "The token was not accepted", clears: true},
		{name: "a page the user may not see", req: request{path: "/ui/experiments/e1", cookies: []*http.Cookie{tokenCookie("nothing")}}, wantCode: 403,
			want: `user &#34;carol&#34; may not get experiment &#34;e1&#34;`},
		{name: "a viewer sees an experiment", req: request{path: "/ui/experiments/e1", cookies: []*http.Cookie{tokenCookie("viewer")}}, wantCode: 200, want: "bob"},
		{name: "the API reads with the cookie", req: request{path: "/experiments", cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 200, want: `"id":"e1"`},
		{name: "the API reads an experiment with the cookie", req: request{path: "/experiments/e1", cookies: []*http.Cookie{tokenCookie("viewer")}}, wantCode: 200},
		{name: "the API without cookie or token", req: request{path: "/experiments"}, wantCode: 401, want: "authentication required"},
		{name: "the API with a refused cookie", req: request{path: "/experiments", cookies: []*http.Cookie{tokenCookie("expired")}}, wantCode: 401},
		{name: "a header wins over the cookie", req: request{path: "/experiments", cookies: []*http.Cookie{tokenCookie("good")}, header: map[string]string{"Authorization": "Bearer expired"}}, wantCode: 401},
		{name: "the API never cancels by cookie", req: request{method: http.MethodDelete, path: "/experiments/e1", cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 401},
		{name: "the API never submits by cookie", req: request{method: http.MethodPost, path: "/experiment", body: `{"experiment": {"id": "e9"}}`,
			header: map[string]string{"Content-Type": "application/json"}, cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 401},
		{name: "the API never cancels a set by cookie", req: request{method: http.MethodDelete, path: "/experiment-sets/s", cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do(t, tt.req)
			if rec.Code != tt.wantCode {
				t.Fatalf("%s %s = %d, want %d\n%s", tt.req.method, tt.req.path, rec.Code, tt.wantCode, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("answer lacks %q:\n%s", tt.want, rec.Body)
			}
			c := cookieOf(rec, auth.CookieName)
			if cleared := c != nil && c.MaxAge < 0; cleared != tt.clears {
				t.Errorf("cookie cleared: %v, want %v (%v)", cleared, tt.clears, c)
			}
		})
	}
	if _, err := e.kube.BatchV1().Jobs(ns).Get(context.Background(), jobspec.JobName("e1"), metav1.GetOptions{}); err != nil {
		t.Errorf("the cookie-only DELETE removed the job: %v", err)
	}
}

func TestSignInAndOut(t *testing.T) {
	e := newAuthEnv(t)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	withHeader := func(extra map[string]string) map[string]string {
		h := map[string]string{}
		for k, v := range form {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	tests := []struct {
		name       string
		req        request
		wantCode   int
		wantLoc    string
		wantCookie bool
		want       string
	}{
		{name: "a good token", req: request{body: "token=good&next=experiments%2Fe1%3Fx%3D1", header: form}, wantCode: 303, wantLoc: "experiments/e1?x=1", wantCookie: true},
		{name: "pasted with Bearer", req: request{body: "token=Bearer+good", header: form}, wantCode: 303, wantLoc: "./", wantCookie: true},
		{name: "a token that may see nothing still signs in", req: request{body: "token=viewer", header: form}, wantCode: 303, wantLoc: "./", wantCookie: true},
		{name: "over TLS the cookie is Secure", req: request{body: "token=good", header: form, tls: true}, wantCode: 303, wantLoc: "./", wantCookie: true},
		{name: "next may not leave the page", req: request{body: "token=good&next=%2F%2Fevil.example%2F", header: form}, wantCode: 303, wantLoc: "./", wantCookie: true},
		{name: "next may not be absolute", req: request{body: "token=good&next=https%3A%2F%2Fevil.example%2F", header: form}, wantCode: 303, wantLoc: "./", wantCookie: true},
		{name: "a refused token", req: request{body: "token=expired", header: form}, wantCode: 401, want: "did not accept this token"},
		{name: "not a token", req: request{body: "token=a+b%3Bc", header: form}, wantCode: 400, want: "That is not a token"},
		{name: "no token", req: request{body: "", header: form}, wantCode: 400},
		{name: "from another site", req: request{body: "token=good", header: withHeader(map[string]string{"Sec-Fetch-Site": "cross-site"})}, wantCode: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			r.method, r.path = http.MethodPost, "/ui/login"
			rec := e.do(t, r)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST /ui/login = %d, want %d\n%s", rec.Code, tt.wantCode, rec.Body)
			}
			if loc := rec.Header().Get("Location"); loc != tt.wantLoc {
				t.Errorf("Location %q, want %q", loc, tt.wantLoc)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("answer lacks %q:\n%s", tt.want, rec.Body)
			}
			c := cookieOf(rec, auth.CookieName)
			if (c != nil) != tt.wantCookie {
				t.Fatalf("cookie %v, want one: %v", c, tt.wantCookie)
			}
			if c == nil {
				return
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure != r.tls || c.MaxAge != 0 {
				t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, Secure only over TLS, for the session", c)
			}
		})
	}

	// Signing out clears the cookie, with the page's CSRF token only.
	page := e.get(t, "/ui/", tokenCookie("good"))
	csrf := csrfOf(t, page.Body.String())
	if rec := e.do(t, request{method: http.MethodPost, path: "/ui/logout", header: form, cookies: []*http.Cookie{tokenCookie("good")}}); rec.Code != http.StatusForbidden {
		t.Errorf("sign out without the CSRF token = %d, want 403", rec.Code)
	}
	rec := e.do(t, request{method: http.MethodPost, path: "/ui/logout", body: "csrf=" + csrf, header: form, cookies: []*http.Cookie{tokenCookie("good")}})
	if c := cookieOf(rec, auth.CookieName); rec.Code != http.StatusSeeOther || c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("sign out = %d, cookie %v: want 303 and the cookie cleared", rec.Code, c)
	}

	// The token is never logged, whatever happened to it.
	for _, token := range []string{"good", "expired", "viewer"} {
		if strings.Contains(e.log.String(), `"`+token+`"`) || strings.Contains(e.log.String(), "Bearer "+token) {
			t.Errorf("the log holds the token %q:\n%s", token, e.log)
		}
	}
}

// With --auth kubernetes, cancel needs the cookie, the page's CSRF token,
// a same-origin request, and RBAC's delete.
func TestCancelWithAuth(t *testing.T) {
	e := newAuthEnv(t)
	e.submit(t, "e1", "e2")
	form := "application/x-www-form-urlencoded"
	csrfFor := func(token string) string {
		return csrfOf(t, e.get(t, "/ui/", tokenCookie(token)).Body.String())
	}
	alice, bob := csrfFor("good"), csrfFor("viewer")
	if alice == bob {
		t.Fatal("two sessions share a CSRF token")
	}
	tests := []struct {
		name     string
		req      request
		wantCode int
		want     string
		gone     bool
	}{
		{name: "no cookie", req: request{body: "csrf=" + alice}, wantCode: 403, want: "CSRF"},
		{name: "no CSRF token", req: request{cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 403, want: "CSRF"},
		{name: "another session's CSRF token", req: request{body: "csrf=" + bob, cookies: []*http.Cookie{tokenCookie("good")}}, wantCode: 403, want: "CSRF"},
		{name: "cross-site", req: request{body: "csrf=" + alice, cookies: []*http.Cookie{tokenCookie("good")},
			header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}, wantCode: 403, want: "cross-origin"},
		{name: "another origin", req: request{body: "csrf=" + alice, cookies: []*http.Cookie{tokenCookie("good")},
			header: map[string]string{"Origin": "https://evil.example"}}, wantCode: 403, want: "cross-origin"},
		{name: "a viewer may not cancel", req: request{body: "csrf=" + bob, cookies: []*http.Cookie{tokenCookie("viewer")}}, wantCode: 403, want: `user &#34;bob&#34; may not delete experiment &#34;e1&#34;`},
		{name: "alice cancels from the page", req: request{body: "csrf=" + alice, cookies: []*http.Cookie{tokenCookie("good")},
			header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}}, wantCode: 303, gone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			r.method, r.path = http.MethodPost, "/ui/experiments/e1/cancel"
			if r.header == nil {
				r.header = map[string]string{}
			}
			r.header["Content-Type"] = form
			rec := e.do(t, r)
			if rec.Code != tt.wantCode {
				t.Fatalf("POST = %d, want %d\n%s", rec.Code, tt.wantCode, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("answer lacks %q:\n%s", tt.want, rec.Body)
			}
			_, err := e.kube.BatchV1().Jobs(ns).Get(context.Background(), jobspec.JobName("e1"), metav1.GetOptions{})
			if gone := err != nil; gone != tt.gone {
				t.Errorf("job gone: %v, want %v", gone, tt.gone)
			}
		})
	}
	rec, err := e.store.Get(context.Background(), "e1")
	if err != nil || rec.State != history.StateCancelled && rec.State != history.StateSubmitted {
		t.Errorf("record after the cancel: %+v %v", rec, err)
	}
}

// The API's streams, which the page's EventSources read, take the cookie:
// the log follow answers as it would with the header.
func TestStreamsTakeTheCookie(t *testing.T) {
	e := newAuthEnv(t)
	e.submit(t, "e1")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/experiments/e1/logs?follow=true", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.AddCookie(tokenCookie("viewer"))
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req) // waits for a pod until ctx ends
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
		t.Errorf("follow with the cookie = %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var e401 wire.Error
	rec = e.get(t, "/experiments/e1/logs?follow=true")
	if err := json.Unmarshal(rec.Body.Bytes(), &e401); rec.Code != http.StatusUnauthorized || err != nil {
		t.Errorf("follow without = %d %s", rec.Code, rec.Body)
	}
}
