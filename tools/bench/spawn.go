package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/internal/proc"
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

// add pools one round of the same row into r.
func (r *row) add(round row) {
	r.n += round.n
	r.errors += round.errors
	r.wall += round.wall
	r.lat = append(r.lat, round.lat...)
	r.backendCPU += round.backendCPU
	r.apiCPU += round.apiCPU
	r.rounds++
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
	// records: the backend keeps history, so it records and releases
	// every Job it made; a row waits for that before reading the CPU.
	records bool
}

// client is the Go client of b's API, with b's token if it has one,
// sending with hc. Make one where it is used: b's address changes when
// its process is restarted.
func (b *backendRun) client(hc *http.Client) (*gmini.Client, error) {
	opts := []gmini.Option{gmini.WithHTTPClient(hc)}
	if b.token != "" {
		opts = append(opts, gmini.WithToken(b.token))
	}
	return gmini.New(b.proc.URL(), opts...)
}

// spawnBench is what the spawn rows share: the cluster's clients, the
// backends they post to and the report they fill. Its methods are the
// steps of spawnBenchmarks, in order.
type spawnBench struct {
	log           *slog.Logger
	o             options
	env           *benchEnv
	admin         kubernetes.Interface
	direct, naive kubernetes.Interface
	apiPIDs       []int
	tmpl          *batchv1.JobTemplateSpec
	httpc         *http.Client
	off           *backendRun   // gmini without history or auth: the reference row
	backends      []*backendRun // off first
	rep           *report
	inSets        bool // the sets part runs: no RSS for the cost table
}

// spawnRun is one row's work at one concurrency.
type spawnRun struct {
	name      string
	n         int
	backend   *backendRun // nil for the in-process clients
	namespace string
	fn        func(prefix string) createFunc
}

// spawnBenchmarks creates the node-less cluster and runs its steps in
// order: the reference backend and its cold starts, the other backends, a
// warm-up, every row at each concurrency, then the list benchmark. The
// cluster, the CPU split and every backend are undone on the way out,
// whatever step failed.
func spawnBenchmarks(ctx context.Context, log *slog.Logger, l layout.Layout, c *local.Cluster, o options, backendBin string, rep *report) error {
	if _, err := c.Create(ctx); err != nil {
		return fmt.Errorf("create cluster %s: %w", o.spawnName, err)
	}
	defer func() {
		if err := c.Destroy(context.WithoutCancel(ctx)); err != nil {
			log.Error("destroy cluster", "name", o.spawnName, "err", err)
		}
	}()
	restore, err := shareCPUs(log, c, o.splitCPUs, rep)
	if err != nil {
		return err
	}
	defer restore()
	s, err := newSpawnBench(log, l, c, o, backendBin, rep)
	if err != nil {
		return err
	}
	defer s.stopBackends(context.WithoutCancel(ctx))
	steps := []func(context.Context) error{s.startReference}
	if o.parts[partSpawn] {
		steps = append(steps, s.coldStarts, s.startOthers)
	}
	for _, step := range append(steps, s.warmUp) {
		if err := step(ctx); err != nil {
			return err
		}
	}
	if o.parts[partSpawn] {
		for _, conc := range o.concurrency {
			rows, err := s.measure(ctx, conc)
			if err != nil {
				return err
			}
			rep.rows = append(rep.rows, rows...)
		}
	}
	if o.parts[partSets] {
		if err := s.measureSets(ctx); err != nil {
			return err
		}
	}
	if o.parts[partSpawn] && o.listN > 0 {
		return listBenchmarks(ctx, s.env, s.backends, o.listN, o.inFlight, rep)
	}
	return nil
}

// shareCPUs records how the cluster's processes share the CPUs and, with
// split, pins the control plane to one half of them; restore undoes it.
func shareCPUs(log *slog.Logger, c *local.Cluster, split bool, rep *report) (restore func(), err error) {
	rep.cpus = "shared: every process on every CPU"
	if !split {
		return func() {}, nil
	}
	s, err := newCPUSplit()
	if err != nil {
		return nil, err
	}
	if err := s.apply(c); err != nil {
		return nil, err
	}
	rep.cpus = s.String()
	log.Info("CPUs split", "cpus", rep.cpus)
	return func() {
		if err := s.restore(); err != nil {
			log.Error("give the benchmark every CPU again", "err", err)
		}
	}, nil
}

