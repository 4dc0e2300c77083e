//go:build e2e

package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

const (
	shutdownClients = 50
	// shutdownLoad is how long the clients run before SIGTERM, so that
	// the client-side rate limiter of the backend's API client (50/s,
	// burst 100) is saturated and every client has a POST in flight.
	shutdownLoad = 1500 * time.Millisecond
)

// outcome is what happened to one POST sent around SIGTERM.
type outcome struct {
	id         string
	start, end time.Time
	a          answer
	err        error
}

// refusedAtConnect reports a connection the kernel refused: the listener
// was closed, so the request never reached the backend.
func refusedAtConnect(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// resetBeforeAccept reports a connection that the kernel had completed
// but the backend never accepted: closing the listener resets the
// connections still waiting in its accept queue.
func resetBeforeAccept(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || strings.HasSuffix(err.Error(), "EOF")
}

func TestGracefulShutdown(t *testing.T) {
	var outcomes []outcome
	var signalled time.Time
	var exitCode int
	f := features.New("SIGTERM with requests in flight: each accepted request finishes and has its Job").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			ensureBackend(ctx, t)
			deleteJobs(ctx, t)
			return ctx
		}).
		Assess("the backend answers what it accepted, then exits 0", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			base := suite.backend.URL()
			var mu sync.Mutex
			var wg sync.WaitGroup
			for w := 0; w < shutdownClients; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// One connection per request: a kept-alive connection
					// that the server closes as idle while a request is
					// being written is a client race of its own, which
					// this test is not about.
					client := newClient(1, false)
					for n := 0; ; n++ {
						o := outcome{id: fmt.Sprintf("shut-%02d-%03d", w, n), start: time.Now()}
						o.a, o.err = post(ctx, client, base, experimentBody(o.id, ""))
						o.end = time.Now()
						mu.Lock()
						outcomes = append(outcomes, o)
						mu.Unlock()
						if o.err != nil || n > 1000 {
							return // the backend is gone
						}
					}
				}()
			}
			time.Sleep(shutdownLoad)
			signalled = time.Now()
			if err := suite.backend.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("SIGTERM: %v", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			code, err := suite.backend.Wait(wctx)
			exitCode = code
			stopped := time.Since(signalled)
			wg.Wait()
			if err != nil {
				failf(t, "backend did not exit after SIGTERM: %v", err)
			}
			if code != 0 {
				failf(t, "backend exited with %d after SIGTERM, want 0", code)
			}
			t.Logf("backend exited %d, %s after SIGTERM", exitCode, stopped.Round(time.Millisecond))
			return ctx
		}).
		Assess("no accepted request failed, and every 2xx has its Job", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := map[string]string{} // experiment id -> job
			for _, j := range managedJobs(ctx, t) {
				jobs[j.Annotations[annotID]] = j.Name
			}
			var ok, inFlight, refused, reset int
			for _, o := range outcomes {
				switch {
				case o.err == nil && o.a.Code/100 == 2:
					ok++
					if o.start.Before(signalled) && o.end.After(signalled) {
						inFlight++
					}
					var c createdAnswer
					if err := json.Unmarshal(o.a.Body, &c); err != nil || c.Job == "" {
						t.Errorf("%s: answer %s has no Job (%v)", o.id, o.a, err)
					} else if jobs[o.id] != c.Job {
						t.Errorf("%s: answered %d with Job %s, but the API server has %q for it", o.id, o.a.Code, c.Job, jobs[o.id])
					}
				case o.err == nil:
					errorf(t, "%s: answered %s during shutdown, want 2xx or a refused connection", o.id, o.a)
				case refusedAtConnect(o.err):
					refused++
				case resetBeforeAccept(o.err) && o.start.After(signalled.Add(-time.Second)):
					// Not refused at connect, but never served either:
					// prove it by the absence of its Job. A client sees
					// the same as for a refused connection and may retry.
					reset++
					if job, made := jobs[o.id]; made {
						t.Errorf("%s: the connection was reset (%v) but Job %s was created: an accepted request lost its answer", o.id, o.err, job)
					}
				default:
					t.Errorf("%s: %v (sent %s before SIGTERM)", o.id, o.err, signalled.Sub(o.start).Round(time.Millisecond))
				}
			}
			t.Logf("%d POSTs: %d answered 2xx (%d of them in flight at SIGTERM), %d refused at connect, %d reset before the backend accepted them",
				len(outcomes), ok, inFlight, refused, reset)
			if inFlight < shutdownClients/2 {
				t.Errorf("only %d requests were in flight at SIGTERM; the test did not exercise a graceful shutdown", inFlight)
			}
			if len(jobs) != ok {
				t.Errorf("%d Jobs exist, %d POSTs were answered 2xx", len(jobs), ok)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if !suite.backend.Running() {
				if err := suite.backend.Start(ctx); err != nil {
					t.Errorf("restart backend: %v", err)
				}
			}
			deleteJobs(ctx, t)
			return ctx
		}).Feature()
	testenv.Test(t, f)
}
