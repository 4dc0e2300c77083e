// Package recorder keeps the history of a namespace's experiments as their
// Jobs move: created, running, finished or cancelled. One backend replica
// records at a time, the holder of a Lease (client-go leader election); the
// store's writes are idempotent anyway, so a second writer during a lease
// hand-over does no harm.
//
// Nothing is lost while no replica records (all down, or between leaders):
// a Job of an experiment carries the finalizer jobspec.FinalizerHistory and
// no TTL until its record is stored, so the Job, its pods and their output
// wait. The informer lists every Job not yet recorded (no
// jobspec.LabelRecorded) when a recorder starts, so it resumes from what the
// cluster holds, not from what it saw before; recorded Jobs leave its cache.
package recorder

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/lease"
)

// Config says what to record and where.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	Store     history.Store
	// Output reads a Job's runner output (lifecycle.Store.Capture).
	Output  func(context.Context, *batchv1.Job) (lifecycle.Output, error)
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Retention is how long a finished experiment's record is kept.
	Retention time.Duration
	// LeaseName names the Lease the replicas compete for; Identity is this
	// replica's name in it (the pod name).
	LeaseName, Identity string
	// Workers record in parallel; default 4.
	Workers int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// WhileLeading, when set, runs beside the recorder for as long as
	// this replica holds the lease (the webhook deliverer, which must
	// deliver from one replica at a time); it returns once its context
	// ends.
	WhileLeading func(ctx context.Context)
}

// Lease timings: package lease, which says how long a hand-over after a
// crash can take (lease.MaxHandover, API latency aside). A graceful stop
// releases the lease at once.
const (
	leaseDuration = lease.Duration
	renewDeadline = lease.RenewDeadline
	retryPeriod   = lease.RetryPeriod
	// resync re-checks every Job now and then, so a write that failed more
	// often than the queue retries it is tried again.
	resync = 5 * time.Minute
)

// Run competes for the lease until ctx ends and records history while it
// holds it.
func Run(ctx context.Context, cfg Config) {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log.With("lease", cfg.LeaseName, "identity", cfg.Identity)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: cfg.LeaseName, Namespace: cfg.Namespace},
		Client:     cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	for ctx.Err() == nil {
		// RunOrDie returns when leadership is lost (or never won before
		// ctx ended); compete again.
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            cfg.LeaseName,
			LeaseDuration:   leaseDuration,
			RenewDeadline:   renewDeadline,
			RetryPeriod:     retryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					cfg.Metrics.Leader.Set(1)
					log.Info("recording history: this replica holds the lease")
					var wg sync.WaitGroup
					if cfg.WhileLeading != nil {
						wg.Go(func() { cfg.WhileLeading(lctx) })
					}
					newRecorder(cfg).run(lctx)
					wg.Wait()
				},
				OnStoppedLeading: func() {
					cfg.Metrics.Leader.Set(0)
					log.Info("stopped recording history: the lease is released or lost")
				},
				OnNewLeader: func(id string) {
					if id != cfg.Identity {
						log.Info("another replica records history", "leader", id)
					}
				},
			},
		})
	}
}

type recorder struct {
	cfg   Config
	log   *slog.Logger
	jobs  cache.Indexer // of *cachedJob
	queue workqueue.TypedRateLimitingInterface[string]

	// written is the state last stored per Job UID, so status updates
	// that change nothing the record shows cost no write.
	mu      sync.Mutex
	written map[types.UID]string
	// gone holds, per key, Jobs that left the cluster unrecorded (their
	// finalizer was removed by hand), until their record is closed.
	gone map[string][]*cachedJob
}

func newRecorder(cfg Config) *recorder {
	return &recorder{
		cfg: cfg,
		log: cfg.Log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "gmini-recorder"}),
		written: map[types.UID]string{},
		gone:    map[string][]*cachedJob{},
	}
}

