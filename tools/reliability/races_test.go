//go:build e2e

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/features"

	gmini "github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
	"github.com/gmini-dev/gmini/tools/internal/jobstatus"
	"github.com/gmini-dev/gmini/tools/internal/jobtrack"
)

// trackJobs starts counting, per experiment, the Jobs and pods made in
// the suite's namespace (jobtrack), until the test ends.
func trackJobs(ctx context.Context, t *testing.T) *jobtrack.Tracker {
	t.Helper()
	tr, err := jobtrack.Start(ctx, suite.admin, ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Stop)
	return tr
}

// settled waits until the experiment's Job is either gone or live (not
// being deleted, not held for a submit check) and returns it (nil when
// gone) with the record's state.
func settled(ctx context.Context, t *testing.T, id string) (*batchv1.Job, wire.Status) {
	t.Helper()
	var job *batchv1.Job
	var st wire.Status
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, jobspec.JobName(id), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			job = nil
		case err != nil:
			return false, nil
		case j.DeletionTimestamp != nil || jobspec.HeldForSubmit(j):
			return false, nil
		default:
			job = j
		}
		s, err := getStatus(ctx, t, id)
		st = s
		// Gone: wait for the record to be final (the recorder's write).
		return err == nil && (job != nil || final(s.State)), nil
	})
	if err != nil {
		failf(t, "experiment %s never settled: job %v, status %+v", id, job != nil, st)
	}
	return job, st
}

// final reports whether an experiment in state has its outcome.
func final(state string) bool {
	return state == "Cancelled" || state == "Succeeded" || state == "Failed"
}

func TestPostRacingDeleteRunsAtMostOnce(t *testing.T) {
	const (
		rounds = 4
		each   = 30 // POSTs, and as many DELETEs, per round
	)
	f := features.New("30 POSTs and 30 DELETEs of one ID at once: never a 5xx, at most one Job that can run and one pod, and a Job left only if its record is not final").
		Setup(backendAndNoJobs).
		Assess("rounds of racing POSTs and DELETEs", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			c := api(t, suite.backend.URL())
			jobs := trackJobs(ctx, t)
			for r := range rounds {
				id := fmt.Sprintf("racing-%d", r)
				exp := experiment(id, "")
				var (
					mu    sync.Mutex
					codes = map[string]int{}
					wg    sync.WaitGroup
				)
				start := make(chan struct{})
				for i := range 2 * each {
					wg.Go(func() {
						<-start
						var code int
						var err error
						method := http.MethodPost
						if i%2 == 1 {
							method = http.MethodDelete
							_, err = c.Cancel(ctx, id)
							code = http.StatusOK
							if err != nil {
								code = gmini.StatusCode(err)
							}
						} else {
							var sub wire.Submission
							sub, err = c.Submit(ctx, exp)
							code = submitted(sub, err)
						}
						mu.Lock()
						defer mu.Unlock()
						switch {
						case code == 0:
							codes[method+" error"]++
						default:
							codes[fmt.Sprintf("%s %d", method, code)]++
							if code >= 500 {
								errorf(t, "%s %s = %d: %v", method, id, code, err)
							}
						}
					})
				}
				close(start)
				wg.Wait()
				job, st := settled(ctx, t, id)
				time.Sleep(2 * time.Second) // let late watch events in
				runnable, pods := jobs.Runnable(id), jobs.Pods(id)
				t.Logf("%s: answers %v; job left %v; record %v; jobs that could run %d, pods %d", id, codes, job != nil, st.State, runnable, pods)
				if runnable > 1 || pods > 1 {
					errorf(t, "%s: %d Jobs could run and %d pods were made; want at most one each", id, runnable, pods)
				}
				if job != nil {
					if rec := listedRecord(ctx, t, id); final(rec.State) {
						errorf(t, "%s: a Job is left whose record is final: %v", id, rec)
					}
				}
				// The answer of one more POST must agree with what is left.
				got, err := c.Submit(ctx, exp)
				if err != nil && gmini.StatusCode(err) == 0 {
					t.Fatal(err)
				}
				switch {
				case err != nil || got.Created:
					errorf(t, "%s: POST after the race = %+v %v; want 200, nothing created", id, got, err)
				case job == nil && (got.Source != "history" || got.State != st.State):
					errorf(t, "%s: POST after the race = %+v; want the record's state %s", id, got, st.State)
				case job != nil && got.Source != "job":
					errorf(t, "%s: POST after the race = %+v; want the live Job", id, got)
				}
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}

// listedRecord is id's item in GET /experiments, which with history on
// lists the records, not the Jobs.
func listedRecord(ctx context.Context, t *testing.T, id string) wire.Status {
	t.Helper()
	var rec *wire.Status
	err := api(t, suite.backend.URL()).ListAll(ctx, gmini.ListOptions{Limit: 1000}, func(s wire.Status) bool {
		if s.ID == id {
			rec = &s
		}
		return rec == nil
	})
	if err != nil || rec == nil {
		failf(t, "experiment %s not listed (%v)", id, err)
	}
	return *rec
}

// removeHistoryFinalizer does what README's release command does to a Job
// whose backend is gone for good.
func removeHistoryFinalizer(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	patch := []byte(`{"metadata":{"$deleteFromPrimitiveList/finalizers":["` + jobspec.FinalizerHistory + `"]}}`)
	if _, err := suite.admin.BatchV1().Jobs(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("remove the history finalizer of %s: %v", name, err)
	}
}

// completeByHand marks the Job Complete as the Job controller would once
// its pod succeeded: there is no node to run it.
func completeByHand(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	if err := jobstatus.Complete(ctx, suite.admin.BatchV1().Jobs(ns), name, nil, "set by the reliability suite: its cluster has no node"); err != nil {
		t.Fatal(err)
	}
}

// recordState waits for GET /experiments/{id} to answer want from source.
func recordState(ctx context.Context, t *testing.T, id, want, source string) wire.Status {
	t.Helper()
	var st wire.Status
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := getStatus(ctx, t, id)
		st = s
		return err == nil && s.State == want && s.Source == source, nil
	})
	if err != nil {
		failf(t, "experiment %s never %s from %s; last %+v", id, want, source, st)
	}
	return st
}

