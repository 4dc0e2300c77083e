package recorder

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

const ns = "gmini-test"

type fixture struct {
	client  *fake.Clientset
	store   history.Store
	metrics *metrics.Metrics
	cfg     Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	client := fake.NewClientset()
	st, err := history.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "h.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := metrics.New()
	live := &lifecycle.Store{Client: client, Namespace: ns}
	return &fixture{client: client, store: st, metrics: m, cfg: Config{
		Client: client, Namespace: ns, Store: st, Output: live.Capture, Metrics: m,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Retention: time.Hour,
		LeaseName: "test-recorder", Identity: "replica-a", Workers: 2, Now: time.Now,
	}}
}

// job is experiment id's Job as the backend makes it with history on.
func job(t *testing.T, id string) *batchv1.Job {
	t.Helper()
	tmpl := &batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
		TTLSecondsAfterFinished: ptr.To[int32](60),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "runner", Image: "gmini-runner:test"}},
		}},
	}}
	j, err := jobspec.Build(tmpl, ns, id, "hash-"+id, []byte(`{"experiment":{"id":"`+id+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	jobspec.HoldForHistory(j)
	j.UID = types.UID("uid-" + id)
	j.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	return j
}

// pod is the Job's runner pod, ended with exit code.
func pod(j *batchv1.Job, exit int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: j.Name + "-abcde", Namespace: ns,
			Labels:          map[string]string{batchv1.ControllerUidLabel: string(j.UID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: j.Name, UID: j.UID, Controller: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
		Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "runner", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit}},
		}}},
	}
}

func complete(j *batchv1.Job, typ batchv1.JobConditionType) {
	now := metav1.Now()
	j.Status.StartTime = &now
	j.Status.CompletionTime = &now
	j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, Reason: "Test", LastTransitionTime: now})
}

// record waits until the record of id satisfies ok.
func (f *fixture) record(t *testing.T, id string, ok func(history.Record) bool) history.Record {
	t.Helper()
	var last history.Record
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		rec, err := f.store.Get(ctx, id)
		last = rec
		return err == nil && ok(rec), nil
	})
	if err != nil {
		t.Fatalf("record of %s never as expected; last %+v", id, last)
	}
	return last
}

