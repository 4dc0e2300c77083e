package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/tools/backendproc"
)

// listRow is one line of the list table.
type listRow struct {
	records    int
	inFlight   int // of records, experiments whose Job is still there
	backend    string
	pages      int
	lat        []time.Duration
	idle, peak backendproc.Memory
}

const (
	listers    = 4                // concurrent clients paging through the list
	listPeriod = 10 * time.Second // how long they page
)

// listBenchmarks fills the SQLite variant's history with n experiments and
// measures GET /experiments at n/2 and n: four clients paging through the
// whole list at once, from the history, and from the live Jobs by a
// backend without history in the same namespace; then again from the
// history once all but inFlight of the n are cancelled and recorded.
func listBenchmarks(ctx context.Context, env *benchEnv, backends []*backendRun, n, inFlight int, rep *report) error {
	var sqlite *backendRun
	for _, b := range backends {
		if b.row == rowName(variantSQLite) {
			sqlite = b
		}
	}
	if sqlite == nil {
		env.log.Info("list benchmark skipped: it needs the sqlite variant")
		return nil
	}
	ns := sqlite.namespace
	// Suspended Jobs: the list is about records and Jobs, not pods.
	patch := []byte(`{"spec":{"jobTemplate":{"spec":{"suspend":true}}}}`)
	if _, err := env.admin.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("suspend the template's Jobs in %s: %w", ns, err)
	}
	time.Sleep(2 * time.Second) // the backend's template cache follows
	live, err := env.backend(ctx, "", "gmini without history (pages the live Jobs)", ns, nil)
	if err != nil {
		return err
	}
	defer live.proc.Stop(context.WithoutCancel(ctx))

	httpc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	id := func(i int) string { return fmt.Sprintf("bench-list-%s-%d", sqlite.id, i) }
	made := 0
	measure := func(inFlight int, backends ...*backendRun) error {
		for _, b := range backends {
			r, err := pageAll(ctx, httpc, b)
			if err != nil {
				return err
			}
			r.records, r.inFlight = made, inFlight
			rep.lists = append(rep.lists, r)
			env.log.Info("list", "backend", b.row, "records", made, "in flight", inFlight, "pages", r.pages, "p50", pct(r.lat, 50), "p99", pct(r.lat, 99), "peak RSS MiB", r.peak.RSS>>20, "peak anon MiB", r.peak.Anon>>20)
		}
		return nil
	}
	// Every experiment in flight: the worst case for the recorder's cache,
	// and the live Jobs the backend without history pages through.
	for _, at := range []int{n / 2, n} {
		t0 := time.Now()
		if _, err := runCreates(ctx, "fill the history", 32, at-made, func(ctx context.Context, i int) error {
			return gminiPost(httpc, sqlite, "list-"+sqlite.id)(ctx, made+i)
		}); err != nil {
			return err
		}
		env.log.Info("history filled", "experiments", at, "elapsed", time.Since(t0).Round(time.Second))
		made = at
		if err := measure(at, sqlite, live); err != nil {
			return err
		}
	}
	// What a deployed namespace can hold: no more Jobs than its quota
	// allows (count/jobs.batch), the other experiments recorded and their
	// Jobs gone. They are cancelled here (DELETE, as a user would): their
	// records stay and the recorder lets their Jobs go.
	if inFlight < n {
		t0 := time.Now()
		if _, err := runCreates(ctx, "cancel experiments", 32, n-inFlight, func(ctx context.Context, i int) error {
			return gminiDelete(ctx, httpc, sqlite, id(i))
		}); err != nil {
			return err
		}
		if err := waitJobs(ctx, env, ns, inFlight); err != nil {
			return err
		}
		env.log.Info("experiments cancelled and recorded", "cancelled", n-inFlight, "in flight", inFlight, "elapsed", time.Since(t0).Round(time.Second))
		// A fresh process, as after a restart: the heap the phases above
		// grew is not handed back to the kernel at once, and would count.
		if err := restartRecorder(ctx, httpc, sqlite); err != nil {
			return err
		}
		if err := measure(inFlight, sqlite); err != nil {
			return err
		}
	}
	return nil
}

// gminiDelete cancels an experiment through the backend.
func gminiDelete(ctx context.Context, hc *http.Client, b *backendRun, id string) error {
	c, err := b.client(hc)
	if err != nil {
		return err
	}
	_, err = c.Cancel(ctx, id)
	return err
}

// restartRecorder restarts b and waits until it records again, its cache
// filled with the Jobs in flight.
func restartRecorder(ctx context.Context, c *http.Client, b *backendRun) error {
	if _, err := b.proc.Stop(ctx); err != nil {
		return err
	}
	if err := b.proc.Start(ctx); err != nil {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		body, err := metrics(ctx, c, b)
		return err == nil && strings.Contains(body, "\ngmini_history_leader 1"), nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s to record again: %w", b.row, err)
	}
	// The informer lists the Jobs in flight after the lease is won.
	time.Sleep(5 * time.Second)
	return nil
}

// metrics reads b's /metrics, Prometheus' text, which is no part of the
// API the Go client speaks.
func metrics(ctx context.Context, hc *http.Client, b *backendRun) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.proc.URL()+"/metrics", nil)
	if err != nil {
		return "", err
	}
	res, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET /metrics: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", fmt.Errorf("GET /metrics: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %d %s", res.StatusCode, bytes.TrimSpace(body))
	}
	return string(body), nil
}

// waitJobs waits until namespace holds want Jobs: the cancelled ones
// recorded and released.
func waitJobs(ctx context.Context, env *benchEnv, namespace string, want int) error {
	var last int
	err := wait.PollUntilContextTimeout(ctx, time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		jobs, err := env.admin.BatchV1().Jobs(namespace).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		last = len(jobs.Items)
		return last == want, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %d Jobs in %s (%d there): %w", want, namespace, last, err)
	}
	return nil
}

// pageAll has listers clients page through GET /experiments, from the
// first page to the last and again, for listPeriod.
func pageAll(ctx context.Context, hc *http.Client, b *backendRun) (listRow, error) {
	c, err := b.client(hc)
	if err != nil {
		return listRow{}, err
	}
	r := listRow{backend: b.row, idle: b.proc.Memory()}
	stopPeak := b.proc.PeakMemory()
	var mu sync.Mutex
	var failed atomic.Value
	deadline := time.Now().Add(listPeriod)
	var wg sync.WaitGroup
	for range listers {
		wg.Go(func() {
			cont := ""
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				page, err := c.List(ctx, gmini.ListOptions{Continue: cont})
				d := time.Since(t)
				if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				r.lat = append(r.lat, d)
				r.pages++
				mu.Unlock()
				cont = page.Continue
			}
		})
	}
	wg.Wait()
	r.peak = stopPeak()
	if err, ok := failed.Load().(error); ok {
		return r, fmt.Errorf("list from %s: %w", b.row, err)
	}
	return r, nil
}
