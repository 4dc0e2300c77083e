package lifecycle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle/lifecycletest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// pod is an attempt of the Job with UID jobUID, created at t0+sec. state
// is the runner's container state: "" (no status), "waiting", "running" or
// an exit code such as "exit 1".
func pod(name string, jobUID types.UID, sec int, phase corev1.PodPhase, container, state string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(sec) * time.Second)),
			Labels: map[string]string{batchv1.ControllerUidLabel: string(jobUID), batchv1.JobNameLabel: "exp-e1"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "exp-e1", UID: jobUID,
				Controller: new(true)}},
		},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: container}}},
		Status: corev1.PodStatus{Phase: phase},
	}
	cs := corev1.ContainerStatus{Name: container}
	switch {
	case state == "":
		return p
	case state == "waiting":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	case state == "running":
		cs.State.Running = &corev1.ContainerStateRunning{}
	default:
		var code int32
		fmt.Sscanf(state, "exit %d", &code)
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: code}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	return p
}

func TestLogs(t *testing.T) {
	t.Parallel()
	const uid = types.UID("u-now")
	// The fake clientset's log reads do not name the pod; pods that must
	// not be read have containers of their own names instead.
	oldJobPod := pod("exp-e1-old", "u-before", 0, corev1.PodSucceeded, "old-job", "exit 0") // same job-name, earlier Job
	labelOnly := pod("exp-e1-fake", uid, 0, corev1.PodSucceeded, "label-only", "exit 0")
	labelOnly.OwnerReferences = nil
	tests := []struct {
		name     string
		pods     []runtime.Object
		want     string
		wantKind failure.Kind
		wantMsg  string
		wantFrom []string // containers whose logs were read, in order
	}{
		{name: "no pod", wantKind: failure.Conflict, wantMsg: `experiment "e1": no runner pod exists (yet or any more)`},
		{name: "only another Job's pods", pods: []runtime.Object{oldJobPod, labelOnly}, wantKind: failure.Conflict, wantMsg: "no runner pod exists"},
		{name: "pending", pods: []runtime.Object{pod("p1", uid, 0, corev1.PodPending, "runner", "waiting")},
			wantKind: failure.Conflict, wantMsg: `experiment "e1": no runner pod has started yet (1 waiting, the newest p1 is Pending)`},
		{name: "failed before the runner started", pods: []runtime.Object{pod("p1", uid, 0, corev1.PodFailed, "runner", "")},
			wantKind: failure.Conflict, wantMsg: "no runner pod has started yet"},
		{name: "one attempt: output unchanged", pods: []runtime.Object{oldJobPod, pod("p1", uid, 0, corev1.PodSucceeded, "runner", "exit 0")},
			want: "fake logs", wantFrom: []string{"runner"}},
		{name: "one attempt without container status", pods: []runtime.Object{pod("p1", uid, 0, corev1.PodSucceeded, "runner", "")},
			want: "fake logs", wantFrom: []string{"runner"}},
		{name: "single container not named runner", pods: []runtime.Object{pod("p1", uid, 0, corev1.PodRunning, "main", "running")},
			want: "fake logs", wantFrom: []string{"main"}},
		{name: "failed attempt while the retry is pending", pods: []runtime.Object{
			pod("p2", uid, 20, corev1.PodPending, "runner", "waiting"),
			pod("p1", uid, 0, corev1.PodFailed, "runner", "exit 1"),
		}, want: "fake logs", wantFrom: []string{"runner"}},
		{name: "every started attempt, oldest first, ties by name", pods: []runtime.Object{
			pod("p-c", uid, 30, corev1.PodRunning, "runner", "running"),
			pod("p-b", uid, 10, corev1.PodFailed, "runner", "exit 2"),
			pod("p-a", uid, 10, corev1.PodFailed, "runner", "exit 1"),
			pod("p-d", uid, 40, corev1.PodPending, "runner", "waiting"),
		}, want: "==> attempt 1 of 3: pod p-a (Failed, exit 1) <==\nfake logs\n" +
			"==> attempt 2 of 3: pod p-b (Failed, exit 2) <==\nfake logs\n" +
			"==> attempt 3 of 3: pod p-c (Running) <==\nfake logs",
			wantFrom: []string{"runner", "runner", "runner"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset(append(tt.pods, ownedJob("e1", uid))...)
			var from []string
			client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "log" {
					opts := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
					from = append(from, opts.Container)
				}
				return false, nil, nil
			})
			s := &Store{Client: client, Namespace: ns}
			var out bytes.Buffer
			err := s.Logs(context.Background(), "e1", &out)
			if tt.wantKind != "" {
				if failure.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("err = %v (kind %q), want %q %q", err, failure.KindOf(err), tt.wantKind, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantFrom, from); diff != "" {
				t.Errorf("logs read from (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTail: whatever the sizes of the writes, the tail holds exactly the
// last max bytes, and a header after an unfinished line starts a new one.
func TestTail(t *testing.T) {
	t.Parallel()
	var all []byte
	for i := 0; all == nil || len(all) < 3*MaxLogBytes; i++ {
		all = append(all, fmt.Sprintf("line %d\n", i)...)
	}
	for _, chunk := range []int{1, 7, 4096, MaxLogBytes - 1, MaxLogBytes, MaxLogBytes + 1, 3 * MaxLogBytes} {
		tb := &tail{max: MaxLogBytes}
		for rest := all; len(rest) > 0; {
			n := min(chunk, len(rest))
			if w, err := tb.Write(rest[:n]); w != n || err != nil {
				t.Fatalf("Write = %d, %v", w, err)
			}
			rest = rest[n:]
		}
		if got, want := tb.Bytes(), all[len(all)-MaxLogBytes:]; !bytes.Equal(got, want) {
			t.Errorf("chunks of %d: kept %d bytes, not the last %d", chunk, len(got), MaxLogBytes)
		}
		if cap(tb.buf) > MaxLogBytes {
			t.Errorf("chunks of %d: buffer grew to %d bytes, beyond the limit", chunk, cap(tb.buf))
		}
		var w bytes.Buffer
		if n, err := tb.WriteTo(&w); n != MaxLogBytes || err != nil || !bytes.Equal(w.Bytes(), all[len(all)-MaxLogBytes:]) {
			t.Errorf("chunks of %d: WriteTo = %d, %v, not the last %d bytes", chunk, n, err, MaxLogBytes)
		}
	}

	short := &tail{max: 16}
	short.Write([]byte("no newline"))
	short.startLine()
	short.Write([]byte("next\n"))
	short.startLine()
	if got := string(short.Bytes()); got != "no newline\nnext\n" {
		t.Errorf("tail = %q", got)
	}
	// Once the ring wrapped, the last byte is before head.
	short.Write([]byte("wrapped, no newline"))
	short.startLine()
	if got := string(short.Bytes()); got != "ped, no newline\n" {
		t.Errorf("tail = %q", got)
	}
}

// runningAttempts are three attempts of the Job with UID u-now: two failed,
// one running.
func runningAttempts() []runtime.Object {
	return []runtime.Object{
		pod("p-a", "u-now", 0, corev1.PodFailed, "runner", "exit 1"),
		pod("p-b", "u-now", 10, corev1.PodFailed, "runner", "exit 2"),
		pod("p-c", "u-now", 20, corev1.PodRunning, "runner", "running"),
	}
}

// TestUnreadableAttempt: an attempt whose log is gone for good (404: pod
// gone; 400: container never started) shows as its header with the reason,
// and the other attempts' output is served and recorded; an error that a
// retry may cure (5xx, unreachable) still fails the read, so the recorder
// tries again.
func TestUnreadableAttempt(t *testing.T) {
	t.Parallel()
	notFound := &metav1.Status{Code: 404, Reason: metav1.StatusReasonNotFound} // the message names the pod
	neverStarted := &metav1.Status{Code: 400, Reason: metav1.StatusReasonBadRequest, Message: `container "runner" in pod "p-a" is waiting to start: ContainerCreating`}
	internal := &metav1.Status{Code: 500, Reason: metav1.StatusReasonInternalError, Message: "etcdserver: leader changed"}
	unavailable := &metav1.Status{Code: 503, Reason: metav1.StatusReasonServiceUnavailable, Message: "the server is currently unable to handle the request"}
	tests := []struct {
		name     string
		pods     []runtime.Object
		fail     map[string]*metav1.Status // pod → the log read's answer
		want     string
		wantKind failure.Kind
	}{
		{name: "the middle attempt's pod is gone", pods: runningAttempts(), fail: map[string]*metav1.Status{"p-b": notFound},
			want: "==> attempt 1 of 3: pod p-a (Failed, exit 1) <==\noutput of p-a\n" +
				"==> attempt 2 of 3: pod p-b (Failed, exit 2): output unavailable: pods \"p-b\" not found <==\n" +
				"==> attempt 3 of 3: pod p-c (Running) <==\noutput of p-c\n"},
		{name: "the first attempt's container never started", pods: runningAttempts(), fail: map[string]*metav1.Status{"p-a": neverStarted},
			want: "==> attempt 1 of 3: pod p-a (Failed, exit 1): output unavailable: container \"runner\" in pod \"p-a\" is waiting to start: ContainerCreating <==\n" +
				"==> attempt 2 of 3: pod p-b (Failed, exit 2) <==\noutput of p-b\n" +
				"==> attempt 3 of 3: pod p-c (Running) <==\noutput of p-c\n"},
		{name: "the only attempt is gone", pods: []runtime.Object{pod("p-a", "u-now", 0, corev1.PodSucceeded, "runner", "exit 0")},
			fail: map[string]*metav1.Status{"p-a": notFound},
			want: "==> attempt 1 of 1: pod p-a (Succeeded, exit 0): output unavailable: pods \"p-a\" not found <==\n"},
		{name: "every attempt gone", pods: runningAttempts(), fail: map[string]*metav1.Status{"p-a": notFound, "p-b": notFound, "p-c": notFound},
			want: "==> attempt 1 of 3: pod p-a (Failed, exit 1): output unavailable: pods \"p-a\" not found <==\n" +
				"==> attempt 2 of 3: pod p-b (Failed, exit 2): output unavailable: pods \"p-b\" not found <==\n" +
				"==> attempt 3 of 3: pod p-c (Running): output unavailable: pods \"p-c\" not found <==\n"},
		{name: "the API server fails: retry", pods: runningAttempts(), fail: map[string]*metav1.Status{"p-b": internal}, wantKind: failure.Upstream},
		{name: "the API server is overloaded: retry", pods: runningAttempts(), fail: map[string]*metav1.Status{"p-c": unavailable}, wantKind: failure.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			job := ownedJob("e1", "u-now")
			client := lifecycletest.WithLogs(fake.NewClientset(append(tt.pods, job)...), func(name string) (io.Reader, *metav1.Status) {
				if st, ok := tt.fail[name]; ok {
					st := *st
					if st.Message == "" {
						st.Message = fmt.Sprintf("pods %q not found", name)
					}
					return nil, &st
				}
				return strings.NewReader("output of " + name + "\n"), nil
			})
			s := &Store{Client: client, Namespace: ns}
			var out bytes.Buffer
			err := s.Logs(context.Background(), "e1", &out)
			captured, cerr := s.Capture(context.Background(), job)
			if tt.wantKind != "" {
				if failure.KindOf(err) != tt.wantKind || failure.KindOf(cerr) != tt.wantKind {
					t.Fatalf("Logs = %v (kind %q), Capture = %v (kind %q); want %q", err, failure.KindOf(err), cerr, failure.KindOf(cerr), tt.wantKind)
				}
				if out.Len() != 0 {
					t.Errorf("Logs wrote %q before failing", out.String())
				}
				return
			}
			if err != nil || cerr != nil {
				t.Fatalf("Logs = %v, Capture = %v; want what could be read", err, cerr)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("logs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, string(captured.Bytes)); diff != "" {
				t.Errorf("captured (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLogsMemoryIsBounded: a log read allocates about one MaxLogBytes
// buffer, however much the runner printed (a small buffer for a small
// output), so concurrent reads cost what --max-log-reads allows times that,
// not times the output's size. Not parallel: it counts the process's
// allocations.
func TestLogsMemoryIsBounded(t *testing.T) {
	const slack = 256 << 10 // the list, the pods, client-go's request, the copy buffer
	for _, tt := range []struct {
		size, max int64
	}{
		{10 << 10, slack},
		{2 << 20, MaxLogBytes + smallTail + slack},
		{40 << 20, MaxLogBytes + smallTail + slack},
	} {
		job := ownedJob("e1", "u-now")
		client := lifecycletest.WithLogs(fake.NewClientset(job, pod("p-a", "u-now", 0, corev1.PodRunning, "runner", "running")),
			func(string) (io.Reader, *metav1.Status) { return lifecycletest.Output(tt.size), nil })
		s := &Store{Client: client, Namespace: ns}
		var w countingWriter
		allocated := allocatedBy(t, func() error { return s.Logs(context.Background(), "e1", &w) })
		t.Logf("reading %d bytes of output allocated %d bytes", tt.size, allocated)
		if allocated > uint64(tt.max) {
			t.Errorf("reading %d bytes of output allocated %d bytes, want at most %d", tt.size, allocated, tt.max)
		}
		if want := min(tt.size, MaxLogBytes); w.n != want*3 {
			t.Errorf("reading %d bytes of output served %d bytes in 3 reads, want %d", tt.size, w.n, want*3)
		}
	}
}

// allocatedBy is the fewest bytes allocated by one of three runs of f (one
// run can be blurred by a goroutine left by an earlier test).
func allocatedBy(t *testing.T, f func() error) uint64 {
	t.Helper()
	var least uint64
	for i := range 3 {
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		if err := f(); err != nil {
			t.Fatal(err)
		}
		goruntime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; i == 0 || n < least {
			least = n
		}
	}
	return least
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}
