package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle/lifecycletest"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

const followUID = types.UID("u-e1")

// followEnv is the backend serving experiment e1 over a fake clientset
// whose pod logs the test writes (lifecycletest.Logs), optionally with
// history in SQLite.
type followEnv struct {
	kube    *fake.Clientset
	logs    *lifecycletest.Logs
	store   history.Store
	metrics *metrics.Metrics
	srv     *httptest.Server
}

func newFollowEnv(t *testing.T, withHistory bool, cfg Config) *followEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	e := &followEnv{kube: fake.NewClientset(), logs: lifecycletest.NewLogs(), metrics: metrics.New()}
	svc := &experiments.Service{Live: &lifecycle.Store{Client: e.kube, Namespace: ns, PodLogs: e.logs}}
	if withHistory {
		store, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "history.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		e.store, svc.History = store, store
	}
	cfg.Experiments, cfg.Metrics, cfg.Logger = svc, e.metrics, slog.New(slog.DiscardHandler)
	if cfg.FollowPoll == 0 {
		cfg.FollowPoll = 5 * time.Millisecond
	}
	e.srv = httptest.NewServer(NewHandler(cfg))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *followEnv) job(t *testing.T) {
	t.Helper()
	_, err := e.kube.BatchV1().Jobs(ns).Create(context.Background(), &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: jobspec.JobName("e1"), Namespace: ns, UID: followUID,
		Labels:      map[string]string{jobspec.LabelManagedBy: jobspec.LabelManagedByName},
		Annotations: map[string]string{jobspec.AnnotationID: "e1"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// pod creates or updates attempt name, created at 1000+sec, its runner
// running, or ended with exit code exit (>= 0).
func (e *followEnv) pod(t *testing.T, name string, sec int64, exit int32) {
	t.Helper()
	cs := corev1.ContainerStatus{Name: "runner", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	phase := corev1.PodRunning
	if exit >= 0 {
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit}}
		phase = corev1.PodSucceeded
		if exit > 0 {
			phase = corev1.PodFailed
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.Unix(1000+sec, 0),
			Labels:            map[string]string{batchv1.ControllerUidLabel: string(followUID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: jobspec.JobName("e1"), UID: followUID,
				Controller: new(true)}},
		},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{cs}},
	}
	ctx := context.Background()
	if _, err := e.kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		if _, err := e.kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *followEnv) finish(t *testing.T, cond batchv1.JobConditionType) {
	t.Helper()
	ctx := context.Background()
	job, err := e.kube.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName("e1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue, Reason: "Done"}}
	if _, err := e.kube.BatchV1().Jobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// removeJob deletes the Job and its pods, as its TTL does.
func (e *followEnv) removeJob(t *testing.T, pods ...string) {
	t.Helper()
	ctx := context.Background()
	if err := e.kube.BatchV1().Jobs(ns).Delete(ctx, jobspec.JobName("e1"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if err := e.kube.CoreV1().Pods(ns).Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.logs.Remove(p)
	}
}

// record stores e1's final record with output, as the recorder does.
func (e *followEnv) record(t *testing.T, state string, output string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := e.store.Claim(ctx, history.Record{ID: "e1", Hash: "h", Namespace: ns, Job: jobspec.JobName("e1"), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	code := int32(0)
	if _, err := e.store.Finish(ctx, history.Record{ID: "e1", State: state, ExitCode: &code}, []byte(output)); err != nil {
		t.Fatal(err)
	}
}

// get starts GET .../logs?follow=true; accept "" asks for plain text.
func (e *followEnv) get(t *testing.T, ctx context.Context, accept, lastID string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/experiments/e1/logs?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// sseEvent is one parsed event; comments count as events named ":".
type sseEvent struct {
	name, id, data string
	hasID          bool
}

// sseReader parses an event stream as a browser does.
type sseReader struct {
	r *bufio.Reader
}

func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data == nil && ev.name == "" {
				continue
			}
			ev.data = strings.Join(data, "\n")
			if ev.name == "" {
				ev.name = "message"
			}
			return ev, nil
		case strings.HasPrefix(line, ":"):
			return sseEvent{name: ":", data: line}, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "id":
			ev.id, ev.hasID = value, true
		case "data":
			data = append(data, value)
		}
	}
}

// readAll reads events until the stream ends, skipping comments.
func readAll(t *testing.T, body io.Reader) []sseEvent {
	t.Helper()
	s := &sseReader{r: bufio.NewReader(body)}
	var evs []sseEvent
	for {
		ev, err := s.next()
		if err != nil {
			return evs
		}
		if ev.name != ":" {
			evs = append(evs, ev)
		}
	}
}

// text is what a plain follow would have sent: attempt lines and output.
// Attempt lines are shown as [attempt N], since their phase changes.
func text(evs []sseEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		switch ev.name {
		case "message":
			b.WriteString(ev.data)
		case "attempt":
			a, _, _ := strings.Cut(ev.id, ":")
			fmt.Fprintf(&b, "[attempt %s]\n", a)
		}
	}
	return b.String()
}

// TestPlainFollowEndsWithTheJob: plain text, sent as the runner writes it,
// ending cleanly once the Job finished and the log ended.
func TestPlainFollowEndsWithTheJob(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	res := e.get(t, context.Background(), "", "")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != textPlain {
		t.Fatalf("follow = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(res.Body)
	e.logs.Write("p1", "first\n")
	if line, err := r.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("first line = %q, %v; want it before the runner ends", line, err)
	}
	e.logs.Write("p1", "last\n")
	e.logs.End("p1")
	e.pod(t, "p1", 0, 0)
	e.finish(t, batchv1.JobComplete)
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "last\n" {
		t.Errorf("rest = %q, %v; want the last line and a clean end", rest, err)
	}
}

// TestSSEFollow: the event stream's framing: retry, output split into data
// lines (CR and CRLF as line ends), attempt events, positions as ids, and
// done with the outcome.
func TestSSEFollow(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{})
	e.job(t)
	e.pod(t, "p1", 0, 1)
	e.pod(t, "p2", 10, 0)
	e.logs.Write("p1", "a\r\nb\rc")
	e.logs.End("p1")
	e.logs.Write("p2", "ok\n")
	e.logs.End("p2")
	e.finish(t, batchv1.JobComplete)
	res := e.get(t, context.Background(), "text/html, text/event-stream;q=0.9", "")
	body, _ := io.ReadAll(res.Body)
	want := "retry: 2000\n\n" +
		"event: attempt\nid: 1:0\ndata: ==> attempt 1 of 2: pod p1 (Failed, exit 1) <==\n\n" +
		"id: 1:6\ndata: a\ndata: b\ndata: c\n\n" +
		"id: 1:7\ndata: \ndata: \n\n" +
		"event: attempt\nid: 2:0\ndata: ==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\n\n" +
		"id: 2:3\ndata: ok\ndata: \n\n" +
		"event: done\ndata: {\"state\":\"Succeeded\",\"reason\":\"Done\",\"exitCode\":0,\"source\":\"job\"}\n\n"
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") || string(body) != want {
		t.Errorf("SSE follow = %d %s\n%s\nwant\n%s", res.StatusCode, res.Header.Get("Content-Type"), body, want)
	}
}

// TestSSEResume: a client reconnecting with the id of any event it got
// receives exactly the rest: no byte twice, none missing, also when the
// Job is gone by then and the record answers.
func TestSSEResume(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, true, Config{})
	e.job(t)
	e.pod(t, "p1", 0, 1)
	e.pod(t, "p2", 10, -1)
	e.logs.Write("p1", "ab\ncd")
	e.logs.End("p1")
	e.logs.Write("p2", "ef\n")

	// A first client follows the live pods and drops after "ef".
	ctx, cancel := context.WithCancel(context.Background())
	s := &sseReader{r: bufio.NewReader(e.get(t, ctx, "text/event-stream", "").Body)}
	var live []sseEvent
	for !strings.HasSuffix(text(live), "ef\n") {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("live follow ended after %q: %v", text(live), err)
		}
		if ev.name != ":" {
			live = append(live, ev)
		}
	}
	cancel()

	// Then the runner goes on and ends; the recorder stores the output;
	// the TTL removes the Job and its pods.
	e.logs.Write("p2", "gh\n")
	e.logs.End("p2")
	e.pod(t, "p2", 10, 0)
	e.finish(t, batchv1.JobComplete)
	e.record(t, history.StateSucceeded, "==> attempt 1 of 2: pod p1 (Failed, exit 1) <==\nab\ncd\n"+
		"==> attempt 2 of 2: pod p2 (Succeeded, exit 0) <==\nef\ngh\n")
	e.removeJob(t, "p1", "p2")

	const full = "[attempt 1]\nab\ncd\n[attempt 2]\nef\ngh\n"
	for i, ev := range live {
		if !ev.hasID {
			t.Fatalf("live event %d (%s) has no id", i, ev.name)
		}
		rest := readAll(t, e.get(t, context.Background(), "text/event-stream", ev.id).Body)
		if got := text(live[:i+1]) + text(rest); got != full {
			t.Errorf("resumed at %s: the client has %q", ev.id, got)
		}
		if last := rest[len(rest)-1]; last.name != "done" || !strings.Contains(last.data, `"source":"history"`) || !strings.Contains(last.data, `"state":"Succeeded"`) {
			t.Errorf("resumed at %s: last event %+v, want done from history", ev.id, last)
		}
	}
}

