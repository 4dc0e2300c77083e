package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// listRow is one line of the list table.
type listRow struct {
	records        int
	backend        string
	pages          int
	lat            []time.Duration
	rssIdle, rssPk int64
}

const (
	listers    = 4                // concurrent clients paging through the list
	listPeriod = 10 * time.Second // how long they page
)

// listBenchmarks fills the SQLite variant's history with n experiments and
// measures GET /experiments at n/2 and n: four clients paging through the
// whole list at once, from the history, and from the live Jobs by a
// backend without history in the same namespace.
func listBenchmarks(ctx context.Context, env *benchEnv, backends []*backendRun, n int, rep *report) error {
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
	live, err := env.backend(ctx, "gmini without history (pages the live Jobs)", ns, nil)
	if err != nil {
		return err
	}
	defer live.proc.Stop(context.WithoutCancel(ctx))

	httpc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	made := 0
	for _, at := range []int{n / 2, n} {
		t0 := time.Now()
		if _, err := runCreates(ctx, "fill the history", 32, at-made, func(ctx context.Context, i int) error {
			return gminiPost(httpc, sqlite, "list-"+sqlite.id)(ctx, made+i)
		}); err != nil {
			return err
		}
		env.log.Info("history filled", "experiments", at, "elapsed", time.Since(t0).Round(time.Second))
		made = at
		for _, b := range []*backendRun{sqlite, live} {
			r, err := pageAll(ctx, httpc, b)
			if err != nil {
				return err
			}
			r.records = at
			rep.lists = append(rep.lists, r)
			env.log.Info("list", "backend", b.row, "records", at, "pages", r.pages, "p50", pct(r.lat, 50), "p99", pct(r.lat, 99), "peak RSS MiB", r.rssPk>>20)
		}
	}
	return nil
}

// pageAll has listers clients page through GET /experiments, from the
// first page to the last and again, for listPeriod.
func pageAll(ctx context.Context, c *http.Client, b *backendRun) (listRow, error) {
	r := listRow{backend: b.row, rssIdle: b.proc.RSS()}
	stopRSS := b.proc.PeakRSS()
	var mu sync.Mutex
	var failed atomic.Value
	deadline := time.Now().Add(listPeriod)
	var wg sync.WaitGroup
	for range listers {
		wg.Go(func() {
			cont := ""
			for time.Now().Before(deadline) && ctx.Err() == nil {
				u := b.proc.URL() + "/experiments"
				if cont != "" {
					u += "?continue=" + url.QueryEscape(cont)
				}
				t := time.Now()
				next, err := page(ctx, c, u)
				d := time.Since(t)
				if err != nil {
					failed.Store(err)
					return
				}
				mu.Lock()
				r.lat = append(r.lat, d)
				r.pages++
				mu.Unlock()
				cont = next
			}
		})
	}
	wg.Wait()
	r.rssPk = stopRSS()
	if err, ok := failed.Load().(error); ok {
		return r, fmt.Errorf("list from %s: %w", b.row, err)
	}
	return r, nil
}

func page(ctx context.Context, c *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %s", u, res.StatusCode, body)
	}
	var p struct {
		Continue string `json:"continue"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return "", err
	}
	return p.Continue, nil
}
