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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/backendproc"
)

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

// postUntil POSTs body until the answer's code is one of codes, for at most
// within, and returns the last answer; the error says it never came.
func postUntil(ctx context.Context, client *http.Client, base, body string, within time.Duration, codes ...int) (answer, error) {
	var last answer
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		a, err := post(ctx, client, base, body)
		if err != nil {
			return false, nil
		}
		last = a
		return slices.Contains(codes, a.Code), nil
	})
	if err != nil {
		return last, fmt.Errorf("no answer %v to POST within %s (last: %v): %w", codes, within, last, err)
	}
	return last, nil
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
}