// TestSSEFollowSwitchesToTheRecord: the Job removed while a client follows
// it: the same stream goes on from the stored output, without repeats.
func TestSSEFollowSwitchesToTheRecord(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, true, Config{})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	e.logs.Write("p1", "a\n")
	s := &sseReader{r: bufio.NewReader(e.get(t, context.Background(), "text/event-stream", "").Body)}
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.name == "message" {
			break
		}
	}
	e.record(t, history.StateCancelled, "a\nb\n")
	e.removeJob(t, "p1")
	var rest []sseEvent
	for {
		ev, err := s.next()
		if err != nil {
			break
		}
		if ev.name != ":" {
			rest = append(rest, ev)
		}
	}
	if len(rest) != 2 || rest[0].data != "b\n" || rest[0].id != "1:4" || rest[1].name != "done" || !strings.Contains(rest[1].data, `"state":"Cancelled"`) {
		t.Errorf("after the switch: %+v; want b and done Cancelled", rest)
	}
}

// TestSSEHeartbeat: a comment at each interval while the runner is silent.
func TestSSEHeartbeat(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{Heartbeat: 10 * time.Millisecond})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	s := &sseReader{r: bufio.NewReader(e.get(t, context.Background(), "text/event-stream", "").Body)}
	pings := 0
	for pings < 3 {
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.name == ":" && ev.data == ": ping" {
			pings++
		}
	}
}