func newSpawnBench(log *slog.Logger, l layout.Layout, c *local.Cluster, o options, backendBin string, rep *report) (*spawnBench, error) {
	base := c.KubernetesRestConfig()
	admin, err := clientset(base, -1, 0)
	if err != nil {
		return nil, err
	}
	direct, err := clientset(base, -1, 0)
	if err != nil {
		return nil, err
	}
	naive, err := clientset(base, 5, 10)
	if err != nil {
		return nil, err
	}
	apiPIDs, err := controlPlanePIDs(c)
	if err != nil {
		return nil, err
	}
	logDir := l.Logs(o.spawnName)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	return &spawnBench{
		log: log, o: o, admin: admin, direct: direct, naive: naive, apiPIDs: apiPIDs, rep: rep,
		env: &benchEnv{log: log, l: l, cfg: base, admin: admin, kubeconfig: c.GetKubeconfig(), bin: backendBin, logDir: logDir, extra: o.backendArgs},
		httpc: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256, IdleConnTimeout: time.Minute},
		},
	}, nil
}

// add keeps b to be stopped with the others.
func (s *spawnBench) add(b *backendRun) { s.backends = append(s.backends, b) }

// stopBackends stops every backend started, the last first, then the
// PostgreSQL server the history rows shared.
func (s *spawnBench) stopBackends(ctx context.Context) {
	for i := len(s.backends) - 1; i >= 0; i-- {
		if _, err := s.backends[i].proc.Stop(ctx); err != nil {
			s.log.Error("stop backend", "row", s.backends[i].row, "err", err)
		}
	}
	s.env.close()
}

// startReference starts gmini without history or auth, the reference row,
// in the dev overlay's namespace, and reads the Job template it deploys.
func (s *spawnBench) startReference(ctx context.Context) error {
	var args []string
	if s.o.parts[partSets] {
		// Said, not assumed: the sets part compares at this concurrency.
		args = []string{"--set-concurrency", strconv.Itoa(s.o.setConcurrency)}
	}
	off, err := s.env.backend(ctx, "", "", deploy.Namespace, args)
	if err != nil {
		return err
	}
	s.off = off
	s.add(off)
	s.tmpl, err = jobTemplate(ctx, s.admin)
	return err
}

// coldStarts restarts the reference backend twice: three fresh processes,
// each timed until /readyz answers 200.
func (s *spawnBench) coldStarts(ctx context.Context) error {
	s.rep.coldStarts = append(s.rep.coldStarts, s.off.proc.ColdStart())
	for i := range 2 {
		if _, err := s.off.proc.Stop(ctx); err != nil {
			return fmt.Errorf("stop the backend for a cold start: %w", err)
		}
		if err := s.off.proc.Start(ctx); err != nil {
			return fmt.Errorf("cold start: %w", err)
		}
		s.rep.coldStarts = append(s.rep.coldStarts, s.off.proc.ColdStart())
		s.log.Info("backend ready", "try", i+2, "cold start", s.off.proc.ColdStart().Round(time.Millisecond))
	}
	return nil
}

// startOthers starts each variant in a namespace of its own, so their
// recorders and Jobs never mix, then the -compare-args and -compare-ref
// backends.
func (s *spawnBench) startOthers(ctx context.Context) error {
	for _, v := range s.o.variants {
		b, err := s.env.variant(ctx, v, "")
		if err != nil {
			return fmt.Errorf("backend %s: %w", v, err)
		}
		s.add(b)
	}
	if len(s.o.compareArgs) > 0 {
		b, err := s.env.backend(ctx, "", "backend with "+strings.Join(s.o.compareArgs, " "), deploy.Namespace, s.o.compareArgs)
		if err != nil {
			return err
		}
		s.add(b)
	}
	if s.o.compareRef == "" {
		return nil
	}
	bin, err := buildAtRef(ctx, s.log, s.env.l, s.o.compareRef)
	if err != nil {
		return err
	}
	s.env.refBin = bin
	b, err := s.env.backend(ctx, s.o.compareRef, "gmini at "+s.o.compareRef, deploy.Namespace, nil)
	if err != nil {
		return err
	}
	s.add(b)
	// And each variant at the revision, so a change to history or auth has
	// its before and after in the same run.
	for _, v := range s.o.variants {
		b, err := s.env.variant(ctx, v, s.o.compareRef)
		if err != nil {
			return fmt.Errorf("backend %s at %s: %w", v, s.o.compareRef, err)
		}
		s.add(b)
	}
	return nil
}