// run records until ctx ends (leadership lost or the backend stopping).
func (r *recorder) run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, resync,
		informers.WithNamespace(r.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = jobspec.RecordingSelector }))
	jobs := factory.Batch().V1().Jobs()
	// Set before the informer starts, so the cache holds *cachedJob only.
	if err := jobs.Informer().SetTransform(slimJob); err != nil {
		r.log.Error("recorder: cannot slim its cache; not recording", "err", err)
		return
	}
	r.jobs = jobs.Informer().GetIndexer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	_, _ = jobs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: r.deleted,
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	defer r.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), jobs.Informer().HasSynced) {
		return
	}
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for r.next(ctx) {
			}
		})
	}
	wg.Go(func() { r.expireLoop(ctx) })
	<-ctx.Done()
	r.queue.ShutDown()
	wg.Wait()
}

// next records one queued Job; false once the queue shut down.
func (r *recorder) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		n := r.queue.NumRequeues(key)
		// The first failure and then every tenth: a database that is
		// down must be visible in the log without flooding it.
		if n%10 == 0 {
			r.log.Warn("record experiment: will retry", "job", key, "retries", n, "err", err)
		}
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// sync writes what the Job's current state tells about its experiment.
func (r *recorder) sync(ctx context.Context, key string) error {
	if err := r.syncGone(ctx, key); err != nil {
		return err
	}
	obj, exists, err := r.jobs.GetByKey(key)
	if err != nil {
		return err
	}
	c := cachedJobOf(obj)
	if !exists || c == nil {
		return nil // gone; deleted() handled what could be
	}
	job := c.job()
	id, ok := jobspec.Owns(job)
	if !ok {
		return nil
	}
	rec := recordOf(id, job)
	if !finished(job) && job.DeletionTimestamp == nil {
		return r.progress(ctx, job, rec)
	}
	if jobspec.Released(job) || history.Final(r.wrote(job.UID)) {
		return nil // recorded already
	}
	return r.finish(ctx, job, rec)
}

// progress stores a state change short of the end.
func (r *recorder) progress(ctx context.Context, job *batchv1.Job, rec history.Record) error {
	if r.wrote(job.UID) == rec.State {
		return nil
	}
	if err := r.cfg.Store.Update(ctx, rec); err != nil {
		r.cfg.Metrics.WriteErrors.WithLabelValues("update").Inc()
		return fmt.Errorf("update record of %s: %w", rec.ID, err)
	}
	r.cfg.Metrics.RecordsWritten.WithLabelValues(rec.State).Inc()
	r.remember(job.UID, rec.State)
	return nil
}

// finish stores the outcome and the output, then lets the Job go.
func (r *recorder) finish(ctx context.Context, job *batchv1.Job, rec history.Record) error {
	out, err := r.cfg.Output(ctx, job)
	if err != nil {
		return fmt.Errorf("read the output of %s: %w", rec.ID, err)
	}
	rec.ExitCode = out.ExitCode
	logs := out.Bytes
	if logs == nil {
		logs = []byte{} // stored, even when the runner printed nothing
	}
	stored, err := r.cfg.Store.Finish(ctx, rec, logs)
	if err != nil {
		r.cfg.Metrics.WriteErrors.WithLabelValues("finish").Inc()
		return fmt.Errorf("store the outcome of %s: %w", rec.ID, err)
	}
	if stored.State == rec.State {
		r.cfg.Metrics.RecordsWritten.WithLabelValues(rec.State).Inc()
		if rec.FinishedAt != nil {
			r.cfg.Metrics.CaptureLag.Observe(r.cfg.Now().Sub(*rec.FinishedAt).Seconds())
		}
	}
	// Also a Job whose finalizer was removed by hand gets its label and
	// TTL: it is recorded now, and the TTL controller removes it as usual.
	if !jobspec.Released(job) {
		patch, err := jobspec.ReleasePatch(job)
		if err != nil {
			return err
		}
		_, err = r.cfg.Client.BatchV1().Jobs(job.Namespace).Patch(ctx, job.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("release job %s after recording it: %w", job.Name, err)
		}
	}
	r.remember(job.UID, stored.State)
	r.log.Debug("experiment recorded", "id", rec.ID, "job", job.Name, "state", stored.State)
	return nil
}

