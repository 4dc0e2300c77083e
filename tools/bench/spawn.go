package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// row is one line of the spawn table.
type row struct {
	name        string
	concurrency int
	n, errors   int
	wall        time.Duration
	lat         []time.Duration
	// CPU time spent during the row's runs by the backend process (gmini
	// rows only) and by the API server and etcd (every row).
	backendCPU, apiCPU time.Duration
	rounds             int
}

func (r row) rate() float64 { return float64(r.n-r.errors) / r.wall.Seconds() }

// perJob divides a CPU time by the row's created Jobs.
func (r row) perJob(d time.Duration) time.Duration {
	if r.n-r.errors <= 0 {
		return 0
	}
	return d / time.Duration(r.n-r.errors)
}

// Row names. "direct" is one client-go client in this process at the same
// concurrency: the figure gmini is compared with, not a limit of the API
// server.
const (
	rowDirect = "direct: client-go in-process, no client-side limit"
	rowGmini  = "gmini: POST /experiment to the backend"
	rowNaive  = "tutorial design: client-go QPS 5 / burst 10"
)

// Variants of the backend measured beside gmini without history or auth.
const (
	variantSQLite   = "sqlite"
	variantPostgres = "postgres"
	variantAuth     = "auth"
)

// rowName is the spawn table's label of a backend variant.
func rowName(variant string) string {
	switch variant {
	case "":
		return rowGmini
	case variantSQLite:
		return "gmini, history in SQLite"
	case variantPostgres:
		return "gmini, history in PostgreSQL"
	case variantAuth:
		return "gmini, --auth kubernetes"
	}
	return "gmini " + variant
}

// backendRun is one backend process the spawn rows post to.
type backendRun struct {
	row       string
	id        string // short, for experiment IDs and file names
	namespace string
	proc      *backendproc.Process
	token     string // bearer token, for --auth kubernetes
}

