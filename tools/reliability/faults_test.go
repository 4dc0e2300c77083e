//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/tools/cluster/local"
)

const (
	// outageMargin is what a 503 may take beyond --api-timeout: the
	// handler's own work and the test's scheduling on a 2-core machine.
	outageMargin = 2 * time.Second
	// readyzBound is the backend's readiness check timeout (2 s) plus
	// the same margin.
	readyzBound = 2*time.Second + outageMargin
	// recoveryBound is how long the backend may take to notice by
	// itself that the API server is back.
	recoveryBound = time.Minute
	// goroutineMargin allows for what legitimately differs between two
	// quiet moments of the same process: the API client's HTTP/2
	// connection may be between its read loop and a ping, the informer's
	// reflector may be between a watch and its relist, and the runtime may
	// be running a GC worker. A leak of one goroutine per failed request
	// would exceed it: the outage sends outageRequests of them.
	goroutineMargin = 5
	outageRequests  = 10
	// outageHold is how long the API server stays down.
	outageHold = 10 * time.Second
	// templateBound is how long a template change may take to reach new
	// Jobs after an outage. The informer's reflector retries with
	// exponential backoff capped at 30 s and jittered up to twice that
	// (client-go's NewExponentialBackoffManager(800ms, 30s, 2m, 2.0, 1.0)),
	// so a change can wait up to a minute for the watch to come back.
	templateBound = 2 * time.Minute
	// probeAnnotation marks a template change made after the outage.
	probeAnnotation = "gmini.dev/reliability-probe"
)

