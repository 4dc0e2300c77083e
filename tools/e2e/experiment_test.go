//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/klient/wait/conditions"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/deploy"
)

// tutorial is the experiment the tutorial's frontend sends.
var tutorial = map[string]any{"id": experimentID, "key": "k-123"}

const (
	ns             = deploy.Namespace
	experimentID   = "aB3dE9xQ2mNpL7"
	tutorialBody   = `{"experiment": {"id": "` + experimentID + `", "key": "k-123"}}`
	jobWaitTimeout = 2 * time.Minute
)

type ctxKey string

func clientset(t *testing.T, cfg *envconf.Config) *kubernetes.Clientset {
	t.Helper()
	// client-go's default limit (5 requests/s) would pace the suite's
	// bursts and polls, not the cluster.
	rc := rest.CopyConfig(cfg.Client().RESTConfig())
	rc.QPS, rc.Burst = 200, 400
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// backend is the Go client of the dev overlay's backend, through the API
// server's service proxy.
func backend(t *testing.T, cfg *envconf.Config) *gmini.Client {
	t.Helper()
	return backendIn(t, cfg, ns)
}

// backendIn is the Go client of namespace's backend, through the API
// server's service proxy.
func backendIn(t *testing.T, cfg *envconf.Config, namespace string) *gmini.Client {
	t.Helper()
	c, err := deploy.Backend{Config: cfg.Client().RESTConfig(), Namespace: namespace}.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawRequest sends the dev overlay's backend, through the API server's
// service proxy, what the Go client never sends (a malformed body, another
// Content-Type) or does not speak (the probes), and returns the answer's
// status code and body.
func rawRequest(ctx context.Context, t *testing.T, cfg *envconf.Config, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	b := deploy.Backend{Config: cfg.Client().RESTConfig(), Namespace: ns}
	base, err := b.URL()
	if err != nil {
		t.Fatal(err)
	}
	hc, err := b.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s through the API server's service proxy: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s through the API server's service proxy: read the answer: %v", method, path, err)
	}
	return res.StatusCode, raw
}

// explain adds what the cluster says about the namespace to a failure.
func explain(ctx context.Context, t *testing.T, cfg *envconf.Config) string {
	return deploy.Diagnose(ctx, clientset(t, cfg), ns, nil)
}

func managedJobs(ctx context.Context, t *testing.T, cfg *envconf.Config) []batchv1.Job {
	t.Helper()
	list, err := clientset(t, cfg).BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	return list.Items
}

func TestExperiment(t *testing.T) {
	f := features.New("POST /experiment runs the runner to completion").
		Assess("the tutorial's request creates a Job", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			sub, err := backend(t, cfg).Submit(ctx, tutorial)
			if err != nil {
				t.Fatalf("POST /experiment: %v", err)
			}
			if sub.ID != experimentID || sub.Job == "" || !sub.Created {
				t.Fatalf("answer %+v, want 201 naming its Job", sub)
			}
			t.Logf("job %s created", sub.Job)
			return context.WithValue(ctx, ctxKey("job"), sub.Job)
		}).
		Assess("the Job completes", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: ctx.Value(ctxKey("job")).(string), Namespace: ns}}
			start := time.Now()
			err := wait.For(jobFinished(cfg, job), wait.WithTimeout(jobWaitTimeout), wait.WithInterval(500*time.Millisecond))
			if err != nil {
				t.Fatalf("job %s not complete after %s: %v\n%s", job.Name, jobWaitTimeout, err, explain(ctx, t, cfg))
			}
			t.Logf("job %s complete after %s", job.Name, time.Since(start).Round(time.Millisecond))
			return ctx
		}).
		Assess("the runner printed the experiment ID", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			var out strings.Builder
			if err := backend(t, cfg).Logs(ctx, experimentID, &out); err != nil {
				t.Fatalf("GET logs: %v", err)
			}
			if want := "Running Experiment: " + experimentID; !strings.Contains(out.String(), want) {
				t.Fatalf("runner log %q lacks %q", out.String(), want)
			}
			return ctx
		}).
		Assess("the backend reports Succeeded", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			st, err := backend(t, cfg).Get(ctx, experimentID)
			if err != nil {
				t.Fatalf("GET status: %v", err)
			}
			if st.State != "Succeeded" {
				t.Fatalf("status %+v, want state Succeeded", st)
			}
			return ctx
		}).
		Assess("a repeated POST creates no second Job", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			sub, err := backend(t, cfg).Submit(ctx, tutorial)
			if err != nil || sub.Created {
				t.Fatalf("repeated POST = %+v (%v), want 200", sub, err)
			}
			_, err = backend(t, cfg).Submit(ctx, map[string]any{"id": experimentID, "key": "another"})
			if gmini.StatusCode(err) != http.StatusConflict {
				t.Fatalf("same ID, other body: %v, want 409", err)
			}
			if jobs := managedJobs(ctx, t, cfg); len(jobs) != 1 {
				t.Fatalf("%d jobs after retries, want 1", len(jobs))
			}
			return ctx
		}).
		Assess("GET /experiments lists it", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			page, err := backend(t, cfg).List(ctx, gmini.ListOptions{Limit: 10})
			if err != nil {
				t.Fatalf("GET /experiments: %v", err)
			}
			for _, it := range page.Items {
				if it.ID == experimentID {
					return ctx
				}
			}
			t.Errorf("GET /experiments = %+v, lacks %s", page.Items, experimentID)
			return ctx
		}).
		Assess("DELETE removes the Job and, through the garbage collector, its pods; the record stays", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			name := ctx.Value(ctxKey("job")).(string)
			client := clientset(t, cfg)
			job, err := client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := backend(t, cfg).Cancel(ctx, experimentID); err != nil {
				t.Fatalf("DELETE: %v", err)
			}
			err = wait.For(func(ctx context.Context) (bool, error) {
				_, jerr := client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
				pods, perr := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
				return apierrors.IsNotFound(jerr) && perr == nil && len(pods.Items) == 0, nil
			}, wait.WithTimeout(time.Minute), wait.WithInterval(500*time.Millisecond))
			if err != nil {
				t.Fatalf("job %s or its pods still there a minute after DELETE: %v", name, err)
			}
			// It had finished: the record keeps its outcome, not Cancelled.
			if st, err := backend(t, cfg).Get(ctx, experimentID); err != nil || st.State != "Succeeded" || st.Source != "history" {
				t.Errorf("GET after DELETE = %+v (%v), want Succeeded from history", st, err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestInvalidInput(t *testing.T) {
	bad := []struct {
		name        string
		contentType string
		body        string
		want        int
	}{
		{"not JSON", "application/json", `experiment`, http.StatusBadRequest},
		{"no experiment", "application/json", `{"id": "e1"}`, http.StatusBadRequest},
		{"id not a string", "application/json", `{"experiment": {"id": 7}}`, http.StatusBadRequest},
		{"id with a path separator", "application/json", `{"experiment": {"id": "a/b"}}`, http.StatusBadRequest},
		{"wrong content type", "text/plain", tutorialBody, http.StatusUnsupportedMediaType},
		{"too large", "application/json", `{"experiment": {"id": "big", "pad": "` + strings.Repeat("x", 70<<10) + `"}}`, http.StatusRequestEntityTooLarge},
	}
	f := features.New("bad input gets a 4xx and creates nothing").
		Assess("each bad request is refused", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			before := len(managedJobs(ctx, t, cfg))
			// Raw requests: the Go client sends only well-formed JSON.
			for _, b := range bad {
				code, body := rawRequest(ctx, t, cfg, http.MethodPost, "/experiment", b.contentType, []byte(b.body))
				if code != b.want || !strings.Contains(string(body), `"error"`) {
					t.Errorf("%s: got %d %s, want %d with an error message", b.name, code, body, b.want)
				}
			}
			if after := len(managedJobs(ctx, t, cfg)); after != before {
				t.Errorf("bad requests created %d jobs", after-before)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestRunnerBadInputFailsFast(t *testing.T) {
	f := features.New("a runner that rejects its input fails the Job after one pod").
		Assess("podFailurePolicy fails the Job on exit code 2", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			cj, err := client.BatchV1().CronJobs(ns).Get(ctx, "gmini-runner", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get template: %v", err)
			}
			// The backend refuses such input, so make the Job from the
			// template directly, as `kubectl create job --from=cronjob` would.
			job := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Name: "bad-input", Namespace: ns, Labels: cj.Spec.JobTemplate.Labels},
				Spec:       *cj.Spec.JobTemplate.Spec.DeepCopy(),
			}
			job.Spec.Template.Spec.Containers[0].Args = []string{"this is not JSON"}
			if _, err := client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create job: %v", err)
			}
			err = wait.For(conditions.New(cfg.Client().Resources()).JobFailed(job), wait.WithTimeout(jobWaitTimeout), wait.WithInterval(500*time.Millisecond))
			if err != nil {
				t.Fatalf("job bad-input did not fail: %v\n%s", err, explain(ctx, t, cfg))
			}
			got, err := client.BatchV1().Jobs(ns).Get(ctx, job.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Failed != 1 {
				t.Errorf("job ran %d failed pods, want 1 (backoffLimit 4 must not apply to exit code 2)", got.Status.Failed)
			}
			reason := ""
			for _, c := range got.Status.Conditions {
				if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
					reason = c.Reason
				}
			}
			if reason != batchv1.JobReasonPodFailurePolicy {
				t.Errorf("failure reason = %q, want %q", reason, batchv1.JobReasonPodFailurePolicy)
			}
			pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job.Name})
			if err != nil {
				t.Fatal(err)
			}
			if len(pods.Items) != 1 {
				t.Errorf("%d pods, want 1", len(pods.Items))
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			policy := metav1.DeletePropagationBackground
			_ = cfg.Client().Resources().Delete(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "bad-input", Namespace: ns}},
				func(o *metav1.DeleteOptions) { o.PropagationPolicy = &policy })
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// jobFinished is done when the Job completes, and fails at once, with the
// Job's reason, when it fails: waiting out the timeout would only hide why.
func jobFinished(cfg *envconf.Config, job *batchv1.Job) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		if err := cfg.Client().Resources().Get(ctx, job.Name, job.Namespace, job); err != nil {
			return false, nil
		}
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				return true, nil
			case batchv1.JobFailed:
				return false, fmt.Errorf("job %s failed (%d failed pods): %s: %s", job.Name, job.Status.Failed, c.Reason, c.Message)
			}
		}
		return false, nil
	}
}
