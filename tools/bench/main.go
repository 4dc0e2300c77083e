// Command bench measures how fast gmini turns requests into Jobs, beside one
// client-go client creating the same Jobs directly, and prints the figures
// as Markdown tables. Run it with `make bench` (cd tools && go run ./bench).
//
// It makes two local clusters in turn. The first has no node (etcd,
// kube-apiserver, kube-controller-manager), so the spawn benchmarks measure
// the API path without a kubelet and pods competing for the CPU: direct
// (one in-process client-go client without a client-side limit, at the
// same concurrency), gmini (the real backend process over loopback HTTP)
// and the tutorial's design (client-go with its default QPS 5 / burst 10).
// Beside Jobs/s and latency it reads, per row, the CPU time the backend and
// kube-apiserver + etcd spent per created Job. The second has a node and the dev overlay
// deployed, for POST-to-Complete times. These figures are not tests.
//
// -only picks parts (default spawn,e2e: the above). sets, on the node-less
// cluster: one POST /experiment-sets of -set-items beside direct creates
// and single POSTs at the backend's --set-concurrency. queue, on the
// cluster with a node: -queue-n experiments POSTed at once, without Kueue
// (the dev overlay's ResourceQuota) and then with it (installed as
// tools/e2e does), for makespan, completion order, warnings and pods.
// events, on a node-less cluster of its own: the delay from a Job status
// write to the SSE event at 1, 100 and 500 followers, and what idle
// followers cost the backend (events.go).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/e2e-framework/pkg/envconf"

	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

type options struct {
	n, nNaive, e2eN  int
	rounds           int
	concurrency      []int
	skipE2E          bool
	backendArgs      []string
	compareArgs      []string
	compareRef       string
	variants         []string
	listN, inFlight  int
	spawnName, e2eNm string
	splitCPUs        bool
	// parts are the measurements asked for (-only): partSpawn, partE2E,
	// partSets, partQueue.
	parts          map[string]bool
	setItems       int // items of the one POST /experiment-sets
	setConcurrency int // the backend's --set-concurrency, and the other rows' concurrency beside it
	queueN         int // experiments POSTed at once, with and without Kueue
	events         eventsOptions
}

// Parts of the benchmark, for -only. spawn is the spawn rows, the list
// benchmark and the cost (the node-less cluster); e2e POST-to-Complete one
// at a time (the cluster with a node); sets one POST /experiment-sets
// beside direct creates and single POSTs (node-less cluster); queue the
// same batch POSTed at once with and without Kueue (cluster with a node).
const (
	partSpawn = "spawn"
	partE2E   = "e2e"
	partSets  = "sets"
	partQueue = "queue"
)