func spawnBenchmarks(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, o options, backendBin string, rep *report) error {
	if _, err := c.Create(ctx); err != nil {
		return fmt.Errorf("create cluster %s: %w", o.spawnName, err)
	}
	defer func() {
		if err := c.Destroy(context.WithoutCancel(ctx)); err != nil {
			log.Error("destroy cluster", "name", o.spawnName, "err", err)
		}
	}()
	rep.cpus = "shared: every process on every CPU"
	if o.splitCPUs {
		split, err := newCPUSplit()
		if err != nil {
			return err
		}
		if err := split.apply(c); err != nil {
			return err
		}
		defer func() {
			if err := split.restore(); err != nil {
				log.Error("give the benchmark every CPU again", "err", err)
			}
		}()
		rep.cpus = split.String()
		log.Info("CPUs split", "cpus", rep.cpus)
	}
	kubeconfig := c.GetKubeconfig()
	base := c.KubernetesRestConfig()
	admin, err := clientset(base, -1, 0)
	if err != nil {
		return err
	}
	apiPIDs, err := controlPlanePIDs(c)
	if err != nil {
		return err
	}
	logDir := l.Logs(o.spawnName)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	env := &benchEnv{log: log, l: l, cfg: base, admin: admin, kubeconfig: kubeconfig, bin: backendBin, logDir: logDir, extra: o.backendArgs}

	// gmini without history or auth, the reference row, in the dev
	// overlay's namespace; each variant in a namespace of its own, so
	// their recorders and Jobs never mix.
	off, err := env.backend(ctx, "", "", deploy.Namespace, nil)
	if err != nil {
		return err
	}
	defer off.proc.Stop(context.WithoutCancel(ctx))
	tmpl, err := jobTemplate(ctx, admin)
	if err != nil {
		return err
	}
	// Cold start: fresh processes, until /readyz answers 200.
	rep.coldStarts = append(rep.coldStarts, off.proc.ColdStart())
	for i := range 2 {
		if _, err := off.proc.Stop(ctx); err != nil {
			return err
		}
		if err := off.proc.Start(ctx); err != nil {
			return err
		}
		rep.coldStarts = append(rep.coldStarts, off.proc.ColdStart())
		log.Info("backend ready", "try", i+2, "cold start", off.proc.ColdStart().Round(time.Millisecond))
	}
	backends := []*backendRun{off}
	for _, v := range o.variants {
		b, err := env.variant(ctx, v, "")
		if err != nil {
			return fmt.Errorf("backend %s: %w", v, err)
		}
		defer b.proc.Stop(context.WithoutCancel(ctx))
		defer env.close()
		backends = append(backends, b)
	}
	if len(o.compareArgs) > 0 {
		b, err := env.backend(ctx, "", "backend with "+strings.Join(o.compareArgs, " "), deploy.Namespace, o.compareArgs)
		if err != nil {
			return err
		}
		defer b.proc.Stop(context.WithoutCancel(ctx))
		backends = append(backends, b)
	}
	if o.compareRef != "" {
		bin, err := buildAtRef(ctx, log, l, o.compareRef)
		if err != nil {
			return err
		}
		env.refBin = bin
		b, err := env.backend(ctx, o.compareRef, "gmini at "+o.compareRef, deploy.Namespace, nil)
		if err != nil {
			return err
		}
		defer b.proc.Stop(context.WithoutCancel(ctx))
		backends = append(backends, b)
		// And each variant at the revision, so a change to history or
		// auth has its before and after in the same run.
		for _, v := range o.variants {
			b, err := env.variant(ctx, v, o.compareRef)
			if err != nil {
				return fmt.Errorf("backend %s at %s: %w", v, o.compareRef, err)
			}
			defer b.proc.Stop(context.WithoutCancel(ctx))
			backends = append(backends, b)
		}
	}

	direct, err := clientset(base, -1, 0)
	if err != nil {
		return err
	}
	naive, err := clientset(base, 5, 10)
	if err != nil {
		return err
	}
	httpc := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256, IdleConnTimeout: time.Minute},
	}

	// Warm every path (TLS, HTTP/2, caches, review caches) before measuring.
	if _, err := runCreates(ctx, "warm-up", 4, 20, directCreate(direct, tmpl, "warm")); err != nil {
		return err
	}
	for _, b := range backends {
		if _, err := runCreates(ctx, "warm-up", 4, 20, gminiPost(httpc, b, "warm-"+b.id)); err != nil {
			return err
		}
		if err := clean(ctx, admin, b.namespace); err != nil {
			return err
		}
	}
	if err := clean(ctx, admin, deploy.Namespace); err != nil {
		return err
	}
	rep.rssIdle = off.proc.RSS()

	type run struct {
		name      string
		n         int
		backend   *backendRun // nil for the in-process clients
		namespace string
		fn        func(prefix string) createFunc
	}
	for _, conc := range o.concurrency {
		runs := []run{{rowDirect, o.n, nil, deploy.Namespace, func(p string) createFunc { return directCreate(direct, tmpl, "direct-"+p) }}}
		for _, b := range backends {
			runs = append(runs, run{b.row, o.n, b, b.namespace, func(p string) createFunc { return gminiPost(httpc, b, b.id+"-"+p) }})
		}
		naiveRun := run{rowNaive, o.nNaive, nil, deploy.Namespace, func(p string) createFunc { return directCreate(naive, tmpl, "naive-"+p) }}
		total := map[string]*row{}
		for round := range o.rounds {
			// Rotate the order each round, so that no row always runs
			// first, and reverse it every other round, so that no row
			// always runs after the same one (a history row's clean-up,
			// which records every Job it deletes, may still weigh on the
			// next row); the slow naive row runs once.
			order := append(append([]run(nil), runs[round%len(runs):]...), runs[:round%len(runs)]...)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			if round == 0 {
				order = append(order, naiveRun)
			}
			for _, r := range order {
				var stopRSS func() int64
				if r.backend == off && conc == o.concurrency[len(o.concurrency)-1] {
					stopRSS = off.proc.PeakRSS()
				}
				var backendCPU0 time.Duration
				if r.backend != nil {
					backendCPU0 = r.backend.proc.CPU()
				}
				apiCPU0 := cpuOf(apiPIDs)
				res, err := runCreates(ctx, r.name, conc, r.n, r.fn(fmt.Sprintf("c%d-r%d", conc, round)))
				res.apiCPU = cpuOf(apiPIDs) - apiCPU0
				if r.backend != nil {
					res.backendCPU = r.backend.proc.CPU() - backendCPU0
				}
				if stopRSS != nil {
					rep.rssLoad = max(rep.rssLoad, stopRSS())
					rep.rssLoadConc = conc
				}
				if err != nil {
					return err
				}
				log.Info("run", "row", r.name, "concurrency", conc, "round", round+1, "jobs/s", fmt.Sprintf("%.1f", res.rate()),
					"p50", pct(res.lat, 50), "p99", pct(res.lat, 99), "errors", res.errors)
				t := total[r.name]
				if t == nil {
					t = &row{name: r.name, concurrency: conc}
					total[r.name] = t
				}
				t.n += res.n
				t.errors += res.errors
				t.wall += res.wall
				t.lat = append(t.lat, res.lat...)
				t.backendCPU += res.backendCPU
				t.apiCPU += res.apiCPU
				t.rounds++
				if err := clean(ctx, admin, r.namespace); err != nil {
					return err
				}
			}
		}
		for _, r := range append(runs, naiveRun) {
			rep.rows = append(rep.rows, *total[r.name])
		}
	}
	if o.listN > 0 {
		return listBenchmarks(ctx, env, backends, o.listN, o.inFlight, rep)
	}
	return nil
}