func TestFinalizerRemovedByHand(t *testing.T) {
	f := features.New("a Job whose history finalizer was removed by hand is still recorded, released, and never run again").
		Setup(backendAndNoJobs).
		Assess("finished after the finalizer went: recorded Succeeded, labelled and given its TTL back", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "bare-done"
			c := api(t, suite.backend.URL())
			if sub, err := c.Submit(ctx, experiment(id, "")); err != nil || !sub.Created {
				failf(t, "POST %s = %+v %v, want 201", id, sub, err)
			}
			name := jobspec.JobName(id)
			removeHistoryFinalizer(ctx, t, name)
			completeByHand(ctx, t, name)
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				j, err := suite.admin.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
				return err == nil && jobspec.Released(j) && j.Spec.TTLSecondsAfterFinished != nil, nil
			})
			if err != nil {
				failf(t, "job %s without its finalizer never got the recorded label and its TTL back: %v", name, err)
			}
			live := recordState(ctx, t, id, "Succeeded", "job")
			// Gone (as its TTL would remove it): the record answers, and a
			// retried POST runs nothing.
			bg := metav1.DeletePropagationBackground
			if err := suite.admin.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Fatal(err)
			}
			rec := recordState(ctx, t, id, "Succeeded", "history")
			// It reads the same from both: the claim's time, and no pod
			// counts the record does not have.
			if !live.CreatedAt.Equal(rec.CreatedAt) {
				errorf(t, "%s: createdAt %v from the Job, %v from the record; want the same", id, live.CreatedAt, rec.CreatedAt)
			}
			if rec.PodCounts != nil {
				errorf(t, "%s: the record's status shows pod counts (active, succeeded, failed), which only the Job knows: %+v", id, *rec.PodCounts)
			}
			if sub, err := c.Submit(ctx, experiment(id, "")); err != nil || sub.Created {
				errorf(t, "POST %s after its job was recorded and removed = %+v %v; want 200 from the record", id, sub, err)
			}
			return ctx
		}).
		Assess("deleted after the finalizer went, unfinished: the record is closed Cancelled and a retry runs nothing", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			const id = "bare-deleted"
			c := api(t, suite.backend.URL())
			if sub, err := c.Submit(ctx, experiment(id, "")); err != nil || !sub.Created {
				failf(t, "POST %s = %+v %v, want 201", id, sub, err)
			}
			name := jobspec.JobName(id)
			removeHistoryFinalizer(ctx, t, name)
			bg := metav1.DeletePropagationBackground
			if err := suite.admin.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
				t.Fatal(err)
			}
			st := recordState(ctx, t, id, "Cancelled", "history")
			if st.Reason != "JobDeleted" {
				errorf(t, "record of %s = %+v; want reason JobDeleted", id, st)
			}
			if sub, err := c.Submit(ctx, experiment(id, "")); err != nil || sub.Created {
				errorf(t, "POST %s after its job was deleted unrecorded = %+v %v; want 200 Cancelled, nothing run again", id, sub, err)
			}
			if n := allJobs(ctx, t); n != 0 {
				errorf(t, "%d Jobs after the retry, want 0", n)
			}
			return ctx
		}).
		Teardown(removeJobs).Feature()
	testenv.Test(t, f)
}
