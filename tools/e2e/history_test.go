//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/deploy"
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

// podCounter counts, from a watch opened before the experiments start, the
// runner pods ever created for each experiment ID.
type podCounter struct {
	mu   sync.Mutex
	seen map[string]map[types.UID]bool
	stop context.CancelFunc
}

func countPods(ctx context.Context, t *testing.T, cfg *envconf.Config) *podCounter {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	pc := &podCounter{seen: map[string]map[types.UID]bool{}, stop: stop}
	// An informer, not a bare watch: it re-opens the watch whenever the
	// API server closes it, so no pod can go unseen.
	factory := informers.NewSharedInformerFactoryWithOptions(clientset(t, cfg), 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = batchv1.JobNameLabel }))
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		id := p.Annotations[jobspec.AnnotationID]
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if pc.seen[id] == nil {
			pc.seen[id] = map[types.UID]bool{}
		}
		pc.seen[id][p.UID] = true
	}})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("pod informer did not sync")
	}
	return pc
}

func (pc *podCounter) pods(id string) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return len(pc.seen[id])
}

// status reads GET /experiments/{id}.
func status(ctx context.Context, t *testing.T, cfg *envconf.Config, id string) (int, map[string]any) {
	t.Helper()
	res, err := backend(t, cfg).Do(ctx, http.MethodGet, "/experiments/"+id, "", nil)
	if err != nil {
		t.Fatalf("GET /experiments/%s: %v", id, err)
	}
	var st map[string]any
	_ = json.Unmarshal(res.Body, &st)
	return res.Code, st
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
// again: still exactly wantPods runner pods were ever created for it.
func answeredFromRecord(ctx context.Context, t *testing.T, cfg *envconf.Config, pc *podCounter, id, body string, wantPods int) {
	t.Helper()
	code, st := status(ctx, t, cfg, id)
	if code != http.StatusOK || st["source"] != "history" || st["state"] != "Succeeded" || st["exitCode"] != float64(0) {
		t.Errorf("GET /experiments/%s after its Job is gone = %d %v, want Succeeded, exit code 0, from history", id, code, st)
	}
	res, err := backend(t, cfg).Do(ctx, http.MethodGet, "/experiments/"+id+"/logs", "", nil)
	if err != nil || res.Code != http.StatusOK || !strings.Contains(string(res.Body), "Running Experiment: "+id) {
		t.Errorf("logs after the Job is gone = %d %q (%v), want the runner's output", res.Code, res.Body, err)
	}
	res, err = backend(t, cfg).Post(ctx, body)
	var c struct {
		Created bool
		Source  string
		State   string
	}
	if err != nil || res.Code != http.StatusOK || json.Unmarshal(res.Body, &c) != nil || c.Created || c.Source != "history" || c.State != "Succeeded" {
		t.Errorf("retried POST after the Job is gone = %d %s (%v), want 200 from history, nothing created", res.Code, res.Body, err)
	}
	// Give a wrongly made Job and its pod time to appear.
	time.Sleep(3 * time.Second)
	if _, err := clientset(t, cfg).BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Job exists again for %s after the retried POST (err %v)", id, err)
	}
	if n := pc.pods(id); n != wantPods {
		t.Errorf("%d runner pods were ever created for %s, want exactly %d", n, id, wantPods)
	}
}

func TestHistoryOutlivesTheJob(t *testing.T) {
	var pc *podCounter
	f := features.New("an experiment outlives its Job: status, output and retries answer from the record after the TTL").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			setTemplateTTL(ctx, t, cfg, historyTTL)
			pc = countPods(ctx, t, cfg)
			return ctx
		}).
		Assess("finished, removed by its TTL, answered from the record", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "hist-done"
			body := `{"experiment": {"id": "` + id + `", "key": "k-1"}}`
			if res, err := backend(t, cfg).Post(ctx, body); err != nil || res.Code != http.StatusCreated {
				t.Fatalf("POST = %d %s (%v)", res.Code, res.Body, err)
			}
			t0 := time.Now()
			waitJob(ctx, t, cfg, id, "Complete", 2*time.Minute, complete)
			done := time.Since(t0)
			// Released once recorded: the finalizer gone, the TTL back, and
			// the label that takes it out of the recorder's cache.
			var released *batchv1.Job
			waitJob(ctx, t, cfg, id, "released after its record", time.Minute, func(j *batchv1.Job) bool {
				if j != nil && !jobspec.Held(j) {
					released = j
				}
				return j == nil || released != nil
			})
			switch {
			case released == nil:
				t.Logf("%s: gone before a poll saw it released", id)
			case released.Labels[jobspec.LabelRecorded] != "true" || released.Spec.TTLSecondsAfterFinished == nil:
				t.Errorf("released Job: labels %v, TTL %v; want %s=true and the template's TTL", released.Labels, released.Spec.TTLSecondsAfterFinished, jobspec.LabelRecorded)
			}
			waitJob(ctx, t, cfg, id, "removed by its TTL", time.Minute, gone)
			t.Logf("%s: Complete after %s, Job removed %s later (TTL %d s after the record)", id, done.Round(100*time.Millisecond),
				(time.Since(t0) - done).Round(100*time.Millisecond), historyTTL)
			answeredFromRecord(ctx, t, cfg, pc, id, body, 1)
			return ctx
		}).
		Assess("with the backend down while the Job finishes and its TTL passes, nothing is lost", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "hist-down"
			body := `{"experiment": {"id": "` + id + `", "key": "k-2"}}`
			client := clientset(t, cfg)
			if res, err := backend(t, cfg).Post(ctx, body); err != nil || res.Code != http.StatusCreated {
				t.Fatalf("POST = %d %s (%v)", res.Code, res.Body, err)
			}
			// Hold the Job until no backend runs: a backend being scaled
			// down keeps recording through its 5 s preStop, and the runner
			// finishes in about 3 s. A suspended Job's pods are removed and
			// do not count as failures; the Job starts again when resumed.
			setSuspend(ctx, t, client, id, true)
			scaleBackend(ctx, t, cfg, 0)
			setSuspend(ctx, t, client, id, false)
			waitJob(ctx, t, cfg, id, "Complete with no backend running", 2*time.Minute, complete)
			ran := pc.pods(id)
			if ran < 1 || ran > 2 {
				t.Errorf("%d runner pods for %s: want the one that ran and at most one the suspension removed", ran, id)
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
			// The pod the suspension removed (if it was made yet) and the
			// one that ran; the retried POST must add none.
			answeredFromRecord(ctx, t, cfg, pc, id, body, ran)
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			pc.stop()
			scaleBackend(ctx, t, cfg, 1)
			setTemplateTTL(ctx, t, cfg, 60)
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