// parseOnly reads -only: comma-separated parts, "all" for every one.
func parseOnly(s string) (map[string]bool, error) {
	parts := map[string]bool{}
	for _, p := range strings.Split(s, ",") {
		switch p = strings.TrimSpace(p); p {
		case partSpawn, partE2E, partSets, partQueue, partEvents:
			parts[p] = true
		case "all":
			for _, q := range []string{partSpawn, partE2E, partSets, partQueue, partEvents} {
				parts[q] = true
			}
		case "":
		default:
			return nil, fmt.Errorf("-only %q: want a comma-separated list of spawn, e2e, sets, queue, events (or all)", p)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("-only %q: name at least one part", s)
	}
	return parts, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		slog.New(slog.NewTextHandler(os.Stderr, nil)).Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var conc, extra, compare, out string
	fs.StringVar(&out, "out", "", "also write the whole output (the log and the tables) to this file, after the command line, the commit and the machine, e.g. ../docs/runs/2026-12-04-abc1234.txt: the run behind figures quoted in docs/benchmarks.md")
	fs.IntVar(&o.n, "n", 300, "Jobs per spawn run (direct and gmini rows)")
	fs.IntVar(&o.nNaive, "n-naive", 60, "Jobs per run of the QPS 5 / burst 10 row (it runs at about 5 Jobs/s)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of each spawn row, in rotated order; a row's figures pool all its rounds")
	fs.StringVar(&conc, "concurrency", "1,8,32", "comma-separated concurrencies")
	fs.IntVar(&o.e2eN, "e2e", 20, "experiments for POST-to-Complete, one at a time")
	fs.BoolVar(&o.skipE2E, "skip-e2e", false, "skip the cluster with a node (POST-to-Complete)")
	fs.StringVar(&extra, "backend-args", "", "extra flags for the backend, space-separated (e.g. \"--kube-qps 50 --kube-burst 100\" to compare settings)")
	fs.StringVar(&compare, "compare-args", "", "flags of another backend measured in its own row (e.g. \"--kube-qps 50 --kube-burst 100\", the settings before an earlier fix); empty: no such row")
	fs.StringVar(&o.compareRef, "compare-ref", "", "a git revision whose backend is built and measured beside this checkout's, without history or auth and as each of -variants, each in a row of its own (before/after a change); empty: no such rows")
	var variants string
	fs.StringVar(&variants, "variants", "sqlite,postgres,auth", "backends measured beside gmini without history or auth: sqlite, postgres (history in each) and auth (--auth kubernetes); comma-separated, empty for none")
	fs.IntVar(&o.listN, "list", 20000, "experiments in the history for the list benchmark, measured at half and at all of them; 0 skips it")
	fs.IntVar(&o.inFlight, "list-in-flight", 5000, "experiments left in flight when the list is measured again after cancelling the others: the prod overlay's quota on Jobs (count/jobs.batch)")
	fs.BoolVar(&o.splitCPUs, "split-cpus", false, "run the control plane (etcd, kube-apiserver, kube-controller-manager) on one half of the CPUs and the benchmark, backends and PostgreSQL on the other, as in a cluster where the backend does not share the API server's CPUs (spawn and list benchmarks)")
	fs.StringVar(&o.spawnName, "cluster", "gmini-bench", "name of the node-less cluster")
	fs.StringVar(&o.e2eNm, "node-cluster", "gmini-bench-node", "name of the cluster with a node")
	var only string
	fs.StringVar(&only, "only", "spawn,e2e", "parts to run, comma-separated: spawn (spawn rows, list, cost), e2e (POST to Complete one at a time), sets (one POST /experiment-sets beside direct creates and single POSTs), queue (a batch POSTed at once with and without Kueue), events (status event delay and idle followers), or all")
	fs.IntVar(&o.setItems, "set-items", 1000, "items of the one POST /experiment-sets per round of the sets part (the backend takes at most 1000)")
	fs.IntVar(&o.setConcurrency, "set-concurrency", 16, "the reference backend's --set-concurrency in the sets part, and the concurrency of the direct and single-POST rows measured beside it")
	fs.IntVar(&o.queueN, "queue-n", 60, "experiments POSTed at once in the queue part, with and without Kueue")
	o.events.register(fs)
	timeout := fs.Duration("timeout", 45*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	parts, err := parseOnly(only)
	if err != nil {
		return err
	}
	o.parts = parts
	if err := o.events.validate(); err != nil {
		return err
	}
	if o.skipE2E {
		delete(o.parts, partE2E)
	}
	if o.setItems < 1 || o.setItems > 1000 || o.setConcurrency < 1 || o.setConcurrency > 256 || o.queueN < 2 || o.queueN > 500 {
		return fmt.Errorf("set-items must be 1-1000, set-concurrency 1-256, queue-n 2-500")
	}
	for _, s := range strings.Split(conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 || c > 256 {
			return fmt.Errorf("concurrency %q: want 1 to 256", s)
		}
		o.concurrency = append(o.concurrency, c)
	}
	if o.n < 1 || o.n > 5000 || o.nNaive < 1 || o.nNaive > 1000 || o.e2eN < 0 || o.e2eN > 200 || o.rounds < 1 || o.rounds > 10 {
		return fmt.Errorf("n must be 1-5000, n-naive 1-1000, e2e 0-200, rounds 1-10")
	}
	o.backendArgs = strings.Fields(extra)
	o.compareArgs = strings.Fields(compare)
	for _, v := range strings.Split(variants, ",") {
		switch v = strings.TrimSpace(v); v {
		case "":
		case variantSQLite, variantPostgres, variantAuth:
			o.variants = append(o.variants, v)
		default:
			return fmt.Errorf("variant %q: want sqlite, postgres or auth", v)
		}
	}
	if o.listN < 0 || o.listN > 100000 || o.inFlight < 0 {
		return fmt.Errorf("list must be 0-100000, list-in-flight not negative")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	start := time.Now()
	info := runInfo{started: start, command: "cd tools && go run ./bench " + strings.Join(args, " "), commit: commit(ctx), machine: machine(), system: system()}
	if out != "" {
		f, err := openOut(out)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				fmt.Fprintf(f, "\nbench failed: %v\n", err)
			}
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("write %s: %w", out, cerr)
			}
		}()
		if _, err := io.WriteString(f, info.header()); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
		stdout, stderr = io.MultiWriter(stdout, f), io.MultiWriter(stderr, f)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	l, err := layout.FromWorkingDir()
	if err != nil {
		return err
	}
	var features []cluster.Feature
	if o.parts[partQueue] {
		// Kueue's controller is pushed to the node's registry.
		features = append(features, cluster.Registry)
	}
	node, err := cluster.Prepare(ctx, log, l, features...)
	if err != nil {
		return fmt.Errorf("prepare the machine: %w", err)
	}
	images := deploy.Images{Layout: l, Tag: "dev"}
	if _, err := deploy.Run(ctx, envconf.New(), deploy.BuildImages(log, images)); err != nil {
		return err
	}
	backendBin, err := backendproc.Build(ctx, log, l)
	if err != nil {
		return err
	}

	rep := &report{machine: info.machine, command: info.command, commit: info.commit, spawn: o.parts[partSpawn]}
	if o.parts[partSpawn] || o.parts[partSets] {
		// No registry without a node: only the queue part's cluster has one.
		spawnNode := node
		spawnNode.Registry = ""
		spawnCluster := cluster.NewLocal(l, spawnNode, o.spawnName, log, local.WithoutNode())
		if err := spawnBenchmarks(ctx, log, l, spawnCluster, o, backendBin, rep); err != nil {
			return err
		}
	}
	if o.parts[partSpawn] {
		if err := imageSizes(images.Archives(), rep); err != nil {
			return err
		}
	}
	if o.parts[partE2E] && o.e2eN > 0 || o.parts[partQueue] {
		if err := endToEnd(ctx, log, l, cluster.NewLocal(l, node, o.e2eNm, log), o, images, rep); err != nil {
			return err
		}
	}
	var events *eventsReport
	if o.parts[partEvents] {
		eventsNode := node
		eventsNode.Registry = ""
		c := cluster.NewLocal(l, eventsNode, o.events.cluster, log, local.WithoutNode())
		if events, err = eventsBenchmark(ctx, log, l, c, o, backendBin); err != nil {
			return err
		}
	}
	rep.elapsed = time.Since(start)
	rep.print(stdout)
	events.print(stdout)
	return nil
}

// openOut creates the -out file, and its directory.
func openOut(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-out: %w", err)
	}
	return f, nil
}

// runInfo is what a saved run says about itself before its output: what
// ran, from which commit, where.
type runInfo struct {
	started                  time.Time
	command, commit, machine string
	system                   string
}

func (i runInfo) header() string {
	return fmt.Sprintf("# gmini bench run\nstarted: %s\ncommand: %s\ncommit: %s\nmachine: %s\nsystem: %s\n\n",
		i.started.UTC().Format("2006-01-02 15:04:05 MST"), i.command, i.commit, i.machine, i.system)
}

// commit is the checkout's commit, marked when files differ from it: the
// backend measured is built from the working tree.
func commit(ctx context.Context) string {
	head, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown (git rev-parse HEAD: " + err.Error() + ")"
	}
	c := strings.TrimSpace(string(head))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += " with uncommitted changes"
	}
	return c
}

// system is the operating system and kernel.
func system() string {
	osName := "unknown OS"
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	kernel := "unknown"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%s, Linux %s", osName, kernel)
}

func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
		if len(f) >= 2 {
			if kb, err := strconv.Atoi(f[1]); err == nil {
				mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	load := ""
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average at start " + strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s%s", cpu, runtime.NumCPU(), mem, runtime.Version(), load)
}
