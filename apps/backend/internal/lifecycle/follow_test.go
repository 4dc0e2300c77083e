package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle/lifecycletest"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// recSink records a follow: its events, with positions, and the text a
// plain follow would send.
type recSink struct {
	mu     sync.Mutex
	begun  int
	events []string
	text   strings.Builder
}

func (r *recSink) Begin() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begun++
	return nil
}

func (r *recSink) Header(at Position, line string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("H %s %s", at, line))
	r.text.WriteString(line + "\n")
	return nil
}

func (r *recSink) Output(end Position, p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("O %s %q", end, p))
	r.text.Write(p)
	return nil
}

func (r *recSink) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.text.String()
}

// waitFor waits until the sink's text ends with want.
func (r *recSink) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasSuffix(r.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the follow sent %q; waited for it to end with %q", r.String(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var fastFollow = FollowOptions{CallTimeout: 5 * time.Second, Poll: 5 * time.Millisecond}

type followRun struct {
	end  wire.LogEnd
	err  error
	done chan struct{}
}

func startFollow(ctx context.Context, s *Store, from Position, sink LogSink) *followRun {
	r := &followRun{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.end, r.err = s.Follow(ctx, "e1", from, sink, fastFollow)
	}()
	return r
}

func (r *followRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the follow did not end")
	}
}

