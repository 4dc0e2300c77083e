package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/gin-gonic/gin"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const ns = "gmini-test"

func testTemplate() *batchv1.JobTemplateSpec {
	backoff := int32(4)
	return &batchv1.JobTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "gmini"}},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "gmini"}},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
				},
			},
		},
	}
}

type fixture struct {
	client  *fake.Clientset
	handler http.Handler
	metrics *metrics.Metrics
	log     *bytes.Buffer // JSON lines
}

func newFixture(t *testing.T, tmpl template.Source, ready func(context.Context) error) *fixture {
	t.Helper()
	gin.SetMode(gin.TestMode)
	client := fake.NewClientset()
	if tmpl == nil {
		tmpl = template.Static{Template: testTemplate()}
	}
	if ready == nil {
		ready = func(context.Context) error { return nil }
	}
	m := metrics.New()
	log := &bytes.Buffer{}
	h := NewHandler(Config{
		Experiments: &experiments.Service{
			Spawner: &spawn.Spawner{Client: client, Namespace: ns, Templates: tmpl},
			Live:    &lifecycle.Store{Client: client, Namespace: ns},
		},
		Metrics: m,
		Logger:  slog.New(slog.NewJSONHandler(log, nil)),
		Ready:   ready,
	})
	return &fixture{client: client, handler: h, metrics: m, log: log}
}

