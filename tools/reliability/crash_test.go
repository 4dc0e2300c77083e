//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/internal/jobtrack"
	"github.com/gmini-dev/gmini/tools/postgres"
)

// crashBurst POSTs n experiments from 8 clients and calls crash once after
// acknowledged 201s; it returns the IDs answered 201 and those that got
// no answer (the crash cut them off).
func crashBurst(ctx context.Context, t *testing.T, base string, prefix string, n, after int, crash func()) (acked, unknown []string) {
	t.Helper()
	var (
		mu      sync.Mutex
		next    atomic.Int64
		crashed sync.Once
		wg      sync.WaitGroup
	)
	c := api(t, base)
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id := fmt.Sprintf("%s-%03d", prefix, i)
				sub, err := c.Submit(ctx, experiment(id, ""))
				mu.Lock()
				switch code := submitted(sub, err); {
				case code == http.StatusCreated:
					acked = append(acked, id)
				case code != 0 && code < 500:
					t.Errorf("POST %s = %d %+v (%v); want 201, or 5xx or no answer around the crash", id, code, sub, err)
				default:
					unknown = append(unknown, id)
				}
				k := len(acked)
				mu.Unlock()
				if k >= after {
					crashed.Do(crash)
				}
			}
		})
	}
	wg.Wait()
	return acked, unknown
}

// checkAfterCrash: every acknowledged experiment has its Job; POSTing the
// whole burst again runs nothing twice (no 201 for an acknowledged one, at
// most one Job per experiment over the test); and once cancelled, every
// acknowledged experiment has its final record. That is what README
// promises across a crash: a claim or progress the crash lost is rebuilt
// from the Job, which holds until its final record is stored durably.
func checkAfterCrash(ctx context.Context, t *testing.T, base string, jobs *jobtrack.Tracker, acked, unknown []string) {
	t.Helper()
	c := api(t, base)
	for _, id := range acked {
		if _, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{}); err != nil {
			errorf(t, "experiment %s was acknowledged (201) before the crash but has no Job: %v", id, err)
		}
	}
	all := append(append([]string{}, acked...), unknown...)
	for _, id := range all {
		sub, err := submitUntil(ctx, c, experiment(id, ""), 30*time.Second, http.StatusOK, http.StatusCreated)
		if err != nil {
			errorf(t, "POST %s again: %v", id, err)
			continue
		}
		if sub.Created && slices.Contains(acked, id) {
			errorf(t, "POST %s again = 201: an experiment acknowledged before the crash was run again", id)
		}
	}
	time.Sleep(time.Second) // late watch events
	for _, id := range all {
		if n := jobs.Jobs(id); n > 1 {
			errorf(t, "experiment %s got %d Jobs across the crash, want at most one", id, n)
		}
	}
	for _, id := range acked {
		if _, err := c.Cancel(ctx, id); err != nil {
			errorf(t, "DELETE %s: %v", id, err)
		}
	}
	var missing []string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		states, err := listedStates(ctx, base)
		if err != nil {
			return false, nil
		}
		missing = missing[:0]
		for _, id := range acked {
			if states[id] != "Cancelled" {
				missing = append(missing, id+"="+states[id])
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		errorf(t, "a minute after cancelling them, %d acknowledged experiments have no final record: %v", len(missing), missing)
	}
}

// listedStates reads every record's state from GET /experiments (history
// on: the records).
func listedStates(ctx context.Context, base string) (map[string]string, error) {
	c, err := gmini.New(base)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	err = c.ListAll(ctx, gmini.ListOptions{Limit: 1000}, func(s wire.Status) bool {
		out[s.ID] = s.State
		return true
	})
	return out, err
}

func TestHistorySurvivesCrashes(t *testing.T) {
	const (
		burst = 60
		after = 20 // crash once this many POSTs were acknowledged
	)
	var pg *postgres.Server
	f := features.New("a crash mid-burst loses no acknowledged experiment and runs none twice: the backend SIGKILLed (SQLite), PostgreSQL's processes SIGKILLed (claims commit with synchronous_commit=off)").
		Setup(backendAndNoJobs).
		Assess("SQLite: the backend killed with SIGKILL while it writes", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := trackJobs(ctx, t)
			b := ensureBackend(ctx, t)
			acked, unknown := crashBurst(ctx, t, b.URL(), "crash-sqlite", burst, after, func() {
				if err := b.Signal(syscall.SIGKILL); err != nil {
					t.Errorf("kill the backend: %v", err)
				}
			})
			if code, err := b.Wait(ctx); err != nil || code != -1 {
				t.Fatalf("backend after SIGKILL: exit %d, %v; want killed", code, err)
			}
			t.Logf("SQLite: %d acknowledged, %d cut off by the kill", len(acked), len(unknown))
			if len(acked) < after {
				t.Fatalf("only %d POSTs acknowledged before the kill, want at least %d", len(acked), after)
			}
			b = ensureBackend(ctx, t)
			checkAfterCrash(ctx, t, b.URL(), jobs, acked, unknown)
			deleteJobs(ctx, t)
			return ctx
		}).
		Assess("PostgreSQL: the server's processes killed with SIGKILL while the backend writes", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			var err error
			pg, err = postgres.Start(ctx, suite.layout.Output("postgres", clusterName+"-crash"), postgres.WithLogger(logger))
			if err != nil {
				t.Fatal(err)
			}
			// This backend must be the one that records, into PostgreSQL:
			// the main one (SQLite) stops and gives up the lease.
			if code, err := suite.backend.Stop(ctx); err != nil || code != 0 {
				t.Fatalf("stop the main backend: exit %d, %v", code, err)
			}
			b := extraBackend(ctx, t, "postgres-crash", "--history-dsn", pg.DSN(), "--identity", "reliability-pg-crash")
			if _, err := submitUntil(ctx, api(t, b.URL()), experiment("crash-pg-first", ""), 30*time.Second, http.StatusCreated); err != nil {
				failf(t, "POST with PostgreSQL up: %v", err)
			}
			jobs := trackJobs(ctx, t)
			crashed := make(chan error, 1)
			acked, unknown := crashBurst(ctx, t, b.URL(), "crash-pg", burst, after, func() {
				crashed <- pg.Crash(ctx)
			})
			if err := <-crashed; err != nil {
				t.Fatal(err)
			}
			t.Logf("PostgreSQL: %d acknowledged, %d answered 5xx or not at all while it was down", len(acked), len(unknown))
			if err := pg.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			checkAfterCrash(ctx, t, b.URL(), jobs, acked, unknown)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t) // its recorder lets the Jobs go
			deleteJobs(ctx, t)
			stopPostgres(ctx, t, pg)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
