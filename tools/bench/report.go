package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
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
	spawn            bool          // the spawn part ran: its tables and the cost
	sets             []row         // the sets part: direct, single POSTs, the set
	queue            []queueRow    // the queue part: without, then with Kueue
	kueueInstall     time.Duration // Kueue's build (cached), push, install and take-up
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n## gmini benchmarks\n\nCommand: `%s`  \nCommit: %s  \nMachine: %s  \nCPUs (spawn and list): %s  \nTotal time: %s\n",
		r.command, r.commit, r.machine, r.cpus, r.elapsed.Round(time.Second))

	if r.spawn {
		r.printSpawn(w)
	}
	r.printSets(w)
	r.printQueue(w)
	if len(r.e2eTotal) > 0 {
		fmt.Fprintf(w, "\n### End to end: POST to Job Complete, %d experiments one at a time (cluster with a node)\n\n", len(r.e2eTotal))
		fmt.Fprintln(w, "| step (time since the previous step, first seen by a watch) | samples | p50 | p99 |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, s := range r.e2eStages {
			fmt.Fprintf(w, "| %s | %d | %s | %s |\n", s.name, len(s.d), ms(pct(s.d, 50)), ms(pct(s.d, 99)))
		}
		fmt.Fprintf(w, "| **total: POST sent to Job Complete** | %d | **%s** | **%s** |\n", len(r.e2eTotal), ms(pct(r.e2eTotal, 50)), ms(pct(r.e2eTotal, 99)))
	}
	if r.spawn {
		r.printCost(w)
	}
}

func (r *report) printSpawn(w io.Writer) {
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

}

func (r *report) printCost(w io.Writer) {
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

// printSets prints the sets part: Jobs/s of one set beside direct creates
// and single POSTs at the backend's --set-concurrency.
func (r *report) printSets(w io.Writer) {
	if len(r.sets) == 0 {
		return
	}
	var direct row
	for _, x := range r.sets {
		if x.name == rowDirect {
			direct = x
		}
	}
	fmt.Fprintf(w, "\n### Sets: Jobs created per second, one POST /experiment-sets of %d items (cluster without a node)\n\n", r.sets[0].n/max(r.sets[0].rounds, 1))
	fmt.Fprintf(w, "At API-server concurrency %d: the direct and single-POST rows with %d workers, the set with the backend's --set-concurrency %d. "+
		"Each row pools its rounds (%d); a set's latency is its whole request.\n\n", r.sets[0].concurrency, r.sets[0].concurrency, r.sets[0].concurrency, r.sets[0].rounds)
	fmt.Fprintln(w, "| row | concurrency | Jobs | requests | Jobs/s | request p50 | request p99 | Jobs/s vs direct | backend CPU/Job | kube-apiserver + etcd CPU/Job |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.sets {
		ratio := "-"
		if direct.n > 0 {
			ratio = fmt.Sprintf("%.2f", x.rate()/direct.rate())
		}
		backend := "-"
		if x.backendCPU > 0 {
			backend = ms(x.perJob(x.backendCPU))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.1f | %s | %s | %s | %s | %s |\n", x.name, x.concurrency, x.n, len(x.lat), x.rate(),
			ms(pct(x.lat, 50)), ms(pct(x.lat, 99)), ratio, backend, ms(x.perJob(x.apiCPU)))
	}
}

// printQueue prints the queue part: the same batch POSTed at once without
// and with Kueue.
func (r *report) printQueue(w io.Writer) {
	if len(r.queue) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Queue: %d experiments POSTed at once, without and with Kueue (cluster with a node, overlays/dev)\n\n", r.queue[0].n)
	fmt.Fprintln(w, "The dev overlay's ResourceQuota admits 20 pods; Kueue's ClusterQueue gmini (k8s/queue) admits 16 runners at once. "+
		"Submission order: the order of the 201 answers; completion order: a Job first seen Complete by a watch; "+
		"warnings: Warning events of the namespace during the run, by their count field.")
	if r.kueueInstall > 0 {
		fmt.Fprintf(w, "Kueue built (cached), pushed, installed and taken up by the backend in %s, between the two runs.\n", r.kueueInstall.Round(100*time.Millisecond))
	}
	fmt.Fprintln(w, "\n| run | experiments | all POSTs answered | makespan: first POST to last Job Complete | Spearman ρ, completion vs submission order | Warning events (by reason) | most runner pods alive at once | runner pods created | 201 to first pod, p50 / max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---:|---:|")
	for _, q := range r.queue {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %.2f | %s | %d | %d | %s / %s |\n", q.name, q.n, ms(q.answered), ms(q.makespan), q.spearman,
			warningsText(q.warnings, q.reasons), q.maxLive, q.pods, ms(pct(q.waits, 50)), ms(pct(q.waits, 100)))
	}
}

func warningsText(total int, reasons map[string]int) string {
	if total == 0 {
		return "0"
	}
	keys := slices.Collect(maps.Keys(reasons))
	slices.SortFunc(keys, func(a, b string) int {
		if reasons[a] != reasons[b] {
			return reasons[b] - reasons[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, reasons[k]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}
