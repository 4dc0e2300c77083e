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
		spawn: true,
		sets: []row{
			// 1000 Jobs in 2 s: 500 Jobs/s; 4 ms of API CPU per Job.
			fixed(rowDirect, 16, 1000, 2*time.Second, 30*time.Millisecond, 0, 4*time.Second),
			// one request of 1000 Jobs in 2.5 s: 400 Jobs/s.
			{name: rowSet, concurrency: 16, n: 1000, wall: 2500 * time.Millisecond, lat: []time.Duration{2500 * time.Millisecond},
				backendCPU: time.Second, apiCPU: 5 * time.Second, rounds: 1},
		},
		queue: []queueRow{{name: queueRowWithout, n: 60, answered: 800 * time.Millisecond, makespan: 54 * time.Second, spearman: 0.21,
			warnings: 170, reasons: map[string]int{"FailedCreate": 166, "BackoffLimitExceeded": 4}, maxLive: 20, pods: 60,
			waits: []time.Duration{time.Second, 3 * time.Second, 40 * time.Second}}},
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
		// Sets: Jobs/s against direct, a set's one request.
		"| " + rowDirect + " | 16 | 1000 | 1000 | 500.0 | 30.0 ms | 30.0 ms | 1.00 | - | 4.0 ms |",
		"| " + rowSet + " | 16 | 1000 | 1 | 400.0 | 2500.0 ms | 2500.0 ms | 0.80 | 1.0 ms | 5.0 ms |",
		"| " + queueRowWithout + " | 60 | 800.0 ms | 54000.0 ms | 0.21 | 170 (FailedCreate 166, BackoffLimitExceeded 4) | 20 | 60 | 3000.0 ms / 40000.0 ms |",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("report lacks the line\n%s\n--- report:\n%s", want, out)
		}
	}
	against := out[strings.Index(out, "Against gmini"):]
	against = against[:strings.Index(against, "###")] // the next section
	for _, not := range []string{rowDirect, rowNaive, "| " + rowGmini} {
		if strings.Contains(against, not) {
			t.Errorf("the table against gmini holds %q:\n%s", not, against)
		}
	}
}
