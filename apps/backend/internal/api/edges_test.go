package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

func TestCodesCoverEveryKind(t *testing.T) {
	t.Parallel()
	for _, k := range failure.Kinds() {
		if _, ok := codes[k]; !ok {
			t.Errorf("kind %q has no HTTP status in codes", k)
		}
	}
	if len(codes) != len(failure.Kinds()) {
		t.Errorf("codes has %d entries for %d kinds", len(codes), len(failure.Kinds()))
	}
}

// TestErrorsAreJSON: every 4xx and 5xx the handler answers is
// {"error": ...}, including the routing edges gin answers in HTML or
// net/http in plain text by default; probes answer HEAD like GET.
func TestErrorsAreJSON(t *testing.T) {
	t.Parallel()
	long := "/experiments/" + strings.Repeat("a", MaxRequestTarget)
	tests := []struct {
		name, method, path string
		wantCode           int
		wantMsg            string // "" for a 2xx
	}{
		{"HEAD /healthz", http.MethodHead, "/healthz", http.StatusOK, ""},
		{"HEAD /readyz", http.MethodHead, "/readyz", http.StatusOK, ""},
		{"trailing slash", http.MethodGet, "/experiments/", http.StatusNotFound, `no such route: GET "/experiments/"`},
		{"trailing slash on POST", http.MethodPost, "/experiment/", http.StatusNotFound, "no such route"},
		{"trailing slash on a probe", http.MethodGet, "/healthz/", http.StatusNotFound, "no such route"},
		{"wrong case", http.MethodGet, "/Experiments", http.StatusNotFound, "no such route"},
		{"unknown path", http.MethodGet, "/nope", http.StatusNotFound, "no such route"},
		{"HEAD on an API route", http.MethodHead, "/experiments", http.StatusMethodNotAllowed, "method HEAD is not allowed"},
		{"OPTIONS", http.MethodOptions, "/experiment", http.StatusMethodNotAllowed, "not allowed"},
		{"odd method", "M1", "/experiments/e1", http.StatusMethodNotAllowed, "method M1 is not allowed"},
		{"target just over the limit", http.MethodGet, long, http.StatusRequestURITooLong, "the request target is 8205 bytes; the limit is 8192"},
		{"long target on an unknown route", http.MethodGet, "/" + strings.Repeat("x", MaxRequestTarget), http.StatusRequestURITooLong, "the limit is 8192"},
		{"long query", http.MethodGet, "/healthz?q=" + strings.Repeat("x", MaxRequestTarget), http.StatusRequestURITooLong, "the limit is 8192"},
		{"long unknown path", http.MethodGet, "/" + strings.Repeat("x", 7000), http.StatusNotFound, `no such route: GET "/xxxxxxxxx`},
		{"long method", strings.Repeat("M", 7000), "/experiments/e1", http.StatusMethodNotAllowed, `method "MMMMMMMM`},
		{"long limit", http.MethodGet, "/experiments?limit=" + strings.Repeat("9", 7000), http.StatusBadRequest, `limit "99999999`},
		{"long state", http.MethodGet, "/experiments?state=" + strings.Repeat("S", 7000), http.StatusBadRequest, `state "SSSSSSSS`},
		{"long continue", http.MethodGet, "/experiments?continue=" + strings.Repeat("C", 7000), http.StatusBadRequest, `continue token "CCCCCCCC`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil, nil)
			rec := f.do(tt.method, tt.path, "", "")
			if rec.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantMsg == "" {
				return
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q", ct)
			}
			msg := errorMessage(t, rec)
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %.300q, want it to contain %q", msg, tt.wantMsg)
			}
			// A client's value is repeated only in part, however long.
			if len(msg) > 400 {
				t.Errorf("message is %d bytes long: %.300q", len(msg), msg)
			}
		})
	}
}

// TestServerEdges runs the handler in a real http.Server configured as the
// backend's: HEAD answers carry no body, a long target gets the JSON 414,
// and only a header block beyond MaxHeaderBytes gets net/http's plain-text
// 431 (the one documented exception).
func TestServerEdges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	srv := httptest.NewUnstartedServer(f.handler)
	srv.Config.MaxHeaderBytes = MaxHeaderBytes
	srv.Start()
	defer srv.Close()

	do := func(method, target string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if res, body := do(http.MethodHead, path); res.StatusCode != http.StatusOK || body != "" {
			t.Errorf("HEAD %s = %d %q, want 200 without a body", path, res.StatusCode, body)
		}
	}
	res, body := do(http.MethodGet, "/experiments/"+strings.Repeat("a", 16<<10))
	if res.StatusCode != http.StatusRequestURITooLong || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") ||
		!strings.Contains(body, `"error"`) {
		t.Errorf("16 KiB target = %d %s %q, want a JSON 414", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	res, _ = do(http.MethodGet, "/experiments/"+strings.Repeat("a", MaxHeaderBytes+8<<10))
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("target beyond MaxHeaderBytes = %d, want net/http's 431", res.StatusCode)
	}
}