func (f *fixture) do(method, path, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

func (f *fixture) post(body string) *httptest.ResponseRecorder {
	return f.do(http.MethodPost, "/experiment", "application/json", body)
}

func (f *fixture) jobs(t *testing.T) []batchv1.Job {
	t.Helper()
	list, err := f.client.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func errorMessage(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
		t.Fatalf("error response is not {\"error\": ...}: %q", rec.Body.String())
	}
	return body.Error
}

func TestCreateExperiment(t *testing.T) {
	f := newFixture(t, nil, nil)
	body := `{"experiment": {"id": "aB3dE9xQ2mNpL7", "key": "secret-key"}}`
	rec := f.post(body)
	if rec.Code != http.StatusCreated {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	var got wire.Submission
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	wantName := jobspec.JobName("aB3dE9xQ2mNpL7")
	if got.ID != "aB3dE9xQ2mNpL7" || got.Job != wantName || got.Namespace != ns || !got.Created ||
		got.Status != "/experiments/aB3dE9xQ2mNpL7" || rec.Header().Get("Location") != got.Status {
		t.Errorf("answer = %+v, Location %q", got, rec.Header().Get("Location"))
	}

	jobs := f.jobs(t)
	if len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1", len(jobs))
	}
	job := jobs[0]
	if job.Name != wantName {
		t.Errorf("job name = %q, want %q", job.Name, wantName)
	}
	if job.Labels["app"] != "gmini" || job.Labels[jobspec.LabelManagedBy] != jobspec.LabelManagedByName {
		t.Errorf("job labels = %v", job.Labels)
	}
	if job.Annotations[jobspec.AnnotationID] != "aB3dE9xQ2mNpL7" {
		t.Errorf("job annotations = %v", job.Annotations)
	}
	if *job.Spec.BackoffLimit != 4 || job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("template settings lost: %+v", job.Spec)
	}
	c := job.Spec.Template.Spec.Containers[0]
	if c.Image != "gmini-runner:test" {
		t.Errorf("image = %q", c.Image)
	}
	if len(c.Args) != 1 || c.Args[0] != `{"experiment":{"id":"aB3dE9xQ2mNpL7","key":"secret-key"}}` {
		t.Errorf("runner args = %q", c.Args)
	}

	// A retry of the same experiment, even with other formatting, answers
	// with the same Job and creates nothing.
	rec = f.post(`{"experiment":{"key":"secret-key","id":"aB3dE9xQ2mNpL7"}}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("retry status = %d, body %s", rec.Code, rec.Body)
	}
	var again wire.Submission
	_ = json.Unmarshal(rec.Body.Bytes(), &again)
	if again.Created || again.Job != wantName {
		t.Errorf("retry answer = %+v", again)
	}

	// The same ID with another body is a conflict; the first Job stays.
	rec = f.post(`{"experiment": {"id": "aB3dE9xQ2mNpL7", "key": "other"}}`)
	if rec.Code != http.StatusConflict {
		t.Fatalf("conflicting status = %d, body %s", rec.Code, rec.Body)
	}
	if msg := errorMessage(t, rec); !strings.Contains(msg, "different body") {
		t.Errorf("conflict message = %q", msg)
	}
	if jobs := f.jobs(t); len(jobs) != 1 || jobs[0].Spec.Template.Spec.Containers[0].Args[0] != c.Args[0] {
		t.Errorf("conflict changed the jobs: %d", len(jobs))
	}

	// IDs that differ only in case are different experiments.
	if rec := f.post(`{"experiment": {"id": "ab3de9xq2mnpl7"}}`); rec.Code != http.StatusCreated {
		t.Fatalf("lower-case twin: status = %d, body %s", rec.Code, rec.Body)
	}
	if n := len(f.jobs(t)); n != 2 {
		t.Errorf("%d jobs, want 2", n)
	}
	if !strings.Contains(f.do(http.MethodGet, "/metrics", "", "").Body.String(), "gmini_jobs_created_total 2") {
		t.Errorf("metrics do not count the created jobs")
	}
}

func TestCreateExperimentBadRequests(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantCode    int
		wantMsg     string
	}{
		{"wrong method", http.MethodGet, "/experiment", "", "", http.StatusMethodNotAllowed, "not allowed"},
		{"PUT", http.MethodPut, "/experiment", "application/json", `{"experiment":{"id":"e1"}}`, http.StatusMethodNotAllowed, "not allowed"},
		{"unknown path", http.MethodPost, "/experiments", "application/json", `{"experiment":{"id":"e1"}}`, http.StatusMethodNotAllowed, "not allowed"},
		{"no content type", http.MethodPost, "/experiment", "", `{"experiment":{"id":"e1"}}`, http.StatusUnsupportedMediaType, "application/json"},
		{"form content type", http.MethodPost, "/experiment", "application/x-www-form-urlencoded", `id=e1`, http.StatusUnsupportedMediaType, "application/json"},
		{"text content type", http.MethodPost, "/experiment", "text/plain", `{"experiment":{"id":"e1"}}`, http.StatusUnsupportedMediaType, "application/json"},
		{"broken content type", http.MethodPost, "/experiment", "application/json; charset", `{"experiment":{"id":"e1"}}`, http.StatusUnsupportedMediaType, "application/json"},
		{"too large", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":"e1","pad":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}}`, http.StatusRequestEntityTooLarge, "limit"},
		{"empty body", http.MethodPost, "/experiment", "application/json", ``, http.StatusBadRequest, "empty body"},
		{"truncated", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":"e1"`, http.StatusBadRequest, "malformed JSON"},
		{"array", http.MethodPost, "/experiment", "application/json", `[]`, http.StatusBadRequest, "must be a JSON object"},
		{"no experiment", http.MethodPost, "/experiment", "application/json", `{}`, http.StatusBadRequest, `"experiment" is missing`},
		{"experiment not object", http.MethodPost, "/experiment", "application/json", `{"experiment": 1}`, http.StatusBadRequest, "must be a JSON object"},
		{"id missing", http.MethodPost, "/experiment", "application/json", `{"experiment":{}}`, http.StatusBadRequest, "is missing"},
		{"id number", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":3}}`, http.StatusBadRequest, "must be a string"},
		{"id with slash", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":"a/b"}}`, http.StatusBadRequest, "'/'"},
		{"id too long", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":"` + strings.Repeat("a", 300) + `"}}`, http.StatusBadRequest, "300 characters"},
		{"duplicated id", http.MethodPost, "/experiment", "application/json", `{"experiment":{"id":"a","id":"b"}}`, http.StatusBadRequest, "duplicated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil, nil)
			rec := f.do(tt.method, tt.path, tt.contentType, tt.body)
			if rec.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if msg := errorMessage(t, rec); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
			}
			if n := len(f.jobs(t)); n != 0 {
				t.Errorf("%d jobs created for a bad request", n)
			}
		})
	}
}

// A chunked body has no Content-Length; the limit must hold while reading.
func TestCreateExperimentChunkedTooLarge(t *testing.T) {
	f := newFixture(t, nil, nil)
	body := `{"experiment":{"id":"e1","pad":"` + strings.Repeat("x", 2*DefaultMaxBodyBytes) + `"}}`
	req := httptest.NewRequest(http.MethodPost, "/experiment", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d jobs created", n)
	}
}

func TestCreateExperimentAPIErrors(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "https://198.18.0.1:6443", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	tests := []struct {
		name     string
		err      error
		tmpl     template.Source
		wantCode int
		wantMsg  string
	}{
		{"unreachable", refused, nil, http.StatusServiceUnavailable, "connection refused"},
		{"timeout", context.DeadlineExceeded, nil, http.StatusServiceUnavailable, "deadline exceeded"},
		// API Priority and Fairness holds the request back: 429, as the
		// API server said it.
		{"overloaded", apierrors.NewTooManyRequests("slow down", 1), nil, http.StatusTooManyRequests, "slow down"},
		{"over quota", apierrors.NewForbidden(schema.GroupResource{Group: "batch", Resource: "jobs"}, "exp-e1",
			errors.New("exceeded quota: gmini-jobs, requested: count/jobs.batch=1, used: count/jobs.batch=5, limited: count/jobs.batch=5")),
			nil, http.StatusTooManyRequests, "exceeded quota: gmini-jobs"},
		{"forbidden", apierrors.NewForbidden(gr, "exp-x", errors.New("RBAC denied create")), nil, http.StatusBadGateway, "forbidden"},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "exp-x", nil), nil, http.StatusBadGateway, "invalid"},
		{"template not loaded", nil, template.Static{}, http.StatusServiceUnavailable, "not loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.tmpl, nil)
			if tt.err != nil {
				f.client.PrependReactor("create", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, tt.err
				})
			}
			rec := f.post(`{"experiment": {"id": "e1"}}`)
			if rec.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if msg := errorMessage(t, rec); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantMsg)
			}
			if strings.Contains(rec.Body.String(), "198.18.0.1") {
				t.Errorf("the API server's address leaked to the client: %s", rec.Body)
			}
			if tt.wantCode == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
		})
	}
}

