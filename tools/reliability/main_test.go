//go:build e2e

// Package reliability proves, against a real kube-apiserver, that gmini
// loses nothing under bad input, load, an API server outage and shutdown,
// and that its permissions and pods are as small as they should be.
//
// The cluster is the local provider without a node (etcd, kube-apiserver,
// kube-controller-manager: the Job controller makes pods, nothing runs
// them). The backend is the real binary, run as a host process that
// authenticates with a token of its own ServiceAccount, so every request
// goes through exactly the RBAC it has in a cluster.
//
// Run it with `make reliability`. GMINI_REL_KEEP=1 leaves the cluster
// running; logs are in _output/logs/reliability.
package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/backendproc"
	"github.com/gmini-dev/gmini/tools/cluster"
	"github.com/gmini-dev/gmini/tools/cluster/local"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/layout"
	"github.com/gmini-dev/gmini/tools/postgres"
)

// clusterName is the suite's cluster; GMINI_REL_CLUSTER picks another.
var clusterName = func() string {
	if v := os.Getenv("GMINI_REL_CLUSTER"); v != "" {
		return v
	}
	return "gmini-rel"
}()

const (
	ns          = deploy.Namespace
	backendSA   = deploy.BackendName
	backendUser = "system:serviceaccount:" + ns + ":" + backendSA
	annotID     = jobspec.AnnotationID
	// apiTimeout is the backend's --api-timeout: the bound on a POST's
	// API calls, hence on how long a 503 may take.
	apiTimeout = 5 * time.Second
)