// TestFollowRefusals: what a follow answers before it streams.
func TestFollowRefusals(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{})
	for _, tt := range []struct {
		name, query, lastID string
		code                int
		says                string
	}{
		{"unknown experiment", "follow=true", "", http.StatusNotFound, "not found"},
		{"follow not a boolean", "follow=yes-please", "", http.StatusBadRequest, "follow"},
		{"bad Last-Event-ID", "follow=1", "banana", http.StatusBadRequest, "Last-Event-ID"},
	} {
		req := httptest.NewRequest(http.MethodGet, "/experiments/e1/logs?"+tt.query, nil)
		req.Header.Set("Accept", "text/event-stream")
		if tt.lastID != "" {
			req.Header.Set("Last-Event-ID", tt.lastID)
		}
		rec := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(rec, req)
		if rec.Code != tt.code || !strings.Contains(errorMessage(t, rec), tt.says) {
			t.Errorf("%s: %d %s; want %d saying %q", tt.name, rec.Code, rec.Body, tt.code, tt.says)
		}
	}
}

// TestLogFollowsAreBounded: beyond --max-log-follows a follow is refused
// with 429, apart from the bound of plain reads; the gauge counts them.
func TestLogFollowsAreBounded(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{MaxLogFollows: 1, MaxLogReads: 1})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	e.logs.Write("p1", "x\n")
	first := e.get(t, context.Background(), "", "")
	if line, _ := bufio.NewReader(first.Body).ReadString('\n'); line != "x\n" {
		t.Fatalf("first follow = %q", line)
	}
	second := e.get(t, context.Background(), "text/event-stream", "")
	var body wire.Error
	json.NewDecoder(second.Body).Decode(&body)
	if second.StatusCode != http.StatusTooManyRequests || second.Header.Get("Retry-After") == "" || !strings.Contains(body.Error, "1 log follows are being served already (--max-log-follows)") {
		t.Errorf("a follow beyond the bound = %d %+v, want 429 naming --max-log-follows", second.StatusCode, body)
	}
	res, err := e.srv.Client().Get(e.srv.URL + "/experiments/e1/logs")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("a plain read while the follow runs = %v, %v; want 200", res, err)
	} else {
		res.Body.Close()
	}
	if !strings.Contains(scrape(t, e), "gmini_log_followers 1") {
		t.Errorf("metrics lack gmini_log_followers 1")
	}
}