func TestAPIServerOutage(t *testing.T) {
	var before, stoppedAt int
	var stopTime time.Time
	failedIDs := []string{}
	f := features.New("the backend survives an API server outage: 503 in bounded time, then recovers alone").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			// Warm up: one Job and one readiness check, so the counts below
			// compare a process in the same state.
			if sub, err := api(t, suite.backend.URL()).Submit(ctx, experiment("outage-warmup", "")); err != nil || !sub.Created {
				failf(t, "warm-up POST: %+v %v, want 201", sub, err)
			}
			time.Sleep(2 * time.Second)
			var err error
			if before, err = goroutines(ctx, suite.backend.URL()); err != nil {
				t.Fatalf("goroutines before: %v", err)
			}
			t.Logf("backend goroutines before the outage: %d", before)
			return ctx
		}).
		Assess("with the API server stopped, POST answers 503 within --api-timeout and /readyz fails", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := suite.cluster.StopComponent(ctx, local.APIServer); err != nil {
				t.Fatalf("stop kube-apiserver: %v", err)
			}
			stopTime = time.Now()
			base := suite.backend.URL()
			client := newClient(1, false)
			c := api(t, base)
			var worst time.Duration
			for i := 0; i < outageRequests; i++ {
				// Spread over outageHold, so the informer's watch breaks and
				// its relists start backing off, as in a real outage.
				time.Sleep(time.Until(stopTime.Add(time.Duration(i) * outageHold / outageRequests)))
				id := fmt.Sprintf("outage-%02d", i)
				t0 := time.Now()
				_, err := c.Submit(ctx, experiment(id, ""))
				elapsed := time.Since(t0)
				if err != nil && gmini.StatusCode(err) == 0 {
					failf(t, "POST during the outage: %v", err)
				}
				if e := checkRefused(t, "POST during the outage", err, http.StatusServiceUnavailable, ""); e != nil && e.RetryAfter == 0 {
					t.Errorf("503 without Retry-After")
				}
				if elapsed > apiTimeout+outageMargin {
					t.Errorf("POST took %s to fail, want under %s (--api-timeout %s + %s)", elapsed, apiTimeout+outageMargin, apiTimeout, outageMargin)
				}
				worst = max(worst, elapsed)
				failedIDs = append(failedIDs, id)
			}
			t.Logf("%d POSTs during the outage: all 503, slowest %s", outageRequests, worst.Round(time.Millisecond))
			a, err := get(ctx, client, base+"/readyz")
			if err != nil {
				failf(t, "GET /readyz during the outage: %v", err)
			}
			if a.Code != http.StatusServiceUnavailable || a.Elapsed > readyzBound {
				errorf(t, "/readyz during the outage = %s after %s, want 503 within %s", a, a.Elapsed, readyzBound)
			}
			t.Logf("/readyz during the outage: %d after %s", a.Code, a.Elapsed.Round(time.Millisecond))
			if a, err := get(ctx, client, base+"/healthz"); err != nil || a.Code != http.StatusOK {
				errorf(t, "/healthz during the outage = %v %v, want 200: liveness must not depend on the API server", a, err)
			}
			if stoppedAt, err = goroutines(ctx, base); err == nil {
				t.Logf("backend goroutines during the outage: %d", stoppedAt)
			}
			return ctx
		}).
		Assess("once the API server is back, the backend recovers by itself and the next POST works", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			down := time.Since(stopTime)
			t0 := time.Now()
			if err := suite.cluster.StartComponent(ctx, local.APIServer); err != nil {
				t.Fatalf("start kube-apiserver: %v", err)
			}
			apiBack := time.Since(t0)
			base := suite.backend.URL()
			client := newClient(1, false)
			t1 := time.Now()
			var last answer
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, recoveryBound, true, func(ctx context.Context) (bool, error) {
				a, err := get(ctx, client, base+"/readyz")
				last = a
				return err == nil && a.Code == http.StatusOK, nil
			})
			if err != nil {
				failf(t, "backend not ready %s after the API server came back: last /readyz %s", recoveryBound, last)
			}
			t.Logf("API server down %s, restarted in %s; backend ready again %s after that",
				down.Round(time.Millisecond), apiBack.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
			if sub, err := api(t, base).Submit(ctx, experiment("outage-after", "")); err != nil || !sub.Created {
				failf(t, "first POST after recovery: %+v %v, want 201", sub, err)
			}
			// The 503s must have left nothing behind: a client that
			// retries them gets a fresh Job, not a conflict.
			failed := map[string]bool{}
			for _, id := range failedIDs {
				failed[id] = true
			}
			for _, j := range managedJobs(ctx, t) {
				if id := j.Annotations[annotID]; failed[id] {
					t.Errorf("experiment %s was answered 503 but its Job %s exists", id, j.Name)
				}
			}
			return ctx
		}).
		Assess("the template cache follows changes again: its watch resumed by itself", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			stamp := time.Now().UTC().Format("150405.000000")
			patch := []byte(`{"spec":{"jobTemplate":{"metadata":{"annotations":{"` + probeAnnotation + `":"` + stamp + `"}}}}}`)
			if _, err := suite.admin.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatalf("patch the template: %v", err)
			}
			t0 := time.Now()
			c := api(t, suite.backend.URL())
			n := 0
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, templateBound, true, func(ctx context.Context) (bool, error) {
				n++
				sub, err := c.Submit(ctx, experiment(fmt.Sprintf("outage-template-%03d", n), ""))
				if err != nil || !sub.Created {
					return false, fmt.Errorf("POST: %+v %v, want 201", sub, err)
				}
				job, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, sub.Job, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				return job.Annotations[probeAnnotation] == stamp, nil
			})
			if err != nil {
				failf(t, "new Jobs still use the template from before the outage %s after changing it: %v", templateBound, err)
			}
			t.Logf("a template change reached new Jobs %s after it was made (%d POSTs)", time.Since(t0).Round(time.Millisecond), n)
			return ctx
		}).
		Assess("no goroutine leaked", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Poll: after recovery the client may still be closing the
			// connections that broke.
			var after int
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
				n, err := goroutines(ctx, suite.backend.URL())
				after = n
				return err == nil && n <= before+goroutineMargin, nil
			})
			t.Logf("backend goroutines: %d before the outage, %d during, %d after recovery (margin %d)", before, stoppedAt, after, goroutineMargin)
			if err != nil {
				errorf(t, "goroutines grew from %d to %d across the outage (margin %d)", before, after, goroutineMargin)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Whatever failed above, leave the control plane running and
			// the template as it was for the tests after this one.
			for _, c := range []string{local.APIServer, local.ControllerManager} {
				if err := suite.cluster.StartComponent(ctx, c); err != nil {
					t.Errorf("restart %s: %v", c, err)
				}
			}
			undo := []byte(`{"spec":{"jobTemplate":{"metadata":{"annotations":{"` + probeAnnotation + `":null}}}}}`)
			if _, err := suite.admin.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, undo, metav1.PatchOptions{}); err != nil {
				t.Errorf("undo the template change: %v", err)
			}
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func TestAPIServerHang(t *testing.T) {
	const hung = 5
	var pid int
	var failed []string
	f := features.New("a hung API server (connections open, no answers): 503 after --api-timeout, and a 503 is safe to retry").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			var err error
			if pid, err = suite.cluster.PID(local.APIServer); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("POSTs and /readyz answer 503 within their timeouts", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// SIGSTOP keeps the sockets open and the kernel completing
			// handshakes: the backend's calls hang instead of being
			// refused, so only its own timeout can end them.
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatalf("SIGSTOP kube-apiserver %d: %v", pid, err)
			}
			base := suite.backend.URL()
			c := api(t, base)
			elapsed := make([]time.Duration, hung)
			errs := make([]error, hung)
			var wg sync.WaitGroup
			for i := range hung {
				id := fmt.Sprintf("hang-%02d", i)
				failed = append(failed, id)
				wg.Go(func() {
					t0 := time.Now()
					_, errs[i] = c.Submit(ctx, experiment(id, ""))
					elapsed[i] = time.Since(t0)
				})
			}
			ready, rerr := get(ctx, newClient(1, false), base+"/readyz")
			wg.Wait()
			var worst time.Duration
			for i := range hung {
				if errs[i] != nil && gmini.StatusCode(errs[i]) == 0 {
					failf(t, "POST while the API server hangs: %v", errs[i])
				}
				checkRefused(t, "POST while the API server hangs", errs[i], http.StatusServiceUnavailable, "")
				if elapsed[i] > apiTimeout+outageMargin {
					t.Errorf("POST took %s, want under %s", elapsed[i], apiTimeout+outageMargin)
				}
				worst = max(worst, elapsed[i])
			}
			t.Logf("%d concurrent POSTs while the API server hangs: 503, slowest %s (--api-timeout %s)", hung, worst.Round(time.Millisecond), apiTimeout)
			if rerr != nil || ready.Code != http.StatusServiceUnavailable || ready.Elapsed > readyzBound {
				errorf(t, "/readyz while the API server hangs = %v after %s (%v), want 503 within %s", ready, ready.Elapsed, rerr, readyzBound)
			}
			t.Logf("/readyz while the API server hangs: %d after %s", ready.Code, ready.Elapsed.Round(time.Millisecond))
			return ctx
		}).
		Assess("after it resumes, retrying each 503 gives one Job per experiment", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatalf("SIGCONT kube-apiserver %d: %v", pid, err)
			}
			t0 := time.Now()
			client := newClient(1, false)
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, recoveryBound, true, func(ctx context.Context) (bool, error) {
				a, err := get(ctx, client, suite.backend.URL()+"/readyz")
				return err == nil && a.Code == http.StatusOK, nil
			})
			if err != nil {
				failf(t, "backend not ready %s after the API server resumed", recoveryBound)
			}
			t.Logf("backend ready %s after the API server resumed", time.Since(t0).Round(time.Millisecond))
			// A create that timed out may still have reached the API
			// server, so a 503 means "maybe": the retry must then find
			// that Job (200), not conflict with it.
			var created, existed int
			c := api(t, suite.backend.URL())
			for _, id := range failed {
				sub, err := c.Submit(ctx, experiment(id, ""))
				switch submitted(sub, err) {
				case 0:
					failf(t, "retry %s: %v", id, err)
				case http.StatusCreated:
					created++
				case http.StatusOK:
					existed++
				default:
					errorf(t, "retry %s: %v, want 201 or 200", id, err)
				}
			}
			t.Logf("retries after the hang: %d created, %d found the Job the timed-out request had made", created, existed)
			count := map[string]int{}
			for _, j := range managedJobs(ctx, t) {
				count[j.Annotations[annotID]]++
			}
			for _, id := range failed {
				if count[id] != 1 {
					t.Errorf("experiment %s has %d Jobs, want 1", id, count[id])
				}
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			_ = syscall.Kill(pid, syscall.SIGCONT) // never leave it frozen
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
