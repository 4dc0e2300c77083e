package local_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/cluster/local/cgroups"
	"github.com/gmini-dev/gmini/tools/cluster/local/netns"
	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// TestCluster brings a real node up, runs a Job with a locally built image,
// reads its log through the API, restarts the API server, and checks that
// Destroy leaves nothing behind. It takes about a minute.
func TestCluster(t *testing.T) {
	node := requireNode(t)
	kube := node.KubeBinary
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	work := t.TempDir()
	hello := buildHello(ctx, t, log, work)

	hostRules := iptablesSave(t)
	runDir := runDirFor(t, "itest")
	c := local.NewCluster("itest", local.WithRunDir(runDir), local.WithKubeBinary(kube), local.WithPauseImage(node.PauseImage, node.PauseTag), local.WithLogger(log))
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			if err := c.Destroy(context.Background()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})

	start := time.Now()
	kubeconfig, err := c.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING create: %s", time.Since(start).Round(10*time.Millisecond))
	if got := iptablesSave(t); got != hostRules {
		t.Errorf("host iptables changed by Create:\nbefore:\n%s\nafter:\n%s", hostRules, got)
	}
	st, err := c.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	cs := clientFor(t, kubeconfig)

	// A second cluster that would share the name or the address slot must
	// refuse to start, and its failure must not harm the first.
	for _, other := range []*local.Cluster{
		local.NewCluster("itest", local.WithRunDir(runDirFor(t, "itest-same-name")), local.WithKubeBinary(kube), local.WithLogger(log)),
		local.NewCluster("itest-other", local.WithRunDir(runDirFor(t, "itest-same-slot")), local.WithSubnetIndex(st.Plan.Index), local.WithKubeBinary(kube), local.WithLogger(log)),
	} {
		if _, err := other.Create(ctx); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("clashing Create: err = %v, want a refusal", err)
		}
		// As e2e-framework's DestroyCluster would after the refusal: it
		// must leave the running cluster alone.
		if err := other.Destroy(ctx); err != nil {
			t.Error(err)
		}
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		t.Fatalf("first cluster broken by a refused second one: %v", err)
	}

	// The host routes the service range through the veth and kube-proxy
	// DNATs it inside the namespace: the `kubernetes` Service answers.
	viaService, err := clientcmd.BuildConfigFromFlags("https://"+net.JoinHostPort(st.Plan.APIServiceIP().String(), "443"), kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	viaService.Timeout = 5 * time.Second
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := kubernetes.NewForConfigOrDie(viaService).Discovery().ServerVersion()
		return err == nil, nil
	}); err != nil {
		t.Errorf("kubernetes Service ClusterIP not reachable from the host: %v", err)
	}

	start = time.Now()
	if err := c.LoadImageArchive(ctx, hello); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING load image: %s", time.Since(start).Round(10*time.Millisecond))

	start = time.Now()
	out := runJob(ctx, t, cs, "hello", "gmini-hello:test")
	t.Logf("TIMING job complete: %s", time.Since(start).Round(10*time.Millisecond))
	if !strings.Contains(out, "hello from a gmini pod") {
		t.Errorf("job log = %q", out)
	}
	reportMemory(t, st)

	start = time.Now()
	if err := c.StopComponent(ctx, local.APIServer); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Discovery().ServerVersion(); err == nil {
		t.Error("API answers with kube-apiserver stopped")
	}
	if err := c.StartComponent(ctx, local.APIServer); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING apiserver stop+start: %s", time.Since(start).Round(10*time.Millisecond))
	if v, err := cs.Discovery().ServerVersion(); err != nil || v.GitVersion != local.Version {
		t.Errorf("after restart: version %v, %v; want %s", v, err, local.Version)
	}
	st, _ = c.LoadState() // the restarted apiserver has a new PID

	export := t.TempDir()
	if err := c.ExportLogs(ctx, export); err != nil {
		t.Error(err)
	} else if _, err := os.Stat(filepath.Join(export, "itest", "kubelet.log")); err != nil {
		t.Errorf("exported logs: %v", err)
	}

	// Leave a pod running and kill containerd, as a crash would: Destroy
	// must still find and stop the pod's processes.
	startSleeper(ctx, t, cs)
	podPIDs := podProcesses(t, st.Plan)
	if len(podPIDs) == 0 {
		t.Error("found no pod processes before Destroy")
	}
	if err := syscall.Kill(st.Components[local.Containerd].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// Tear down through a new instance that knows only the name and the
	// run directory, as `make down` in another process would.
	start = time.Now()
	if err := local.NewCluster("itest", local.WithRunDir(runDir), local.WithLogger(log)).Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	destroyed = true
	for _, pid := range podPIDs {
		if _, err := os.Stat(filepath.Join("/proc", itoa(pid))); err == nil {
			t.Errorf("pod process %d survived Destroy", pid)
		}
	}
	t.Logf("TIMING destroy: %s", time.Since(start).Round(10*time.Millisecond))
	assertGone(t, st)
	if got := iptablesSave(t); got != hostRules {
		t.Errorf("host iptables changed:\nbefore:\n%s\nafter:\n%s", hostRules, got)
	}
	if err := c.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// TestAPIServerOnly checks the local.WithoutNode mode: API and controllers, no
// containerd or kubelet.
func TestAPIServerOnly(t *testing.T) {
	kube := requireNode(t).KubeBinary
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	c := local.NewCluster("itest-api", local.WithRunDir(runDirFor(t, "itest-api")), local.WithKubeBinary(kube), local.WithoutNode(), local.WithLogger(log))
	t.Cleanup(func() { _ = c.Destroy(context.Background()) })

	start := time.Now()
	kubeconfig, err := c.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING create without node: %s", time.Since(start).Round(10*time.Millisecond))
	st, err := c.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{local.Containerd, local.Kubelet, local.KubeProxy, local.Scheduler} {
		if _, ok := st.Components[name]; ok {
			t.Errorf("%s started in local.WithoutNode mode", name)
		}
	}
	cs := clientFor(t, kubeconfig)
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Error(err)
	}

	// A run killed before it could destroy its cluster (a CI job cut
	// off, go test's timeout) leaves the namespace, mounts and cgroups.
	// The same cluster created from another checkout cleans them up from
	// the dead run's own state instead of refusing until someone runs
	// `ip netns del`.
	for name, pr := range st.Components {
		if err := syscall.Kill(pr.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", name, err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return !local.Running(st.Components[local.APIServer]), nil
	}); err != nil {
		t.Fatal("apiserver survived SIGKILL")
	}
	c2 := local.NewCluster("itest-api", local.WithRunDir(runDirFor(t, "itest-api-next")), local.WithKubeBinary(kube), local.WithoutNode(), local.WithLogger(log))
	t.Cleanup(func() { _ = c2.Destroy(context.Background()) })
	if _, err := c2.Create(ctx); err != nil {
		t.Fatalf("create over a killed run's leftovers: %v", err)
	}
	if _, err := os.Stat(st.Plan.StateFile()); err == nil {
		t.Error("the killed run's state file is left: its cluster was not destroyed")
	}
	st2, err := c2.LoadState()
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, st)
	assertGone(t, st2)
}

