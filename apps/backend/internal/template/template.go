// Package template keeps the Job template in memory. The template is a
// suspended CronJob synced by GitOps; reading it through an informer means a
// POST costs one API call (the create), not two, and an image tag changed by
// an overlay reaches new Jobs without restarting the backend.
//
// A template that is missing or unusable makes the source unavailable, not
// broken: POST /experiment and /readyz answer 503 with the reason until
// GitOps (or a person) fixes it, and the log says so when it changes.
package template

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
)

// Source returns the current Job template.
type Source interface {
	// JobTemplate returns the current template, or an error of kind
	// failure.Unavailable saying why there is no usable template. The
	// template is shared (an informer's cache): callers must not change it.
	// jobspec.Build copies what it uses, so a POST copies the template
	// once, not twice.
	JobTemplate() (*batchv1.JobTemplateSpec, error)
}

// CronJobSource watches one CronJob and serves its spec.jobTemplate.
type CronJobSource struct {
	namespace, name string
	log             *slog.Logger
	factory         informers.SharedInformerFactory
	informer        cache.SharedIndexInformer
	lister          batchlisters.CronJobLister

	// listErr is the last failed list or watch; before the first list
	// succeeds it is the reason the template is not loaded.
	listMu  sync.Mutex
	listErr error

	// reportMu orders the checks that log a change, so the last log line
	// always describes the newest state of the cache.
	reportMu sync.Mutex
	reported bool
	problem  string
}

// NewCronJobSource watches only the named CronJob (a field selector), so the
// backend's Role can limit list and watch on cronjobs to that one name. log
// receives a line whenever the template becomes usable or unusable.
func NewCronJobSource(client kubernetes.Interface, namespace, name string, log *slog.Logger) *CronJobSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	cronJobs := factory.Batch().V1().CronJobs()
	s := &CronJobSource{
		namespace: namespace,
		name:      name,
		log:       log.With("namespace", namespace, "template", name),
		factory:   factory,
		informer:  cronJobs.Informer(),
		lister:    cronJobs.Lister(),
	}
	// Both calls fail only on an informer that has started; this one has
	// not.
	_ = s.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		s.listMu.Lock()
		changed := s.listErr == nil || s.listErr.Error() != err.Error()
		s.listErr = err
		s.listMu.Unlock()
		// Before the first list, a failure (RBAC forbids the namespace, the
		// API server is down) is why nothing works: say so once per new
		// reason, not at every retry of the reflector.
		if changed && !s.informer.HasSynced() {
			s.log.Warn("cannot load the job template: POST /experiment and /readyz answer 503 until it loads", "err", err)
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	_, _ = s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.report() },
		UpdateFunc: func(any, any) { s.report() },
		DeleteFunc: func(any) { s.report() },
	})
	return s
}

// Start runs the informer until ctx ends. It does not wait for the first
// list: the backend must start (and answer /healthz) while the API server is
// still unreachable. Once the first list arrived it logs whether the
// template is usable; a missing CronJob sends no event, so the event
// handlers alone would stay silent about it.
func (s *CronJobSource) Start(ctx context.Context) {
	s.factory.Start(ctx.Done())
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
			s.report()
		}
	}()
	go func() {
		<-ctx.Done()
		s.factory.Shutdown()
	}()
}

// WaitForSync blocks until the first list arrived or ctx ends.
func (s *CronJobSource) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return s.Check()
	}
	return nil
}

// HasSynced reports whether the cache holds the API server's answer.
func (s *CronJobSource) HasSynced() bool { return s.informer.HasSynced() }

// JobTemplate returns the cached template, which the caller must not
// change.
func (s *CronJobSource) JobTemplate() (*batchv1.JobTemplateSpec, error) {
	tmpl, err := s.current()
	if err != nil {
		return nil, err
	}
	return tmpl, nil
}

// Check reports why a POST could not get a usable template now; nil when it
// can. Readiness uses it.
func (s *CronJobSource) Check() error {
	_, err := s.current()
	return err
}

// current returns the cached template, which the caller must not change.
func (s *CronJobSource) current() (*batchv1.JobTemplateSpec, error) {
	if !s.informer.HasSynced() {
		s.listMu.Lock()
		listErr := s.listErr
		s.listMu.Unlock()
		if listErr != nil {
			return nil, failure.Wrap(failure.Unavailable, listErr, "job template cronjob %s/%s not loaded yet", s.namespace, s.name)
		}
		return nil, failure.New(failure.Unavailable, "job template cronjob %s/%s not loaded yet: the API server has not answered", s.namespace, s.name)
	}
	cj, err := s.lister.CronJobs(s.namespace).Get(s.name)
	if apierrors.IsNotFound(err) {
		return nil, failure.New(failure.Unavailable, "job template cronjob %s/%s does not exist; apply the k8s/runner manifests, or fix --namespace and --template", s.namespace, s.name)
	}
	if err != nil {
		return nil, fmt.Errorf("get cronjob %s/%s from the cache: %w", s.namespace, s.name, err)
	}
	if err := jobspec.CheckTemplate(&cj.Spec.JobTemplate); err != nil {
		return nil, failure.Wrap(failure.Unavailable, err, "job template cronjob %s/%s is not usable", s.namespace, s.name)
	}
	return &cj.Spec.JobTemplate, nil
}

// report logs the template's state when it changed since the last report:
// a warning when it becomes missing or unusable (POSTs answer 503 from then
// on), an info line when it becomes usable.
func (s *CronJobSource) report() {
	if !s.informer.HasSynced() {
		return // the goroutine in Start reports once the first list is in
	}
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	err := s.Check()
	problem := ""
	if err != nil {
		problem = err.Error()
	}
	if s.reported && problem == s.problem {
		return
	}
	first := !s.reported
	s.reported, s.problem = true, problem
	switch {
	case err != nil:
		s.log.Warn("job template not usable: POST /experiment and /readyz answer 503 until it is fixed", "err", err)
	case first:
		s.log.Info("job template loaded")
	default:
		s.log.Info("job template usable again")
	}
}

// Static serves a fixed template; tests and local experiments use it.
type Static struct{ Template *batchv1.JobTemplateSpec }

// JobTemplate returns the fixed template, which the caller must not change.
func (s Static) JobTemplate() (*batchv1.JobTemplateSpec, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	return s.Template, nil
}

// Check applies the same rules as CronJobSource.Check.
func (s Static) Check() error {
	if s.Template == nil {
		return failure.New(failure.Unavailable, "job template not loaded yet")
	}
	if err := jobspec.CheckTemplate(s.Template); err != nil {
		return failure.Wrap(failure.Unavailable, err, "job template is not usable")
	}
	return nil
}
