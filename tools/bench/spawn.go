package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
)

const (
	managedBy = "app.kubernetes.io/managed-by"
	// benchSelector matches every Job a run made, whoever made it: the
	// ceiling rows label their Jobs like the backend does.
	benchSelector = managedBy + "=gmini-backend"
	jobPodLabel   = "batch.kubernetes.io/job-name"
)

// row is one line of the spawn table.
type row struct {
	name        string
	concurrency int
	n, errors   int
	wall        time.Duration
	lat         []time.Duration
	backendCPU  time.Duration // gmini rows: the backend's CPU time during the run
	rounds      int
}

func (r row) rate() float64 { return float64(r.n-r.errors) / r.wall.Seconds() }

func spawnBenchmarks(ctx context.Context, log *slog.Logger, root string, c *local.Cluster, o options, backendBin string, rep *report) error {
	c.WithName(o.spawnName)
	local.WithoutNode()(c)
	if _, err := c.Create(ctx); err != nil {
		return fmt.Errorf("create cluster %s: %w", o.spawnName, err)
	}
	defer func() {
		if err := c.Destroy(context.WithoutCancel(ctx)); err != nil {
			log.Error("destroy cluster", "name", o.spawnName, "err", err)
		}
	}()
	kubeconfig := c.GetKubeconfig()
	base := c.KubernetesRestConfig()
	if err := deploy.Apply(ctx, log, base, filepath.Join(root, "overlays", "dev")); err != nil {
		return err
	}
	admin, err := clientset(base, -1, 0)
	if err != nil {
		return err
	}
	tmpl, err := jobTemplate(ctx, admin)
	if err != nil {
		return err
	}

	// Cold start: a fresh process each time, until /readyz answers 200.
	var b *backend
	for i := range 3 {
		if b != nil {
			b.stop()
		}
		b, err = startBackend(ctx, backendBin, kubeconfig, o.backendArgs, filepath.Join(root, "_output", "bench"), "backend.log")
		if err != nil {
			return err
		}
		rep.coldStarts = append(rep.coldStarts, b.coldStart)
		log.Info("backend ready", "try", i+1, "cold start", b.coldStart.Round(time.Millisecond))
	}
	defer b.stop()
	var before *backend
	if len(o.compareArgs) > 0 {
		before, err = startBackend(ctx, backendBin, kubeconfig, append(append([]string(nil), o.backendArgs...), o.compareArgs...),
			filepath.Join(root, "_output", "bench"), "backend-compare.log")
		if err != nil {
			return err
		}
		defer before.stop()
	}

	ceiling, err := clientset(base, -1, 0)
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

	// Warm both paths (TLS, HTTP/2, the backend's caches) before measuring.
	if _, err := runCreates(ctx, "warm-up", 4, 20, ceilingCreate(ceiling, tmpl, "warm")); err != nil {
		return err
	}
	if _, err := runCreates(ctx, "warm-up", 4, 20, gminiPost(httpc, b.url, "warm")); err != nil {
		return err
	}
	if before != nil {
		if _, err := runCreates(ctx, "warm-up", 4, 20, gminiPost(httpc, before.url, "warm-before")); err != nil {
			return err
		}
	}
	if err := clean(ctx, admin); err != nil {
		return err
	}
	rep.rssIdle = b.rss()

	for _, conc := range o.concurrency {
		type run struct {
			name string
			n    int
			fn   func(prefix string) createFunc
		}
		runs := []run{
			{"ceiling: client-go, no client-side limit", o.n, func(p string) createFunc { return ceilingCreate(ceiling, tmpl, "ceil-"+p) }},
			{"gmini: POST /experiment to the backend", o.n, func(p string) createFunc { return gminiPost(httpc, b.url, "gmini-"+p) }},
		}
		if before != nil {
			runs = append(runs, run{"backend with " + strings.Join(o.compareArgs, " "), o.n,
				func(p string) createFunc { return gminiPost(httpc, before.url, "before-"+p) }})
		}
		naiveRun := run{"tutorial design: client-go QPS 5 / burst 10", o.nNaive, func(p string) createFunc { return ceilingCreate(naive, tmpl, "naive-"+p) }}
		total := map[string]*row{}
		for round := range o.rounds {
			// Rotate the order each round, so that no row always runs
			// first after a clean-up; the slow naive row runs once.
			order := append(append([]run(nil), runs[round%len(runs):]...), runs[:round%len(runs)]...)
			if round == 0 {
				order = append(order, naiveRun)
			}
			for _, r := range order {
				isGmini := strings.HasPrefix(r.name, "gmini")
				var sampler *rssSampler
				if isGmini && conc == o.concurrency[len(o.concurrency)-1] {
					sampler = b.sample()
				}
				cpu0 := b.cpu()
				res, err := runCreates(ctx, r.name, conc, r.n, r.fn(fmt.Sprintf("c%d-r%d", conc, round)))
				if sampler != nil {
					rep.rssLoad = max(rep.rssLoad, sampler.stop())
					rep.rssLoadConc = conc
				}
				if isGmini {
					res.backendCPU = b.cpu() - cpu0
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
				t.rounds++
				if err := clean(ctx, admin); err != nil {
					return err
				}
			}
		}
		for _, r := range append(runs, naiveRun) {
			rep.rows = append(rep.rows, *total[r.name])
		}
	}
	return nil
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

func ceilingCreate(client kubernetes.Interface, tmpl *batchv1.JobTemplateSpec, prefix string) createFunc {
	return func(ctx context.Context, i int) error {
		id := fmt.Sprintf("bench-%s-%d", prefix, i)
		_, err := client.BatchV1().Jobs(deploy.Namespace).Create(ctx, buildJob(tmpl, id), metav1.CreateOptions{})
		return err
	}
}

func gminiPost(c *http.Client, url, prefix string) createFunc {
	return func(ctx context.Context, i int) error {
		body := fmt.Sprintf(`{"experiment": {"id": "bench-%s-%d", "key": "k-%d"}}`, prefix, i, i)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/experiment", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		if res.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST /experiment: %d %s", res.StatusCode, msg)
		}
		return nil
	}
}

