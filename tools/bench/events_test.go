package main

import (
	"bytes"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/backendproc"
)

func TestParseCounts(t *testing.T) {
	t.Parallel()
	got, err := parseCounts("1, 100,500", 1, 2000)
	if err != nil || !reflect.DeepEqual(got, []int{1, 100, 500}) {
		t.Errorf("parseCounts(1, 100,500) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "1,,2", "2001", "ten"} {
		if got, err := parseCounts(bad, 1, 2000); err == nil {
			t.Errorf("parseCounts(%q) = %v, want an error", bad, got)
		}
	}
}

func TestEventsFlags(t *testing.T) {
	t.Parallel()
	var e eventsOptions
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.register(fs)
	if !reflect.DeepEqual(e.followers, []int{1, 100, 500}) || e.writes != 40 || e.idle != 500 || e.validate() != nil {
		t.Fatalf("defaults: %+v, validate: %v", e, e.validate())
	}
	if err := fs.Parse([]string{"-event-followers", "2,3", "-idle-window", "5s"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e.followers, []int{2, 3}) || e.window != 5*time.Second {
		t.Errorf("parsed: %+v", e)
	}
	if err := fs.Parse([]string{"-event-followers", "0"}); err == nil {
		t.Error("-event-followers 0 accepted")
	}
	e.idle = 0
	if e.validate() == nil {
		t.Error("idle-followers 0 accepted")
	}
	if p, err := parseOnly("events"); err != nil || !p[partEvents] || len(p) != 1 {
		t.Errorf("parseOnly(events) = %v, %v", p, err)
	}
}

func TestMetricSum(t *testing.T) {
	t.Parallel()
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
gmini_event_streams 0
apiserver_request_total{code="200",resource="jobs",verb="GET"} 10
apiserver_request_total{code="200",resource="pods",verb="LIST"} 5.5 1700000000000
apiserver_request_total{component="a}b \"c} d\"",verb="WATCH"} 2
apiserver_request_total_other{verb="GET"} 1000
apiserver_request_total{broken="x" 3
`
	for _, c := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"go_goroutines", 42, true},
		{"gmini_event_streams", 0, true},
		{"apiserver_request_total", 17.5, true},
		{"go_memstats_heap_inuse_bytes", 0, false},
	} {
		got, ok := metricSum(text, c.name)
		if got != c.want || ok != c.ok {
			t.Errorf("metricSum(%s) = %v, %v, want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestDelaysOf(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(id string, ms int) wire.Event {
		return wire.Event{Experiment: id, State: stateSucceeded, Time: at(ms)}
	}

	// Two followers of every change, three experiments; the third write
	// was never sent (the run stopped), and follower 1 missed experiment 1.
	sent := []time.Time{at(0), at(250), {}}
	a := newArrivals(2, 3)
	a.note(0, 0, ev("a", 40))
	a.note(0, 0, ev("a", 40)) // a second copy is not counted
	a.at[0][0] = at(100)
	a.note(0, 1, wire.Event{Experiment: "b", State: "Pending"}) // another state is not timed
	a.note(0, 1, ev("b", 300))
	a.at[0][1] = at(450)
	a.note(1, 0, ev("a", 40))
	a.at[1][0] = at(120)
	if a.got.Load() != 3 {
		t.Errorf("got = %d, want 3", a.got.Load())
	}
	delays, stored, missing := delaysOf(sent, a, slotIsExperiment)
	wantDelays := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 120 * time.Millisecond}
	wantStored := []time.Duration{60 * time.Millisecond, 150 * time.Millisecond, 80 * time.Millisecond}
	if !reflect.DeepEqual(delays, wantDelays) || !reflect.DeepEqual(stored, wantStored) || missing != 1 {
		t.Errorf("every change: delays %v stored %v missing %d, want %v %v 1", delays, stored, missing, wantDelays, wantStored)
	}

	// One experiment per follower: follower f's one slot is experiment f.
	each := newArrivals(3, 1)
	each.note(0, 0, ev("a", 10))
	each.at[0][0] = at(30)
	each.note(2, 0, ev("c", 310))
	each.at[2][0] = at(330)
	delays, stored, missing = delaysOf([]time.Time{at(0), at(50), at(300)}, each, followerIsExperiment)
	if !reflect.DeepEqual(delays, []time.Duration{30 * time.Millisecond, 30 * time.Millisecond}) ||
		!reflect.DeepEqual(stored, []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}) || missing != 1 {
		t.Errorf("one each: delays %v stored %v missing %d", delays, stored, missing)
	}
}

func TestJittered(t *testing.T) {
	t.Parallel()
	every := 250 * time.Millisecond
	for _, c := range []struct {
		u    float64
		want time.Duration
	}{{0, 200 * time.Millisecond}, {0.5, every}, {0.999, 299900 * time.Microsecond}} {
		if got := jittered(every, c.u); got != c.want {
			t.Errorf("jittered(%s, %v) = %s, want %s", every, c.u, got, c.want)
		}
	}
}

func TestShare(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d, window time.Duration
		want      string
	}{
		{2 * time.Second, 20 * time.Second, "10.0 %"},
		{30 * time.Second, 20 * time.Second, "150.0 %"},
		{10 * time.Millisecond, 20 * time.Second, "0.1 %"},
		{time.Second, 0, "-"},
	} {
		if got := share(c.d, c.window); got != c.want {
			t.Errorf("share(%s, %s) = %q, want %q", c.d, c.window, got, c.want)
		}
	}
}

func TestEventsReportPrint(t *testing.T) {
	t.Parallel()
	var nilReport *eventsReport
	var buf bytes.Buffer
	nilReport.print(&buf)
	if buf.Len() != 0 {
		t.Errorf("a part that did not run printed %q", buf.String())
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	rep := &eventsReport{
		backend: "history in SQLite",
		delays: []delayRow{{endpoint: "GET /events", followers: 100, writes: 2, every: ms(250),
			delays: []time.Duration{ms(100), ms(300)}, stored: []time.Duration{ms(50), ms(150)}, writeRTT: []time.Duration{ms(5), ms(7)}, missing: 1}},
		idle: []idleRow{{what: "GET /events", n: 500, window: 20 * time.Second,
			before:    snapshot{mem: backendproc.Memory{RSS: 60 << 20, Anon: 20 << 20}, goroutines: 50, heapInuse: 10 << 20, stackIn: 1 << 20},
			with:      snapshot{mem: backendproc.Memory{RSS: 80 << 20, Anon: 35 << 20}, goroutines: 1550, heapInuse: 20 << 20, stackIn: 5 << 20},
			idled:     snapshot{mem: backendproc.Memory{RSS: 70 << 20, Anon: 25 << 20}, goroutines: 1550},
			after:     snapshot{mem: backendproc.Memory{RSS: 75 << 20, Anon: 30 << 20}, goroutines: 50},
			cpuBefore: ms(200), cpuWith: ms(600), apiBefore: ms(1000), apiWith: ms(1200), reqsBefore: 100, reqsWith: 120}},
	}
	rep.print(&buf)
	out := buf.String()
	for _, want := range []string{
		// 2 events, 1 missing; p50 100 ms, p99 and max 300 ms.
		"| 100 | GET /events | 2, one every 250ms ±20 % | 2 | 1 | 100.0 ms | 300.0 ms | 300.0 ms | 50.0 ms / 150.0 ms | 5.0 ms / 7.0 ms |",
		// 20 MiB over 500 followers: 41 KiB each, 10 MiB once idled: 20.5
		// KiB; 15 and 5 MiB anonymous: 30.7 and 10.2 KiB; heap 10 MiB:
		// 20.5 KiB, stacks 4 MiB: 8.2 KiB; CPU 1 % and 3 % of one CPU; 5
		// and 6 requests/s.
		"| 500 | GET /events | 60.0 MiB / 80.0 MiB / 70.0 MiB / 75.0 MiB | 41.0 KiB / 20.5 KiB | 30.7 KiB / 10.2 KiB | 20.5 KiB / 8.2 KiB | 50 / 1550 / 50 | 1.0 % / 3.0 % | 5.0 % / 6.0 % | 5.0 / 6.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks\n%s\nin\n%s", want, out)
		}
	}
}

func TestLastDebugAddr(t *testing.T) {
	t.Parallel()
	log := `==== start 1 at 2026-12-04T20:00:00Z: backend --debug-listen 127.0.0.1:0
time=2026-12-04T20:00:00.100Z level=INFO msg="serving profiles" addr=127.0.0.1:40001 path=/debug/pprof/
==== start 2 at 2026-12-04T20:05:00Z: backend --debug-listen 127.0.0.1:0
{"time":"2026-12-04T20:05:00.1Z","level":"INFO","msg":"serving profiles","addr":"127.0.0.1:40002","path":"/debug/pprof/"}
`
	if got := lastDebugAddr(log); got != "127.0.0.1:40002" {
		t.Errorf("lastDebugAddr = %q, want the second start's 127.0.0.1:40002", got)
	}
	if got := lastDebugAddr("msg=\"backend listening\" addr=127.0.0.1:1\n"); got != "" {
		t.Errorf("lastDebugAddr without profiles = %q", got)
	}
}

func TestGoroutineGroups(t *testing.T) {
	t.Parallel()
	before := `goroutine profile: total 3
2 @ 0x47a4ee 0x4585f7 0x6b1f25 0x481c61
#	0x6b1f24	net/http.(*conn).serve+0x1204	/usr/local/go/src/net/http/server.go:2102

1 @ 0x47a4ee 0x4585f7 0x9c0b85 0x481c61
#	0x47a4ed	runtime.gopark+0xcd	/usr/local/go/src/runtime/proc.go:435
#	0x9c0b84	main.(*hub).run+0x84	/src/hub.go:40
`
	after := before + `
3 @ 0x47a4ee 0x9c0c00 0x481c61
#	0x47a4ed	runtime.gopark+0xcd	/usr/local/go/src/runtime/proc.go:435
#	0x9c0bff	main.contextUntil.func1+0x5f	/src/follow.go:313

1 @ 0x47a4ee 0x4585f7 0x6b1f25 0x481c61
#	0x47a4ed	runtime.gopark+0xcd	/usr/local/go/src/runtime/proc.go:435
#	0x4a1b2c	internal/poll.runtime_pollWait+0x85	/usr/local/go/src/runtime/netpoll.go:351
#	0x4a1c3d	internal/poll.(*pollDesc).waitRead+0x1d	/usr/local/go/src/internal/poll/fd_poll_runtime.go:89
#	0x6b1f24	net/http.(*conn).serve+0x1204	/usr/local/go/src/net/http/server.go:2102
`
	b, a := goroutineGroups(before), goroutineGroups(after)
	want := map[string]int{"net/http.(*conn).serve": 2, "runtime.gopark < main.(*hub).run": 1}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("goroutineGroups(before) = %v, want %v", b, want)
	}
	if got := grown(b, a); !reflect.DeepEqual(got, []string{"+1 internal/poll.runtime_pollWait < … < net/http.(*conn).serve", "+3 main.contextUntil.func1"}) {
		t.Errorf("grown = %q", got)
	}
	if got := grown(a, b); len(got) != 0 {
		t.Errorf("grown with fewer after = %q", got)
	}
}
