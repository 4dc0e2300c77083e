//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/tools/deploy"
)

// TestBackendPodTermination deletes one of two backend pods while clients
// POST through the Service: the preStop delay keeps the terminating pod
// serving until it has left the endpoints, so no request fails.
func TestBackendPodTermination(t *testing.T) {
	const (
		clients   = 2
		interval  = 200 * time.Millisecond
		before    = 2 * time.Second  // load before the deletion
		after     = 10 * time.Second // preStop (5 s) + shutdown + margin
		idPrefix  = "rollout"
		suspended = `{"spec":{"jobTemplate":{"spec":{"suspend":true}}}}`
		resumed   = `{"spec":{"jobTemplate":{"spec":{"suspend":null}}}}`
	)
	type outcome struct {
		id   string
		code int
		body string
		err  error
	}
	var outcomes []outcome
	f := features.New("a backend pod deleted under load: every request is answered 201").
		Setup(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			// The test is about the backend, not the runner: its Jobs are
			// created suspended, so no pods load the node.
			if _, err := client.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, []byte(suspended), metav1.PatchOptions{}); err != nil {
				t.Fatalf("suspend the template's Jobs: %v", err)
			}
			if _, err := client.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.MergePatchType, []byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{}); err != nil {
				t.Fatalf("scale the backend to 2: %v", err)
			}
			if _, err := deploy.WaitBackend(logger, ns, 2*time.Minute)(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			// Both replicas' template caches must have seen the change.
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				for i := range 4 {
					id := fmt.Sprintf("%s-probe-%d-%d", idPrefix, time.Now().UnixNano(), i)
					res, err := backend(t, cfg).Post(ctx, `{"experiment": {"id": "`+id+`"}}`)
					if err != nil || res.Code != http.StatusCreated {
						return false, nil
					}
					j, err := client.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
					if err != nil || j.Spec.Suspend == nil || !*j.Spec.Suspend {
						return false, nil
					}
				}
				return true, nil
			})
			if err != nil {
				t.Fatalf("new Jobs are not suspended a minute after the template change: %v", err)
			}
			return ctx
		}).
		Assess("deleting a backend pod fails no request", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			b := backend(t, cfg)
			pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy.BackendName})
			if err != nil || len(pods.Items) != 2 {
				t.Fatalf("backend pods: %v (%d, want 2)", err, len(pods.Items))
			}
			victim := pods.Items[0].Name
			stop := make(chan struct{})
			var mu sync.Mutex
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					tick := time.NewTicker(interval)
					defer tick.Stop()
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						o := outcome{id: fmt.Sprintf("%s-%d-%03d", idPrefix, c, n)}
						res, err := b.Post(ctx, `{"experiment": {"id": "`+o.id+`"}}`)
						o.code, o.body, o.err = res.Code, string(res.Body), err
						mu.Lock()
						outcomes = append(outcomes, o)
						mu.Unlock()
					}
				})
			}
			time.Sleep(before)
			t0 := time.Now()
			if err := client.CoreV1().Pods(ns).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete pod %s: %v", victim, err)
			}
			time.Sleep(after)
			close(stop)
			wg.Wait()
			gone := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := client.CoreV1().Pods(ns).Get(ctx, victim, metav1.GetOptions{})
				return err != nil, nil
			})
			if gone != nil {
				t.Errorf("pod %s still exists a minute after its deletion", victim)
			}
			t.Logf("pod %s deleted under load; gone %s later", victim, time.Since(t0).Round(100*time.Millisecond))

			jobs := map[string]bool{}
			list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range list.Items {
				jobs[j.Annotations[jobspec.AnnotationID]] = true
			}
			failed := 0
			for _, o := range outcomes {
				var c created
				switch {
				case o.err != nil:
					failed++
					t.Errorf("%s: %v", o.id, o.err)
				case o.code != http.StatusCreated:
					failed++
					t.Errorf("%s: answered %d %s, want 201", o.id, o.code, o.body)
				case json.Unmarshal([]byte(o.body), &c) != nil || !jobs[o.id]:
					t.Errorf("%s: answered 201 but has no Job (%s)", o.id, o.body)
				}
			}
			t.Logf("%d POSTs while a backend pod terminated: %d failed", len(outcomes), failed)
			if len(outcomes) < int(before+after)/int(interval) {
				t.Errorf("only %d POSTs were sent; the test did not load the backend", len(outcomes))
			}
			return ctx
		}).
		Teardown(func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			client := clientset(t, cfg)
			if _, err := client.AppsV1().Deployments(ns).Patch(ctx, deploy.BackendName, types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
				t.Errorf("scale the backend back to 1: %v", err)
			}
			if _, err := client.BatchV1().CronJobs(ns).Patch(ctx, "gmini-runner", types.MergePatchType, []byte(resumed), metav1.PatchOptions{}); err != nil {
				t.Errorf("resume the template: %v", err)
			}
			deleteManagedJobs(ctx, t, cfg, func(j batchv1.Job) bool { return j.Spec.Suspend != nil && *j.Spec.Suspend })
			if _, err := deploy.WaitBackend(logger, ns, 2*time.Minute)(ctx, cfg); err != nil {
				t.Error(err)
			}
			return ctx
		}).Feature()
	testenv.Test(t, f)
}

// deleteManagedJobs deletes the Jobs gmini made that match keep, with
// their pods, and waits until they are gone.
func deleteManagedJobs(ctx context.Context, t *testing.T, cfg *envconf.Config, match func(batchv1.Job) bool) {
	t.Helper()
	client := clientset(t, cfg)
	list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobspec.ManagedSelector})
	if err != nil {
		t.Errorf("list jobs: %v", err)
		return
	}
	bg := metav1.DeletePropagationBackground
	var names []string
	for _, j := range list.Items {
		if match(j) {
			names = append(names, j.Name)
			if err := client.BatchV1().Jobs(ns).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Errorf("delete job %s: %v", j.Name, err)
			}
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if _, err := client.BatchV1().Jobs(ns).Get(ctx, n, metav1.GetOptions{}); err == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("jobs not gone 2 minutes after their deletion: %v", err)
	}
}
