package api

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// BenchmarkIdleEventFollowers measures what an idle GET /events follower
// costs the backend in Go heap, goroutine stacks and goroutines: b.N
// followers connect over loopback (raw connections that send a request
// and read its head, so the client's own share is a socket), then wait
// while nothing changes. The process-level figures (RSS, CPU, the API
// server's requests) are tools/bench's: `go run ./bench -only events`.
func BenchmarkIdleEventFollowers(b *testing.B) {
	e := newEventsEnv(b, Config{MaxEventStreams: b.N + 1})
	e.write(b, history.Record{ID: "a"})
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	// One follower first, so that what the first request sets up once
	// (pools, gin's trees, the Hub's first poll) is not counted.
	warm, _ := dialFollower(b, u.Host)
	defer warm.Close()
	waitSubscribers(b, e, 1)

	before := memSample()
	b.ResetTimer()
	conns := make([]net.Conn, 0, b.N)
	for range b.N {
		c, _ := dialFollower(b, u.Host)
		conns = append(conns, c)
	}
	waitSubscribers(b, e, b.N+1)
	b.StopTimer()
	with := memSample()
	n := float64(b.N)
	b.ReportMetric(float64(with.heap-before.heap)/n, "heap-B/follower")
	b.ReportMetric(float64(with.stacks-before.stacks)/n, "stack-B/follower")
	b.ReportMetric(float64(with.goroutines-before.goroutines)/n, "goroutines/follower")
	for _, c := range conns {
		c.Close()
	}
}

// dialFollower opens GET /events on a raw connection and reads the
// response head and the stream's first frames.
func dialFollower(tb testing.TB, host string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	return dialPath(tb, host, "/events")
}

// dialPath GETs path as an event stream over a connection of its own and
// returns it once the status line says 200.
func dialPath(tb testing.TB, host, path string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", host)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, host)
	r := bufio.NewReaderSize(c, 4096)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, " 200 ") {
		tb.Fatalf("GET %s: %q %v", path, line, err)
	}
	return c, r
}

func waitSubscribers(tb testing.TB, e *eventsEnv, n int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.hub.Subscribers() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d followers subscribed after 30s", e.hub.Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type memFigures struct{ heap, stacks, goroutines uint64 }

// memSample reads the live heap and stacks after two GCs: the second lets
// stacks shrink that the first found mostly unused.
func memSample() memFigures {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/sched/goroutines:goroutines"}}
	metrics.Read(s)
	return memFigures{s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()}
}

// BenchmarkEventDelay measures the backend's share of an event's delay:
// from the moment the store has it to the moment it arrives at each of
// 500 GET /events followers, with the Hub's production poll; b.N events
// are written, one every 250 ms. "raw": each follower is a connection
// read by a goroutine that only looks for the frame's id; "client": each
// is the Go client's Events, decoding every event as a user's program
// would. What the Job status write and the recorder add is tools/bench's.
func BenchmarkEventDelay(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		benchEventDelay(b, func(tb testing.TB, base string, arrived func(seq int64)) func() {
			u, err := url.Parse(base)
			if err != nil {
				tb.Fatal(err)
			}
			c, r := dialFollower(tb, u.Host)
			go func() {
				for {
					line, err := r.ReadSlice('\n')
					if err != nil {
						return
					}
					if id, ok := strings.CutPrefix(string(line), "id: "); ok {
						seq, _ := strconv.ParseInt(strings.TrimSpace(id), 10, 64)
						arrived(seq)
					}
				}
			}()
			return func() { c.Close() }
		})
	})
	b.Run("client", func(b *testing.B) {
		benchEventDelay(b, func(tb testing.TB, base string, arrived func(seq int64)) func() {
			cl, err := client.New(base)
			if err != nil {
				tb.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				_ = cl.Events(ctx, client.EventFilter{}, client.FromNow, func(e wire.Event) error {
					arrived(e.Seq)
					return nil
				})
			}()
			return cancel
		})
	})
}

// benchEventDelay connects 500 followers with follow, which calls arrived
// with the seq of each event its follower receives, and times b.N events.
func benchEventDelay(b *testing.B, follow func(tb testing.TB, base string, arrived func(seq int64)) (stop func())) {
	const followers = 500
	e := newEventsEnvPoll(b, Config{MaxEventStreams: followers}, 0)
	e.write(b, history.Record{ID: "a"})
	var (
		mu      sync.Mutex
		stored  = map[int64]time.Time{}
		delays  []time.Duration
		arrival = make(chan struct{}, followers*64)
	)
	// Only the timed events count: a raw follower also sees the id mark
	// each stream starts with, which counted once made the wait below end
	// before the last events arrived (and the p99 low).
	arrived := func(seq int64) {
		now := time.Now()
		mu.Lock()
		at, ok := stored[seq]
		if ok {
			delays = append(delays, now.Sub(at))
		}
		mu.Unlock()
		if ok {
			arrival <- struct{}{}
		}
	}
	for range followers {
		defer follow(b, e.srv.URL, arrived)()
	}
	waitSubscribers(b, e, followers)
	b.ResetTimer()
	for i := range b.N {
		at := time.Now()
		mu.Lock()
		e.write(b, history.Record{ID: fmt.Sprintf("e%d-%d", b.N, i)})
		seq, err := e.store.LastEvent(context.Background())
		stored[seq] = at
		mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	deadline := time.After(30 * time.Second)
	for range b.N * followers {
		select {
		case <-arrival:
		case <-deadline:
			b.Fatalf("%d of %d events arrived", len(delays), b.N*followers)
		}
	}
	b.StopTimer()
	slices.Sort(delays)
	b.ReportMetric(float64(delays[len(delays)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1].Microseconds())/1000, "max-ms")
}