// warmUp warms every path (TLS, HTTP/2, caches, review caches) before
// measuring, and reads the reference backend's idle RSS.
func (s *spawnBench) warmUp(ctx context.Context) error {
	if _, err := runCreates(ctx, "warm-up", 4, 20, directCreate(s.direct, s.tmpl, "warm")); err != nil {
		return err
	}
	for _, b := range s.backends {
		if _, err := runCreates(ctx, "warm-up", 4, 20, gminiPost(s.httpc, b, "warm-"+b.id)); err != nil {
			return err
		}
		if err := clean(ctx, s.admin, b.namespace); err != nil {
			return err
		}
	}
	if err := clean(ctx, s.admin, deploy.Namespace); err != nil {
		return err
	}
	s.rep.rssIdle = s.off.proc.RSS()
	return nil
}

// runs are the rows measured every round, and the slow naive one, which
// runs in the first round only.
func (s *spawnBench) runs() (runs []spawnRun, naive spawnRun) {
	runs = []spawnRun{{rowDirect, s.o.n, nil, deploy.Namespace, func(p string) createFunc { return directCreate(s.direct, s.tmpl, "direct-"+p) }}}
	for _, b := range s.backends {
		runs = append(runs, spawnRun{b.row, s.o.n, b, b.namespace, func(p string) createFunc { return gminiPost(s.httpc, b, b.id+"-"+p) }})
	}
	naive = spawnRun{rowNaive, s.o.nNaive, nil, deploy.Namespace, func(p string) createFunc { return directCreate(s.naive, s.tmpl, "naive-"+p) }}
	return runs, naive
}

// roundOrder is the order of the rows in a round: rotated each round, so
// that no row always runs first, and reversed every other round, so that
// no row always runs after the same one (a history row's clean-up, which
// records every Job it deletes, may still weigh on the next row); once
// appends the row that runs in the first round only.
func roundOrder[T any](rows []T, once T, round int) []T {
	order := rotated(rows, round)
	if round == 0 {
		order = append(order, once)
	}
	return order
}