func (f *fixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); newRecorder(f.cfg).run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestRecordsAnExperimentToTheEnd(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.start(t)
	j := job(t, "done-1")
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := f.record(t, "done-1", func(r history.Record) bool { return r.State == history.StatePending })
	if rec.JobUID != "uid-done-1" || rec.Hash != "hash-done-1" || rec.Job != j.Name {
		t.Errorf("pending record = %+v", rec)
	}

	// It finishes: the output is stored with the outcome, then the Job is
	// released: finalizer gone, the template's TTL back.
	if _, err := f.client.CoreV1().Pods(ns).Create(ctx, pod(j, 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	complete(j, batchv1.JobComplete)
	if _, err := f.client.BatchV1().Jobs(ns).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec = f.record(t, "done-1", func(r history.Record) bool { return r.State == history.StateSucceeded })
	if !rec.HasLogs || rec.ExitCode == nil || *rec.ExitCode != 0 || rec.FinishedAt == nil {
		t.Errorf("final record = %+v", rec)
	}
	logs, err := f.store.Logs(ctx, "done-1")
	if err != nil || string(logs) != "fake logs" { // what the fake clientset streams
		t.Errorf("stored output = %q, %v", logs, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := f.client.BatchV1().Jobs(ns).Get(ctx, j.Name, metav1.GetOptions{})
		return err == nil && !jobspec.Held(got) && got.Spec.TTLSecondsAfterFinished != nil && *got.Spec.TTLSecondsAfterFinished == 60, nil
	})
	if err != nil {
		t.Errorf("job not released after its record was stored: %v", err)
	}
	if got := testutil.ToFloat64(f.metrics.RecordsWritten.WithLabelValues(history.StateSucceeded)); got != 1 {
		t.Errorf("records written as Succeeded = %v, want 1", got)
	}
	if testutil.CollectAndCount(f.metrics.CaptureLag) != 1 {
		t.Error("no capture lag observed")
	}
}

func TestRecordsACancelledExperiment(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	j := job(t, "gone-1")
	now := metav1.Now()
	j.DeletionTimestamp = &now // deleted while running; our finalizer holds it
	j.Status.Active = 1
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	rec := f.record(t, "gone-1", func(r history.Record) bool { return r.State == history.StateCancelled })
	if rec.FinishedAt == nil || rec.Reason != "Cancelled" {
		t.Errorf("cancelled record = %+v", rec)
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := f.client.BatchV1().Jobs(ns).Get(ctx, j.Name, metav1.GetOptions{})
		// Only the finalizer goes: a Job being deleted gets no TTL.
		return err == nil && !jobspec.Held(got) && got.Spec.TTLSecondsAfterFinished == nil, nil
	})
	if err != nil {
		t.Errorf("cancelled job not released: %v", err)
	}
}

// A recorder that starts after the Job finished (the backend was down)
// still records it, output included: the Job waited for it.
func TestRecordsWhatFinishedWhileNoneRecorded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	j := job(t, "late-1")
	complete(j, batchv1.JobFailed)
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.CoreV1().Pods(ns).Create(ctx, pod(j, 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	rec := f.record(t, "late-1", func(r history.Record) bool { return r.State == history.StateFailed })
	if rec.ExitCode == nil || *rec.ExitCode != 3 || !rec.HasLogs {
		t.Errorf("record = %+v", rec)
	}
}

func TestExpiresOldRecords(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	old := time.Now().Add(-2 * time.Hour)
	recent := time.Now().Add(-time.Minute)
	for id, at := range map[string]time.Time{"old": old, "recent": recent} {
		if _, err := f.store.Finish(ctx, history.Record{ID: id, State: history.StateSucceeded, CreatedAt: at, FinishedAt: &at}, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	f.start(t)
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := f.store.Get(ctx, "old")
		return err != nil, nil
	})
	if err != nil {
		t.Error("a record past the retention (1h) is still there")
	}
	if _, err := f.store.Get(ctx, "recent"); err != nil {
		t.Errorf("a record within the retention is gone: %v", err)
	}
	if got := testutil.ToFloat64(f.metrics.RecordsExpired); got != 1 {
		t.Errorf("records expired = %v, want 1", got)
	}
}

// Run takes the lease before it records, and gives it up when stopped.
func TestRunHoldsTheLease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(t)
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, f.cfg) }()
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, job(t, "leased-1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.record(t, "leased-1", func(r history.Record) bool { return r.State == history.StatePending })
	lease, err := f.client.CoordinationV1().Leases(ns).Get(ctx, "test-recorder", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "replica-a" {
		t.Errorf("lease = %+v, %v; want held by replica-a", lease, err)
	}
	if testutil.ToFloat64(f.metrics.Leader) != 1 {
		t.Error("leader gauge is not 1 while recording")
	}
	cancel()
	<-done
	lease, err = f.client.CoordinationV1().Leases(ns).Get(context.Background(), "test-recorder", metav1.GetOptions{})
	if err != nil || (lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "") {
		t.Errorf("lease after stop = %+v, %v; want released", lease.Spec, err)
	}
}

func TestSlimJobKeepsWhatRecordingReads(t *testing.T) {
	ttl := int32(60)
	now := metav1.Now()
	base := func() *batchv1.Job {
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{
				Name: "exp-a-1", Namespace: "ns", UID: "u1", ResourceVersion: "42", CreationTimestamp: now,
				Labels: map[string]string{"app": "gmini", jobspec.LabelManagedBy: jobspec.LabelManagedByName, "team": "x"},
				Annotations: map[string]string{
					jobspec.AnnotationID: "a", jobspec.AnnotationHash: "h", jobspec.AnnotationSubmitter: "alice",
					"kubectl.kubernetes.io/last-applied-configuration": "{}",
				},
				Finalizers:    []string{jobspec.FinalizerHistory},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "gmini-backend"}},
			},
			Spec: batchv1.JobSpec{
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "runner", Args: []string{`{"experiment":{"id":"a"}}`}},
				}}},
			},
			Status: batchv1.JobStatus{
				StartTime: &now, Active: 1, UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{Succeeded: []types.UID{"p"}},
			},
		}
	}
	tests := []struct {
		name string
		job  func() *batchv1.Job
	}{
		{"running", base},
		{"finished, held, its TTL kept aside", func() *batchv1.Job {
			j := base()
			j.Annotations[jobspec.AnnotationTTL] = "60"
			j.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "Done", Message: "m", LastTransitionTime: now},
			}}
			return j
		}},
		{"cancelled", func() *batchv1.Job { j := base(); j.DeletionTimestamp = &now; return j }},
		{"released, TTL restored", func() *batchv1.Job {
			j := base()
			j.Finalizers = nil
			j.Labels[jobspec.LabelRecorded] = "true"
			j.Annotations[jobspec.AnnotationTTL] = "60"
			j.Spec.TTLSecondsAfterFinished = &ttl
			return j
		}},
		{"suspended", func() *batchv1.Job { j := base(); j.Spec.Suspend = ptr.To(true); return j }},
		{"in a set", func() *batchv1.Job { j := base(); j.Labels[jobspec.LabelSet] = "sweep-1"; return j }},
		{"queued", func() *batchv1.Job { j := base(); jobspec.SetQueue(j, "team-a"); return j }},
		{"held under a queue", func() *batchv1.Job { j := base(); jobspec.SetQueue(j, "team-a"); jobspec.HoldForSubmit(j); return j }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := tt.job()
			got, err := slimJob(job)
			if err != nil {
				t.Fatal(err)
			}
			c, ok := got.(*cachedJob)
			if !ok {
				t.Fatalf("slimJob returned %T, want *cachedJob", got)
			}
			slim := c.job()
			id, owned := jobspec.Owns(job)
			sid, sowned := jobspec.Owns(slim)
			if id != sid || owned != sowned {
				t.Errorf("Owns: %q %v from the Job, %q %v from the cache", id, owned, sid, sowned)
			}
			if d := cmp.Diff(recordOf(id, job), recordOf(id, slim)); d != "" {
				t.Errorf("record differs (-job +cache):\n%s", d)
			}
			if jobspec.Held(job) != jobspec.Held(slim) || jobspec.Released(job) != jobspec.Released(slim) || finished(job) != finished(slim) {
				t.Error("held, released or finished differ between the Job and the cache")
			}
			want, werr := jobspec.ReleasePatch(job)
			have, herr := jobspec.ReleasePatch(slim)
			if string(want) != string(have) || (werr == nil) != (herr == nil) {
				t.Errorf("release patch %s (%v) from the Job, %s (%v) from the cache", want, werr, have, herr)
			}
			if len(slim.Spec.Template.Spec.Containers) != 0 || slim.ManagedFields != nil || slim.Labels["team"] != "" ||
				len(slim.Annotations) > len(recordedAnnotations) || slim.Status.UncountedTerminatedPods != nil {
				t.Errorf("the cache keeps what recording never reads: %+v", slim)
			}
			if len(job.Spec.Template.Spec.Containers) != 1 || job.ManagedFields == nil {
				t.Error("slimJob changed the Job it was given")
			}
			// Objects already in the cache may be handed to the
			// transform again (Replace).
			if again, _ := slimJob(c); again != any(c) {
				t.Errorf("a cached Job is transformed again: %v", again)
			}
		})
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/exp-a", Obj: &cachedJob{}}
	if got, _ := slimJob(tomb); got != any(tomb) {
		t.Errorf("a tombstone is not passed through: %v", got)
	}
}