func setPod(t *testing.T, kube *fake.Clientset, p *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	if _, err := kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func finishJob(t *testing.T, kube *fake.Clientset, cond batchv1.JobConditionType) {
	t.Helper()
	ctx := context.Background()
	job, err := kube.BatchV1().Jobs(ns).Get(ctx, ownedJob("e1", "u-now").Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: cond, Status: corev1.ConditionTrue, Reason: "Done"})
	if _, err := kube.BatchV1().Jobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestFollowAcrossAttempts: a follow waits for the first attempt to start,
// streams each chunk as it is written, survives a dropped log stream
// without repeating a byte, moves to the retry with a header (ending the
// unfinished line first), and ends once the Job finished and the last log
// ended, with the outcome and exit code.
func TestFollowAcrossAttempts(t *testing.T) {
	t.Parallel()
	kube := fake.NewClientset(ownedJob("e1", "u-now"), pod("p1", "u-now", 0, corev1.PodPending, "runner", "waiting"))
	logs := lifecycletest.NewLogs()
	s := &Store{Client: kube, Namespace: ns, PodLogs: logs}
	sink := &recSink{}
	run := startFollow(context.Background(), s, Position{}, sink)

	time.Sleep(20 * time.Millisecond) // a few looks at a pending pod
	setPod(t, kube, pod("p1", "u-now", 0, corev1.PodRunning, "runner", "running"))
	logs.Write("p1", "one\n")
	sink.waitFor(t, "one\n")
	logs.Write("p1", "tw")
	sink.waitFor(t, "tw")
	logs.Break("p1") // the connection drops; the runner goes on
	logs.Write("p1", "o")
	sink.waitFor(t, "two")
	logs.End("p1")
	setPod(t, kube, pod("p1", "u-now", 0, corev1.PodFailed, "runner", "exit 1"))
	setPod(t, kube, pod("p2", "u-now", 10, corev1.PodRunning, "runner", "running"))
	logs.Write("p2", "retry\n")
	sink.waitFor(t, "retry\n")
	logs.Write("p2", "42\n")
	logs.End("p2")
	setPod(t, kube, pod("p2", "u-now", 10, corev1.PodSucceeded, "runner", "exit 0"))
	finishJob(t, kube, batchv1.JobComplete)
	run.wait(t)

	if run.err != nil || run.end.State != StateSucceeded || run.end.ExitCode == nil || *run.end.ExitCode != 0 || run.end.Source != SourceJob {
		t.Fatalf("Follow = %+v, %v; want Succeeded, exit 0, from the job", run.end, run.err)
	}
	want := []string{
		`O 1:4 "one\n"`, `O 1:6 "tw"`, `O 1:7 "o"`, `O 1:8 "\n"`,
		"H 2:0 ==> attempt 2 of 2: pod p2 (Running) <==",
		`O 2:6 "retry\n"`, `O 2:9 "42\n"`,
	}
	if diff := cmp.Diff(want, sink.events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if sink.begun != 1 {
		t.Errorf("Begin called %d times, want 1", sink.begun)
	}
	if n := logs.Opens("p1"); n != 2 {
		t.Errorf("p1's log opened %d times, want 2 (once more after the drop)", n)
	}
}

// TestFollowBrokenAfterTheRunnerEnded: a log stream that broke after the
// runner had ended is read again to its end before the follow moves on.
func TestFollowBrokenAfterTheRunnerEnded(t *testing.T) {
	t.Parallel()
	kube := fake.NewClientset(ownedJob("e1", "u-now"), pod("p1", "u-now", 0, corev1.PodRunning, "runner", "running"))
	logs := lifecycletest.NewLogs()
	sink := &recSink{}
	run := startFollow(context.Background(), &Store{Client: kube, Namespace: ns, PodLogs: logs}, Position{}, sink)
	logs.Write("p1", "a")
	sink.waitFor(t, "a")
	setPod(t, kube, pod("p1", "u-now", 0, corev1.PodSucceeded, "runner", "exit 0"))
	finishJob(t, kube, batchv1.JobComplete)
	logs.Break("p1") // before the rest is written: the stream has not read it
	logs.Write("p1", "b\n")
	logs.End("p1")
	run.wait(t)
	if run.err != nil || sink.String() != "ab\n" {
		t.Errorf("Follow = %q, %v; want the whole log", sink.String(), run.err)
	}
}

// TestFollowResume: a follow resumed at any position a client was sent
// sends exactly the rest: the same bytes as a follow from the start, minus
// what the client has.
func TestFollowResume(t *testing.T) {
	t.Parallel()
	// Attempt 1 printed "ab\ncd" (no final newline), attempt 2 "ef\n".
	full := "==> attempt 1 of 2: pod p1 (Failed, exit 1) <==\nab\ncd\n==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\n"
	for _, tt := range []struct {
		from Position
		want string
	}{
		{Position{}, full},
		{Position{Attempt: 1}, "ab\ncd\n==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\n"},
		{Position{Attempt: 1, Offset: 3}, "cd\n==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\n"},
		{Position{Attempt: 1, Offset: 5}, "\n==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\n"},
		{Position{Attempt: 1, Offset: 6}, "==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\n"},
		{Position{Attempt: 2}, "ef\n"},
		{Position{Attempt: 2, Offset: 1}, "f\n"},
		{Position{Attempt: 2, Offset: 3}, ""},
		{Position{Attempt: 3}, ""},
	} {
		t.Run(tt.from.String(), func(t *testing.T) {
			t.Parallel()
			job := ownedJob("e1", "u-now")
			job.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
			kube := fake.NewClientset(job,
				pod("p1", "u-now", 0, corev1.PodFailed, "runner", "exit 1"),
				pod("p2", "u-now", 10, corev1.PodSucceeded, "runner", "exit 0"))
			logs := lifecycletest.NewLogs()
			logs.Write("p1", "ab\ncd")
			logs.End("p1")
			logs.Write("p2", "ef\n")
			logs.End("p2")
			sink := &recSink{}
			end, err := (&Store{Client: kube, Namespace: ns, PodLogs: logs}).Follow(context.Background(), "e1", tt.from, sink, fastFollow)
			if err != nil || end.State != StateSucceeded {
				t.Fatalf("Follow = %+v, %v", end, err)
			}
			if got := sink.String(); got != tt.want {
				t.Errorf("from %s sent %q, want %q", tt.from, got, tt.want)
			}
		})
	}
}

// TestFollowEnds: how a follow ends when the Job is gone, finished before
// any runner started, or has an attempt whose log cannot be read.
func TestFollowEnds(t *testing.T) {
	t.Parallel()
	finished := func(cond batchv1.JobConditionType) *batchv1.Job {
		j := ownedJob("e1", "u-now")
		j.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded"}}
		return j
	}
	for _, tt := range []struct {
		name      string
		objs      []runtime.Object
		removed   string
		wantKind  failure.Kind
		wantState string
		want      string
	}{
		{name: "no job", wantKind: failure.NotFound},
		{name: "finished before a runner started", objs: []runtime.Object{finished(batchv1.JobFailed),
			pod("p1", "u-now", 0, corev1.PodFailed, "runner", "")}, wantState: StateFailed},
		{name: "an attempt's log is gone", objs: []runtime.Object{finished(batchv1.JobFailed),
			pod("p1", "u-now", 0, corev1.PodFailed, "runner", "exit 1"), pod("p2", "u-now", 5, corev1.PodFailed, "runner", "exit 1")},
			removed: "p1", wantState: StateFailed,
			want: "==> attempt 1 of 2: pod p1 (Failed, exit 1): output unavailable: pods \"p1\" not found <==\n" +
				"==> attempt 2 of 2: pod p2 (Failed, exit 1) <==\nout\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logs := lifecycletest.NewLogs()
			for _, p := range []string{"p1", "p2"} {
				logs.Write(p, "out\n")
				logs.End(p)
			}
			if tt.removed != "" {
				logs.Remove(tt.removed)
			}
			sink := &recSink{}
			s := &Store{Client: fake.NewClientset(tt.objs...), Namespace: ns, PodLogs: logs}
			end, err := s.Follow(context.Background(), "e1", Position{}, sink, fastFollow)
			if failure.KindOf(err) != tt.wantKind || (tt.wantKind == "" && err != nil) {
				t.Fatalf("Follow = %+v, %v; want kind %q", end, err, tt.wantKind)
			}
			if end.State != tt.wantState || sink.String() != tt.want {
				t.Errorf("Follow ended %q after %q; want %q after %q", end.State, sink.String(), tt.wantState, tt.want)
			}
		})
	}
}

// TestFollowJobGoneMidway: the Job deleted while its pod's log streams
// ends the follow with NotFound and the last state seen, so the caller can
// go on from the record at the position reached.
func TestFollowJobGoneMidway(t *testing.T) {
	t.Parallel()
	kube := fake.NewClientset(ownedJob("e1", "u-now"), pod("p1", "u-now", 0, corev1.PodRunning, "runner", "running"))
	logs := lifecycletest.NewLogs()
	sink := &recSink{}
	run := startFollow(context.Background(), &Store{Client: kube, Namespace: ns, PodLogs: logs}, Position{}, sink)
	logs.Write("p1", "half")
	sink.waitFor(t, "half")
	if err := kube.BatchV1().Jobs(ns).Delete(context.Background(), ownedJob("e1", "u-now").Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kube.CoreV1().Pods(ns).Delete(context.Background(), "p1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	logs.Remove("p1")
	run.wait(t)
	if failure.KindOf(run.err) != failure.NotFound || run.end.State != StatePending || run.end.Message != "the job is gone" {
		t.Errorf("Follow = %+v, %v; want NotFound, the last state seen", run.end, run.err)
	}
}

// TestReplay: a stored output cut back into attempts and sent from any
// position continues exactly where the same position of a live follow
// would; output whose start was cut off (over MaxLogBytes) has no position
// and is sent again rather than skipped.
func TestReplay(t *testing.T) {
	t.Parallel()
	h1 := "==> attempt 1 of 2: pod p1 (Failed, exit 1) <=="
	h2 := "==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <=="
	stored := h1 + "\nab\ncd\n" + h2 + "\nef\n"
	big := strings.Repeat("x", MaxLogBytes)
	for _, tt := range []struct {
		name string
		out  string
		from Position
		want []string
	}{
		{"single attempt", "hello\nworld", Position{}, []string{`O 1:11 "hello\nworld"`}},
		{"single attempt, resumed", "hello\nworld", Position{Attempt: 1, Offset: 6}, []string{`O 1:11 "world"`}},
		{"attempts", stored, Position{}, []string{"H 1:0 " + h1, `O 1:6 "ab\ncd\n"`, "H 2:0 " + h2, `O 2:3 "ef\n"`}},
		{"inside the first", stored, Position{Attempt: 1, Offset: 5}, []string{`O 1:6 "\n"`, "H 2:0 " + h2, `O 2:3 "ef\n"`}},
		{"at the second's header", stored, Position{Attempt: 2}, []string{`O 2:3 "ef\n"`}},
		{"at the end", stored, Position{Attempt: 2, Offset: 3}, nil},
		{"an unavailable attempt", "==> attempt 1 of 2: pod p1 (Failed): output unavailable: gone <==\n" + h2 + "\nef\n", Position{},
			[]string{"H 1:0 ==> attempt 1 of 2: pod p1 (Failed): output unavailable: gone <==", "H 2:0 " + h2, `O 2:3 "ef\n"`}},
		{"a line like a header, not at a line's start", "a==> attempt 2 of 2: pod p (x) <==\n", Position{}, []string{`O 1:35 "a==> attempt 2 of 2: pod p (x) <==\n"`}},
		{"cut, headers after", big[:MaxLogBytes-len(h2)-4] + "\n" + h2 + "\nef\n", Position{Attempt: 1, Offset: 5},
			[]string{fmt.Sprintf("O 1:-1 %q", big[:MaxLogBytes-len(h2)-4]+"\n"), "H 2:0 " + h2, `O 2:3 "ef\n"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := &recSink{}
			if err := Replay([]byte(tt.out), tt.from, sink); err != nil {
				t.Fatal(err)
			}
			got := sink.events
			// Long bodies come in several events; join them for the
			// comparison.
			got = joinOutputs(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
	// A cut output without any header: the attempt is unknown, so a
	// resume gets it all again, without ids.
	sink := &recSink{}
	if err := Replay([]byte(big), Position{Attempt: 3, Offset: 7}, sink); err != nil || sink.String() != big {
		t.Errorf("Replay of a cut output sent %d bytes, %v; want all %d again", len(sink.String()), err, len(big))
	}
	for _, ev := range sink.events {
		if !strings.HasPrefix(ev, "O 0:-1 ") {
			t.Fatalf("event %.40s; want no known position", ev)
		}
	}
}

// joinOutputs merges consecutive output events of one section into one,
// keeping the last position.
func joinOutputs(events []string) []string {
	var out []string
	var pos, data string
	flush := func() {
		if pos != "" {
			out = append(out, fmt.Sprintf("O %s %q", pos, data))
			pos, data = "", ""
		}
	}
	for _, ev := range events {
		if !strings.HasPrefix(ev, "O ") {
			flush()
			out = append(out, ev)
			continue
		}
		p, q, _ := strings.Cut(ev[2:], " ")
		var s string
		fmt.Sscanf(q, "%q", &s)
		if pos != "" && strings.Split(p, ":")[0] != strings.Split(pos, ":")[0] {
			flush()
		}
		pos, data = p, data+s
	}
	flush()
	return out
}

func TestParsePosition(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in string
		ok bool
	}{{"1:0", true}, {"12:345", true}, {"0:0", false}, {"1:-1", false}, {"01:2", false}, {"1", false}, {"a:b", false}, {"", false}, {"1:2:3", false}} {
		p, err := ParsePosition(tt.in)
		if (err == nil) != tt.ok || (tt.ok && p.String() != tt.in) {
			t.Errorf("ParsePosition(%q) = %v, %v; want ok %v", tt.in, p, err, tt.ok)
		}
		if err != nil && failure.KindOf(err) != failure.Invalid {
			t.Errorf("ParsePosition(%q): kind %q, want Invalid", tt.in, failure.KindOf(err))
		}
	}
}

// TestFollowQueuedListsNoPods: while the Job is suspended and has had no
// pod (held for its record, or queued), a follow reads only the Job; once
// resumed it lists the pods and streams.
func TestFollowQueuedListsNoPods(t *testing.T) {
	t.Parallel()
	job := ownedJob("e1", "u-now")
	job.Spec.Suspend = ptr.To(true)
	kube := fake.NewClientset(job)
	logs := lifecycletest.NewLogs()
	s := &Store{Client: kube, Namespace: ns, PodLogs: logs}
	sink := &recSink{}
	run := startFollow(context.Background(), s, Position{}, sink)

	time.Sleep(50 * time.Millisecond) // about ten looks
	gets, lists := 0, 0
	for _, a := range kube.Actions() {
		switch {
		case a.Matches("get", "jobs"):
			gets++
		case a.Matches("list", "pods"):
			lists++
		}
	}
	if gets < 2 || lists != 0 {
		t.Fatalf("while queued: %d job reads, %d pod lists; want several reads and no list", gets, lists)
	}

	ctx := context.Background()
	job.Spec.Suspend = ptr.To(false)
	if _, err := kube.BatchV1().Jobs(ns).Update(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	job.Status.Active = 1
	if _, err := kube.BatchV1().Jobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	runToSuccess(t, kube, logs, sink, run)
}

// TestFollowWaitsOnTheWatch: with a Watch, a follow waiting for its runner
// (its pod created, not started) reads the Job and pods from the Watch: no
// GET or LIST per look; it still follows the runner once it starts and
// ends with the Job, reading the finished Job from the API.
func TestFollowWaitsOnTheWatch(t *testing.T) {
	t.Parallel()
	job := ownedJob("e1", "u-now")
	job.Status.Active = 1
	kube := fake.NewClientset(job, pod("p1", "u-now", 0, corev1.PodPending, "", ""))
	watch, err := NewWatch(kube, ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watch.Run(ctx)
	// A replica that serves no waiting follow watches nothing.
	time.Sleep(20 * time.Millisecond)
	for _, a := range kube.Actions() {
		if a.GetVerb() == "list" || a.GetVerb() == "watch" {
			t.Fatalf("the Watch started before any follow needed it: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	logs := lifecycletest.NewLogs()
	s := &Store{Client: kube, Namespace: ns, PodLogs: logs, Watch: watch}
	sink := &recSink{}
	run := startFollow(context.Background(), s, Position{}, sink)
	// The follow's first look starts the Watch, and reads the API until
	// it has synced.
	for !watch.synced() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // a look that began before the sync ends
	before := len(kube.Actions())
	time.Sleep(50 * time.Millisecond) // about ten looks
	for _, a := range kube.Actions()[before:] {
		if a.Matches("get", "jobs") || a.Matches("list", "pods") {
			t.Fatalf("a follow waiting with a synced Watch called the API: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}

	runToSuccess(t, kube, logs, sink, run)
}

// runToSuccess starts the runner of pod p1 (Job u-now), which prints a
// line and exits 0, and checks that the follow delivers the line and ends
// Succeeded with that exit code.
func runToSuccess(t *testing.T, kube *fake.Clientset, logs *lifecycletest.Logs, sink *recSink, run *followRun) {
	t.Helper()
	setPod(t, kube, pod("p1", "u-now", 0, corev1.PodRunning, "runner", "running"))
	logs.Write("p1", "hello\n")
	sink.waitFor(t, "hello\n")
	logs.End("p1")
	setPod(t, kube, pod("p1", "u-now", 0, corev1.PodSucceeded, "runner", "exit 0"))
	finishJob(t, kube, batchv1.JobComplete)
	run.wait(t)
	if run.err != nil || run.end.State != StateSucceeded || run.end.ExitCode == nil || *run.end.ExitCode != 0 {
		t.Fatalf("Follow = %+v, %v; want Succeeded, exit code 0", run.end, run.err)
	}
}
