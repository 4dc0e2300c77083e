//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
)

func TestQuotaAnswers429(t *testing.T) {
	const quota = 5
	f := features.New("a ResourceQuota on Jobs: N Jobs, then 429 with Retry-After naming the quota, then Jobs again once old ones are gone").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			q := &corev1.ResourceQuota{
				ObjectMeta: metav1.ObjectMeta{Name: "reliability-jobs", Namespace: ns},
				Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/jobs.batch": resource.MustParse(fmt.Sprint(quota))}},
			}
			if _, err := suite.admin.CoreV1().ResourceQuotas(ns).Create(ctx, q, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// The quota controller must have counted the namespace, with no
			// Job left from earlier tests, before the admission plugin
			// enforces it from that count.
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				got, err := suite.admin.CoreV1().ResourceQuotas(ns).Get(ctx, q.Name, metav1.GetOptions{})
				if err != nil || got.Status.Hard == nil {
					return false, nil
				}
				used, ok := got.Status.Used["count/jobs.batch"]
				return ok && used.IsZero(), nil
			})
			if err != nil {
				t.Fatalf("quota never counted: %v", err)
			}
			return ctx
		}).
		Assess("N+5 POSTs: N 201s, 5 429s, exactly N Jobs", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := api(t, suite.backend.URL())
			created, refused := 0, 0
			for i := range quota + 5 {
				sub, err := c.Submit(ctx, experiment(fmt.Sprintf("quota-%02d", i), ""))
				switch submitted(sub, err) {
				case 0:
					t.Fatal(err)
				case http.StatusCreated:
					created++
				case http.StatusTooManyRequests:
					refused++
					if e := checkRefused(t, "POST over the quota", err, http.StatusTooManyRequests, "exceeded quota: reliability-jobs"); e != nil && e.RetryAfter == 0 {
						t.Error("429 without Retry-After")
					}
				default:
					errorf(t, "POST %d = %+v %v, want 201 or 429", i, sub, err)
				}
			}
			if created != quota || refused != 5 {
				t.Errorf("%d created, %d refused; want %d and 5", created, refused, quota)
			}
			if n := allJobs(ctx, t); n != quota {
				t.Errorf("%d Jobs, want exactly %d", n, quota)
			}
			return ctx
		}).
		Assess("a refused POST leaves nothing behind: another body is refused by the quota again, not as a conflict, and DELETE finds nothing", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			refusedID := fmt.Sprintf("quota-%02d", quota+2)
			c := api(t, suite.backend.URL())
			if _, err := c.Submit(ctx, experiment(refusedID, `, "fixed": true`)); gmini.StatusCode(err) != http.StatusTooManyRequests {
				errorf(t, "POST %s with a fixed body while the quota is full: %v; want 429 again, not a conflict with the refused body", refusedID, err)
			}
			if _, err := c.Cancel(ctx, refusedID); gmini.StatusCode(err) != http.StatusNotFound {
				errorf(t, "DELETE %s after its POSTs were refused: %v; want 404, nothing to cancel", refusedID, err)
			}
			return ctx
		}).
		Assess("once Jobs are gone (as their TTL removes them), POSTs succeed again, also of the IDs refused before, with another body", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			deleteJobs(ctx, t)
			// The quota's usage follows the deletions after a moment.
			c := api(t, suite.backend.URL())
			if _, err := submitUntil(ctx, c, experiment("quota-after", ""), 30*time.Second, http.StatusCreated); err != nil {
				t.Errorf("after the Jobs were gone: %v", err)
			}
			refusedID := fmt.Sprintf("quota-%02d", quota+3)
			if sub, err := c.Submit(ctx, experiment(refusedID, `, "fixed": true`)); err != nil || !sub.Created {
				errorf(t, "POST %s, refused by the quota before, with a fixed body = %+v %v; want 201", refusedID, sub, err)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			_ = suite.admin.CoreV1().ResourceQuotas(ns).Delete(ctx, "reliability-jobs", metav1.DeleteOptions{})
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestMaxInflight(t *testing.T) {
	const limit = 2
	f := features.New("--max-inflight bounds POSTs being processed: beyond it, 429 at once").
		Setup(backendAndNoJobs).
		Assess("two POSTs in flight, the third is refused, the two finish", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			b := extraBackend(ctx, t, "inflight", "--max-inflight", fmt.Sprint(limit))
			addr := strings.TrimPrefix(b.URL(), "http://")
			var held []*halfSent
			for i := range limit {
				h, err := startHalf(ctx, addr, fmt.Sprintf("inflight-%d", i))
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, h)
			}
			// Their handlers must have taken their places before the third.
			time.Sleep(500 * time.Millisecond)
			c := api(t, b.URL())
			t0 := time.Now()
			_, err := c.Submit(ctx, experiment("inflight-over", ""))
			elapsed := time.Since(t0)
			if err != nil && gmini.StatusCode(err) == 0 {
				t.Fatal(err)
			}
			if e := checkRefused(t, "POST beyond --max-inflight", err, http.StatusTooManyRequests, "being submitted already"); e != nil && e.RetryAfter == 0 {
				t.Error("429 without Retry-After")
			}
			if elapsed > time.Second {
				t.Errorf("the 429 took %s; it must come at once", elapsed)
			}
			var wg sync.WaitGroup
			answers := make([]answer, len(held))
			errs := make([]error, len(held))
			for i, h := range held {
				wg.Go(func() { answers[i], errs[i] = h.finish() })
			}
			wg.Wait()
			for i := range held {
				if errs[i] != nil || answers[i].Code != http.StatusCreated {
					t.Errorf("POST %d in flight: %v %v, want 201", i, answers[i], errs[i])
				}
			}
			if sub, err := c.Submit(ctx, experiment("inflight-after", "")); err != nil || !sub.Created {
				t.Errorf("POST once the others finished: %+v %v, want 201", sub, err)
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