// TestMethodLabelBounded: any token is a valid HTTP method; odd ones share
// the "other" series instead of adding their own.
func TestMethodLabelBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	f.do("M0", "/experiments", "", "")
	before := testutil.CollectAndCount(f.metrics.Requests) + testutil.CollectAndCount(f.metrics.RequestDuration)
	for i := 1; i <= 50; i++ {
		f.do("M"+strings.Repeat("X", i), "/experiments", "", "")
	}
	after := testutil.CollectAndCount(f.metrics.Requests) + testutil.CollectAndCount(f.metrics.RequestDuration)
	if after != before {
		t.Errorf("50 odd methods added %d series", after-before)
	}
	if got := testutil.ToFloat64(f.metrics.Requests.WithLabelValues("unmatched", "other", "405")); got != 51 {
		t.Errorf(`requests{method="other"} = %v, want 51`, got)
	}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"} {
		if got := methodLabel(m); got != m {
			t.Errorf("methodLabel(%s) = %s", m, got)
		}
	}
}

// TestSpawnMetrics: gmini_jobs_created_total, gmini_jobs_existing_total and
// gmini_spawn_errors_total{code} move as the README says, one step at a
// time.
func TestSpawnMetrics(t *testing.T) {
	var tmpl template.Source = template.Static{Template: testTemplate()}
	f := newFixture(t, sourceFunc(func() (*batchv1.JobTemplateSpec, error) { return tmpl.JobTemplate() }), nil)
	type counters struct {
		Created, Existing float64
		Errors            map[string]float64
	}
	read := func() counters {
		c := counters{
			Created:  testutil.ToFloat64(f.metrics.JobsCreated),
			Existing: testutil.ToFloat64(f.metrics.JobsExisting),
			Errors:   map[string]float64{},
		}
		for _, code := range []string{"400", "409", "413", "415", "503"} {
			if v := testutil.ToFloat64(f.metrics.SpawnErrors.WithLabelValues(code)); v != 0 {
				c.Errors[code] = v
			}
		}
		return c
	}
	steps := []struct {
		name        string
		contentType string
		body        string
		before      func()
		wantCode    int
		want        counters
	}{
		{name: "new", body: `{"experiment": {"id": "e1"}}`, wantCode: 201,
			want: counters{Created: 1, Errors: map[string]float64{}}},
		{name: "retry", body: `{"experiment": {"id": "e1"}}`, wantCode: 200,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{}}},
		{name: "other body", body: `{"experiment": {"id": "e1", "k": 1}}`, wantCode: 409,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{"409": 1}}},
		{name: "bad JSON", body: `{`, wantCode: 400,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{"409": 1, "400": 1}}},
		{name: "not JSON", contentType: "text/plain", body: `x`, wantCode: 415,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{"409": 1, "400": 1, "415": 1}}},
		{name: "too large", body: `{"experiment":{"id":"e2","pad":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}}`, wantCode: 413,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{"409": 1, "400": 1, "415": 1, "413": 1}}},
		{name: "template gone", body: `{"experiment": {"id": "e3"}}`, before: func() { tmpl = template.Static{} }, wantCode: 503,
			want: counters{Created: 1, Existing: 1, Errors: map[string]float64{"409": 1, "400": 1, "415": 1, "413": 1, "503": 1}}},
		{name: "template back", body: `{"experiment": {"id": "e3"}}`, before: func() { tmpl = template.Static{Template: testTemplate()} }, wantCode: 201,
			want: counters{Created: 2, Existing: 1, Errors: map[string]float64{"409": 1, "400": 1, "415": 1, "413": 1, "503": 1}}},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		ct := st.contentType
		if ct == "" {
			ct = "application/json"
		}
		if rec := f.do(http.MethodPost, "/experiment", ct, st.body); rec.Code != st.wantCode {
			t.Fatalf("%s: status = %d, want %d; body %s", st.name, rec.Code, st.wantCode, rec.Body)
		}
		if diff := cmp.Diff(st.want, read()); diff != "" {
			t.Errorf("%s: counters (-want +got):\n%s", st.name, diff)
		}
	}
}

// sourceFunc adapts a function to template.Source.
type sourceFunc func() (*batchv1.JobTemplateSpec, error)

func (f sourceFunc) JobTemplate() (*batchv1.JobTemplateSpec, error) { return f() }

