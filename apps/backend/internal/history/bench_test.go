package history_test

// Benchmarks of both stores, for the figures the issue asks for: Claim
// throughput and latency at the POST path's concurrency, and List latency
// and memory with 20,000 records. PostgreSQL runs when
// GMINI_TEST_POSTGRES_DSN is set:
//
//	cd tools && go run ./cmd/with-postgres -- sh -c \
//	  'cd ../apps/backend && go test -run XXX -bench . -benchtime 2000x ./internal/history/'

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

type backend struct {
	name string
	open func(b *testing.B) history.Store
}

func backends(b *testing.B) []backend {
	open := func(b *testing.B, dsn string) history.Store {
		s, err := history.Open(context.Background(), dsn, nil)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	bs := []backend{{"sqlite", func(b *testing.B) history.Store {
		return open(b, "sqlite:"+filepath.Join(b.TempDir(), "history.db"))
	}}}
	if os.Getenv("GMINI_TEST_POSTGRES_DSN") != "" {
		bs = append(bs, backend{"postgres", func(b *testing.B) history.Store { return open(b, history.PostgresDSN(b)) }})
	}
	return bs
}

var seq atomic.Int64

// claimRecord is what POST /experiment claims.
func claimRecord(prefix string) history.Record {
	id := fmt.Sprintf("%s-%08d", prefix, seq.Add(1))
	return history.Record{ID: id, Hash: strings.Repeat("ab", 32), Namespace: "gmini-dev",
		Job: "exp-" + strings.ToLower(id) + "-htdyq37aj6", Submitter: "system:serviceaccount:gmini-dev:frontend"}
}

// BenchmarkClaim claims new IDs from 1, 8 and 32 goroutines, as that many
// concurrent POSTs do.
func BenchmarkClaim(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			defer s.Close()
			for _, conc := range []int{1, 8, 32} {
				b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
					lat := run(b, conc, func(ctx context.Context, i int) error {
						_, created, err := s.Claim(ctx, claimRecord(be.name))
						if err == nil && !created {
							err = fmt.Errorf("claim %d found an existing record", i)
						}
						return err
					})
					report(b, lat)
				})
			}
		})
	}
}

// BenchmarkList reads pages of 100 from 20,000 records: the first page,
// one deep in the list, and one state's.
func BenchmarkList(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			s := be.open(b)
			defer s.Close()
			deep := seed(b, s, 20000)
			for _, tt := range []struct {
				name string
				opts history.ListOptions
			}{
				{"first-page", history.ListOptions{Limit: 100}},
				{"deep-page", history.ListOptions{Limit: 100, Continue: deep}},
				{"state-filter", history.ListOptions{Limit: 100, State: history.StateFailed}},
			} {
				b.Run(tt.name, func(b *testing.B) {
					lat := run(b, 1, func(ctx context.Context, _ int) error {
						page, err := s.List(ctx, tt.opts)
						if err == nil && len(page.Items) != 100 {
							err = fmt.Errorf("page of %d records", len(page.Items))
						}
						return err
					})
					report(b, lat)
				})
			}
			b.Run("4-concurrent-walks", func(b *testing.B) {
				// Four clients walk all 20,000 records page by page; a
				// sampler records the process's RSS meanwhile.
				runtime.GC()
				before := rss()
				peak := atomic.Int64{}
				peak.Store(before)
				stop := make(chan struct{})
				var sampler sync.WaitGroup
				sampler.Go(func() {
					for {
						if r := rss(); r > peak.Load() {
							peak.Store(r)
						}
						select {
						case <-stop:
							return
						case <-time.After(5 * time.Millisecond):
						}
					}
				})
				lat := run(b, 4, func(ctx context.Context, _ int) error {
					opts := history.ListOptions{Limit: 100}
					for {
						page, err := s.List(ctx, opts)
						if err != nil || page.Continue == "" {
							return err
						}
						opts.Continue = page.Continue
					}
				})
				close(stop)
				sampler.Wait()
				b.ReportMetric(float64(peak.Load()-before)/(1<<20), "rss-growth-MiB")
				b.ReportMetric(float64(before)/(1<<20), "rss-before-MiB")
				b.ReportMetric(float64(percentile(lat, 50).Milliseconds()), "walk-p50-ms")
			})
		})
	}
}

// seed stores n records in the states a month of experiments leaves, with
// a little output each, and returns the continue token of the middle.
func seed(b *testing.B, s history.Store, n int) string {
	b.Helper()
	t0 := time.Now().Add(-30 * 24 * time.Hour)
	out := bytes.Repeat([]byte("Running Experiment: x\n"), 100)
	states := []string{history.StateSucceeded, history.StateSucceeded, history.StateSucceeded, history.StateSucceeded,
		history.StateSucceeded, history.StateSucceeded, history.StateFailed, history.StateCancelled, history.StateRunning, history.StatePending}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			ctx := context.Background()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				rec := claimRecord("seed")
				created := t0.Add(time.Duration(i) * 100 * time.Millisecond)
				rec.CreatedAt, rec.State = created, states[i%len(states)]
				rec.Reason, rec.Message = "Completed", "Job completed: reached the expected number of succeeded pods"
				started := created.Add(2 * time.Second)
				rec.StartedAt = &started
				var err error
				if history.Final(rec.State) {
					finished := started.Add(5 * time.Second)
					rec.FinishedAt, rec.ExitCode = &finished, new(int32)
					_, err = s.Finish(ctx, rec, out)
				} else {
					err = s.Update(ctx, rec)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("seed: %v", err)
	}
	opts := history.ListOptions{Limit: history.MaxPageSize}
	for range n / 2 / history.MaxPageSize {
		page, err := s.List(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		opts.Continue = page.Continue
	}
	return opts.Continue
}

// run calls op b.N times from conc goroutines and returns each call's
// latency.
func run(b *testing.B, conc int, op func(ctx context.Context, i int) error) []time.Duration {
	b.Helper()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	ctx := context.Background()
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				t := time.Now()
				if err := op(ctx, i); err != nil {
					failed.Store(&err)
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "ops/s")
	}
	return lat
}

func report(b *testing.B, lat []time.Duration) {
	b.ReportMetric(float64(percentile(lat, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds()), "p99-µs")
}

func percentile(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// rss is the process's resident set size in bytes.
func rss() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
