//go:build e2e

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

func TestStatesFromJobConditions(t *testing.T) {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	cond := func(typ batchv1.JobConditionType, reason string) batchv1.JobCondition {
		return batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, Reason: reason, Message: "set by the test", LastTransitionTime: now, LastProbeTime: now}
	}
	cases := []struct {
		id      string
		suspend bool
		status  batchv1.JobStatus
		want    string
	}{
		// The Job controller (1.31+) sets these while the last pod is
		// still terminating, before Complete or Failed.
		{id: "state-success-criteria", status: batchv1.JobStatus{StartTime: &now, Succeeded: 1, Terminating: ptr.To[int32](1),
			Conditions: []batchv1.JobCondition{cond(batchv1.JobSuccessCriteriaMet, "CompletionsReached")}}, want: "Succeeded"},
		{id: "state-failure-target", status: batchv1.JobStatus{StartTime: &now, Failed: 1, Terminating: ptr.To[int32](1),
			Conditions: []batchv1.JobCondition{cond(batchv1.JobFailureTarget, "PodFailurePolicy")}}, want: "Failed"},
		{id: "state-suspended", suspend: true, status: batchv1.JobStatus{
			Conditions: []batchv1.JobCondition{cond(batchv1.JobSuspended, "JobSuspended")}}, want: "Suspended"},
		{id: "state-running", status: batchv1.JobStatus{StartTime: &now, Active: 1, Ready: ptr.To[int32](1)}, want: "Running"},
		{id: "state-pending", status: batchv1.JobStatus{StartTime: &now, Active: 1, Ready: ptr.To[int32](0)}, want: "Pending"},
	}
	f := features.New("every Job condition of Kubernetes 1.31+ shows as the state it means, on the real API server").
		Setup(backendAndNoJobs).
		Assess("conditions set through the status subresource", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := suite.admin.BatchV1().Jobs(ns)
			for _, c := range cases {
				job := handMadeJob(ctx, t, c.id)
				job.Spec.Suspend = ptr.To(c.suspend)
				made, err := jobs.Create(ctx, job, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("%s: create: %v", c.id, err)
				}
				made.Status = c.status
				if _, err := jobs.UpdateStatus(ctx, made, metav1.UpdateOptions{}); err != nil {
					t.Fatalf("%s: the API server refused the status: %v", c.id, err)
				}
				a, st := getStatus(ctx, t, c.id)
				if a.Code != http.StatusOK || st["state"] != c.want {
					errorf(t, "%s: GET = %s, want state %s", c.id, a, c.want)
				}
			}
			return ctx
		}).
		Assess("a Job being deleted shows Deleting", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := suite.admin.BatchV1().Jobs(ns)
			job := handMadeJob(ctx, t, "state-deleting")
			job.Finalizers = []string{holdFinalizer}
			if _, err := jobs.Create(ctx, job, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := jobs.Delete(ctx, job.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			// The live Job wins over its record while it exists.
			a, st := getStatus(ctx, t, "state-deleting")
			if a.Code != http.StatusOK || st["state"] != "Deleting" || st["source"] != "job" {
				errorf(t, "GET while the Job is being deleted = %s, want state Deleting from the job", a)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			releaseHeld(ctx, t)
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestListAgreesWithGet(t *testing.T) {
	f := features.New("GET /experiments lists exactly the Jobs that GET and DELETE /experiments/{id} find").
		Setup(backendAndNoJobs).
		Assess("Jobs with gmini's label but a missing or edited ID annotation are neither listed nor found", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := suite.admin.BatchV1().Jobs(ns)
			good := handMadeJob(ctx, t, "list-good")
			noID := handMadeJob(ctx, t, "list-no-id")
			delete(noID.Annotations, jobspec.AnnotationID)
			edited := handMadeJob(ctx, t, "list-edited")
			edited.Annotations[jobspec.AnnotationID] = "list-other"
			for _, j := range []*batchv1.Job{good, noID, edited} {
				if _, err := jobs.Create(ctx, j, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			// With history on, the list is of records: the recorder records
			// exactly the Jobs jobspec.Owns accepts, as GET finds them.
			listed := map[string]bool{}
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				listed = listIDs(ctx, t, suite.backend.URL(), "")
				return listed["list-good"], nil
			})
			if err != nil {
				t.Errorf("list-good is not listed")
			}
			for _, id := range []string{"list-no-id", "list-edited", "list-other"} {
				if listed[id] {
					t.Errorf("%s is listed, but GET answers 404 for it", id)
				}
			}
			for id, want := range map[string]int{"list-good": 200, "list-no-id": 404, "list-edited": 404, "list-other": 404} {
				if a, _ := getStatus(ctx, t, id); a.Code != want {
					t.Errorf("GET /experiments/%s = %s, want %d", id, a, want)
				}
			}
			return ctx
		}).
		Assess("a POST whose Job name is taken by a Job gmini did not make gets 409 saying so", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			foreign := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Name: jobspec.JobName("collide-1"), Namespace: ns},
				Spec:       *handMadeJob(ctx, t, "collide-1").Spec.DeepCopy(),
			}
			if _, err := suite.admin.BatchV1().Jobs(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			p, err := post(ctx, newClient(1, false), suite.backend.URL(), experimentBody("collide-1", ""))
			if err != nil {
				t.Fatal(err)
			}
			checkError(t, "POST over a foreign Job", p, http.StatusConflict, "was not created by gmini")
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

func TestRacesAnswerNo5xx(t *testing.T) {
	const rounds = 25
	f := features.New("POST racing DELETE of the same ID, and two DELETEs, are ordinary races: never a 5xx").
		Setup(backendAndNoJobs).
		Assess("each race gets an answer from the documented set", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			seen := map[string]int{}
			for i := range rounds {
				id := fmt.Sprintf("race-%02d", i)
				if a, err := post(ctx, newClient(1, false), base, experimentBody(id, "")); err != nil || a.Code != http.StatusCreated {
					failf(t, "POST %s: %v %v", id, a, err)
				}
				// A retried POST against a DELETE, then two DELETEs.
				var wg sync.WaitGroup
				var p, d1, d2 answer
				var perr, d1err, d2err error
				wg.Go(func() { p, perr = post(ctx, newClient(1, false), base, experimentBody(id, "")) })
				wg.Go(func() { d1, d1err = del(ctx, newClient(1, false), base, id) })
				wg.Wait()
				wg.Go(func() { d1, d1err = del(ctx, newClient(1, false), base, id) })
				wg.Go(func() { d2, d2err = del(ctx, newClient(1, false), base, id) })
				wg.Wait()
				for what, r := range map[string]struct {
					a   answer
					err error
					ok  []int
				}{
					"POST racing DELETE": {p, perr, []int{200, 201, 409}},
					"DELETE":             {d1, d1err, []int{200, 404, 409}},
					"second DELETE":      {d2, d2err, []int{200, 404, 409}},
				} {
					if r.err != nil {
						failf(t, "%s %s: %v", what, id, r.err)
					}
					seen[fmt.Sprintf("%s %d", what, r.a.Code)]++
					okCode := false
					for _, c := range r.ok {
						okCode = okCode || r.a.Code == c
					}
					if !okCode {
						errorf(t, "%s %s = %s, want one of %v", what, id, r.a, r.ok)
					}
				}
			}
			t.Logf("answers over %d rounds: %v", rounds, seen)
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

// listIDs reads every page of GET /experiments (with the given query) and
// returns the IDs listed.
func listIDs(ctx context.Context, t *testing.T, base, query string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	cont := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("GET /experiments never ends")
		}
		url := base + "/experiments?limit=1000" + query
		if cont != "" {
			url += "&continue=" + neturl.QueryEscape(cont)
		}
		a, err := get(ctx, newClient(1, false), url)
		if err != nil || a.Code != http.StatusOK {
			failf(t, "GET %s = %v %v", url, a, err)
		}
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			Continue string `json:"continue"`
		}
		if err := json.Unmarshal(a.Body, &page); err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			ids[it.ID] = true
		}
		if page.Continue == "" {
			return ids
		}
		cont = page.Continue
	}
}

// metric returns the value of the sample whose line starts with prefix, or
// 0 when there is none.
func metric(ctx context.Context, t *testing.T, prefix string) (float64, int) {
	t.Helper()
	a, err := get(ctx, newClient(1, false), suite.backend.URL()+"/metrics")
	if err != nil || a.Code != http.StatusOK {
		failf(t, "GET /metrics: %v %v", a, err)
	}
	var v float64
	series := 0
	sc := bufio.NewScanner(bytes.NewReader(a.Body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "gmini_http_requests_total{") {
			series++
		}
		if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
			fmt.Sscan(rest, &v)
		}
	}
	return v, series
}

func TestMetricsAndEdges(t *testing.T) {
	f := features.New("the documented metrics move as documented, and the HTTP edges answer JSON").
		Setup(backendAndNoJobs).
		Assess("created, existing and spawn errors count what happened", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			c := newClient(1, false)
			created0, _ := metric(ctx, t, "gmini_jobs_created_total")
			existing0, _ := metric(ctx, t, "gmini_jobs_existing_total")
			bad0, _ := metric(ctx, t, `gmini_spawn_errors_total{code="400"}`)
			conflict0, _ := metric(ctx, t, `gmini_spawn_errors_total{code="409"}`)
			for _, step := range []struct {
				body string
				code int
			}{
				{experimentBody("metrics-1", ""), 201},
				{experimentBody("metrics-1", ""), 200},
				{experimentBody("metrics-1", ""), 200},
				{experimentBody("metrics-1", `, "other": 1`), 409},
				{`{"experiment": {}}`, 400},
			} {
				if a, err := post(ctx, c, base, step.body); err != nil || a.Code != step.code {
					failf(t, "POST %s = %v %v, want %d", step.body, a, err, step.code)
				}
			}
			for name, want := range map[string]float64{
				"gmini_jobs_created_total":             created0 + 1,
				"gmini_jobs_existing_total":            existing0 + 2,
				`gmini_spawn_errors_total{code="400"}`: bad0 + 1,
				`gmini_spawn_errors_total{code="409"}`: conflict0 + 1,
			} {
				if got, _ := metric(ctx, t, name); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
			return ctx
		}).
		Assess("50 requests with made-up methods add no metric series", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			// One of them first, so its "other" series exists before counting.
			req, _ := http.NewRequestWithContext(ctx, "M0", base+"/experiments", nil)
			if _, err := send(newClient(1, false), req); err != nil {
				t.Fatal(err)
			}
			_, before := metric(ctx, t, "")
			for i := 1; i <= 50; i++ {
				req, _ := http.NewRequestWithContext(ctx, fmt.Sprintf("M%d", i), base+"/experiments", nil)
				a, err := send(newClient(1, false), req)
				if err != nil {
					t.Fatal(err)
				}
				checkError(t, "made-up method", a, http.StatusMethodNotAllowed, "not allowed")
			}
			if _, after := metric(ctx, t, ""); after != before {
				t.Errorf("gmini_http_requests_total series: %d before 50 made-up methods, %d after", before, after)
			}
			return ctx
		}).
		Assess("HEAD probes, trailing slashes, long targets", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			c := newClient(1, false)
			for _, path := range []string{"/healthz", "/readyz"} {
				req, _ := http.NewRequestWithContext(ctx, http.MethodHead, base+path, nil)
				if a, err := send(c, req); err != nil || a.Code != http.StatusOK {
					t.Errorf("HEAD %s = %v %v, want 200", path, a, err)
				}
			}
			for _, path := range []string{"/experiments/", "/Experiments", "/experiment/"} {
				a, err := get(ctx, c, base+path)
				if err != nil {
					t.Fatal(err)
				}
				checkError(t, "GET "+path, a, http.StatusNotFound, "no such route")
			}
			a, err := get(ctx, c, base+"/experiments/"+strings.Repeat("a", 9<<10))
			if err != nil {
				t.Fatal(err)
			}
			checkError(t, "a 9 KiB target", a, http.StatusRequestURITooLong, "the limit is 8192")
			// The documented exception: beyond 64 KiB of request line and
			// headers, Go's net/http answers in plain text before the handler.
			a, err = get(ctx, c, base+"/experiments/"+strings.Repeat("a", 70<<10))
			if err != nil || a.Code != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("a 70 KiB target = %v %v, want net/http's 431", a, err)
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
