package app

import (
	"context"
	"log/slog"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/webhook"
)

// startWebhooks lets POSTs name notify URLs as the webhooks file allows,
// reads the file again as it changes until ctx ends, and returns what the
// recorder runs while it holds its lease: the deliverer, so that one
// replica delivers at a time. Nil without webhooks.
func startWebhooks(ctx context.Context, cfg Config, svc *experiments.Service, store history.Store, m *metrics.Metrics, log *slog.Logger) func(context.Context) {
	if cfg.Webhooks == nil {
		return nil
	}
	svc.Notify = cfg.Webhooks
	log.Info("webhooks on", "file", cfg.WebhooksFile, "config", cfg.Webhooks.Current().String(), "maxAge", cfg.WebhookMaxAge.String())
	go cfg.Webhooks.Run(ctx, webhook.DefaultReload, log.With("component", "webhook"), func(result string) {
		m.Webhook.ConfigReloads.WithLabelValues(result).Inc()
	})
	return func(ctx context.Context) {
		webhook.New(webhook.Options{
			Store: store, Live: cfg.Webhooks, Namespace: cfg.Namespace, Metrics: m, Log: log,
			Workers: cfg.WebhookWorkers, MaxAge: cfg.WebhookMaxAge, Timeout: cfg.WebhookTimeout,
		}).Run(ctx)
	}
}
