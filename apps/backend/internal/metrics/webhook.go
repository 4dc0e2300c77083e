package metrics

import "github.com/prometheus/client_golang/prometheus"

// Webhook are the instruments of webhook deliveries (package webhook), on
// the replica that delivers (the recorder's lease holder).
type Webhook struct {
	// Deliveries counts deliveries that ended, by result: delivered or
	// failed (given up, or refused for good).
	Deliveries *prometheus.CounterVec
	// Attempts counts attempts by outcome: 2xx, 410, 4xx, 5xx, 3xx
	// (redirects are not followed), timeout, network, blocked (the address
	// guard refused the connection), unconfigured (its sink or allowNotify
	// entry is gone).
	Attempts *prometheus.CounterVec
	// Pending is the deliveries waiting to be delivered.
	Pending prometheus.Gauge
	// ConfigReloads counts the webhooks file's changes, by result:
	// applied, or invalid (the configuration before it stays).
	ConfigReloads *prometheus.CounterVec
}

func newWebhook(reg prometheus.Registerer) Webhook {
	w := Webhook{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_webhook_deliveries_total",
			Help: "Webhook deliveries that ended, by result (delivered, failed).",
		}, []string{"result"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_webhook_attempts_total",
			Help: "Webhook delivery attempts, by outcome (2xx, 410, 4xx, 5xx, 3xx, timeout, network, blocked, unconfigured).",
		}, []string{"outcome"}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gmini_webhook_pending",
			Help: "Webhook deliveries pending, as the delivering replica last counted them (0 on the others).",
		}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_webhook_config_reloads_total",
			Help: "Changes of the webhooks file read, by result (applied, invalid: the configuration before it stays).",
		}, []string{"result"}),
	}
	reg.MustRegister(w.Deliveries, w.Attempts, w.Pending, w.ConfigReloads)
	return w
}
