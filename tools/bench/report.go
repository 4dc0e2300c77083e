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
	commit           string
	cpus             string // how the spawn cluster's processes share the CPUs
	elapsed          time.Duration
	rows             []row
	coldStarts       []time.Duration
	rssIdle, rssLoad int64
	rssLoadConc      int
	images           []imageSize
	e2eStages        []stage
	e2eTotal         []time.Duration
	lists            []listRow
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## gmini benchmarks\n\nCommand: `%s`  \nCommit: %s  \nMachine: %s  \nCPUs (spawn and list): %s  \nTotal time: %s\n",
		r.command, r.commit, r.machine, r.cpus, r.elapsed.Round(time.Second))

	fmt.Fprintf(w, "\n### Spawn: Jobs created per second (cluster without a node)\n\n")
	fmt.Fprint(w, "Each row pools its rounds: Jobs/s is all its Jobs over all its time; p50/p99 are over all its requests.\n\n")
	fmt.Fprintln(w, "| concurrency | row | Jobs | errors | Jobs/s | p50 | p99 | throughput vs direct | p99 vs direct |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	var direct row
	for _, x := range r.rows {
		if x.name == rowDirect {
			direct = x
		}
		ratio, p99r := "1.00", "1.00"
		if x.name != direct.name && direct.n > 0 && direct.concurrency == x.concurrency {
			ratio = fmt.Sprintf("%.2f", x.rate()/direct.rate())
			p99r = fmt.Sprintf("%.2f", float64(pct(x.lat, 99))/float64(pct(direct.lat, 99)))
		}
		fmt.Fprintf(w, "| %d | %s | %d | %d | %.1f | %s | %s | %s | %s |\n", x.concurrency, x.name, x.n, x.errors,
			x.rate(), ms(pct(x.lat, 50)), ms(pct(x.lat, 99)), ratio, p99r)
	}

	// CPU seconds per Job hold still on a shared machine where Jobs/s
	// swing: each row's CPU of the backend and of kube-apiserver + etcd,
	// read from /proc over the row's own runs.
	fmt.Fprintf(w, "\n### CPU per created Job (same runs)\n\n")
	fmt.Fprintln(w, "| concurrency | row | backend CPU/Job | kube-apiserver + etcd CPU/Job | backend / API server |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|")
	for _, x := range r.rows {
		backend, ratio := "-", "-"
		if x.backendCPU > 0 {
			backend = ms(x.perJob(x.backendCPU))
			if x.apiCPU > 0 {
				ratio = fmt.Sprintf("%.2f", float64(x.backendCPU)/float64(x.apiCPU))
			}
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", x.concurrency, x.name, backend, ms(x.perJob(x.apiCPU)), ratio)
	}

	// History and auth beside gmini without them, at each concurrency.
	byName := map[string]map[int]row{}
	for _, x := range r.rows {
		if byName[x.name] == nil {
			byName[x.name] = map[int]row{}
		}
		byName[x.name][x.concurrency] = x
	}
	if len(byName) > 0 {
		fmt.Fprintf(w, "\n### Against gmini without history or auth (same runs)\n\n")
		fmt.Fprintln(w, "| concurrency | row | Jobs/s | p99 | throughput vs gmini | p99 vs gmini |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|")
		for _, x := range r.rows {
			ref, ok := byName[rowGmini][x.concurrency]
			if !ok || x.name == rowDirect || x.name == rowNaive || x.name == rowGmini || ref.n == 0 {
				continue
			}
			fmt.Fprintf(w, "| %d | %s | %.1f | %s | %.2f | %.2f |\n", x.concurrency, x.name, x.rate(), ms(pct(x.lat, 99)),
				x.rate()/ref.rate(), float64(pct(x.lat, 99))/float64(pct(ref.lat, 99)))
		}
	}

	if len(r.lists) > 0 {
		fmt.Fprintf(w, "\n### GET /experiments: %d clients paging through the whole list at once for %s (default page of 100)\n\n", listers, listPeriod)
		fmt.Fprintln(w, "| experiments | of them in flight (Job there) | backend | pages served | p50 per page | p99 per page | backend RSS before | peak backend RSS | of it anonymous (heap), before / peak |")
		fmt.Fprintln(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|")
		for _, l := range r.lists {
			fmt.Fprintf(w, "| %d | %d | %s | %d | %s | %s | %s | %s | %s / %s |\n", l.records, l.inFlight, l.backend, l.pages, ms(pct(l.lat, 50)), ms(pct(l.lat, 99)),
				mib(l.idle.RSS), mib(l.peak.RSS), mib(l.idle.Anon), mib(l.peak.Anon))
		}
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
