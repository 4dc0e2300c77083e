//go:build e2e

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// backendProc is the backend binary running as a child process. Its output
// goes to one log file across restarts, so a failure shows the whole story.
type backendProc struct {
	bin     string
	args    []string
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	url    string
	done   chan struct{} // closed when the process exited
	state  *os.ProcessState
	starts int
}

var listeningRE = regexp.MustCompile(`msg="backend listening" addr=(\S+)`)

// Start runs the backend and waits until /readyz answers 200: it listens
// on a port the kernel picks and logs it, which avoids racing anyone for a
// fixed port.
func (b *backendProc) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil && b.state == nil {
		return errors.New("backend already running")
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open backend log: %w", err)
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	b.starts++
	fmt.Fprintf(logf, "==== start %d at %s: %s %s\n", b.starts, time.Now().Format(time.RFC3339Nano), b.bin, strings.Join(b.args, " "))
	cmd := exec.Command(b.bin, b.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a timeout panic), so does the backend.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start backend: %w", err)
	}
	done := make(chan struct{})
	b.cmd, b.done, b.state, b.url = cmd, done, nil, ""
	go func() {
		_ = cmd.Wait()
		logf.Close()
		b.mu.Lock()
		b.state = cmd.ProcessState
		b.mu.Unlock()
		close(done)
	}()

	t0 := time.Now()
	var addr string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		select {
		case <-done:
			return false, fmt.Errorf("backend exited during start-up")
		default:
		}
		data, err := os.ReadFile(b.logPath)
		if err != nil || int64(len(data)) < offset {
			return false, nil
		}
		if m := listeningRE.FindSubmatch(data[offset:]); m != nil {
			addr = string(m[1])
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("backend did not log its address: %w\n%s", err, b.logTailLocked(20))
	}
	b.url = "http://" + addr
	client := &http.Client{Timeout: 3 * time.Second}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		res, err := get(ctx, client, b.url+"/readyz")
		return err == nil && res.Code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("backend %s not ready after a minute: %w\n%s", b.url, err, b.logTailLocked(20))
	}
	logger.Info("backend ready", "url", b.url, "pid", cmd.Process.Pid, "elapsed", time.Since(t0).Round(time.Millisecond))
	return nil
}

// Signal sends sig to the running backend.
func (b *backendProc) Signal(sig os.Signal) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.state != nil {
		return errors.New("backend not running")
	}
	return b.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (b *backendProc) Wait(ctx context.Context) (int, error) {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	if done == nil {
		return 0, errors.New("backend never started")
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for backend exit: %w", ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state.ExitCode(), nil
}

// Stop sends SIGTERM and waits; after 30 s it kills the process.
func (b *backendProc) Stop(ctx context.Context) (int, error) {
	if !b.Running() {
		return b.exitCode(), nil
	}
	if err := b.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	code, err := b.Wait(wctx)
	if err != nil {
		_ = b.Signal(syscall.SIGKILL)
		code, _ = b.Wait(ctx)
		return code, fmt.Errorf("backend ignored SIGTERM for 30 s; killed: %w", err)
	}
	return code, nil
}

// Running reports whether the process is alive.
func (b *backendProc) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd != nil && b.state == nil
}

func (b *backendProc) exitCode() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == nil {
		return 0
	}
	return b.state.ExitCode()
}

// URL is the base URL of the running backend.
func (b *backendProc) URL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.url
}

// LogTail returns the last n lines the backend wrote.
func (b *backendProc) LogTail(n int) string {
	if b == nil {
		return "(backend not started)"
	}
	return b.logTailLocked(n)
}

func (b *backendProc) logTailLocked(n int) string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(no backend log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// ensureBackend starts the backend if an earlier test left it stopped.
func ensureBackend(ctx context.Context, t *testing.T) *backendProc {
	t.Helper()
	if !suite.backend.Running() {
		if err := suite.backend.Start(ctx); err != nil {
			t.Fatalf("restart backend: %v", err)
		}
	}
	return suite.backend
}

// answer is one HTTP response from the backend.
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

// post sends an experiment body as the tutorial's frontend does.
func post(ctx context.Context, client *http.Client, base, body string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/experiment", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	return send(client, req)
}

// experimentBody is a valid body for id with some payload.
func experimentBody(id string, extra string) string {
	return fmt.Sprintf(`{"experiment": {"id": %q, "key": "k-%s", "params": {"lr": 0.01, "layers": [64, 32]}%s}}`, id, id, extra)
}

// goroutines reads go_goroutines from the backend's /metrics.
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
	list, err := suite.admin.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: managedBy})
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
// collector.
func deleteJobs(ctx context.Context, t *testing.T) {
	t.Helper()
	policy := metav1.DeletePropagationBackground
	err := suite.admin.BatchV1().Jobs(ns).DeleteCollection(ctx,
		metav1.DeleteOptions{PropagationPolicy: &policy}, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("delete jobs: %v", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := suite.admin.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("jobs still present a minute after deleting them: %v", err)
	}
}