func scrape(t *testing.T, e *followEnv) string {
	t.Helper()
	res, err := e.srv.Client().Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestFollowReleasesEverything: clients that go away mid-follow leave no
// goroutine behind (the follow, its log stream, the heartbeat), and the
// gauge returns to 0. Not parallel: it counts the process's goroutines.
func TestFollowReleasesEverything(t *testing.T) {
	e := newFollowEnv(t, false, Config{Heartbeat: 5 * time.Millisecond})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	e.logs.Write("p1", "x\n")
	e.srv.Client().Transport.(*http.Transport).DisableKeepAlives = true
	goruntime.GC()
	before := goruntime.NumGoroutine()
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		accept := ""
		if i%2 == 0 {
			accept = "text/event-stream"
		}
		res := e.get(t, ctx, accept, "")
		buf := make([]byte, 1)
		if _, err := res.Body.Read(buf); err != nil {
			t.Fatal(err)
		}
		cancel()
		res.Body.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := goruntime.NumGoroutine()
		if n <= before && strings.Contains(scrape(t, e), "gmini_log_followers 0") {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the follows:\n%s", n, before, buf[:goruntime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFollowEndsOnShutdown: a backend shutting down ends its follows, so
// the drain does not wait for them.
func TestFollowEndsOnShutdown(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	e := newFollowEnv(t, false, Config{Done: done})
	e.job(t)
	e.pod(t, "p1", 0, -1)
	res := e.get(t, context.Background(), "text/event-stream", "")
	ended := make(chan []sseEvent)
	go func() { ended <- readAll(t, res.Body) }()
	close(done)
	select {
	case evs := <-ended:
		for _, ev := range evs {
			if ev.name == "done" {
				t.Errorf("a follow cut by shutdown sent done: %+v", evs)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the follow outlived the shutdown")
	}
}

// TestFollowIsAuthorizedAsGet: with --auth kubernetes a follow needs get
// on the experiment, as GET .../logs does.
func TestFollowIsAuthorizedAsGet(t *testing.T) {
	t.Parallel()
	api := newReviewServer(t)
	reviewer, err := auth.New(api.client, ns, []string{"gmini"})
	if err != nil {
		t.Fatal(err)
	}
	e := newFollowEnv(t, false, Config{Auth: reviewer})
	for _, tt := range []struct {
		token string
		code  int
	}{{"", http.StatusUnauthorized}, {"good", http.StatusNotFound}} {
		req := httptest.NewRequest(http.MethodGet, "/experiments/e1/logs?follow=true", nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(rec, req)
		if rec.Code != tt.code {
			t.Errorf("token %q: %d %s, want %d", tt.token, rec.Code, rec.Body, tt.code)
		}
	}
	if got := api.reviews(); len(got) != 1 || got[0] != auth.VerbGet+" experiments e1" {
		t.Errorf("reviews = %v, want one get of e1", got)
	}
}

// TestFollowFailingMidway: a follow that cannot go on (the API server
// keeps failing) cuts a plain stream off, so the client sees an error, not
// a clean end; an SSE stream gets an error event and no done, so the
// client resumes.
func TestFollowFailingMidway(t *testing.T) {
	t.Parallel()
	for _, sse := range []bool{false, true} {
		t.Run(fmt.Sprint("sse=", sse), func(t *testing.T) {
			t.Parallel()
			e := newFollowEnv(t, false, Config{})
			e.job(t)
			e.pod(t, "p1", 0, -1)
			e.logs.Write("p1", "x\n")
			accept := ""
			if sse {
				accept = "text/event-stream"
			}
			res := e.get(t, context.Background(), accept, "")
			r := bufio.NewReader(res.Body)
			for { // until the output: the log is open by then
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if line == "x\n" || line == "data: x\n" {
					break
				}
			}
			e.kube.PrependReactor("get", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
			})
			e.logs.Break("p1")
			rest, err := io.ReadAll(r)
			if !sse {
				if err == nil {
					t.Errorf("plain follow ended cleanly after %q; want a cut-off stream", rest)
				}
				return
			}
			if err != nil || !strings.Contains(string(rest), "event: error\ndata: {\"error\":") || strings.Contains(string(rest), "event: done") {
				t.Errorf("SSE follow ended with %q, %v; want an error event and no done", rest, err)
			}
		})
	}
}

// TestFollowOutlivesReadTimeout: the server's ReadTimeout (30 s in the
// backend) does not end a follow that lasts longer (net/http lifts it once
// a GET's request is read), and a kept-alive connection serves its next
// request after the follow, without the follow's write deadline.
func TestFollowOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	e := newFollowEnv(t, false, Config{})
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Config.ReadTimeout = 50 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	e.srv = srv
	e.job(t)
	e.pod(t, "p1", 0, -1)
	res := e.get(t, context.Background(), "", "")
	r := bufio.NewReader(res.Body)
	for i := range 3 {
		time.Sleep(60 * time.Millisecond)
		e.logs.Write("p1", fmt.Sprintf("line %d\n", i))
		if line, err := r.ReadString('\n'); err != nil || line != fmt.Sprintf("line %d\n", i) {
			t.Fatalf("after %d ms: %q, %v", (i+1)*60, line, err)
		}
	}
	e.logs.End("p1")
	e.pod(t, "p1", 0, 0)
	e.finish(t, batchv1.JobComplete)
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("end = %q, %v", rest, err)
	}
	again, err := srv.Client().Get(srv.URL + "/experiments/e1")
	if err != nil || again.StatusCode != http.StatusOK {
		t.Errorf("the next request = %v, %v", again, err)
	} else {
		again.Body.Close()
	}
}