// TestReadinessFollowsTemplate wires the handler as app does (readiness =
// the template source's Check) over an informer on the fake clientset: with
// the template missing or unusable, POST and /readyz answer 503 with
// Retry-After and the reason; once it is fixed, both succeed.
func TestReadinessFollowsTemplate(t *testing.T) {
	t.Parallel()
	cronJob := func(containers ...corev1.Container) *batchv1.CronJob {
		return &batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gmini-runner"},
			Spec: batchv1.CronJobSpec{Schedule: "@yearly", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}},
			}}},
		}
	}
	tests := []struct {
		name    string
		objects []runtime.Object
		wantMsg string
	}{
		{"missing", nil, "job template cronjob gmini-test/gmini-runner does not exist"},
		{"two containers, none named runner", []runtime.Object{cronJob(corev1.Container{Name: "a"}, corev1.Container{Name: "b"})},
			`job template cronjob gmini-test/gmini-runner is not usable: no container named "runner"`},
		{"runner with args", []runtime.Object{cronJob(corev1.Container{Name: "runner", Args: []string{"-v"}})},
			"job template cronjob gmini-test/gmini-runner is not usable: container \"runner\" sets args [\"-v\"], which the experiment replaces; use command for fixed arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(tt.objects...)
			src := template.NewCronJobSource(client, ns, "gmini-runner", nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			src.Start(ctx)
			if err := src.WaitForSync(ctx); err != nil {
				t.Fatal(err)
			}
			h := NewHandler(Config{
				Experiments: &experiments.Service{
					Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: src},
					Live:    &lifecycle.Store{Client: client, Namespace: ns},
				},
				Metrics: metrics.New(),
				Ready:   func(context.Context) error { return src.Check() },
			})
			f := &fixture{client: client, handler: h}

			for _, rec := range []*httptest.ResponseRecorder{f.post(`{"experiment": {"id": "e1"}}`), f.do(http.MethodGet, "/readyz", "", "")} {
				if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
					t.Errorf("status = %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
				}
				if msg := errorMessage(t, rec); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
				}
			}
			if rec := f.do(http.MethodHead, "/readyz", "", ""); rec.Code != http.StatusServiceUnavailable {
				t.Errorf("HEAD /readyz = %d", rec.Code)
			}
			if n := len(f.jobs(t)); n != 0 {
				t.Errorf("%d jobs created without a usable template", n)
			}

			good := cronJob(corev1.Container{Name: "runner", Image: "gmini-runner:dev"})
			cronJobs := client.BatchV1().CronJobs(ns)
			if _, err := cronJobs.Update(ctx, good, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
				_, err = cronJobs.Create(ctx, good, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for f.do(http.MethodGet, "/readyz", "", "").Code != http.StatusOK {
				if time.Now().After(deadline) {
					t.Fatal("not ready after the template was fixed")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if rec := f.post(`{"experiment": {"id": "e1"}}`); rec.Code != http.StatusCreated {
				t.Errorf("POST after the fix = %d %s", rec.Code, rec.Body)
			}
		})
	}
}

// TestFailuresAreLogged: a failed GET, DELETE or logs request leaves a log
// line with the ID, the Job name and the full cause, which the client's
// message may not carry.
var errRBAC = errors.New("RBAC: access denied")

func TestFailuresAreLogged(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, nil)
	if rec := f.post(`{"experiment": {"id": "e1"}}`); rec.Code != http.StatusCreated {
		t.Fatal(rec.Body)
	}
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	f.client.PrependReactor("delete", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(gr, "x", errRBAC)
	})
	f.do(http.MethodGet, "/experiments/Nope", "", "")
	f.do(http.MethodDelete, "/experiments/e1", "", "")
	f.do(http.MethodGet, "/experiments/e1/logs", "", "")

	type line struct {
		Level, Msg, ID, Job, Err string
		Code                     int
	}
	var got []line
	for _, raw := range strings.Split(strings.TrimSpace(f.log.String()), "\n") {
		var l line // encoding/json matches slog's lower-case keys
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatal(err)
		}
		if l.Msg == "request" || l.Msg == "job created" {
			continue
		}
		got = append(got, l)
	}
	want := []line{
		{Level: "INFO", Msg: "get experiment", ID: "Nope", Job: jobspec.JobName("Nope"), Code: 404,
			Err: `experiment "Nope" not found: no job ` + jobspec.JobName("Nope") + ` (never created, or removed by its TTL or a DELETE)`},
		{Level: "ERROR", Msg: "delete experiment", ID: "e1", Job: jobspec.JobName("e1"), Code: 502,
			Err: "delete job gmini-test/" + jobspec.JobName("e1") + `: jobs.batch "x" is forbidden: ` + errRBAC.Error()},
		{Level: "INFO", Msg: "read experiment logs", ID: "e1", Job: jobspec.JobName("e1"), Code: 409,
			Err: `experiment "e1": no runner pod exists (yet or any more)`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("failure log lines (-want +got):\n%s", diff)
	}
}
