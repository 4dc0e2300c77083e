package main

import (
	"strings"
	"testing"
	"time"
)

// fixed makes a row whose every request took lat, so its p50 and p99 are
// lat.
func fixed(name string, conc, n int, wall, lat, backendCPU, apiCPU time.Duration) row {
	r := row{name: name, concurrency: conc, n: n, wall: wall, backendCPU: backendCPU, apiCPU: apiCPU, rounds: 1}
	for range n {
		r.lat = append(r.lat, lat)
	}
	return r
}

func TestReportPrint(t *testing.T) {
	t.Parallel()
	sqlite := rowName(variantSQLite)
	rep := &report{
		command: "cd tools && go run ./bench", commit: "abc123", machine: "test CPU", cpus: "shared",
		elapsed: 90 * time.Second,
		rows: []row{
			// 400 Jobs/s, p99 20 ms; 4 ms of API CPU per Job.
			fixed(rowDirect, 8, 400, time.Second, 20*time.Millisecond, 0, 1600*time.Millisecond),
			// 200 Jobs/s, p99 30 ms; 1 ms of backend CPU per Job against 4.
			fixed(rowGmini, 8, 400, 2*time.Second, 30*time.Millisecond, 400*time.Millisecond, 1600*time.Millisecond),
			// 100 Jobs/s, p99 60 ms; 2 ms of backend CPU per Job against 5.
			fixed(sqlite, 8, 400, 4*time.Second, 60*time.Millisecond, 800*time.Millisecond, 2000*time.Millisecond),
			fixed(rowNaive, 8, 60, 10*time.Second, 1600*time.Millisecond, 0, 2400*time.Millisecond),
		},
		coldStarts: []time.Duration{200 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond},
		rssIdle:    50 << 20, rssLoad: 64 << 20, rssLoadConc: 8,
	}
	var b strings.Builder
	rep.print(&b)
	out := b.String()
	for _, want := range []string{
		"Commit: abc123  ", // two spaces: a Markdown line break
		"Total time: 1m30s",
		// Spawn: throughput and p99 against direct.
		"| 8 | " + rowDirect + " | 400 | 0 | 400.0 | 20.0 ms | 20.0 ms | 1.00 | 1.00 |",
		"| 8 | " + rowGmini + " | 400 | 0 | 200.0 | 30.0 ms | 30.0 ms | 0.50 | 1.50 |",
		"| 8 | " + sqlite + " | 400 | 0 | 100.0 | 60.0 ms | 60.0 ms | 0.25 | 3.00 |",
		"| 8 | " + rowNaive + " | 60 | 0 | 6.0 | 1600.0 ms | 1600.0 ms | 0.01 | 80.00 |",
		// CPU per Job: the in-process clients have no backend.
		"| 8 | " + rowDirect + " | - | 4.0 ms | - |",
		"| 8 | " + rowGmini + " | 1.0 ms | 4.0 ms | 0.25 |",
		"| 8 | " + sqlite + " | 2.0 ms | 5.0 ms | 0.40 |",
		// Against gmini: only the variants.
		"| 8 | " + sqlite + " | 100.0 | 60.0 ms | 0.50 | 2.00 |",
		"| backend cold start, exec to /readyz 200 (p50 of 3: 200.0 ms, 100.0 ms, 150.0 ms) | 150.0 ms |",
		"| backend RSS, peak under gmini load at concurrency 8 | 64.0 MiB |",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("report lacks the line\n%s\n--- report:\n%s", want, out)
		}
	}
	against := out[strings.Index(out, "Against gmini"):]
	against = against[:strings.Index(against, "### Cost")]
	for _, not := range []string{rowDirect, rowNaive, "| " + rowGmini} {
		if strings.Contains(against, not) {
			t.Errorf("the table against gmini holds %q:\n%s", not, against)
		}
	}
}