func TestExperimentLifecycle(t *testing.T) {
	f := newFixture(t, nil, nil)
	if rec := f.post(`{"experiment": {"id": "Exp1", "key": "k"}}`); rec.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	name := jobspec.JobName("Exp1")

	rec := f.do(http.MethodGet, "/experiments/Exp1", "", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"state":"Pending"`) {
		t.Fatalf("get pending: %d %s", rec.Code, rec.Body)
	}

	// The Job controller would set this; the fake clientset has none.
	job, _ := f.client.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
	job.UID = "uid-1" // the fake clientset assigns none; pods are matched by it
	now := metav1.Now()
	job.Status.StartTime = &now
	job.Status.CompletionTime = &now
	job.Status.Succeeded = 1
	job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	if _, err := f.client.BatchV1().Jobs(ns).Update(context.Background(), job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec = f.do(http.MethodGet, "/experiments/Exp1", "", "")
	var st lifecycle.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.State != lifecycle.StateSucceeded || st.ID != "Exp1" || st.CompletedAt == nil {
		t.Fatalf("get succeeded: %d %s", rec.Code, rec.Body)
	}

	rec = f.do(http.MethodGet, "/experiments/Exp1/logs", "", "")
	if rec.Code != http.StatusConflict || !strings.Contains(errorMessage(t, rec), "no runner pod") {
		t.Fatalf("logs without pod: %d %s", rec.Code, rec.Body)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-abcde", Namespace: ns,
			Labels:          map[string]string{batchv1.JobNameLabel: name, batchv1.ControllerUidLabel: string(job.UID)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))},
		},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
		Status: corev1.PodStatus{Phase: corev1.PodSucceeded},
	}
	if _, err := f.client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec = f.do(http.MethodGet, "/experiments/Exp1/logs", "", "")
	if rec.Code != http.StatusOK || rec.Body.String() != "fake logs" { // what the fake clientset streams
		t.Fatalf("logs: %d %q", rec.Code, rec.Body)
	}

	rec = f.do(http.MethodGet, "/experiments", "", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"Exp1"`) {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}

	for _, path := range []string{"/experiments/Nope", "/experiments/Nope/logs"} {
		if rec := f.do(http.MethodGet, path, "", ""); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, rec.Code)
		}
	}
	if rec := f.do(http.MethodGet, "/experiments/bad%20id", "", ""); rec.Code != http.StatusBadRequest {
		t.Errorf("GET with invalid ID = %d, want 400", rec.Code)
	}

	if rec := f.do(http.MethodDelete, "/experiments/Exp1", "", ""); rec.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if n := len(f.jobs(t)); n != 0 {
		t.Errorf("%d jobs after delete", n)
	}
	if rec := f.do(http.MethodDelete, "/experiments/Exp1", "", ""); rec.Code != http.StatusNotFound {
		t.Errorf("second delete = %d, want 404", rec.Code)
	}
}

func TestProbes(t *testing.T) {
	notReady := errors.New("kubernetes API not ready: connection refused")
	var readyErr error
	f := newFixture(t, nil, func(context.Context) error { return readyErr })
	if rec := f.do(http.MethodGet, "/healthz", "", ""); rec.Code != http.StatusOK {
		t.Errorf("healthz = %d", rec.Code)
	}
	if rec := f.do(http.MethodGet, "/readyz", "", ""); rec.Code != http.StatusOK {
		t.Errorf("readyz = %d", rec.Code)
	}
	readyErr = notReady
	rec := f.do(http.MethodGet, "/readyz", "", "")
	if rec.Code != http.StatusServiceUnavailable || errorMessage(t, rec) != "not ready: kubernetes API not ready: connection refused" ||
		rec.Header().Get("Retry-After") == "" {
		t.Errorf("readyz when not ready = %d %q, Retry-After %q", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	// An API server that answers its /readyz with an error status is not
	// an upstream failure here: the backend is just not ready.
	readyErr = apierrors.NewInternalError(errors.New("etcd not ready"))
	if rec := f.do(http.MethodGet, "/readyz", "", ""); rec.Code != http.StatusServiceUnavailable || !strings.Contains(errorMessage(t, rec), "etcd not ready") {
		t.Errorf("readyz when the API server is not ready = %d %q", rec.Code, rec.Body)
	}
	metricsBody := f.do(http.MethodGet, "/metrics", "", "").Body.String()
	for _, want := range []string{`gmini_http_requests_total{code="503",method="GET",route="/readyz"} 2`, "go_goroutines", "gmini_http_request_duration_seconds_bucket"} {
		if !strings.Contains(metricsBody, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
