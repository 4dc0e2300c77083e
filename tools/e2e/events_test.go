//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// TestStatusEvents follows an experiment's changes of state over SSE while
// the backend is taken down and brought back under it: the stream resumes
// from its Last-Event-ID on the new pod and nothing is missed or repeated.
func TestStatusEvents(t *testing.T) {
	// A new ID each run: a cluster kept from an earlier run
	// (GMINI_E2E_KEEP) still has the earlier one's record.
	id := fmt.Sprintf("events-%d", time.Now().Unix())
	var restore func()
	f := features.New("status events: in order, done last, across a backend restart").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			// A runner that takes tickLines seconds, so the backend can go
			// away while it runs.
			restore = useTickRunner(ctx, t, cfg)
			return ctx
		}).
		Assess("every change arrives once, in order, and done ends the stream", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := backend(t, cfg)
			if _, err := c.Submit(ctx, map[string]any{"id": id}); err != nil {
				t.Fatalf("POST %s: %v", id, err)
			}
			var mu sync.Mutex
			var got []wire.Event
			running := make(chan struct{})
			var once sync.Once
			type result struct {
				done wire.EventsDone
				err  error
			}
			res := make(chan result, 1)
			wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			go func() {
				done, err := c.WatchExperiment(wctx, id, 0, func(e wire.Event) error {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, e)
					t.Logf("event %d: %s %s %s", e.Seq, e.State, e.Reason, e.Time.Format(time.RFC3339Nano))
					if e.State == "Running" {
						once.Do(func() { close(running) })
					}
					return nil
				})
				res <- result{done, err}
			}()
			select {
			case <-running:
			case r := <-res:
				t.Fatalf("the watch ended before Running: %+v", r)
			case <-time.After(2 * time.Minute):
				t.Fatalf("no Running event within 2 minutes\n%s", explain(ctx, t, cfg))
			}
			// The backend goes while the runner runs (it finishes with no
			// backend to record it; its Job waits, held for its record)
			// and comes back.
			t0 := time.Now()
			scaleBackend(ctx, t, cfg, 0)
			scaleBackend(ctx, t, cfg, 1)
			t.Logf("backend down and back in %s", time.Since(t0).Round(100*time.Millisecond))
			var r result
			select {
			case r = <-res:
			case <-wctx.Done():
				t.Fatalf("no done within 5 minutes\n%s", explain(ctx, t, cfg))
			}
			if r.err != nil || r.done.State != "Succeeded" {
				t.Fatalf("watch ended with %+v, %v; want done Succeeded", r.done, r.err)
			}
			mu.Lock()
			defer mu.Unlock()
			var states []string
			for i, e := range got {
				states = append(states, e.State)
				if e.Experiment != id || i > 0 && e.Seq <= got[i-1].Seq {
					t.Errorf("event %d: %+v after seq %d: want %s's, seq increasing", i, e, got[max(i-1, 0)].Seq, id)
				}
			}
			if states[0] != "Submitted" || states[len(states)-1] != "Succeeded" || !slices.Contains(states, "Running") {
				t.Errorf("states %v: want Submitted first, Running, Succeeded last", states)
			}
			// One attempt that succeeded: once Running, never back to
			// Pending (not even while its end is counted).
			if i := slices.Index(states, "Running"); i >= 0 && slices.Contains(states[i:], "Pending") {
				t.Errorf("states %v: back to Pending after Running", states)
			}
			// What the stream delivered is what the store holds: a replay
			// from the start on the new pod is the same, event for event.
			var replay []wire.Event
			if _, err := c.WatchExperiment(ctx, id, 0, func(e wire.Event) error { replay = append(replay, e); return nil }); err != nil {
				t.Fatalf("replay: %v", err)
			}
			if fmt.Sprint(seqs(replay)) != fmt.Sprint(seqs(got)) {
				t.Errorf("followed across the restart %v, stored %v: want the same", seqs(got), seqs(replay))
			}
			return ctx
		}).
		Assess("GET /events from a seq replays what followed it", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := backend(t, cfg)
			var first []wire.Event
			if _, err := c.WatchExperiment(ctx, id, 0, func(e wire.Event) error { first = append(first, e); return nil }); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var all []wire.Event
			err := c.Events(wctx, gmini.EventFilter{}, first[0].Seq-1, func(e wire.Event) error {
				if e.Experiment == id {
					all = append(all, e)
				}
				if len(all) == len(first) {
					cancel()
				}
				return nil
			})
			if wctx.Err() == nil || fmt.Sprint(seqs(all)) != fmt.Sprint(seqs(first)) {
				t.Errorf("GET /events after %d: %v (%v); want %v", first[0].Seq-1, seqs(all), err, seqs(first))
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			scaleBackend(ctx, t, cfg, 1)
			if restore != nil {
				restore()
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

func seqs(evs []wire.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}
