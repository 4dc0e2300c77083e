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
	// Sets counts POST /experiment-sets that were read (each item then
	// counts in SetItems, and in the three above as a POST would).
	Sets     prometheus.Counter
	SetItems *prometheus.CounterVec

	// History, written by the recorder on the leader.
	RecordsWritten *prometheus.CounterVec
	WriteErrors    *prometheus.CounterVec
	CaptureLag     prometheus.Histogram
	RecordsExpired prometheus.Counter
	Leader         prometheus.Gauge

	// LogFollowers counts the log follows being served.
	LogFollowers prometheus.Gauge
	// EventStreams counts the status event streams being served.
	EventStreams prometheus.Gauge

	// Webhook, written by the deliverer on the leader.
	Webhook Webhook
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
	m.RecordsWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gmini_history_records_written_total",
		Help: "History records written by the recorder, by the state written.",
	}, []string{"state"})
	m.WriteErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gmini_history_write_errors_total",
		Help: "History writes that failed, by operation (claim, update, finish, expire); the recorder retries its own.",
	}, []string{"op"})
	m.CaptureLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gmini_history_capture_lag_seconds",
		Help:    "Time from a Job finishing (or its deletion starting) to its final record and output being stored.",
		Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
	})
	m.RecordsExpired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gmini_history_records_expired_total",
		Help: "History records deleted because their retention passed.",
	})
	m.Leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gmini_history_leader",
		Help: "1 while this replica holds the recorder's lease and records history, else 0.",
	})
	m.Sets = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gmini_experiment_sets_total",
		Help: "POST /experiment-sets requests whose set was read and submitted, whatever its items' outcomes.",
	})
	m.SetItems = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gmini_experiment_set_items_total",
		Help: "Items of experiment sets, by outcome (created, existing, conflict, invalid, error).",
	}, []string{"outcome"})
	m.LogFollowers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gmini_log_followers",
		Help: "GET /experiments/{id}/logs?follow=true being served.",
	})
	m.EventStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gmini_event_streams",
		Help: "Status event streams (GET /events and the like) being served.",
	})
	m.Registry.MustRegister(m.Sets, m.SetItems, m.LogFollowers, m.EventStreams)
	m.Registry.MustRegister(m.RecordsWritten, m.WriteErrors, m.CaptureLag, m.RecordsExpired, m.Leader)
	m.Webhook = newWebhook(m.Registry)
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.JobsCreated, m.JobsExisting, m.SpawnErrors,
	)
	return m
}
