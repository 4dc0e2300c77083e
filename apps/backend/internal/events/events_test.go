package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
)

// memSource is a store of events in memory.
type memSource struct {
	mu   sync.Mutex
	evs  []history.Event
	fail error
}

func (m *memSource) add(id, set, state string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evs = append(m.evs, history.Event{Seq: int64(len(m.evs) + 1), ID: id, Set: set, State: state})
}

func (m *memSource) Events(_ context.Context, q history.EventQuery) ([]history.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	limit := q.Limit
	if limit == 0 {
		limit = history.DefaultEventBatch
	}
	f := Filter{ID: q.ID, Set: q.Set, Submitter: q.Submitter, State: q.State}
	var out []history.Event
	for _, e := range m.evs {
		if e.Seq > q.After && f.match(e) && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memSource) LastEvent(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, m.fail
	}
	return int64(len(m.evs)), nil
}

func startHub(t *testing.T, src Source, o Options) *Hub {
	t.Helper()
	if o.Poll == 0 {
		o.Poll = 5 * time.Millisecond
	}
	h := NewHub(src, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// collect runs a stream until it has n events or fails.
func collect(t *testing.T, h *Hub, f Filter, after int64, n int, slow time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	var seqs []int64
	err := h.Stream(ctx, f, after, func(e history.Event) error {
		got = append(got, fmt.Sprintf("%s:%s", e.ID, e.State))
		seqs = append(seqs, e.Seq)
		time.Sleep(slow)
		if len(got) == n {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v (got %v)", err, got)
	}
	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
		t.Errorf("seqs %v: not increasing", seqs)
	}
	return got
}

func TestStream(t *testing.T) {
	tests := []struct {
		name  string
		f     Filter
		after int64
		live  [][3]string // added once the stream runs
		want  []string
	}{
		{"stored, then live", Filter{}, 0, [][3]string{{"b", "", "Running"}}, []string{"a:Submitted", "b:Submitted", "a:Running", "b:Running"}},
		{"resumed after a seq", Filter{}, 2, [][3]string{{"c", "", "Submitted"}}, []string{"a:Running", "c:Submitted"}},
		{"one experiment", Filter{ID: "a"}, 0, [][3]string{{"b", "", "Failed"}, {"a", "s", "Succeeded"}}, []string{"a:Submitted", "a:Running", "a:Succeeded"}},
		{"one set", Filter{Set: "s"}, 0, [][3]string{{"d", "s", "Submitted"}}, []string{"a:Submitted", "a:Running", "d:Submitted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &memSource{}
			src.add("a", "s", "Submitted")
			src.add("b", "", "Submitted")
			src.add("a", "s", "Running")
			h := startHub(t, src, Options{})
			go func() {
				// Once the stream has subscribed.
				for h.Subscribers() == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, e := range tt.live {
					src.add(e[0], e[1], e[2])
				}
			}()
			if got := collect(t, h, tt.f, tt.after, len(tt.want), 0); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// A client slower than the events: the stream falls behind the window,
// reads the rest from the store, and nothing is lost or repeated.
func TestStreamSlowReader(t *testing.T) {
	src := &memSource{}
	h := startHub(t, src, Options{Window: 2, Poll: time.Millisecond})
	const n = 200
	go func() {
		for h.Subscribers() == 0 {
			time.Sleep(time.Millisecond)
		}
		for i := range n {
			src.add(fmt.Sprint(i), "", "Submitted")
		}
	}()
	got := collect(t, h, Filter{}, 0, n, 200*time.Microsecond)
	for i, g := range got {
		if want := fmt.Sprintf("%d:Submitted", i); g != want {
			t.Fatalf("event %d is %s, want %s", i, g, want)
		}
	}
}

// A stream held up while more events pass than the window keeps: the
// window stays its size, the stream reads what it missed from the store,
// once each, and goes on live; a filtered stream's cursor moves past
// events that are not its own.
func TestStreamBehindWindow(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    Filter
		want func(i int) bool
	}{
		{"all", Filter{}, func(int) bool { return true }},
		{"every third", Filter{Set: "s"}, func(i int) bool { return i%3 == 0 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &memSource{}
			h := startHub(t, src, Options{Window: 4, Poll: time.Millisecond})
			add := func(from, to int) {
				for i := from; i < to; i++ {
					set := ""
					if i%3 == 0 {
						set = "s"
					}
					src.add(fmt.Sprint(i), set, "Submitted")
				}
			}
			hold := make(chan struct{})
			var got []string
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			const n = 60
			var want []string
			for i := range n {
				if tt.want(i) {
					want = append(want, fmt.Sprint(i)+":Submitted")
				}
			}
			errc := make(chan error, 1)
			go func() {
				errc <- h.Stream(ctx, tt.f, 0, func(e history.Event) error {
					if len(got) == 0 {
						<-hold
					}
					got = append(got, fmt.Sprintf("%s:%s", e.ID, e.State))
					if len(got) == len(want) {
						return ErrStop
					}
					return nil
				})
			}()
			for h.Subscribers() == 0 {
				time.Sleep(time.Millisecond)
			}
			add(0, 1) // the stream blocks on it ...
			time.Sleep(20 * time.Millisecond)
			add(1, n/2) // ... while these pass the window
			for h.lastSeq() < n/2 {
				time.Sleep(time.Millisecond)
			}
			if w := h.windowLen(); w > 4 {
				t.Errorf("window holds %d events, want at most 4", w)
			}
			close(hold)
			time.Sleep(20 * time.Millisecond)
			add(n/2, n) // live again
			if err := <-errc; err != nil {
				t.Fatalf("Stream: %v (got %v)", err, got)
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}

// A stream that ends, however it ends, leaves no subscription behind.
func TestStreamReleases(t *testing.T) {
	src := &memSource{}
	src.add("a", "", "Submitted")
	h := startHub(t, src, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.Stream(ctx, Filter{}, 0, func(history.Event) error { return nil }) }()
	for h.Subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Stream after cancel = %v", err)
	}
	boom := errors.New("client gone")
	if err := h.Stream(context.Background(), Filter{}, 0, func(history.Event) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Stream = %v, want the send error", err)
	}
	if n := h.Subscribers(); n != 0 {
		t.Errorf("%d subscriptions left", n)
	}
}

// A store that fails: the stream says so at once; the Hub keeps trying and
// serves once the store is back.
func TestStreamStoreDown(t *testing.T) {
	src := &memSource{}
	src.add("a", "", "Submitted")
	h := startHub(t, src, Options{})
	collect(t, h, Filter{}, 0, 1, 0) // the Hub is ready
	src.mu.Lock()
	src.fail = errors.New("database is down")
	src.mu.Unlock()
	err := h.Stream(context.Background(), Filter{}, 0, func(history.Event) error { return nil })
	if err == nil || err.Error() != "database is down" {
		t.Fatalf("Stream with the store down = %v", err)
	}
	src.mu.Lock()
	src.fail = nil
	src.mu.Unlock()
	go func() {
		for h.Subscribers() == 0 {
			time.Sleep(time.Millisecond)
		}
		src.add("b", "", "Submitted")
	}()
	if got := collect(t, h, Filter{}, 1, 1, 0); !slices.Equal(got, []string{"b:Submitted"}) {
		t.Errorf("after the store is back: %v", got)
	}
}

// A stream that joins a Hub with no other stream gets the events stored
// right after its catch-up: the idle Hub, which only keeps up with the
// store's last seq, must not skip them. The source holds the idle Hub's
// read of the last seq until the stream has caught up and a new event is
// stored.
func TestStreamJoinsAnIdleHub(t *testing.T) {
	src := &gatedSource{entered: make(chan struct{}), release: make(chan struct{})}
	src.add("a", "", "Submitted")
	h := startHub(t, src, Options{Poll: time.Millisecond})
	<-h.ready
	src.gate.Store(true)
	<-src.entered // the idle Hub is reading the last seq
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var got []string
	err := h.Stream(ctx, Filter{}, 0, func(e history.Event) error {
		got = append(got, e.State)
		if len(got) == 1 {
			src.add("a", "", "Running")
			src.gate.Store(false)
			close(src.release)
			return nil
		}
		return ErrStop
	})
	if err != nil || !slices.Equal(got, []string{"Submitted", "Running"}) {
		t.Errorf("Stream = %v, got %v; want Submitted, Running", err, got)
	}
}

// gatedSource holds LastEvent while gate is set.
type gatedSource struct {
	memSource
	gate             atomic.Bool
	entered, release chan struct{}
}

func (g *gatedSource) LastEvent(ctx context.Context) (int64, error) {
	if g.gate.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.memSource.LastEvent(ctx)
}

func (h *Hub) lastSeq() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *Hub) windowLen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.recent)
}

// countingSource counts the reads of a stream's own (filtered) events:
// the Hub's poll reads every event, unfiltered.
type countingSource struct {
	memSource
	streamReads atomic.Int64
}

func (c *countingSource) Events(ctx context.Context, q history.EventQuery) ([]history.Event, error) {
	if q.ID != "" {
		c.streamReads.Add(1)
	}
	return c.memSource.Events(ctx, q)
}

// TestStreamFromWindow: a stream resuming after an event the Hub's window
// still holds gets the rest from the window, without reading the store;
// one resuming from further back reads the store.
func TestStreamFromWindow(t *testing.T) {
	src := &countingSource{}
	h := startHub(t, src, Options{Window: 3})
	// A stream of everything keeps the Hub reading into its window.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = h.Stream(ctx, Filter{}, 0, func(history.Event) error { return nil }) }()
	for h.Subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	for _, e := range []struct{ id, state string }{{"x", "Submitted"}, {"y", "Submitted"}, {"x", "Running"}, {"y", "Running"}, {"x", "Succeeded"}} {
		src.add(e.id, "", e.state)
	}
	for h.lastSeq() != 5 {
		time.Sleep(time.Millisecond)
	}
	// The window holds 3, 4 and 5.
	if got, want := collect(t, h, Filter{ID: "x"}, 2, 2, 0), []string{"x:Running", "x:Succeeded"}; !slices.Equal(got, want) {
		t.Errorf("after 2: %v, want %v", got, want)
	}
	if n := src.streamReads.Load(); n != 0 {
		t.Errorf("a stream resuming inside the window read the store %d times", n)
	}
	if got, want := collect(t, h, Filter{ID: "x"}, 0, 3, 0), []string{"x:Submitted", "x:Running", "x:Succeeded"}; !slices.Equal(got, want) {
		t.Errorf("after 0: %v, want %v", got, want)
	}
	if src.streamReads.Load() == 0 {
		t.Error("a stream resuming before the window did not read the store")
	}
}
