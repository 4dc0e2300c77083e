//go:build e2e

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
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

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
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
				if st, err := getStatus(ctx, t, c.id); err != nil || st.State != c.want {
					errorf(t, "%s: GET = %+v %v, want state %s", c.id, st, err, c.want)
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
			if st, err := getStatus(ctx, t, "state-deleting"); err != nil || st.State != "Deleting" || st.Source != "job" {
				errorf(t, "GET while the Job is being deleted = %+v %v, want state Deleting from the job", st, err)
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
				listed = listIDs(ctx, t, suite.backend.URL())
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
				st, err := getStatus(ctx, t, id)
				if code := gmini.StatusCode(err); (err == nil && want != http.StatusOK) || (err != nil && code != want) {
					t.Errorf("GET /experiments/%s = %+v %v, want %d", id, st, err, want)
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
			_, err := api(t, suite.backend.URL()).Submit(ctx, experiment("collide-1", ""))
			checkRefused(t, "POST over a foreign Job", err, http.StatusConflict, "was not created by gmini")
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
			c := api(t, suite.backend.URL())
			// cancel is DELETE's status code: 200, the refusal's, or 0 for
			// no answer.
			cancel := func(id string) (int, error) {
				_, err := c.Cancel(ctx, id)
				if err != nil {
					return gmini.StatusCode(err), err
				}
				return http.StatusOK, nil
			}
			seen := map[string]int{}
			for i := range rounds {
				id := fmt.Sprintf("race-%02d", i)
				exp := experiment(id, "")
				if sub, err := c.Submit(ctx, exp); err != nil || !sub.Created {
					failf(t, "POST %s: %+v %v, want 201", id, sub, err)
				}
				// A retried POST against a DELETE, then two DELETEs.
				var wg sync.WaitGroup
				var p, d1, d2 int
				var perr, d1err, d2err error
				wg.Go(func() {
					var sub wire.Submission
					sub, perr = c.Submit(ctx, exp)
					p = submitted(sub, perr)
				})
				wg.Go(func() { d1, d1err = cancel(id) })
				wg.Wait()
				wg.Go(func() { d1, d1err = cancel(id) })
				wg.Go(func() { d2, d2err = cancel(id) })
				wg.Wait()
				for what, r := range map[string]struct {
					code int
					err  error
					ok   []int
				}{
					"POST racing DELETE": {p, perr, []int{200, 201, 409}},
					"DELETE":             {d1, d1err, []int{200, 404, 409}},
					"second DELETE":      {d2, d2err, []int{200, 404, 409}},
				} {
					if r.code == 0 {
						failf(t, "%s %s: %v", what, id, r.err)
					}
					seen[fmt.Sprintf("%s %d", what, r.code)]++
					if !slices.Contains(r.ok, r.code) {
						errorf(t, "%s %s = %d %v, want one of %v", what, id, r.code, r.err, r.ok)
					}
				}
			}
			t.Logf("answers over %d rounds: %v", rounds, seen)
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

// listIDs reads every page of GET /experiments and returns the IDs
// listed.
func listIDs(ctx context.Context, t *testing.T, base string) map[string]bool {
	t.Helper()
	const most = 1000 * 1000 // pages of 1,000: a list that never ends
	ids := map[string]bool{}
	items := 0
	err := api(t, base).ListAll(ctx, gmini.ListOptions{Limit: 1000}, func(s wire.Status) bool {
		ids[s.ID] = true
		items++
		return items <= most
	})
	if err != nil {
		failf(t, "GET /experiments: %v", err)
	}
	if items > most {
		t.Fatal("GET /experiments never ends")
	}
	return ids
}

// metric returns the value of the sample whose line starts with prefix, or
// 0 when there is none, and the number of gmini_http_requests_total
// series (raw: /metrics is Prometheus' text).
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
			c := api(t, suite.backend.URL())
			created0, _ := metric(ctx, t, "gmini_jobs_created_total")
			existing0, _ := metric(ctx, t, "gmini_jobs_existing_total")
			bad0, _ := metric(ctx, t, `gmini_spawn_errors_total{code="400"}`)
			conflict0, _ := metric(ctx, t, `gmini_spawn_errors_total{code="409"}`)
			for _, step := range []struct {
				experiment json.RawMessage
				code       int
			}{
				{experiment("metrics-1", ""), 201},
				{experiment("metrics-1", ""), 200},
				{experiment("metrics-1", ""), 200},
				{experiment("metrics-1", `, "other": 1`), 409},
				{json.RawMessage(`{}`), 400},
			} {
				if sub, err := c.Submit(ctx, step.experiment); submitted(sub, err) != step.code {
					failf(t, "POST %s = %+v %v, want %d", step.experiment, sub, err, step.code)
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
		// Raw from here: made-up methods, HEAD, paths and targets that are
		// not the API's, which the Go client never sends.
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
