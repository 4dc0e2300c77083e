//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const (
	concurrentExperiments = 1000
	concurrentClients     = 50
)

// result is one POST's outcome in a load run.
type result struct {
	id      string
	c       wire.Submission
	err     error
	elapsed time.Duration
}

// postAll sends one POST per id from clients concurrent workers, each with
// its own connection pool, and returns the results in ids' order.
func postAll(ctx context.Context, t *testing.T, base string, ids []string, clients int) []result {
	results := make([]result, len(ids))
	next := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		c := apiWith(t, base, newClient(1, true))
		wg.Go(func() {
			for i := range next {
				r := result{id: ids[i]}
				t0 := time.Now()
				r.c, r.err = c.Submit(ctx, experiment(ids[i], ""))
				r.elapsed = time.Since(t0)
				results[i] = r
			}
		})
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

// latencies summarises the answers' durations.
func latencies(rs []result) string {
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = r.elapsed
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	pct := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", pct(.5), pct(.9), pct(.99), pct(1))
}

func TestConcurrentSubmissions(t *testing.T) {
	ids := make([]string, concurrentExperiments)
	for i := range ids {
		ids[i] = fmt.Sprintf("Load-%04d", i)
	}
	f := features.New(fmt.Sprintf("%d experiments from %d concurrent clients make exactly %d Jobs", concurrentExperiments, concurrentClients, concurrentExperiments)).
		Setup(backendAndNoJobs).
		Assess("every POST gets 201 and names its own Job", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			t0 := time.Now()
			rs := postAll(ctx, t, suite.backend.URL(), ids, concurrentClients)
			elapsed := time.Since(t0)
			t.Logf("%d POSTs from %d clients took %s (%.0f/s); latency %s",
				len(rs), concurrentClients, elapsed.Round(time.Millisecond), float64(len(rs))/elapsed.Seconds(), latencies(rs))

			jobFor := map[string]string{} // job name -> id
			bad := 0
			for _, r := range rs {
				switch {
				case r.err != nil:
					bad++
					errorf(t, "POST %s: %v", r.id, r.err)
				case !r.c.Created || r.c.ID != r.id:
					bad++
					errorf(t, "POST %s: %+v, want 201 with created true", r.id, r.c)
				default:
					if other, dup := jobFor[r.c.Job]; dup {
						t.Errorf("experiments %s and %s were both answered with Job %s", r.id, other, r.c.Job)
					}
					jobFor[r.c.Job] = r.id
				}
				if bad > 10 {
					t.Fatalf("too many failed POSTs; stopping")
				}
			}

			jobs := managedJobs(ctx, t)
			if len(jobs) != concurrentExperiments {
				t.Errorf("the API server holds %d managed Jobs, want %d", len(jobs), concurrentExperiments)
			}
			seen := map[string]bool{}
			for _, j := range jobs {
				id, answered := jobFor[j.Name]
				switch {
				case !answered:
					t.Errorf("Job %s (experiment %q) exists but no answer named it", j.Name, j.Annotations[annotID])
				case j.Annotations[annotID] != id:
					t.Errorf("Job %s has experiment-id %q, the answer named it for %q", j.Name, j.Annotations[annotID], id)
				}
				seen[j.Name] = true
			}
			for name, id := range jobFor {
				if !seen[name] {
					t.Errorf("experiment %s was answered 201 with Job %s, which does not exist (lost)", id, name)
				}
			}
			return ctx
		}).
		Assess("the same experiments again create nothing and all get 200", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			before := managedJobs(ctx, t)
			names := map[string]bool{}
			for _, j := range before {
				names[j.Name] = true
			}
			t0 := time.Now()
			rs := postAll(ctx, t, suite.backend.URL(), ids, concurrentClients)
			elapsed := time.Since(t0)
			t.Logf("%d retried POSTs took %s (%.0f/s); latency %s",
				len(rs), elapsed.Round(time.Millisecond), float64(len(rs))/elapsed.Seconds(), latencies(rs))
			bad := 0
			for _, r := range rs {
				if r.err != nil || r.c.Created || !names[r.c.Job] || r.c.ID != r.id {
					bad++
					errorf(t, "retry of %s: %+v (%v), want 200 naming an existing Job", r.id, r.c, r.err)
				}
				if bad > 10 {
					t.Fatalf("too many failed retries; stopping")
				}
			}
			if after := managedJobs(ctx, t); len(after) != len(before) {
				t.Errorf("retries changed the Job count from %d to %d", len(before), len(after))
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			t0 := time.Now()
			deleteJobs(ctx, t)
			t.Logf("deleted the Jobs in %s", time.Since(t0).Round(time.Millisecond))
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