// buildJob makes the Job the backend would make for id: the template's
// metadata and spec, gmini's labels and annotations, and the runner's
// argument. The backend's own builder is internal to its module.
func buildJob(tmpl *batchv1.JobTemplateSpec, id string) *batchv1.Job {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        id,
			Labels:      maps.Clone(tmpl.Labels),
			Annotations: maps.Clone(tmpl.Annotations),
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	if job.Labels == nil {
		job.Labels = map[string]string{}
	}
	job.Labels["app"] = "gmini"
	job.Labels[managedBy] = "gmini-backend"
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	job.Annotations["gmini.dev/experiment-id"] = id
	job.Annotations["gmini.dev/experiment-sha256"] = strings.Repeat("0", 64)
	pod := &job.Spec.Template
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations["gmini.dev/experiment-id"] = id
	pod.Spec.Containers[0].Args = []string{`{"experiment":{"id":"` + id + `","key":"k"}}`}
	return job
}

func jobTemplate(ctx context.Context, client kubernetes.Interface) (*batchv1.JobTemplateSpec, error) {
	cj, err := client.BatchV1().CronJobs(deploy.Namespace).Get(ctx, "gmini-runner", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get the job template: %w", err)
	}
	if len(cj.Spec.JobTemplate.Spec.Template.Spec.Containers) == 0 {
		return nil, fmt.Errorf("job template has no container")
	}
	return &cj.Spec.JobTemplate, nil
}

// clean deletes every benchmark Job and waits until they and their pods are
// gone, so one run's garbage collection does not load the next.
func clean(ctx context.Context, client kubernetes.Interface) error {
	bg := metav1.DeletePropagationBackground
	jobs := client.BatchV1().Jobs(deploy.Namespace)
	if err := jobs.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg},
		metav1.ListOptions{LabelSelector: benchSelector}); err != nil {
		return fmt.Errorf("delete benchmark jobs: %w", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := jobs.List(ctx, metav1.ListOptions{LabelSelector: benchSelector, Limit: 1})
		if err != nil || len(j.Items) > 0 {
			return false, nil
		}
		p, err := client.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: jobPodLabel, Limit: 1})
		return err == nil && len(p.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("wait for benchmark jobs and pods to go: %w", err)
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

func buildBackend(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, "apps", "backend")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build backend: %w\n%s", err, msg)
	}
	return nil
}

// backend is the real backend process, run on the host with the admin
// kubeconfig and its default client settings.
type backend struct {
	cmd       *exec.Cmd
	url       string
	coldStart time.Duration
	logFile   *os.File
}

func startBackend(ctx context.Context, bin, kubeconfig string, extra []string, logDir, logName string) (*backend, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(logDir, logName))
	if err != nil {
		return nil, err
	}
	args := append([]string{"--kubeconfig", kubeconfig, "--namespace", deploy.Namespace, "--listen", addr}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start backend: %w", err)
	}
	b := &backend{cmd: cmd, url: "http://" + addr, logFile: logFile}
	c := &http.Client{Timeout: time.Second}
	err = wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		res, err := c.Get(b.url + "/readyz")
		if err != nil {
			return false, nil
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		b.stop()
		log, _ := os.ReadFile(logFile.Name())
		return nil, fmt.Errorf("backend not ready: %w\n%s", err, log)
	}
	b.coldStart = time.Since(start)
	return b, nil
}

func (b *backend) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
	b.logFile.Close()
}

// rss reads the process's resident set size in bytes.
func (b *backend) rss() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cpu is the process's user and system CPU time so far.
func (b *backend) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(data)
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

type rssSampler struct {
	stopc chan struct{}
	done  chan int64
}

// sample records the peak RSS every 20 ms until stop.
func (b *backend) sample() *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, b.rss())
			select {
			case <-s.stopc:
				s.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() int64 { close(s.stopc); return <-s.done }

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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
