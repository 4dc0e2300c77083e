package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle/lifecycletest"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// logsHandler serves experiment e1, whose Job has one running attempt per
// name in pods, with pods/log answered by logs.
func logsHandler(t *testing.T, maxReads int, logs lifecycletest.LogFunc, pods ...string) http.Handler {
	t.Helper()
	gin.SetMode(gin.TestMode)
	const uid = types.UID("u-e1")
	objs := []runtime.Object{&batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: jobspec.JobName("e1"), Namespace: ns, UID: uid,
		Labels:      map[string]string{jobspec.LabelManagedBy: jobspec.LabelManagedByName},
		Annotations: map[string]string{jobspec.AnnotationID: "e1"},
	}}}
	for i, name := range pods {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
				CreationTimestamp: metav1.Unix(int64(1000+i), 0),
				Labels:            map[string]string{batchv1.ControllerUidLabel: string(uid)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: jobspec.JobName("e1"), UID: uid,
					Controller: new(true)}},
			},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
				{Name: "runner", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
		})
	}
	client := lifecycletest.WithLogs(fake.NewClientset(objs...), logs)
	return NewHandler(Config{
		Experiments: &experiments.Service{Live: &lifecycle.Store{Client: client, Namespace: ns}},
		Metrics:     metrics.New(),
		MaxLogReads: maxReads,
	})
}

// TestLogsWithAnUnreadableAttempt: GET .../logs answers what can be read
// and names the attempt whose log is gone, instead of a 502.
func TestLogsWithAnUnreadableAttempt(t *testing.T) {
	t.Parallel()
	h := logsHandler(t, 0, func(pod string) (io.Reader, *metav1.Status) {
		if pod == "p-1" {
			return nil, &metav1.Status{Code: 404, Reason: metav1.StatusReasonNotFound, Message: `pods "p-1" not found`}
		}
		return strings.NewReader("result 42\n"), nil
	}, "p-1", "p-2")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/experiments/e1/logs", nil))
	want := "==> attempt 1 of 2: pod p-1 (Running): output unavailable: pods \"p-1\" not found <==\n" +
		"==> attempt 2 of 2: pod p-2 (Running) <==\nresult 42\n"
	if rec.Code != http.StatusOK || rec.Body.String() != want || rec.Header().Get("Content-Type") != textPlain {
		t.Errorf("logs = %d %q (%s), want 200 %q", rec.Code, rec.Body, rec.Header().Get("Content-Type"), want)
	}
}

// TestLogReadsAreBounded: beyond --max-log-reads, a log read is refused at
// once with 429 and Retry-After; a finished read frees its slot.
func TestLogReadsAreBounded(t *testing.T) {
	t.Parallel()
	const limit = 2
	var started sync.WaitGroup
	started.Add(limit)
	release := make(chan struct{})
	blocked := true
	var mu sync.Mutex
	h := logsHandler(t, limit, func(string) (io.Reader, *metav1.Status) {
		mu.Lock()
		defer mu.Unlock()
		if !blocked {
			return strings.NewReader("done\n"), nil
		}
		started.Done()
		return &held{release: release}, nil
	}, "p-1")
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/experiments/e1/logs", nil))
		return rec
	}

	answers := make(chan *httptest.ResponseRecorder, limit)
	for range limit {
		go func() { answers <- get() }()
	}
	started.Wait() // both hold a slot, reading
	rec := get()
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" ||
		!strings.Contains(errorMessage(t, rec), "2 log reads are being served already (--max-log-reads)") {
		t.Errorf("a read beyond the bound = %d %s (Retry-After %q), want 429 naming --max-log-reads", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	mu.Lock()
	blocked = false
	mu.Unlock()
	close(release)
	for range limit {
		if rec := <-answers; rec.Code != http.StatusOK || rec.Body.String() != "held\n" {
			t.Errorf("a read within the bound = %d %q, want 200", rec.Code, rec.Body)
		}
	}
	if rec := get(); rec.Code != http.StatusOK || rec.Body.String() != "done\n" {
		t.Errorf("a read after the others ended = %d %q, want 200", rec.Code, rec.Body)
	}
}

// held is a log stream that blocks until release is closed.
type held struct {
	release chan struct{}
	done    bool
}

func (h *held) Read(p []byte) (int, error) {
	if h.done {
		return 0, io.EOF
	}
	<-h.release
	h.done = true
	return copy(p, "held\n"), nil
}

// TestLogsMemoryPerRead: serving a live output allocates about one
// lifecycle.MaxLogBytes buffer whatever the output's size: the answer is
// written from the reader's buffer, not copied into another. Not parallel:
// it counts the process's allocations.
func TestLogsMemoryPerRead(t *testing.T) {
	const bound = lifecycle.MaxLogBytes + 64<<10 + 256<<10 // the ring, its small start, the request's own
	for _, size := range []int64{2 << 20, 40 << 20} {
		h := logsHandler(t, 0, func(string) (io.Reader, *metav1.Status) { return lifecycletest.Output(size), nil }, "p-1")
		var least uint64
		for i := range 3 {
			w := &discard{header: http.Header{}}
			var before, after goruntime.MemStats
			goruntime.ReadMemStats(&before)
			h.ServeHTTP(w, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/experiments/e1/logs", nil))
			goruntime.ReadMemStats(&after)
			if w.code != http.StatusOK || w.n != lifecycle.MaxLogBytes || w.header.Get("Content-Type") != textPlain {
				t.Fatalf("logs = %d, %d bytes (%s); want 200 with the last %d bytes", w.code, w.n, w.header.Get("Content-Type"), lifecycle.MaxLogBytes)
			}
			if n := after.TotalAlloc - before.TotalAlloc; i == 0 || n < least {
				least = n
			}
		}
		t.Logf("serving %d bytes of output allocated %d bytes", size, least)
		if least > bound {
			t.Errorf("serving %d bytes of output allocated %d bytes, want at most %d", size, least, bound)
		}
	}
}

// discard is a ResponseWriter that keeps only the status, the headers and
// a count of the body's bytes.
type discard struct {
	header http.Header
	code   int
	n      int
}

func (d *discard) Header() http.Header { return d.header }
func (d *discard) WriteHeader(code int) {
	if d.code == 0 {
		d.code = code
	}
}
func (d *discard) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	d.n += len(p)
	return len(p), nil
}
