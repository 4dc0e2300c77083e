//go:build e2e

package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// shutdownClients is the number of requests in flight at SIGTERM, as
// docs/guarantees.md states it.
const shutdownClients = 50

func TestGracefulShutdown(t *testing.T) {
	var (
		inFlight  []*halfSent
		answers   []answer
		errs      []error
		refused   int
		signalled time.Time
	)
	f := features.New("SIGTERM with 50 requests in flight: each is answered 2xx and has its Job, new connections are refused, exit 0").
		Setup(backendAndNoJobs).
		Assess("the backend finishes what it accepted, refuses what comes after, then exits 0", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// Raw requests, cut in half (startHalf): the Go client sends a
			// request whole.
			addr := strings.TrimPrefix(suite.backend.URL(), "http://")
			for i := range shutdownClients {
				h, err := startHalf(ctx, addr, fmt.Sprintf("shut-%02d", i))
				if err != nil {
					t.Fatalf("open request %d: %v", i, err)
				}
				inFlight = append(inFlight, h)
			}
			// The backend reads headers as they arrive; give its
			// goroutines a moment to reach the body read on 2 busy CPUs.
			time.Sleep(500 * time.Millisecond)
			signalled = time.Now()
			if err := suite.backend.Signal(syscall.SIGTERM); err != nil {
				t.Fatalf("SIGTERM: %v", err)
			}
			// Shutdown closes the listener at once: a new connection
			// must be refused while the accepted requests still run.
			var lastDial error
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					c.Close()
					continue
				}
				lastDial = err
				if errors.Is(err, syscall.ECONNREFUSED) {
					refused++
					break
				}
			}
			if refused == 0 {
				errorf(t, "no new connection was refused within 2 s of SIGTERM (last dial error: %v)", lastDial)
			}
			answers = make([]answer, len(inFlight))
			errs = make([]error, len(inFlight))
			var wg sync.WaitGroup
			for i, h := range inFlight {
				wg.Go(func() { answers[i], errs[i] = h.finish() })
			}
			wg.Wait()
			wctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			code, err := suite.backend.Wait(wctx)
			if err != nil {
				failf(t, "backend did not exit after SIGTERM: %v", err)
			}
			if code != 0 {
				failf(t, "backend exited with %d after SIGTERM, want 0", code)
			}
			t.Logf("backend exited 0 %s after SIGTERM", time.Since(signalled).Round(time.Millisecond))
			return ctx
		}).
		Assess("every in-flight request got 2xx and its Job exists; nothing else was created", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			jobs := map[string]string{} // experiment id -> job
			for _, j := range managedJobs(ctx, t) {
				jobs[j.Annotations[annotID]] = j.Name
			}
			ok := 0
			for i, h := range inFlight {
				if errs[i] != nil {
					errorf(t, "%s: in flight at SIGTERM, but %v", h.id, errs[i])
					continue
				}
				if answers[i].Code != http.StatusCreated {
					errorf(t, "%s: in flight at SIGTERM, answered %s, want 201", h.id, answers[i])
					continue
				}
				var c wire.Submission
				if err := json.Unmarshal(answers[i].Body, &c); err != nil || c.Job == "" {
					t.Errorf("%s: answer %s has no Job (%v)", h.id, answers[i], err)
				} else if jobs[h.id] != c.Job {
					t.Errorf("%s: answered 201 with Job %s, but the API server has %q for it", h.id, c.Job, jobs[h.id])
				}
				ok++
			}
			t.Logf("%d requests in flight at SIGTERM: %d answered 201 with their Job; new connections refused after SIGTERM: %v",
				len(inFlight), ok, refused > 0)
			if len(jobs) != ok {
				t.Errorf("%d Jobs exist, %d in-flight requests were answered 201", len(jobs), ok)
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			for _, h := range inFlight {
				h.conn.Close()
			}
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