// A Job whose finalizer someone removed by hand is still recorded when it
// finishes, and released as any other: the recorded label and its TTL.
func TestRecordsAJobWhoseFinalizerWasRemoved(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.start(t)
	j := job(t, "bare-1")
	j.Finalizers = nil
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.record(t, "bare-1", func(r history.Record) bool { return r.State == history.StatePending })
	complete(j, batchv1.JobComplete)
	if _, err := f.client.BatchV1().Jobs(ns).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.record(t, "bare-1", func(r history.Record) bool { return r.State == history.StateSucceeded })
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := f.client.BatchV1().Jobs(ns).Get(ctx, j.Name, metav1.GetOptions{})
		return err == nil && jobspec.Released(got) && got.Spec.TTLSecondsAfterFinished != nil && *got.Spec.TTLSecondsAfterFinished == 60, nil
	})
	if err != nil {
		t.Errorf("job without its finalizer not released after its record was stored: %v", err)
	}
}

// A Job deleted without its finalizer leaves no Job to record: its record
// is closed (Cancelled), never left Running.
func TestClosesTheRecordOfAJobDeletedUnrecorded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.start(t)
	j := job(t, "bare-2")
	j.Finalizers = nil
	j.Status.Active, j.Status.Ready = 1, ptr.To[int32](1)
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.record(t, "bare-2", func(r history.Record) bool { return r.State == history.StateRunning })
	if err := f.client.BatchV1().Jobs(ns).Delete(ctx, j.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := f.record(t, "bare-2", func(r history.Record) bool { return history.Final(r.State) })
	if rec.State != history.StateCancelled || rec.Reason != "JobDeleted" || rec.FinishedAt == nil {
		t.Errorf("record of a job deleted unrecorded = %+v; want Cancelled, reason JobDeleted", rec)
	}
}

