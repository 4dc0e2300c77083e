// Package metrics defines the backend's Prometheus metrics on a registry of
// its own, so tests can create as many backends as they like.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the backend's instruments.
type Metrics struct {
	Registry        *prometheus.Registry
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	JobsCreated     prometheus.Counter
	JobsExisting    prometheus.Counter
	SpawnErrors     *prometheus.CounterVec
}

// New creates the instruments and registers them, with the Go runtime and
// process collectors, on a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gmini_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		JobsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gmini_jobs_created_total",
			Help: "Jobs created for new experiments.",
		}),
		JobsExisting: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gmini_jobs_existing_total",
			Help: "Experiment submissions answered with an existing Job (retries).",
		}),
		SpawnErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gmini_spawn_errors_total",
			Help: "Experiment submissions that created no Job, by HTTP status code.",
		}, []string{"code"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.JobsCreated, m.JobsExisting, m.SpawnErrors,
	)
	return m
}
