package app

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/queue"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
)

// startQueues makes Kueue's queues of the namespace known, for as long as
// ctx lasts. Kueue need not be installed: the queues then stay off, a POST
// naming one is refused, and the rest works as without queues.
func startQueues(ctx context.Context, cfg Config, client *kubernetes.Clientset, restCfg *rest.Config, templates template.Source,
	m *metrics.Metrics, log *slog.Logger) (*queue.Queues, error) {
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("create dynamic client for Kueue's API: %w", err)
	}
	q := queue.New(queue.Config{
		Dynamic:    dyn,
		Discovery:  client.Discovery(),
		REST:       client.Discovery().RESTClient(),
		Namespace:  cfg.Namespace,
		Default:    cfg.DefaultQueue,
		Templates:  templates,
		Log:        log,
		Registerer: m.Registry,
	})
	q.Start(ctx)
	return q, nil
}