// A record left unfinished by a Job that went while no replica recorded is
// closed when a recorder starts; one whose Job exists is left alone.
func TestClosesRecordsOfJobsLostWhileNoneRecorded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	for _, rec := range []history.Record{
		{ID: "lost-1", Namespace: ns, Job: jobspec.JobName("lost-1"), State: history.StateRunning},
		{ID: "here-1", Namespace: ns, Job: jobspec.JobName("here-1"), State: history.StateRunning},
	} {
		if err := f.store.Update(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	here := job(t, "here-1")
	here.Status.Active, here.Status.Ready = 1, ptr.To[int32](1)
	if _, err := f.client.BatchV1().Jobs(ns).Create(ctx, here, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	rec := f.record(t, "lost-1", func(r history.Record) bool { return history.Final(r.State) })
	if rec.State != history.StateCancelled || rec.Reason != "JobDeleted" {
		t.Errorf("record of a lost job = %+v; want Cancelled, reason JobDeleted", rec)
	}
	if got, err := f.store.Get(ctx, "here-1"); err != nil || got.State != history.StateRunning {
		t.Errorf("record of a job still there = %+v, %v; want Running", got, err)
	}
}

// WhileLeading runs only while the lease is held, and ends with it.
func TestWhileLeadingRunsWithTheLease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(t)
	started, ended := make(chan struct{}), make(chan struct{})
	f.cfg.WhileLeading = func(lctx context.Context) {
		lease, err := f.client.CoordinationV1().Leases(ns).Get(lctx, "test-recorder", metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "replica-a" {
			t.Errorf("WhileLeading runs with lease %+v, %v; want it held by replica-a", lease, err)
		}
		close(started)
		<-lctx.Done()
		close(ended)
	}
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, f.cfg) }()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("WhileLeading did not start")
	}
	cancel()
	<-done
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("WhileLeading still runs after the lease was given up")
	}
}