// requireNode skips with -short (make unit) and otherwise prepares the
// machine with cluster.Prepare, as every suite does: on a fresh clone these
// tests run rather than skip. Without root they fail: a test that cannot
// run must say so under make test, not pass by skipping.
func requireNode(t *testing.T) cluster.LocalNode {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real cluster; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("starting a local node needs root (network namespaces, mounts, iptables); run as root or with -short")
	}
	l, err := layout.FromWorkingDir()
	if err != nil {
		t.Fatal(err)
	}
	node, err := cluster.Prepare(context.Background(), slog.New(slog.NewTextHandler(testWriter{t}, nil)), l)
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// runDirFor is under /tmp and not t.TempDir: if Destroy failed with
// mounts left, the automatic RemoveAll could follow them.
func runDirFor(t *testing.T, name string) string {
	dir, err := os.MkdirTemp("", "gmini-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m, err := local.MountsUnder(dir); err == nil && len(m) == 0 && !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return dir
}

func buildHello(ctx context.Context, t *testing.T, log *slog.Logger, work string) string {
	t.Helper()
	src := filepath.Join(work, "hello-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":  "module hello\n\ngo 1.22\n",
		"main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from a gmini pod\") }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GOWORK", "off")
	tar, err := images.Build(ctx, log, images.Spec{Name: "hello", Tag: "gmini-hello:test", ModuleDir: src, Package: "."}, work)
	if err != nil {
		t.Fatal(err)
	}
	return tar
}

func clientFor(t *testing.T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// runJob runs a one-container Job to completion and returns its log.
func runJob(ctx context.Context, t *testing.T, cs *kubernetes.Clientset, name, image string) string {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy:                corev1.RestartPolicyNever,
				AutomountServiceAccountToken: ptr.To(false),
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot:   ptr.To(true),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Containers: []corev1.Container{{
					Name:            name,
					Image:           image,
					ImagePullPolicy: corev1.PullNever,
					SecurityContext: &corev1.SecurityContext{
						AllowPrivilegeEscalation: ptr.To(false),
						Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					},
				}},
			}},
		},
	}
	if _, err := cs.BatchV1().Jobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := cs.BatchV1().Jobs("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && c.Type == batchv1.JobFailed {
				return false, &jobFailed{c.Reason + ": " + c.Message}
			}
			if c.Status == corev1.ConditionTrue && c.Type == batchv1.JobComplete {
				return true, nil
			}
		}
		return false, nil
	})
	pods, perr := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
	if err != nil {
		if perr == nil {
			for _, p := range pods.Items {
				t.Logf("pod %s: %s %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
			}
		}
		t.Fatalf("job %s: %v", name, err)
	}
	if perr != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of job %s: %v (%d)", name, perr, len(pods.Items))
	}
	b, err := cs.CoreV1().Pods("default").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("logs of job %s: %v", name, err)
	}
	return string(b)
}