var (
	testenv env.Environment
	logger  = slog.New(slog.NewTextHandler(os.Stderr, nil))
	// suite is what TestMain prepared; every test reads it.
	suite struct {
		layout   layout.Layout
		cluster  *local.Cluster
		admin    *kubernetes.Clientset
		adminCfg *rest.Config
		// sa acts as the backend's ServiceAccount, with the same token.
		sa      *kubernetes.Clientset
		backend *backendproc.Process
		// backendBin and backendKubeconfig start more backends, with
		// other flags but the same identity.
		backendBin, backendKubeconfig string
		// historyDB is the main backend's SQLite history.
		historyDB string
	}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	start := time.Now()
	l, err := layout.FromWorkingDir()
	if err != nil {
		logger.Error("find repository root", "err", err)
		return 1
	}
	suite.layout = l
	out := l.Logs(clusterName)
	if err := os.MkdirAll(out, 0o755); err != nil {
		logger.Error("make log directory", "err", err)
		return 1
	}
	node, err := cluster.Prepare(ctx, logger, l)
	if err != nil {
		logger.Error("prepare the machine", "err", err)
		return 1
	}
	// A crash, not a polite stop: StopComponent kills the apiserver at
	// once, which is what an outage looks like to the backend.
	suite.cluster = cluster.NewLocal(l, node, clusterName, logger, local.WithoutNode(), local.WithStopGrace(0))
	bin, err := backendproc.Build(ctx, logger, l)
	if err != nil {
		logger.Error("build backend", "err", err)
		return 1
	}
	logger.Info("prepared", "elapsed", time.Since(start).Round(time.Millisecond))

	testenv = env.NewWithConfig(envconf.New())
	testenv.Setup(
		envfuncs.CreateClusterWithOpts(suite.cluster, clusterName),
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			// client-go's default of 5 requests a second would make the
			// tests' own checks the slowest part of the suite.
			suite.adminCfg = rest.CopyConfig(cfg.Client().RESTConfig())
			suite.adminCfg.QPS, suite.adminCfg.Burst = 200, 400
			suite.admin, err = kubernetes.NewForConfig(suite.adminCfg)
			return ctx, err
		},
		deploy.ApplyOverlay(logger, l.Overlay("dev")),
		func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			kubeconfig := filepath.Join(out, "backend.kubeconfig")
			suite.backendBin, suite.backendKubeconfig = bin, kubeconfig
			saCfg, err := serviceAccountConfig(ctx, suite.admin, suite.adminCfg, kubeconfig)
			if err != nil {
				return ctx, err
			}
			if suite.sa, err = kubernetes.NewForConfig(saCfg); err != nil {
				return ctx, err
			}
			logPath := filepath.Join(out, "backend.log")
			_ = os.Remove(logPath)
			// History on, as the dev overlay ships it: SQLite in a file.
			suite.historyDB = filepath.Join(out, "history.db")
			for _, f := range []string{suite.historyDB, suite.historyDB + "-wal", suite.historyDB + "-shm"} {
				_ = os.Remove(f)
			}
			suite.backend = backendproc.New(backendproc.Options{
				Binary:  bin,
				LogPath: logPath,
				Log:     logger,
				Args: []string{
					"--kubeconfig", kubeconfig,
					"--namespace", ns,
					"--listen", "127.0.0.1:0",
					"--log-format", "text",
					"--api-timeout", apiTimeout.String(),
					"--history-dsn", "sqlite:" + suite.historyDB,
					"--identity", "reliability-main",
				},
			})
			return ctx, suite.backend.Start(ctx)
		},
	)
	logsDir := filepath.Join(out, "cluster")
	var finished cluster.FinishErrors
	testenv.Finish(
		// The suite's backend must end as a deployed one would: exit 0
		// within 30 s of SIGTERM. One that is not running was stopped by
		// a test (ensureBackend starts it again for the next), which
		// checked how it ended.
		finished.Record("stop the backend", func(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
			if suite.backend == nil || !suite.backend.Running() {
				return ctx, nil
			}
			code, err := suite.backend.Stop(ctx)
			switch {
			case err != nil:
				return ctx, fmt.Errorf("backend did not stop cleanly: %w", err)
			case code != 0:
				return ctx, fmt.Errorf("backend exited %d after SIGTERM, want 0", code)
			}
			return ctx, nil
		}),
		finished.Record("tear the cluster down", cluster.Teardown(logger, suite.cluster, logsDir, os.Getenv("GMINI_REL_KEEP") == "1")),
	)
	code := finished.ExitCode(testenv.Run(m), os.Stderr)
	if code != 0 && suite.backend != nil {
		fmt.Fprintf(os.Stderr, "\n==== backend log tail (%s) ====\n%s\n", suite.backend.LogPath(), suite.backend.LogTail(40))
	}
	logger.Info("reliability suite finished", "exit", code, "elapsed", time.Since(start).Round(time.Second))
	return code
}

// serviceAccountConfig asks the TokenRequest API for a token of the
// backend's ServiceAccount and writes a kubeconfig that uses it, with the
// admin config's server and CA. The token is what a pod of the Deployment
// would get in its projected volume.
func serviceAccountConfig(ctx context.Context, admin kubernetes.Interface, adminCfg *rest.Config, path string) (*rest.Config, error) {
	expiry := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, backendSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for %s: %w", backendUser, err)
	}
	ca := adminCfg.TLSClientConfig.CAData
	if len(ca) == 0 && adminCfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(adminCfg.TLSClientConfig.CAFile); err != nil {
			return nil, fmt.Errorf("read cluster CA: %w", err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[clusterName] = &clientcmdapi.Cluster{Server: adminCfg.Host, CertificateAuthorityData: ca}
	kc.AuthInfos[backendSA] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts[backendSA] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: backendSA, Namespace: ns}
	kc.CurrentContext = backendSA
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// failf ends a test with the backend's last log lines, which usually say
// why an answer was wrong.
func failf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\n---- backend log tail ----\n%s", fmt.Sprintf(format, args...), suite.backend.LogTail(25))
}

// errorf is failf that lets the test go on.
func errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf("%s\n---- backend log tail ----\n%s", fmt.Sprintf(format, args...), suite.backend.LogTail(15))
}

