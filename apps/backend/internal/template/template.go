// Package template keeps the Job template in memory. The template is a
// suspended CronJob synced by GitOps; reading it through an informer means a
// POST costs one API call (the create), not two, and an image tag changed by
// an overlay reaches new Jobs without restarting the backend.
package template

import (
	"context"
	"errors"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
)

// ErrNotSynced means the cache has not yet heard from the API server.
var ErrNotSynced = errors.New("job template not loaded yet: the API server has not answered")

// Source returns the current Job template.
type Source interface {
	JobTemplate() (*batchv1.JobTemplateSpec, error)
}

// CronJobSource watches one CronJob and serves its spec.jobTemplate.
type CronJobSource struct {
	namespace, name string
	factory         informers.SharedInformerFactory
	informer        cache.SharedIndexInformer
	lister          batchlisters.CronJobLister
}

// NewCronJobSource watches only the named CronJob (a field selector), so the
// backend's Role can limit list and watch on cronjobs to that one name.
func NewCronJobSource(client kubernetes.Interface, namespace, name string) *CronJobSource {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	cronJobs := factory.Batch().V1().CronJobs()
	return &CronJobSource{
		namespace: namespace,
		name:      name,
		factory:   factory,
		informer:  cronJobs.Informer(),
		lister:    cronJobs.Lister(),
	}
}

// Start runs the informer until ctx ends. It does not wait for the first
// list: the backend must start (and answer /healthz) while the API server is
// still unreachable.
func (s *CronJobSource) Start(ctx context.Context) {
	s.factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		s.factory.Shutdown()
	}()
}

// WaitForSync blocks until the first list arrived or ctx ends.
func (s *CronJobSource) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return fmt.Errorf("wait for cronjob %s/%s: %w", s.namespace, s.name, ErrNotSynced)
	}
	return nil
}

// HasSynced reports whether the cache holds the API server's answer.
func (s *CronJobSource) HasSynced() bool { return s.informer.HasSynced() }

// JobTemplate returns a copy the caller may change.
func (s *CronJobSource) JobTemplate() (*batchv1.JobTemplateSpec, error) {
	if !s.informer.HasSynced() {
		return nil, ErrNotSynced
	}
	cj, err := s.lister.CronJobs(s.namespace).Get(s.name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("job template cronjob %s/%s does not exist; apply the k8s/runner manifests", s.namespace, s.name)
	}
	if err != nil {
		return nil, fmt.Errorf("get cronjob %s/%s: %w", s.namespace, s.name, err)
	}
	return cj.Spec.JobTemplate.DeepCopy(), nil
}

// Static serves a fixed template; tests and local experiments use it.
type Static struct{ Template *batchv1.JobTemplateSpec }

// JobTemplate returns a copy of the fixed template.
func (s Static) JobTemplate() (*batchv1.JobTemplateSpec, error) {
	if s.Template == nil {
		return nil, ErrNotSynced
	}
	return s.Template.DeepCopy(), nil
}