// startSleeper runs a pod whose container blocks until stopped, with the
// default projected token volume, so Destroy meets a live pod and its mounts.
func startSleeper(ctx context.Context, t *testing.T, cs *kubernetes.Clientset) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sleeper"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "sleeper", Image: "gmini-pause:dev", ImagePullPolicy: corev1.PullNever}},
	}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod sleeper not running: %v", err)
	}
}

// podProcesses finds the processes in the cgroups of our containers.
func podProcesses(t *testing.T, p local.Plan) []int {
	t.Helper()
	var pids []int
	for _, id := range local.ContainerIDs(p) {
		ps, err := cgroups.Procs("k8s.io/" + id)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, ps...)
	}
	return pids
}

type jobFailed struct{ msg string }

func (e *jobFailed) Error() string { return "job failed: " + e.msg }

// reportMemory logs each component's RSS and PSS (which splits the pages
// the five kube processes share from the one binary among them, so the
// PSS total is what the cluster really costs).
func reportMemory(t *testing.T, st *local.State) {
	var rss, pss uint64
	re := regexp.MustCompile(`(?m)^(Rss|Pss):\s+(\d+) kB`)
	for name, pr := range st.Components {
		b, err := os.ReadFile(filepath.Join("/proc", itoa(pr.PID), "smaps_rollup"))
		if err != nil {
			continue
		}
		var r, p uint64
		for _, m := range re.FindAllSubmatch(b, -1) {
			if string(m[1]) == "Rss" {
				r = atoi(string(m[2]))
			} else {
				p = atoi(string(m[2]))
			}
		}
		rss, pss = rss+r, pss+p
		t.Logf("MEMORY %s RSS %d MiB PSS %d MiB", name, r>>10, p>>10)
	}
	t.Logf("MEMORY components total RSS %d MiB, PSS %d MiB; cgroup %s charged %d MiB",
		rss>>10, pss>>10, st.Plan.Cgroup, cgroups.MemoryUsage(st.Plan.Cgroup)>>20)
}

// assertGone checks that nothing of the cluster is left on the machine.
func assertGone(t *testing.T, st *local.State) {
	t.Helper()
	for name, pr := range st.Components {
		if local.Running(pr) {
			t.Errorf("%s (pid %d) still running", name, pr.PID)
		}
	}
	if m, err := local.MountsUnder(st.Plan.RunDir); err != nil || len(m) > 0 {
		t.Errorf("mounts left under %s: %v %v", st.Plan.RunDir, m, err)
	}
	if netns.Exists(st.Plan.NetNS) {
		t.Errorf("network namespace %s left", st.Plan.NetNS)
	}
	if out, _ := exec.Command("ip", "link", "show", st.Plan.HostLink).CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("host link %s left: %s", st.Plan.HostLink, out)
	}
	dirs, err := cgroups.Dirs(cgroups.Root, st.Plan.Cgroup)
	if err != nil {
		t.Error(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left", d)
		}
	}
	out, _ := exec.Command("pgrep", "-af", st.Plan.RunDir).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("processes referring to the run directory left:\n%s", s)
	}
	if _, err := os.Stat(st.Plan.StateFile()); err == nil {
		t.Error("state file left")
	}
	if _, err := os.Stat(local.OwnerFile(st.Plan.NetNS)); err == nil {
		t.Errorf("owner record %s left", local.OwnerFile(st.Plan.NetNS))
	}
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesSave returns the host's IPv4 and IPv6 rules without comments and
// counters, for before/after comparison.
func iptablesSave(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "") + "\n")
			}
		}
	}
	return b.String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