// short cuts a body for a failure message.
func short(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return s
}

// call sends a request with a bearer token (none when token is ""), for
// what the Go client does not show: the headers of an answer.
func call(ctx context.Context, t *testing.T, method, url, token, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	a, err := send(newClient(1, false), req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

// checkError asserts a raw answer is code with a JSON {"error": "..."}
// that mentions want.
func checkError(t *testing.T, what string, a answer, code int, want string) {
	t.Helper()
	if a.Code != code {
		errorf(t, "%s: got %s, want %d", what, a, code)
		return
	}
	if bad := notJSONError(a.Header, a.Body); bad != "" {
		t.Errorf("%s: %s", what, bad)
		return
	}
	var e wire.Error
	_ = json.Unmarshal(a.Body, &e)
	if !strings.Contains(e.Error, want) {
		t.Errorf("%s: error %q does not say %q", what, e.Error, want)
	}
}

// checkRefused asserts err is the backend's refusal with code, whose
// message mentions want, and returns it. That the refusal was JSON, the
// Go client's transport checked (jsonErrors).
func checkRefused(t *testing.T, what string, err error, code int, want string) *gmini.Error {
	t.Helper()
	var e *gmini.Error
	if !errors.As(err, &e) || e.StatusCode != code {
		errorf(t, "%s: got %v, want %d", what, err, code)
		return nil
	}
	if !strings.Contains(e.Message, want) {
		t.Errorf("%s: error %q does not say %q", what, e.Message, want)
	}
	return e
}

// notJSONError says how an error answer breaks README's promise for every
// error the backend's handler answers, a JSON {"error": "..."} with
// Content-Type application/json; "" when it keeps it.
func notJSONError(h http.Header, body []byte) string {
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt != "application/json" {
		return fmt.Sprintf("Content-Type %q, want application/json", h.Get("Content-Type"))
	}
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || *e.Error == "" {
		return fmt.Sprintf("body %q is not {\"error\": \"...\"} (%v)", short(body), err)
	}
	return ""
}

// jsonErrors holds the Go client's error answers to notJSONError: the
// client keeps only an error's status code and message, so an answer that
// breaks the promise becomes an error of the request instead (no status
// code), which fails the test that sent it.
type jsonErrors struct{ next http.RoundTripper }

func (j jsonErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := j.next.RoundTrip(req)
	if err != nil || res.StatusCode < 400 {
		return res, err
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the %d answer: %w", req.Method, req.URL.Path, res.StatusCode, err)
	}
	if bad := notJSONError(res.Header, body); bad != "" {
		return nil, fmt.Errorf("%s %s answered %d: %s", req.Method, req.URL.Path, res.StatusCode, bad)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res, nil
}

// api is the Go client of the backend at base, each request on a
// connection of its own, its error answers checked by jsonErrors.
func api(t *testing.T, base string, opts ...gmini.Option) *gmini.Client {
	t.Helper()
	return apiWith(t, base, newClient(1, false), opts...)
}

// apiWith is api sending with hc's connections.
func apiWith(t *testing.T, base string, hc *http.Client, opts ...gmini.Option) *gmini.Client {
	t.Helper()
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = jsonErrors{next}
	c, err := gmini.New(base, append([]gmini.Option{gmini.WithHTTPClient(hc)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// submitted is the status code of a Submit's answer: 201 or 200 when it
// succeeded, the refusal's code, 0 when no answer came.
func submitted(sub wire.Submission, err error) int {
	switch {
	case err != nil:
		return gmini.StatusCode(err)
	case sub.Created:
		return http.StatusCreated
	}
	return http.StatusOK
}

// extraBackend starts another backend with the suite's identity and the
// given flags, stopped when the test ends.
func extraBackend(ctx context.Context, t *testing.T, name string, args ...string) *backendproc.Process {
	t.Helper()
	logPath := filepath.Join(suite.layout.Logs(clusterName), "backend-"+name+".log")
	_ = os.Remove(logPath)
	b := backendproc.New(backendproc.Options{
		Binary: suite.backendBin, LogPath: logPath, Log: logger,
		Args: append([]string{"--kubeconfig", suite.backendKubeconfig, "--namespace", ns, "--listen", "127.0.0.1:0",
			"--log-format", "text", "--api-timeout", apiTimeout.String()}, args...),
	})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

var overlays = []string{"dev", "prod"}

// podFrom makes a Pod in the test namespace from a template, as a
// controller would.
func podFrom(name string, tmpl corev1.PodTemplateSpec) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
}

// dryRunPod asks the real API server to admit pod without storing it.
func dryRunPod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	return suite.admin.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

const templateName = "gmini-runner"

// handMadeManager is set as spec.managedBy on Jobs this suite writes the
// status of itself: the Job controller leaves such Jobs alone.
const handMadeManager = "gmini.dev/reliability"

// holdFinalizer keeps a deleted Job around, so it can be seen while being
// deleted.
const holdFinalizer = "gmini.dev/reliability-hold"

// handMadeJob is the Job gmini would make for id, from the live template,
// with its status left to the test.
func handMadeJob(ctx context.Context, t *testing.T, id string) *batchv1.Job {
	t.Helper()
	cj, err := suite.admin.BatchV1().CronJobs(ns).Get(ctx, templateName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"experiment":{"id":"` + id + `"}}`)
	sum := sha256.Sum256(body)
	job, err := jobspec.Build(&cj.Spec.JobTemplate, ns, id, hex.EncodeToString(sum[:]), body)
	if err != nil {
		t.Fatal(err)
	}
	job.Spec.ManagedBy = ptr.To(handMadeManager)
	return job
}

// getStatus reads GET /experiments/{id} from the main backend; an error
// with no status code (no answer) ends the test.
func getStatus(ctx context.Context, t *testing.T, id string) (wire.Status, error) {
	t.Helper()
	st, err := api(t, suite.backend.URL()).Get(ctx, id)
	if err != nil && gmini.StatusCode(err) == 0 {
		failf(t, "GET /experiments/%s: %v", id, err)
	}
	return st, err
}

// releaseHeld removes the test's hold finalizer from every Job, so
// deleteJobs can finish. The garbage collector adds its own finalizers to
// a Job being deleted, hence the retry on a conflict.
func releaseHeld(ctx context.Context, t *testing.T) {
	t.Helper()
	jobs := suite.admin.BatchV1().Jobs(ns)
	list, err := jobs.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range list.Items {
		if !slices.Contains(j.Finalizers, holdFinalizer) {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := jobs.Get(ctx, j.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == holdFinalizer })
			_, err = jobs.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("release job %s: %v", j.Name, err)
		}
	}
}

// halfSent is a POST whose headers and first half of the body reached the
// backend before SIGTERM: its handler is running, blocked reading the rest,
// so the request is in flight in the strictest sense.
type halfSent struct {
	id   string
	conn net.Conn
	rest string
}

// startHalf opens a connection and sends the request line, the headers and
// half of the body.
func startHalf(ctx context.Context, addr, id string) (*halfSent, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	body := experimentBody(id, "")
	half := len(body) / 2
	head := fmt.Sprintf("POST /experiment HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		addr, len(body), body[:half])
	if _, err := io.WriteString(conn, head); err != nil {
		conn.Close()
		return nil, err
	}
	return &halfSent{id: id, conn: conn, rest: body[half:]}, nil
}

// finish sends the rest of the body and reads the answer.
func (h *halfSent) finish() (answer, error) {
	defer h.conn.Close()
	_ = h.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(h.conn, h.rest); err != nil {
		return answer{}, fmt.Errorf("send the rest of the body: %w", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(h.conn), nil)
	if err != nil {
		return answer{}, fmt.Errorf("read the answer: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{Code: res.StatusCode, Header: res.Header, Body: b}, err
}

// ensureBackend starts the backend if an earlier test left it stopped.
func ensureBackend(ctx context.Context, t *testing.T) *backendproc.Process {
	t.Helper()
	if !suite.backend.Running() {
		if err := suite.backend.Start(ctx); err != nil {
			t.Fatalf("restart backend: %v", err)
		}
	}
	return suite.backend
}

// backendAndNoJobs is a test's usual Setup: the main backend running and
// no Job left from an earlier test.
func backendAndNoJobs(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
	ensureBackend(ctx, t)
	deleteJobs(ctx, t)
	return ctx
}

// removeJobs is a test's usual Teardown: every Job gone, its record stored.
func removeJobs(ctx context.Context, t *testing.T, _ *envconf.Config) context.Context {
	deleteJobs(ctx, t)
	return ctx
}

// answer is one HTTP response from the backend, to a request the Go client
// cannot send (bad input, a request cut in half) or about what it does not
// show (headers, the probes and /metrics, which are no part of its API).
type answer struct {
	Code    int
	Header  http.Header
	Body    []byte
	Elapsed time.Duration
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.Code, short(a.Body)) }

// newClient makes an HTTP client; keepAlive false gives every request its
// own connection, so a server-side connection count does not depend on
// what earlier requests left idle.
func newClient(conns int, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			DisableKeepAlives:   !keepAlive,
		},
	}
}

// send performs req and reads the whole answer.
func send(client *http.Client, req *http.Request) (answer, error) {
	t0 := time.Now()
	res, err := client.Do(req)
	if err != nil {
		return answer{Elapsed: time.Since(t0)}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	a := answer{Code: res.StatusCode, Header: res.Header, Body: body, Elapsed: time.Since(t0)}
	if err != nil {
		return a, fmt.Errorf("read answer: %w", err)
	}
	return a, nil
}

func get(ctx context.Context, client *http.Client, url string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	return send(client, req)
}

// postRaw sends body to POST /experiment as it is, for a body the Go
// client would encode otherwise.
func postRaw(ctx context.Context, client *http.Client, base, body string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/experiment", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	return send(client, req)
}

// submitUntil submits experiment through c until the answer's code (as
// submitted says) is one of codes, for at most within, and returns the
// last answer; the error says it never came.
func submitUntil(ctx context.Context, c *gmini.Client, experiment json.RawMessage, within time.Duration, codes ...int) (wire.Submission, error) {
	var last wire.Submission
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		sub, err := c.Submit(ctx, experiment)
		last, lastErr = sub, err
		return slices.Contains(codes, submitted(sub, err)), nil
	})
	if err != nil {
		return last, fmt.Errorf("no answer %v to POST within %s (last: %+v, %v): %w", codes, within, last, lastErr, err)
	}
	return last, nil
}

// experiment is a valid experiment for id with some payload; extra adds
// fields (`, "name": value`).
func experiment(id string, extra string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"id": %q, "key": "k-%s", "params": {"lr": 0.01, "layers": [64, 32]}%s}`, id, id, extra))
}

// experimentBody is the body of POST /experiment for experiment(id, extra).
func experimentBody(id string, extra string) string {
	return `{"experiment": ` + string(experiment(id, extra)) + `}`
}

// goroutines reads go_goroutines from the backend's /metrics (raw: it is
// Prometheus' text).
func goroutines(ctx context.Context, base string) (int, error) {
	res, err := get(ctx, newClient(1, false), base+"/metrics")
	if err != nil {
		return 0, err
	}
	if res.Code != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics = %s", res)
	}
	sc := bufio.NewScanner(bytes.NewReader(res.Body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, errors.New("no go_goroutines in /metrics")
}

// managedJobs lists the Jobs the backend made, through the API server.
func managedJobs(ctx context.Context, t *testing.T) []batchv1.Job {
	t.Helper()
	list, err := suite.admin.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	return list.Items
}

// allJobs counts every Job in the namespace, labelled or not.
func allJobs(ctx context.Context, t *testing.T) int {
	t.Helper()
	list, err := suite.admin.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	return len(list.Items)
}

// deleteJobs removes every Job in the namespace and waits until they are
// gone, so each test starts from none. Their pods are left to the garbage
// collector. Jobs the backend made wait for their history record: the
// main backend's recorder stores them as Cancelled and lets them go.
func deleteJobs(ctx context.Context, t *testing.T) {
	t.Helper()
	policy := metav1.DeletePropagationBackground
	err := suite.admin.BatchV1().Jobs(ns).DeleteCollection(ctx,
		metav1.DeleteOptions{PropagationPolicy: &policy}, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("delete jobs: %v", err)
	}
	var left []string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := suite.admin.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left = left[:0]
		for _, j := range list.Items {
			left = append(left, fmt.Sprintf("%s %v", j.Name, j.Finalizers))
		}
		return len(list.Items) == 0, nil
	})
	if n := len(left); err != nil {
		if n > 5 {
			left = append(left[:5], fmt.Sprintf("and %d more", n-5))
		}
		failf(t, "%d Jobs still present two minutes after deleting them (name and finalizers): %v", n, left)
	}
	podsGone(ctx, t)
}

// podsGone waits until no pod of a Job is left in the namespace and its
// ResourceQuotas count only the pods that exist (the dev overlay's backend
// pod, pending on this cluster without a node): the garbage collector
// removes a deleted Job's pods after the Job, and the quota controller
// counts their going after that, so a test that creates pods right after
// deleteJobs could otherwise be refused by a quota still full of the last
// test's.
func podsGone(ctx context.Context, t *testing.T) {
	t.Helper()
	// A Job deleted with the API's default propagation for Jobs (orphan)
	// leaves its pods: they go too.
	zero := int64(0)
	if err := suite.admin.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: batchv1.JobNameLabel}); err != nil {
		t.Fatalf("delete the pods of Jobs: %v", err)
	}
	var why string
	start, said := time.Now(), time.Now()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, quotaCatchUp, true, func(ctx context.Context) (bool, error) {
		if why != "" && time.Since(said) > 20*time.Second {
			t.Logf("still waiting after %s: %s", time.Since(start).Round(time.Second), why)
			said = time.Now()
		}
		pods, err := suite.admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		live := 0 // what a quota counts: pods not ended
		for _, p := range pods.Items {
			if _, ok := p.Labels[batchv1.JobNameLabel]; ok {
				why = "pod " + p.Name + " of a Job is left"
				return false, nil
			}
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				live++
			}
		}
		quotas, err := suite.admin.CoreV1().ResourceQuotas(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, q := range quotas.Items {
			if used, ok := q.Status.Used[corev1.ResourcePods]; ok && used.Value() != int64(live) {
				why = fmt.Sprintf("ResourceQuota %s counts %s pods, %d exist", q.Name, used.String(), live)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		failf(t, "%s after deleting the Jobs: %s", quotaCatchUp, why)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Logf("the pods of the deleted Jobs were gone and counted out of the quota after %s", d.Round(time.Second))
	}
}

// quotaCatchUp bounds podsGone's wait. The quota controller counts a
// deleted pod out when its informer sees the deletion, and recounts every
// quota in full every 5 minutes (kube-controller-manager's
// --resource-quota-sync-period): after an API server restart (faults_test.go)
// a CI run saw the count lag for minutes, so the bound is past one full
// recount.
const quotaCatchUp = 6 * time.Minute

// stopPostgres stops a test's PostgreSQL server, if it started one.
func stopPostgres(ctx context.Context, t *testing.T, pg *postgres.Server) {
	t.Helper()
	if pg == nil {
		return
	}
	if err := pg.Stop(ctx); err != nil {
		t.Errorf("stop PostgreSQL: %v", err)
	}
}