// deleted notes a Job that left the cluster or the recorder's selector.
// One released (recorded) is done with. One that still waited for its
// record can only have gone if someone removed its finalizer by hand (as
// when releasing the Jobs of a backend gone for good): its record is closed
// by syncGone, so it never stays Running, and a retried POST does not run
// the experiment again.
func (r *recorder) deleted(obj any) {
	job := cachedJobOf(obj)
	if job == nil {
		return
	}
	r.mu.Lock()
	final := history.Final(r.written[job.UID])
	delete(r.written, job.UID)
	if !final && !jobspec.Released(job.job()) {
		if _, ok := jobspec.Owns(job.job()); ok {
			key, err := cache.MetaNamespaceKeyFunc(job)
			if err == nil {
				r.gone[key] = append(r.gone[key], job)
				r.mu.Unlock()
				r.queue.Add(key)
				return
			}
		}
	}
	r.mu.Unlock()
}

// syncGone closes the records of the Jobs of key that left unrecorded.
func (r *recorder) syncGone(ctx context.Context, key string) error {
	r.mu.Lock()
	jobs := r.gone[key]
	delete(r.gone, key)
	r.mu.Unlock()
	for i, c := range jobs {
		if err := r.finishGone(ctx, c.job()); err != nil {
			r.mu.Lock()
			r.gone[key] = append(jobs[i:], r.gone[key]...)
			r.mu.Unlock()
			return err
		}
	}
	return nil
}

// finishGone stores the last word on an experiment whose Job went without
// its record: the outcome if the Job had one, else Cancelled. What output
// its pods still have is kept; usually they went with the Job.
func (r *recorder) finishGone(ctx context.Context, job *batchv1.Job) error {
	id, _ := jobspec.Owns(job)
	if stored, err := r.cfg.Store.Get(ctx, id); err == nil && history.Final(stored.State) {
		return nil // another replica recorded it (a stale tombstone)
	}
	rec := recordOf(id, job)
	const lost = "its Job was deleted before the record was stored (the finalizer " + jobspec.FinalizerHistory + " was removed)"
	if history.Final(rec.State) {
		rec.Message = joinMessage(rec.Message, lost)
	} else {
		rec = lostRecord(id, job.Name, "the experiment did not finish: "+lost, r.cfg.Now())
	}
	var logs []byte
	if out, err := r.cfg.Output(ctx, job); err == nil {
		rec.ExitCode, logs = out.ExitCode, out.Bytes
	}
	stored, err := r.cfg.Store.Finish(ctx, rec, logs)
	if err != nil {
		r.cfg.Metrics.WriteErrors.WithLabelValues("finish").Inc()
		return fmt.Errorf("close the record of %s, whose job %s left unrecorded: %w", id, job.Name, err)
	}
	if stored.State == rec.State {
		r.cfg.Metrics.RecordsWritten.WithLabelValues(rec.State).Inc()
	}
	r.log.Warn("job deleted before its record was stored; record closed", "id", id, "job", job.Name, "state", stored.State)
	return nil
}

func (r *recorder) wrote(uid types.UID) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written[uid]
}

func (r *recorder) remember(uid types.UID, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written[uid] = state
}

