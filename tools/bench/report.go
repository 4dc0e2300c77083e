package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

type stage struct {
	name string
	d    []time.Duration
}

type imageSize struct {
	name                              string
	archive, compressed, uncompressed int64
	layers                            int
}

type report struct {
	machine, command string
	elapsed          time.Duration
	rows             []row
	coldStarts       []time.Duration
	rssIdle, rssLoad int64
	rssLoadConc      int
	images           []imageSize
	e2eStages        []stage
	e2eTotal         []time.Duration
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## gmini benchmarks\n\nCommand: `%s`  \nMachine: %s  \nTotal time: %s\n",
		r.command, r.machine, r.elapsed.Round(time.Second))

	fmt.Fprintf(w, "\n### Spawn: Jobs created per second (cluster without a node)\n\n")
	fmt.Fprint(w, "Each row pools its rounds: Jobs/s is all its Jobs over all its time; p50/p99 are over all its requests.\n\n")
	fmt.Fprintln(w, "| concurrency | row | Jobs | errors | Jobs/s | p50 | p99 | throughput vs ceiling | p99 vs ceiling |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	var ceil row
	for _, x := range r.rows {
		if strings.HasPrefix(x.name, "ceiling") {
			ceil = x
		}
		ratio, p99r := "1.00", "1.00"
		if x.name != ceil.name && ceil.n > 0 && ceil.concurrency == x.concurrency {
			ratio = fmt.Sprintf("%.2f", x.rate()/ceil.rate())
			p99r = fmt.Sprintf("%.2f", float64(pct(x.lat, 99))/float64(pct(ceil.lat, 99)))
		}
		fmt.Fprintf(w, "| %d | %s | %d | %d | %.1f | %s | %s | %s | %s |\n", x.concurrency, x.name, x.n, x.errors,
			x.rate(), ms(pct(x.lat, 50)), ms(pct(x.lat, 99)), ratio, p99r)
	}

	if len(r.e2eTotal) > 0 {
		fmt.Fprintf(w, "\n### End to end: POST to Job Complete, %d experiments one at a time (cluster with a node)\n\n", len(r.e2eTotal))
		fmt.Fprintln(w, "| step (time since the previous step, first seen by a watch) | samples | p50 | p99 |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, s := range r.e2eStages {
			fmt.Fprintf(w, "| %s | %d | %s | %s |\n", s.name, len(s.d), ms(pct(s.d, 50)), ms(pct(s.d, 99)))
		}
		fmt.Fprintf(w, "| **total: POST sent to Job Complete** | %d | **%s** | **%s** |\n", len(r.e2eTotal), ms(pct(r.e2eTotal, 50)), ms(pct(r.e2eTotal, 99)))
	}

	fmt.Fprintf(w, "\n### Cost\n\n| what | value |\n|---|---:|\n")
	for _, x := range r.rows {
		if x.backendCPU > 0 {
			fmt.Fprintf(w, "| backend CPU per Job at concurrency %d | %s |\n", x.concurrency, ms(x.backendCPU/time.Duration(x.n)))
		}
	}
	fmt.Fprintf(w, "| backend RSS, idle (after warm-up) | %s |\n", mib(r.rssIdle))
	fmt.Fprintf(w, "| backend RSS, peak under gmini load at concurrency %d | %s |\n", r.rssLoadConc, mib(r.rssLoad))
	if len(r.coldStarts) > 0 {
		var s []string
		for _, d := range r.coldStarts {
			s = append(s, ms(d))
		}
		fmt.Fprintf(w, "| backend cold start, exec to /readyz 200 (p50 of %d: %s) | %s |\n", len(s), strings.Join(s, ", "), ms(pct(r.coldStarts, 50)))
	}
	for _, im := range r.images {
		fmt.Fprintf(w, "| image %s: archive / layers compressed / uncompressed (%d layer) | %s / %s / %s |\n",
			im.name, im.layers, mib(im.archive), mib(im.compressed), mib(im.uncompressed))
	}
}
