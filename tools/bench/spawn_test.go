package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
)

func ms2(n ...int) []time.Duration {
	out := make([]time.Duration, len(n))
	for i, v := range n {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPct(t *testing.T) {
	t.Parallel()
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 ms down to 1 ms: unsorted on purpose
	}
	cases := []struct {
		name string
		d    []time.Duration
		p    int
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms2(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100 is the 50th", ms2(hundred...), 50, 50 * time.Millisecond},
		{"p99 of 1..100 is the 99th", ms2(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the largest", ms2(hundred...), 100, 100 * time.Millisecond},
		{"p0 is the smallest", ms2(3, 1, 2), 0, time.Millisecond},
		// Nearest rank rounds up: the 50th percentile of 3 is the 2nd.
		{"p50 of 3", ms2(30, 10, 20), 50, 20 * time.Millisecond},
		{"p99 of 3 is the largest", ms2(30, 10, 20), 99, 30 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			in := slices.Clone(c.d)
			if got := pct(c.d, c.p); got != c.want {
				t.Errorf("pct(%d) = %v, want %v", c.p, got, c.want)
			}
			if !slices.Equal(in, c.d) {
				t.Errorf("pct sorted its argument in place")
			}
		})
	}
}

func TestRowRateAndPerJob(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		r        row
		wantRate float64
		cpu      time.Duration
		wantPer  time.Duration
	}{
		{"1000 Jobs in 4 s", row{n: 1000, wall: 4 * time.Second}, 250, time.Second, time.Millisecond},
		{"failed calls make no Job", row{n: 1000, errors: 200, wall: 4 * time.Second}, 200, 800 * time.Millisecond, time.Millisecond},
		{"no Job: no CPU per Job", row{n: 10, errors: 10, wall: time.Second}, 0, time.Second, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := c.r.rate(); got != c.wantRate {
				t.Errorf("rate() = %v, want %v", got, c.wantRate)
			}
			if got := c.r.perJob(c.cpu); got != c.wantPer {
				t.Errorf("perJob(%v) = %v, want %v", c.cpu, got, c.wantPer)
			}
		})
	}
}

func TestRowAddPoolsRounds(t *testing.T) {
	t.Parallel()
	total := row{name: "r", concurrency: 8}
	rounds := []row{
		{n: 100, errors: 0, wall: time.Second, lat: ms2(1, 2), backendCPU: 100 * time.Millisecond, apiCPU: 400 * time.Millisecond},
		{n: 300, errors: 0, wall: 2 * time.Second, lat: ms2(3), backendCPU: 300 * time.Millisecond, apiCPU: 1200 * time.Millisecond},
	}
	for _, r := range rounds {
		total.add(r)
	}
	want := row{name: "r", concurrency: 8, n: 400, wall: 3 * time.Second, lat: ms2(1, 2, 3),
		backendCPU: 400 * time.Millisecond, apiCPU: 1600 * time.Millisecond, rounds: 2}
	if fmt.Sprint(total) != fmt.Sprint(want) {
		t.Errorf("pooled\n got %+v\nwant %+v", total, want)
	}
	// Pooled: all the Jobs over all the time (400 in 3 s), not the mean of
	// the rounds' rates (100/s and 150/s: 125/s).
	if got := total.rate(); math.Abs(got-400.0/3) > 1e-9 {
		t.Errorf("rate() = %v, want 133.33", got)
	}
	if got := total.perJob(total.backendCPU); got != time.Millisecond {
		t.Errorf("backend CPU per Job = %v, want 1ms", got)
	}
}

func TestRoundOrder(t *testing.T) {
	t.Parallel()
	rows := []string{"a", "b", "c"}
	cases := []struct {
		round int
		want  []string
	}{
		{0, []string{"a", "b", "c", "naive"}},
		{1, []string{"a", "c", "b"}}, // rotated to b c a, reversed
		{2, []string{"c", "a", "b"}},
		{3, []string{"c", "b", "a"}}, // rotated to a b c, reversed
	}
	for _, c := range cases {
		t.Run(fmt.Sprint("round ", c.round), func(t *testing.T) {
			t.Parallel()
			if got := roundOrder(rows, "naive", c.round); !slices.Equal(got, c.want) {
				t.Errorf("roundOrder(round %d) = %v, want %v", c.round, got, c.want)
			}
		})
	}
	if !slices.Equal(rows, []string{"a", "b", "c"}) {
		t.Errorf("roundOrder changed its argument: %v", rows)
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	conflict := apierrors.NewConflict(schema.GroupResource{Group: "batch", Resource: "jobs"}, "x", errors.New("changed"))
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"backend status", &gmini.Error{StatusCode: 503, Message: "busy"}, "HTTP 503"},
		{"wrapped backend status", fmt.Errorf("post: %w", &gmini.Error{StatusCode: 429}), "HTTP 429"},
		{"an experiment that existed", fmt.Errorf("POST /experiment x: %w", errExisting), "HTTP 200"},
		{"API server status", conflict, "API 409 Conflict"},
		{"timeout", fmt.Errorf("post: %w", context.DeadlineExceeded), "no answer in time"},
		{"connection refused", errors.New("dial tcp: connection refused"), "no answer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := answerOf(c.err); got != c.want {
				t.Errorf("answerOf(%v) = %q, want %q", c.err, got, c.want)
			}
		})
	}
	if got, want := countAnswers(map[string]int{"HTTP 503": 2, "no answer": 5, "HTTP 429": 2}), "5× no answer, 2× HTTP 429, 2× HTTP 503"; got != want {
		t.Errorf("countAnswers = %q, want %q", got, want)
	}
}

func TestRunCreatesFailsOnAnyError(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fail    func(i int) error
		wantErr []string // substrings; none: no error
	}{
		{"all created", func(int) error { return nil }, nil},
		{"one 503 in 100", func(i int) error {
			if i == 42 {
				return fmt.Errorf("POST /experiment bench-42: %w", &gmini.Error{StatusCode: 503, Message: "busy"})
			}
			return nil
		}, []string{"1 of 100 calls failed", "1× HTTP 503", "POST /experiment bench-42: gmini: 503 Service Unavailable: busy"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, err := runCreates(t.Context(), "row", 4, 100, func(_ context.Context, i int) error { return c.fail(i) })
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatalf("runCreates: %v", err)
				}
			} else {
				if err == nil {
					t.Fatalf("runCreates succeeded with a failed call; want an error with %q", c.wantErr)
				}
				for _, s := range c.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
			}
			if len(r.lat) != 100 {
				t.Errorf("%d latencies, want 100", len(r.lat))
			}
		})
	}
}