// lostRecord is the final record of an experiment whose Job is gone
// without a word on how it ended.
func lostRecord(id, job, message string, at time.Time) history.Record {
	return history.Record{ID: id, Job: job, State: history.StateCancelled, Reason: "JobDeleted", Message: message, FinishedAt: &at}
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// unfinishedStates are the states of a record whose Job the recorder
// follows. Submitted is not among them: a claim belongs to its POST until
// the Job is seen (the API's DELETE closes an abandoned one).
var unfinishedStates = []string{history.StateQueued, history.StatePending, history.StateRunning, history.StateSuspended}

// closeLost closes the records still unfinished whose Job is gone: Jobs
// deleted without their finalizer while no replica recorded, so that no
// DeleteFunc ever saw them. Without it such a record would say Running for
// ever, and Expire, which only removes final records, would keep it.
func (r *recorder) closeLost(ctx context.Context) error {
	jobs := r.cfg.Client.BatchV1().Jobs(r.cfg.Namespace)
	for _, state := range unfinishedStates {
		opts := history.ListOptions{State: state, Limit: history.MaxPageSize}
		for {
			page, err := r.cfg.Store.List(ctx, opts)
			if err != nil {
				return fmt.Errorf("list %s records: %w", state, err)
			}
			for _, rec := range page.Items {
				if rec.Namespace != "" && rec.Namespace != r.cfg.Namespace {
					continue
				}
				if _, cached, _ := r.jobs.GetByKey(r.cfg.Namespace + "/" + rec.Job); cached {
					continue
				}
				// Not in the cache: recorded, not seen yet, or gone. Only
				// the API server can tell.
				_, err := jobs.Get(ctx, rec.Job, metav1.GetOptions{})
				if !apierrors.IsNotFound(err) {
					continue // there, or unknown now: the next pass looks again
				}
				lost := lostRecord(rec.ID, rec.Job, "its Job is gone and its outcome was never recorded (deleted without the finalizer "+jobspec.FinalizerHistory+" while no replica recorded)", r.cfg.Now())
				if _, err := r.cfg.Store.Finish(ctx, lost, nil); err != nil {
					return fmt.Errorf("close the record of %s: %w", rec.ID, err)
				}
				r.cfg.Metrics.RecordsWritten.WithLabelValues(lost.State).Inc()
				r.log.Warn("record closed: its job is gone, its outcome never recorded", "id", rec.ID, "job", rec.Job)
			}
			if page.Continue == "" {
				break
			}
			opts.Continue = page.Continue
		}
	}
	return nil
}

// expireLoop deletes records past their retention, and closes those whose
// Job was lost, now and then.
func (r *recorder) expireLoop(ctx context.Context) {
	every := min(max(r.cfg.Retention/10, time.Second), 10*time.Minute)
	for {
		if err := r.closeLost(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Metrics.WriteErrors.WithLabelValues("finish").Inc()
			r.log.Warn("close the records of lost jobs", "err", err)
		}
		n, err := r.cfg.Store.Expire(ctx, r.cfg.Now().Add(-r.cfg.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			r.cfg.Metrics.WriteErrors.WithLabelValues("expire").Inc()
			r.log.Warn("expire history records", "err", err)
		case n > 0:
			r.cfg.Metrics.RecordsExpired.Add(float64(n))
			r.log.Info("history records expired", "count", n, "retention", r.cfg.Retention.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// finished reports whether the Job is over: Complete or Failed, so every
// pod is terminal and its output complete.
func finished(job *batchv1.Job) bool {
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// recordOf is what the Job says about its experiment now.
func recordOf(id string, job *batchv1.Job) history.Record {
	st := lifecycle.FromJob(job)
	rec := history.Record{
		ID:        id,
		Hash:      job.Annotations[jobspec.AnnotationHash],
		Namespace: job.Namespace,
		Job:       job.Name,
		JobUID:    string(job.UID),
		Submitter: job.Annotations[jobspec.AnnotationSubmitter],
		Set:       job.Labels[jobspec.LabelSet],
		CreatedAt: st.CreatedAt,
		StartedAt: st.StartedAt,
		Reason:    st.Reason,
		Message:   st.Message,
	}
	switch {
	case finished(job):
		rec.State = history.StateFailed
		if st.State == lifecycle.StateSucceeded {
			rec.State = history.StateSucceeded
		}
		rec.FinishedAt = st.CompletedAt
	case job.DeletionTimestamp != nil:
		rec.State = history.StateCancelled
		rec.Reason = "Cancelled"
		rec.Message = "the experiment's Job was deleted before it finished"
		at := job.DeletionTimestamp.UTC()
		rec.FinishedAt = &at
	case st.State == lifecycle.StateRunning:
		rec.State = history.StateRunning
	case st.State == lifecycle.StateSuspended:
		rec.State = history.StateSuspended
	case st.State == lifecycle.StateQueued:
		rec.State = history.StateQueued
	case st.State == lifecycle.StateSubmitted:
		// Held: the record says Submitted already, and the store never
		// lets Submitted replace another state.
		rec.State = history.StateSubmitted
	default:
		// Pending, or an outcome decided (SuccessCriteriaMet,
		// FailureTarget) while the last pod still terminates: the record
		// waits for Complete or Failed, when the output is whole.
		rec.State = history.StatePending
		if st.State == lifecycle.StateSucceeded || st.State == lifecycle.StateFailed {
			rec.State = history.StateRunning
		}
	}
	return rec
}

// cachedJob is what the recorder keeps of a Job while it waits for its
// record: what recording reads and nothing else. With thousands of Jobs in
// flight the cache is most of the backend's memory, and a batchv1.Job
// costs 1.3 KB before any of it is filled (its pod template is inline);
// most of a filled one is that template, with the experiment's body, and
// its managed fields.
type cachedJob struct {
	metav1.ObjectMeta
	ttl     *int32
	suspend *bool
	status  batchv1.JobStatus
}

// job is the Job recording reads. It shares the cache's maps and slices:
// read it, never change it.
func (c *cachedJob) job() *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: c.ObjectMeta,
		Spec:       batchv1.JobSpec{TTLSecondsAfterFinished: c.ttl, Suspend: c.suspend},
		Status:     c.status,
	}
}

// recordedLabels and recordedAnnotations are the keys recording reads;
// keeping the constants as the cached maps' keys also stores each key once,
// not once per Job.
var (
	recordedLabels      = []string{jobspec.LabelManagedBy, jobspec.LabelRecorded, jobspec.LabelQueue, jobspec.LabelSet}
	recordedAnnotations = []string{jobspec.AnnotationID, jobspec.AnnotationHash, jobspec.AnnotationTTL, jobspec.AnnotationSubmitter, jobspec.AnnotationSubmittedAt,
		jobspec.AnnotationHeldForSubmit, jobspec.AnnotationHeldQueue}
)

// slimJob is the recorder's cache transform: a *batchv1.Job becomes a
// *cachedJob; anything else (a tombstone, an object already cached) is
// passed on as it is.
func slimJob(obj any) (any, error) {
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return obj, nil
	}
	c := &cachedJob{
		ObjectMeta: metav1.ObjectMeta{
			Name:              job.Name,
			Namespace:         job.Namespace,
			UID:               job.UID,
			ResourceVersion:   job.ResourceVersion,
			CreationTimestamp: job.CreationTimestamp,
			DeletionTimestamp: job.DeletionTimestamp,
			Labels:            only(job.Labels, recordedLabels),
			Annotations:       only(job.Annotations, recordedAnnotations),
			Finalizers:        job.Finalizers,
		},
		ttl:     job.Spec.TTLSecondsAfterFinished,
		suspend: job.Spec.Suspend,
		status:  job.Status,
	}
	// Indexed Jobs' bookkeeping; gmini's Jobs are not indexed, and
	// recording reads neither.
	c.status.UncountedTerminatedPods = nil
	c.status.CompletedIndexes, c.status.FailedIndexes = "", nil
	return c, nil
}

// only copies the entries of m under keys, keyed by the constants.
func only(m map[string]string, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}

// cachedJobOf returns the Job behind an informer's object or tombstone.
func cachedJobOf(obj any) *cachedJob {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	c, _ := obj.(*cachedJob)
	return c
}
