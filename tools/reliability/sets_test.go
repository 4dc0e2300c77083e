//go:build e2e

package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// TestSetRacingItsDelete: a set of 1,000 items POSTed while DELETEs of
// the same set run against it, on the real API server.
func TestSetRacingItsDelete(t *testing.T) {
	const n, set = 1000, "race-set"
	f := features.New("a set of 1,000 racing DELETEs of the set never answers 5xx, and what is left is consistent").
		Setup(backendAndNoJobs).
		Assess("POST and DELETE of one set at once: no 5xx, every item answered, no Job left uncancelled by the last DELETE", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c, err := gmini.New(suite.backend.URL(), gmini.WithHTTPClient(newClient(8, true)))
			if err != nil {
				t.Fatal(err)
			}
			req := wire.SetRequest{ID: set}
			for i := range n {
				item, err := gmini.Item(map[string]any{"id": fmt.Sprintf("race-set-%04d", i)})
				if err != nil {
					t.Fatal(err)
				}
				req.Items = append(req.Items, item)
			}
			var (
				wg      sync.WaitGroup
				sub     wire.SetSubmission
				postErr error
				posted  time.Duration
			)
			done := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				t0 := time.Now()
				sub, postErr = c.SubmitSet(ctx, req)
				posted = time.Since(t0)
			}()
			var deletes, fivexx, notFound int
			var other []string
			for stop := false; !stop; {
				select {
				case <-done:
					stop = true
				default:
				}
				_, err := c.CancelSet(ctx, set)
				deletes++
				switch code := gmini.StatusCode(err); {
				case err == nil:
				case code == http.StatusNotFound:
					notFound++ // the POST has claimed nothing yet
				case code >= 500:
					fivexx++
					other = append(other, err.Error())
				case code == 0:
					t.Fatalf("DELETE /experiment-sets/%s: %v", set, err)
				default:
					other = append(other, err.Error())
				}
				time.Sleep(50 * time.Millisecond)
			}
			wg.Wait()
			if postErr != nil {
				var e *gmini.Error
				if errors.As(postErr, &e) && e.StatusCode >= 500 {
					failf(t, "POST /experiment-sets answered %d: %s", e.StatusCode, e.Message)
				}
				t.Fatalf("POST /experiment-sets: %v", postErr)
			}
			if len(sub.Items) != n {
				t.Fatalf("the set answered %d items, want %d", len(sub.Items), n)
			}
			codes := map[int]int{}
			for i, it := range sub.Items {
				codes[it.Code]++
				if it.Index != i {
					t.Errorf("item %d answered at index %d", i, it.Index)
				}
				if it.Code >= 500 {
					fivexx++
					if len(other) < 10 {
						other = append(other, fmt.Sprintf("item %s: %d %s", it.ID, it.Code, it.Message))
					}
				}
			}
			t.Logf("POST of %d items answered in %s, item codes %v; %d DELETEs of the set meanwhile (%d found nothing yet)", n, posted.Round(time.Millisecond), codes, deletes, notFound)
			if fivexx > 0 {
				t.Errorf("%d answers 5xx: %v", fivexx, other)
			}

			// A last DELETE after the POST ended leaves no live Job of the
			// set that is not being deleted.
			last, err := c.CancelSet(ctx, set)
			if err != nil {
				t.Fatalf("the last DELETE of the set: %v", err)
			}
			t.Logf("the last DELETE: %d in the set, %d cancelled, %d finished, %d failed", last.Total, last.Cancelled, last.Finished, last.Failed)
			live := 0
			for _, j := range managedJobs(ctx, t) {
				if j.Labels[jobspec.LabelSet] == set && j.DeletionTimestamp == nil {
					live++
				}
			}
			if live > 0 {
				t.Errorf("%d Jobs of the set left running after the last DELETE", live)
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
