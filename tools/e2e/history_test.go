//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/deploy"
	"github.com/gmini-dev/gmini/tools/internal/jobtrack"
)

// historyTTL replaces the template's ttlSecondsAfterFinished (60 s in
// dev) while these tests run, so waiting for the TTL costs seconds.
const historyTTL = 5

// setTemplateTTL patches the runner template's TTL.
func setTemplateTTL(ctx context.Context, t *testing.T, cfg *envconf.Config, seconds int) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"jobTemplate":{"spec":{"ttlSecondsAfterFinished":%d}}}}`, seconds)
	if _, err := clientset(t, cfg).BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set the template's TTL to %d s: %v", seconds, err)
	}
}

// waitJob waits until cond holds for the experiment's Job (nil once gone).
func waitJob(ctx context.Context, t *testing.T, cfg *envconf.Config, id, what string, timeout time.Duration, cond func(*batchv1.Job) bool) {
	t.Helper()
	client := clientset(t, cfg)
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		j, err := client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return cond(nil), nil
		}
		if err != nil {
			return false, nil
		}
		return cond(j), nil
	})
	if err != nil {
		t.Fatalf("experiment %s: %s not within %s\n%s", id, what, timeout, explain(ctx, t, cfg))
	}
}

func complete(j *batchv1.Job) bool {
	if j == nil {
		return false
	}
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func gone(j *batchv1.Job) bool { return j == nil }

// answeredFromRecord checks what a user sees once the Job is gone: status,
// output and a retried POST all come from the record, and nothing runs
// again: one Job and one runner pod were ever created for it.
func answeredFromRecord(ctx context.Context, t *testing.T, cfg *envconf.Config, tr *jobtrack.Tracker, id string, experiment map[string]any) {
	t.Helper()
	c := backend(t, cfg)
	st, err := c.Get(ctx, id)
	if err != nil || st.Source != "history" || st.State != "Succeeded" || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Errorf("GET /experiments/%s after its Job is gone = %+v (%v), want Succeeded, exit code 0, from history", id, st, err)
	}
	var out strings.Builder
	if err := c.Logs(ctx, id, &out); err != nil || !strings.Contains(out.String(), "Running Experiment: "+id) {
		t.Errorf("logs after the Job is gone = %q (%v), want the runner's output", out.String(), err)
	}
	sub, err := c.Submit(ctx, experiment)
	if err != nil || sub.Created || sub.Source != "history" || sub.State != "Succeeded" {
		t.Errorf("retried POST after the Job is gone = %+v (%v), want 200 from history, nothing created", sub, err)
	}
	// Give a wrongly made Job and its pod time to appear.
	time.Sleep(3 * time.Second)
	if _, err := clientset(t, cfg).BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Job exists again for %s after the retried POST (err %v)", id, err)
	}
	if jobs, pods := tr.Jobs(id), tr.Pods(id); jobs != 1 || pods != 1 {
		t.Errorf("%d Jobs and %d runner pods were ever created for %s, want exactly one each", jobs, pods, id)
	}
}

func TestHistoryOutlivesTheJob(t *testing.T) {
	var tr *jobtrack.Tracker
	var probes []string // experiments posted to see new Jobs start suspended
	f := features.New("an experiment outlives its Job: status, output and retries answer from the record after the TTL").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			setTemplateTTL(ctx, t, cfg, historyTTL)
			tr = track(ctx, t, cfg, ns)
			return ctx
		}).
		Assess("finished, removed by its TTL, answered from the record", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "hist-done"
			experiment := map[string]any{"id": id, "key": "k-1"}
			if sub, err := backend(t, cfg).Submit(ctx, experiment); err != nil || !sub.Created {
				t.Fatalf("POST = %+v (%v), want 201", sub, err)
			}
			t0 := time.Now()
			waitJob(ctx, t, cfg, id, "Complete", 2*time.Minute, complete)
			done := time.Since(t0)
			waitJob(ctx, t, cfg, id, "recorded, released and removed by its TTL", 2*time.Minute, gone)
			// Released once recorded: the finalizer gone, the label that
			// takes it out of the recorder's cache, and the TTL back in the
			// same patch. The tracker's watch sees that state even when the
			// TTL controller removes the Job at once (the TTL counts from
			// the Job's end, which may be past when the record is stored),
			// where a poll could miss it; it may lag the poll that saw the
			// Job gone, hence the short wait.
			var released *batchv1.Job
			_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				released = tr.Released(id)
				return released != nil, nil
			})
			switch {
			case released == nil:
				t.Errorf("%s: its Job was removed, but the watch never saw it released (finalizer %s gone, %s=true)\n%s",
					id, jobspec.FinalizerHistory, jobspec.LabelRecorded, explain(ctx, t, cfg))
			case released.Spec.TTLSecondsAfterFinished == nil:
				t.Errorf("released Job has no TTL, want the template's back")
			}
			t.Logf("%s: Complete after %s, Job removed %s later (TTL %d s after the record)", id, done.Round(100*time.Millisecond),
				(time.Since(t0) - done).Round(100*time.Millisecond), historyTTL)
			answeredFromRecord(ctx, t, cfg, tr, id, experiment)
			return ctx
		}).
		Assess("with the backend down while the Job finishes and its TTL passes, nothing is lost", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "hist-down"
			experiment := map[string]any{"id": id, "key": "k-2"}
			client := clientset(t, cfg)
			// Hold the Job until no backend runs: a backend being scaled
			// down keeps recording through its 5 s preStop, and the runner
			// finishes in about 3 s. The Job is created suspended, from a
			// suspended template, so it makes no pod before it is resumed:
			// suspending it after its creation could catch a pod already
			// made, which the suspension removes and the resumption
			// replaces, and the test could no longer tell that the
			// experiment ran exactly once.
			probes = suspendNewJobs(ctx, t, cfg, backend(t, cfg), "hist-down-probe")
			if sub, err := backend(t, cfg).Submit(ctx, experiment); err != nil || !sub.Created {
				t.Fatalf("POST = %+v (%v), want 201", sub, err)
			}
			resumeNewJobs(ctx, t, cfg)
			if j, err := client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{}); err != nil || j.Spec.Suspend == nil || !*j.Spec.Suspend {
				t.Fatalf("the Job of %s is not suspended though the template was (err %v)", id, err)
			}
			scaleBackend(ctx, t, cfg, 0)
			setSuspend(ctx, t, client, id, false)
			waitJob(ctx, t, cfg, id, "Complete with no backend running", 2*time.Minute, complete)
			if n := tr.Pods(id); n != 1 {
				t.Errorf("%d runner pods for %s, want exactly 1: its Job made none while suspended", n, id)
			}
			// Three TTLs: a Job not held for its record would be gone.
			time.Sleep(3 * historyTTL * time.Second)
			j, err := client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the Job of %s is gone while no backend could record it: %v", id, err)
			}
			if !jobspec.Held(j) || j.Spec.TTLSecondsAfterFinished != nil {
				t.Errorf("finished Job with no backend: finalizers %v, TTL %v; want held, no TTL yet", j.Finalizers, j.Spec.TTLSecondsAfterFinished)
			}
			t0 := time.Now()
			scaleBackend(ctx, t, cfg, 1)
			waitJob(ctx, t, cfg, id, "recorded and removed once the backend is back", 2*time.Minute, gone)
			t.Logf("%s: recorded and removed %s after the backend was scaled back up", id, time.Since(t0).Round(100*time.Millisecond))
			answeredFromRecord(ctx, t, cfg, tr, id, experiment)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if tr != nil {
				tr.Stop()
			}
			resumeNewJobs(ctx, t, cfg)
			scaleBackend(ctx, t, cfg, 1)
			setTemplateTTL(ctx, t, cfg, 60)
			// The probes' Jobs: suspended (or done), recorded Cancelled once
			// deleted, with the backend back to record them.
			deleteManagedJobs(ctx, t, cfg, func(j batchv1.Job) bool {
				id, _ := jobspec.Owns(&j)
				return slices.Contains(probes, id)
			})
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// setSuspend suspends or resumes the Job of id. Suspending fails the test
// if the Job already finished: then it could not wait for anything.
func setSuspend(ctx context.Context, t *testing.T, client kubernetes.Interface, id string, suspend bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"suspend":%t}}`, suspend)
	j, err := client.BatchV1().Jobs(ns).Patch(ctx, jobspec.JobName(id), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("set suspend=%t on the Job of %s: %v", suspend, id, err)
	}
	if suspend && (j.Status.Succeeded > 0 || j.Status.CompletionTime != nil) {
		t.Fatalf("the Job of %s finished before it could be suspended", id)
	}
}

// scaleBackend sets the backend's replicas and waits for them: all gone, or
// all available.
func scaleBackend(ctx context.Context, t *testing.T, cfg *envconf.Config, replicas int) {
	t.Helper()
	client := clientset(t, cfg)
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := client.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale the backend to %d: %v", replicas, err)
	}
	if replicas > 0 {
		if _, err := deploy.WaitBackend(logger, ns, 3*time.Minute)(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		return
	}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy.BackendName})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("backend pods still there 2 minutes after scaling to 0")
	}
}