// rotated is rows rotated by round, reversed every other round.
func rotated[T any](rows []T, round int) []T {
	k := round % len(rows)
	order := append(append([]T(nil), rows[k:]...), rows[:k]...)
	if round%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// measure runs every row at concurrency conc for the rounds asked, and
// pools each row's rounds into one.
func (s *spawnBench) measure(ctx context.Context, conc int) ([]row, error) {
	runs, naive := s.runs()
	total := map[string]*row{}
	for round := range s.o.rounds {
		for _, r := range roundOrder(runs, naive, round) {
			res, err := s.runRow(ctx, conc, round, r)
			if err != nil {
				return nil, err
			}
			t := total[r.name]
			if t == nil {
				t = &row{name: r.name, concurrency: conc}
				total[r.name] = t
			}
			t.add(res)
		}
	}
	var rows []row
	for _, r := range append(runs, naive) {
		rows = append(rows, *total[r.name])
	}
	return rows, nil
}

// runRow makes one round of a row's Jobs, marks them finished, waits until
// a backend with history has recorded and released every one, and reads
// the CPU spent from before the first POST to then; then it deletes the
// Jobs. The throughput and latency are of the creates alone.
func (s *spawnBench) runRow(ctx context.Context, conc, round int, r spawnRun) (row, error) {
	var stopRSS func() int64
	if r.backend == s.off && conc == s.o.concurrency[len(s.o.concurrency)-1] && !s.inSets {
		stopRSS = s.off.proc.PeakRSS()
	}
	var backendCPU0 time.Duration
	if r.backend != nil {
		backendCPU0 = r.backend.proc.CPU()
	}
	apiCPU0 := cpuOf(s.apiPIDs)
	res, err := runCreates(ctx, r.name, conc, r.n, r.fn(fmt.Sprintf("c%d-r%d", conc, round)))
	if stopRSS != nil {
		s.rep.rssLoad = max(s.rep.rssLoad, stopRSS())
		s.rep.rssLoadConc = conc
	}
	if err != nil {
		return res, err
	}
	// The sets part counts the creates alone (see runSet): its Jobs are
	// deleted before the Job controller has started them all.
	if !s.inSets {
		if err := completeJobs(ctx, s.admin, r.namespace, conc); err != nil {
			return res, fmt.Errorf("%s at concurrency %d: %w", r.name, conc, err)
		}
	}
	if r.backend != nil && r.backend.records {
		if err := waitRecorded(ctx, s.admin, r.namespace); err != nil {
			return res, fmt.Errorf("%s at concurrency %d: %w", r.name, conc, err)
		}
	}
	res.apiCPU = cpuOf(s.apiPIDs) - apiCPU0
	if r.backend != nil {
		res.backendCPU = r.backend.proc.CPU() - backendCPU0
	}
	s.log.Info("run", "row", r.name, "concurrency", conc, "round", round+1, "jobs/s", fmt.Sprintf("%.1f", res.rate()),
		"p50", pct(res.lat, 50), "p99", pct(res.lat, 99), "errors", res.errors)
	return res, clean(ctx, s.admin, r.namespace)
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
		if st, err := proc.ReadStat(pid); err == nil {
			d += st.CPU()
		}
	}
	return d
}

// createFunc creates Job number i and says whether it succeeded.
type createFunc func(ctx context.Context, i int) error

// runCreates makes n Jobs with conc workers and times each call. Every
// call must succeed (201 from the backend, a created Job from the API
// server): a row with a failed call is no measurement of the path it
// names, so it fails the run and says which answers came back.
func runCreates(ctx context.Context, name string, conc, n int, fn createFunc) (row, error) {
	r := row{name: name, concurrency: conc, n: n, lat: make([]time.Duration, 0, n)}
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	failed := map[string]int{}
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
					failed[answerOf(err)]++
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
	if r.errors > 0 {
		return r, fmt.Errorf("%s at concurrency %d: %d of %d calls failed (%s), first: %w", name, conc, r.errors, n, countAnswers(failed), firstErr)
	}
	return r, nil
}

// errExisting is a 200 to a POST of an experiment that must be new: the
// backend made no Job for it.
var errExisting = errors.New("answered 200: the experiment existed already, no Job was made")

// answerOf names what came back for a failed call: the backend's HTTP
// status, the API server's status for the direct clients, or no answer.
func answerOf(err error) string {
	if code := gmini.StatusCode(err); code != 0 {
		return fmt.Sprintf("HTTP %d", code)
	}
	if errors.Is(err, errExisting) {
		return fmt.Sprintf("HTTP %d", http.StatusOK)
	}
	var as apierrors.APIStatus
	if errors.As(err, &as) {
		return fmt.Sprintf("API %d %s", as.Status().Code, as.Status().Reason)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "no answer in time"
	}
	return "no answer"
}

// countAnswers lists each answer with how often it came, the most frequent
// first, for an error message.
func countAnswers(n map[string]int) string {
	keys := slices.Collect(maps.Keys(n))
	slices.SortFunc(keys, func(a, b string) int {
		if n[a] != n[b] {
			return n[b] - n[a]
		}
		return strings.Compare(a, b)
	})
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = fmt.Sprintf("%d× %s", n[k], k)
	}
	return strings.Join(s, ", ")
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

// gminiPost submits experiment i through b, and wants it created.
func gminiPost(hc *http.Client, b *backendRun, prefix string) createFunc {
	c, err := b.client(hc)
	return func(ctx context.Context, i int) error {
		if err != nil {
			return err
		}
		_, err := submit(ctx, c, map[string]any{"id": fmt.Sprintf("bench-%s-%d", prefix, i), "key": fmt.Sprintf("k-%d", i)})
		return err
	}
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
