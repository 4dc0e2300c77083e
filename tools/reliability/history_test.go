//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/postgres"
)

func TestHistoryList(t *testing.T) {
	const n = 25
	f := features.New("GET /experiments pages the history, newest first, filters by state, and refuses bad parameters with 400").
		Setup(backendAndNoJobs).
		Assess("pages of 10, newest first, without gaps or repeats", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := api(t, suite.backend.URL())
			for i := range n {
				if sub, err := c.Submit(ctx, experiment(fmt.Sprintf("page-%02d", i), "")); err != nil || !sub.Created {
					failf(t, "POST page-%02d: %+v %v, want 201", i, sub, err)
				}
			}
			var got []string
			cont := ""
			for len(got) < n {
				page, err := c.List(ctx, gmini.ListOptions{Limit: 10, Continue: cont})
				if err != nil {
					failf(t, "GET /experiments?limit=10&continue=%s: %v", cont, err)
				}
				if len(page.Items) != 10 || page.Continue == "" {
					t.Fatalf("page of %d items, continue %q; want 10 and more to come", len(page.Items), page.Continue)
				}
				for _, it := range page.Items {
					if it.Source != "history" {
						t.Errorf("%s: source %q, want history", it.ID, it.Source)
					}
					got = append(got, it.ID)
				}
				cont = page.Continue
			}
			for i := range n {
				if want := fmt.Sprintf("page-%02d", n-1-i); got[i] != want {
					t.Errorf("item %d = %s, want %s (newest first)", i, got[i], want)
				}
			}
			return ctx
		}).
		Assess("bad limit, continue and state are 400 with a message", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			// Raw: the Go client sends no limit below 1 nor one that is not
			// a number, and continue tokens only as the backend gave them.
			for q, want := range map[string]string{
				"limit=0":             "limit",
				"limit=-5":            "limit",
				"limit=ten":           "limit",
				"limit=1001":          "limit",
				"continue=not-a-page": "continue",
				"state=Sleeping":      "state",
			} {
				a, err := get(ctx, newClient(1, false), base+"/experiments?"+q)
				if err != nil {
					t.Fatal(err)
				}
				checkError(t, "GET /experiments?"+q, a, http.StatusBadRequest, want)
			}
			// One vocabulary in both modes: a state no record takes lists
			// nothing, it is no error. No item is "items": [], never null.
			if page, err := api(t, base).List(ctx, gmini.ListOptions{State: "Deleting"}); err != nil || page.Items == nil || len(page.Items) > 0 {
				errorf(t, "GET /experiments?state=Deleting from history = %+v %v; want 200 and no item", page, err)
			}
			return ctx
		}).
		Assess("a state filter keeps only that state", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			page, err := api(t, suite.backend.URL()).List(ctx, gmini.ListOptions{State: "Cancelled", Limit: 1000})
			if err != nil {
				failf(t, "GET ?state=Cancelled: %v", err)
			}
			for _, it := range page.Items {
				if it.State != "Cancelled" {
					t.Errorf("%s in state %s listed under state=Cancelled", it.ID, it.State)
				}
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

// TestWithoutHistory runs a backend without history, as --history-dsn
// unset gives: the Jobs are the only record.
func TestWithoutHistory(t *testing.T) {
	f := features.New("without history, a Job's end ends the experiment: a later POST runs it again (the documented window)").
		Setup(backendAndNoJobs).
		Assess("POST, DELETE, the same POST: 201 again", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			b := extraBackend(ctx, t, "no-history")
			c := api(t, b.URL())
			exp := experiment("window-1", "")
			if sub, err := c.Submit(ctx, exp); err != nil || !sub.Created {
				failf(t, "POST: %+v %v, want 201", sub, err)
			}
			if sub, err := c.Submit(ctx, exp); err != nil || sub.Created {
				failf(t, "retry while the Job exists: %+v %v, want 200", sub, err)
			}
			if _, err := c.Cancel(ctx, "window-1"); err != nil {
				failf(t, "DELETE: %v", err)
			}
			deleteJobs(ctx, t) // wait until it is gone
			if sub, err := c.Submit(ctx, exp); err != nil || !sub.Created {
				t.Errorf("the same POST once the Job is gone: %+v %v, want 201 (without history it runs again)", sub, err)
			}
			if _, err := c.List(ctx, gmini.ListOptions{Limit: 10}); err != nil {
				t.Errorf("list from the live Jobs: %v", err)
			}
			// The same vocabulary as with history: Cancelled, which no live
			// Job shows, lists nothing.
			if page, err := c.List(ctx, gmini.ListOptions{State: "Cancelled"}); err != nil || page.Items == nil || len(page.Items) > 0 {
				t.Errorf("GET /experiments?state=Cancelled from the live Jobs = %+v %v; want 200 and no item", page, err)
			}
			return ctx
		}).
		Assess("a POST while its Job is being deleted is told to retry", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			b := extraBackend(ctx, t, "no-history-deleting")
			job := handMadeJob(ctx, t, "window-deleting")
			job.Finalizers = []string{holdFinalizer}
			jobs := suite.admin.BatchV1().Jobs(ns)
			if _, err := jobs.Create(ctx, job, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := jobs.Delete(ctx, job.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := api(t, b.URL()).Submit(ctx, map[string]any{"id": "window-deleting", "key": "other"})
			checkRefused(t, "POST while the Job is being deleted", err, http.StatusConflict, "is being deleted; retry in a few seconds")
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			releaseHeld(ctx, t)
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestHistoryDatabaseOfAnotherNamespace(t *testing.T) {
	f := features.New("a backend of another namespace pointed at this namespace's history database refuses it: POST 503 naming the owner, nothing claimed or created").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			// The main backend owns its database once it opened it.
			if _, err := submitUntil(ctx, api(t, suite.backend.URL()), experiment("owner-1", ""), 30*time.Second, http.StatusCreated); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("POST to the other namespace's backend: 503 that says whose the database is", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const other = "gmini-other"
			// Not ready, and never will be: its ServiceAccount may not read
			// the template in that namespace. It serves all the same.
			logPath := filepath.Join(suite.layout.Logs(clusterName), "backend-other-namespace.log")
			_ = os.Remove(logPath)
			b := backendproc.New(backendproc.Options{
				Binary: suite.backendBin, LogPath: logPath, Log: logger, NotReady: true,
				Args: []string{"--kubeconfig", suite.backendKubeconfig, "--namespace", other, "--listen", "127.0.0.1:0",
					"--log-format", "text", "--api-timeout", apiTimeout.String(),
					"--history-dsn", "sqlite:" + suite.historyDB, "--identity", "reliability-other"},
			})
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer b.Stop(context.WithoutCancel(ctx))
			// The database opens in the background: wait for its verdict.
			c := api(t, b.URL())
			var last error
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				_, last = c.Submit(ctx, experiment("owner-2", ""))
				return last != nil && strings.Contains(last.Error(), "holds the experiments of namespace"), nil
			})
			if err != nil {
				failf(t, "POST to a backend of %s on %s's database: %v; want 503 naming the owner", other, ns, last)
			}
			checkRefused(t, "POST to a backend on another namespace's database", last, http.StatusServiceUnavailable, `holds the experiments of namespace "`+ns+`", not "`+other+`"`)
			if _, err := api(t, suite.backend.URL()).Get(ctx, "owner-2"); gmini.StatusCode(err) != http.StatusNotFound {
				errorf(t, "GET owner-2 from the owner's backend: %v; want 404, nothing claimed", err)
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

func TestHistoryDatabaseOutage(t *testing.T) {
	var pg *postgres.Server
	f := features.New("history in PostgreSQL: the database away, POST answers 503, live Jobs still answer, and the backend recovers without a restart").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			var err error
			pg, err = postgres.Start(ctx, suite.layout.Output("postgres", clusterName), postgres.WithLogger(logger))
			if err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("POST 503 while it is away, live reads work, POST 201 once it is back", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			b := extraBackend(ctx, t, "postgres", "--history-dsn", pg.DSN())
			c := newClient(1, false)
			bc := api(t, b.URL())
			// The store opens in the background: the backend is ready (it
			// serves live Jobs) before its first POST can be claimed.
			if _, err := submitUntil(ctx, bc, experiment("pg-out-1", ""), 30*time.Second, http.StatusCreated); err != nil {
				failf(t, "POST with the database up: %v", err)
			}
			if err := pg.Halt(ctx); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			_, err := bc.Submit(ctx, experiment("pg-out-2", ""))
			elapsed := time.Since(t0)
			if err != nil && gmini.StatusCode(err) == 0 {
				t.Fatal(err)
			}
			if e := checkRefused(t, "POST with the database away", err, http.StatusServiceUnavailable, "history"); e != nil && (e.RetryAfter == 0 || elapsed > apiTimeout+outageMargin) {
				t.Errorf("503 after %s, Retry-After %s: want it within %s, with Retry-After", elapsed, e.RetryAfter, apiTimeout+outageMargin)
			}
			if _, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName("pg-out-2"), metav1.GetOptions{}); err == nil {
				t.Error("a Job was made for a POST answered 503")
			}
			if st, err := bc.Get(ctx, "pg-out-1"); err != nil || st.Source != "job" {
				t.Errorf("GET of a live experiment with the database away = %+v %v, want 200 from its Job", st, err)
			}
			if a, err := get(ctx, c, b.URL()+"/readyz"); err != nil || a.Code != http.StatusOK {
				t.Errorf("/readyz with the database away = %v %v, want 200: readiness does not depend on it", a, err)
			}
			if _, err := bc.List(ctx, gmini.ListOptions{}); gmini.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("GET /experiments with the database away: %v, want 503", err)
			}
			// Without a Job only the record could answer: 503, as README says.
			if _, err := bc.Get(ctx, "pg-out-none"); gmini.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("GET /experiments/pg-out-none (no Job) with the database away: %v, want 503", err)
			}
			if err := bc.Logs(ctx, "pg-out-none", io.Discard); gmini.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("GET /experiments/pg-out-none/logs (no Job) with the database away: %v, want 503", err)
			}
			if _, err := bc.Cancel(ctx, "pg-out-none"); gmini.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("DELETE of an experiment without a Job with the database away: %v, want 503", err)
			}
			// A backend that starts while the database is away starts anyway.
			late := extraBackend(ctx, t, "postgres-late", "--history-dsn", pg.DSN())
			if _, err := api(t, late.URL()).Submit(ctx, experiment("pg-out-3", "")); gmini.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("POST to a backend started with the database away: %v, want 503", err)
			}

			pid := b.PID()
			if err := pg.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			t0 = time.Now()
			for _, p := range []*backendproc.Process{b, late} {
				if _, err := submitUntil(ctx, api(t, p.URL()), experiment("pg-out-2", ""), 30*time.Second, http.StatusCreated, http.StatusOK); err != nil {
					errorf(t, "after the database came back: %v", err)
				}
			}
			t.Logf("both backends accept POSTs again %s after the database came back", time.Since(t0).Round(100*time.Millisecond))
			if b.PID() != pid {
				t.Error("the backend restarted")
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			deleteJobs(ctx, t)
			stopPostgres(ctx, t, pg)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
