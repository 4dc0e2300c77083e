package api

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
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
	warm := dialFollower(b, u.Host)
	defer warm.Close()
	waitSubscribers(b, e, 1)

	before := memSample()
	b.ResetTimer()
	conns := make([]net.Conn, 0, b.N)
	for range b.N {
		conns = append(conns, dialFollower(b, u.Host))
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
func dialFollower(tb testing.TB, host string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", host)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", host)
	r := bufio.NewReaderSize(c, 512)
	line, err := r.ReadString('\n')
	if err != nil || !strings.Contains(line, " 200 ") {
		tb.Fatalf("GET /events: %q %v", line, err)
	}
	return c
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