// controlPlanePIDs are the processes whose CPU a Job costs on the API side.
func controlPlanePIDs(c *local.Cluster) ([]int, error) {
	var pids []int
	for _, name := range []string{local.APIServer, local.Etcd} {
		pid, err := c.PID(name)
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func cpuOf(pids []int) time.Duration {
	var d time.Duration
	for _, pid := range pids {
		d += backendproc.ProcessCPU(pid)
	}
	return d
}

// createFunc creates Job number i and says whether it succeeded.
type createFunc func(ctx context.Context, i int) error

// runCreates makes n Jobs with conc workers and times each call.
func runCreates(ctx context.Context, name string, conc, n int, fn createFunc) (row, error) {
	r := row{name: name, concurrency: conc, n: n, lat: make([]time.Duration, 0, n)}
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := fn(ctx, i)
				d := time.Since(t)
				mu.Lock()
				r.lat = append(r.lat, d)
				if err != nil {
					r.errors++
					if firstErr == nil {
						firstErr = err
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.wall = time.Since(start)
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s at concurrency %d: %w", name, conc, ctx.Err())
	}
	if r.errors > n/10 {
		return r, fmt.Errorf("%s at concurrency %d: %d of %d failed, first: %w", name, conc, r.errors, n, firstErr)
	}
	return r, nil
}

// directCreate makes exactly the Job the backend would make for the same
// experiment (jobspec.Build on the live template), without the backend.
func directCreate(client kubernetes.Interface, tmpl *batchv1.JobTemplateSpec, prefix string) createFunc {
	return func(ctx context.Context, i int) error {
		id := fmt.Sprintf("bench-%s-%d", prefix, i)
		body := []byte(`{"experiment":{"id":"` + id + `","key":"k"}}`)
		sum := sha256.Sum256(body)
		job, err := jobspec.Build(tmpl, deploy.Namespace, id, hex.EncodeToString(sum[:]), body)
		if err != nil {
			return err
		}
		_, err = client.BatchV1().Jobs(deploy.Namespace).Create(ctx, job, metav1.CreateOptions{})
		return err
	}
}

func gminiPost(c *http.Client, b *backendRun, prefix string) createFunc {
	return func(ctx context.Context, i int) error {
		body := fmt.Sprintf(`{"experiment": {"id": "bench-%s-%d", "key": "k-%d"}}`, prefix, i, i)
		_, err := call(ctx, c, b, http.MethodPost, "/experiment", body, http.StatusCreated)
		return err
	}
}

// call sends one request to b's API (with its token, if it has one) and
// returns the answer's body; an answer not among want is an error.
func call(ctx context.Context, c *http.Client, b *backendRun, method, path, body string, want ...int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.proc.URL()+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(want, res.StatusCode) {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, out)
	}
	return out, nil
}

func jobTemplate(ctx context.Context, client kubernetes.Interface) (*batchv1.JobTemplateSpec, error) {
	cj, err := client.BatchV1().CronJobs(deploy.Namespace).Get(ctx, "gmini-runner", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get the job template: %w", err)
	}
	return &cj.Spec.JobTemplate, nil
}

// clean deletes every benchmark Job of namespace and waits until they and
// their pods are gone, so one run's garbage collection does not load the
// next. Jobs made with history on wait for their records: the namespace's
// backend stores them (as Cancelled) and lets them go.
func clean(ctx context.Context, client kubernetes.Interface, namespace string) error {
	bg := metav1.DeletePropagationBackground
	jobs := client.BatchV1().Jobs(namespace)
	// Thousands of Jobs take longer than the API server gives one request
	// (60 s); it stops the collection part way, and the next call goes on.
	var err error
	for range 5 {
		if err = jobs.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg},
			metav1.ListOptions{LabelSelector: jobspec.ManagedSelector}); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("delete benchmark jobs in %s: %w", namespace, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := jobs.List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector, Limit: 1})
		if err != nil || len(j.Items) > 0 {
			return false, nil
		}
		p, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel, Limit: 1})
		return err == nil && len(p.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("wait for benchmark jobs and pods in %s to go: %w", namespace, err)
	}
	// Let the controller-manager's queues drain and etcd settle.
	time.Sleep(time.Second)
	return nil
}

func clientset(base *rest.Config, qps float32, burst int) (*kubernetes.Clientset, error) {
	cfg := rest.CopyConfig(base)
	cfg.QPS, cfg.Burst = qps, burst
	cfg.UserAgent = "gmini-bench"
	return kubernetes.NewForConfig(cfg)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
