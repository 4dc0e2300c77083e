package app

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/internal/webhook"
)

// Config is the backend's configuration. Every flag has an environment
// variable, so a Deployment can set either.
type Config struct {
	Listen          string
	Namespace       string
	Template        string
	Kubeconfig      string
	QPS             float64
	Burst           int
	MaxBodyBytes    int64
	APITimeout      time.Duration
	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        slog.Level
	// HistoryDSN names the history database; empty turns history off.
	HistoryDSN       string
	HistoryRetention time.Duration
	// Identity names this replica in the recorder's lease.
	Identity string
	// Auth is "none" or "kubernetes"; AuthAudience is the audience client
	// tokens must be issued for.
	Auth, AuthAudience string
	MaxInflight        int
	MaxLogReads        int
	MaxLogFollows      int
	MaxEventStreams    int
	// Experiment sets: the body limit, the sets processed at once, the
	// items of one set submitted at once.
	MaxSetBytes     int64
	MaxInflightSets int
	SetConcurrency  int
	// DebugListen serves Go's profiles (/debug/pprof/) when not empty.
	DebugListen string
	// DefaultQueue is the Kueue LocalQueue of a POST that names none;
	// empty: the template's own kueue.x-k8s.io/queue-name, if any.
	DefaultQueue string
	// WebhooksFile names the webhooks file; empty turns webhooks off.
	// Webhooks is its content, validated at start and read again as it
	// changes.
	WebhooksFile string
	Webhooks     *webhook.Live
	// WebhookMaxAge is how long a delivery is retried before it is given
	// up; WebhookWorkers bound the attempts under way at once;
	// WebhookTimeout bounds one attempt.
	WebhookMaxAge  time.Duration
	WebhookWorkers int
	WebhookTimeout time.Duration
}

// maxSetBytesLimit keeps a set's body within what the backend's memory
// limit can hold a few of: 1,000 items of the largest body a single POST
// takes would not fit beside the rest.
const maxSetBytesLimit = 64 << 20

// maxWebhookWorkers bounds --webhook-workers: each is a connection out.
const maxWebhookWorkers = 256

// maxSetConcurrency bounds --set-concurrency: each item in flight is a
// Job being built and sent.
const maxSetConcurrency = 256

// parseConfig reads flags, with defaults taken from the environment.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var cfg Config
	var qps, burst, maxBody, apiTimeout, shutdownTimeout, level, retention, inflight, logReads, logFollows, eventStreams string
	var maxSet, inflightSets, setConcurrency string
	var hookMaxAge, hookWorkers, hookTimeout string
	fs.StringVar(&cfg.Listen, "listen", env("GMINI_LISTEN", ":8080"), "address to serve HTTP on (GMINI_LISTEN)")
	fs.StringVar(&cfg.Namespace, "namespace", env("GMINI_NAMESPACE", getenv("POD_NAMESPACE")), "namespace for Jobs and the template; default: the pod's own namespace, else the kubeconfig's (GMINI_NAMESPACE, POD_NAMESPACE)")
	fs.StringVar(&cfg.Template, "template", env("GMINI_TEMPLATE", "gmini-runner"), "name of the suspended CronJob used as the Job template (GMINI_TEMPLATE)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file; default: in-cluster config, else KUBECONFIG or ~/.kube/config")
	// The API server protects itself with API Priority and Fairness; the
	// client-side limit is only a guard against a runaway loop. At 50/100 it
	// held spawning to 75 Jobs/s while the API server took up to 480 (see
	// docs/benchmarks.md), so it sits well above what one API server accepts.
	fs.StringVar(&qps, "kube-qps", env("GMINI_KUBE_QPS", "1000"), "client-side rate limit on API calls per second; it must stay above the API server's own rate, or it, not the API server, limits spawning (GMINI_KUBE_QPS)")
	fs.StringVar(&burst, "kube-burst", env("GMINI_KUBE_BURST", "2000"), "client-side burst of API calls (GMINI_KUBE_BURST)")
	fs.StringVar(&maxBody, "max-body-bytes", env("GMINI_MAX_BODY_BYTES", strconv.Itoa(api.DefaultMaxBodyBytes)), "largest accepted POST body; it must stay well below Linux's 128 KiB per-argument limit (GMINI_MAX_BODY_BYTES)")
	fs.StringVar(&apiTimeout, "api-timeout", env("GMINI_API_TIMEOUT", "10s"), "bound on API server calls per request (GMINI_API_TIMEOUT)")
	fs.StringVar(&shutdownTimeout, "shutdown-timeout", env("GMINI_SHUTDOWN_TIMEOUT", "25s"), "how long SIGTERM waits for in-flight requests; keep it below the pod's terminationGracePeriodSeconds (GMINI_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&cfg.LogFormat, "log-format", env("GMINI_LOG_FORMAT", "json"), "json or text (GMINI_LOG_FORMAT)")
	fs.StringVar(&level, "log-level", env("GMINI_LOG_LEVEL", "info"), "debug, info, warn or error (GMINI_LOG_LEVEL)")
	fs.StringVar(&cfg.HistoryDSN, "history-dsn", env("GMINI_HISTORY_DSN", ""), "history database: sqlite:/path/history.db or postgres://user:password@host:5432/db; empty: no history, experiments last as long as their Jobs (GMINI_HISTORY_DSN)")
	fs.StringVar(&retention, "history-retention", env("GMINI_HISTORY_RETENTION", "720h"), "how long a finished experiment's record and output are kept (GMINI_HISTORY_RETENTION)")
	fs.StringVar(&cfg.Auth, "auth", env("GMINI_AUTH", "none"), "none: anyone who reaches the backend may use it (keep it behind a NetworkPolicy); kubernetes: each request carries a Kubernetes bearer token, reviewed by the API server against RBAC on experiments.gmini.dev (GMINI_AUTH)")
	fs.StringVar(&cfg.AuthAudience, "auth-audience", env("GMINI_AUTH_AUDIENCE", "gmini"), "with --auth kubernetes, the audience client tokens must be issued for (GMINI_AUTH_AUDIENCE)")
	fs.StringVar(&inflight, "max-inflight", env("GMINI_MAX_INFLIGHT", "64"), "POST /experiment requests processed at once; beyond it, 429 at once; 0: no bound (GMINI_MAX_INFLIGHT)")
	fs.StringVar(&logReads, "max-log-reads", env("GMINI_MAX_LOG_READS", strconv.Itoa(api.DefaultMaxLogReads)), "GET /experiments/{id}/logs served at once, each holding up to 1 MiB of output; beyond it, 429 at once; 0: no bound (GMINI_MAX_LOG_READS)")
	fs.StringVar(&eventStreams, "max-event-streams", env("GMINI_MAX_EVENT_STREAMS", strconv.Itoa(api.DefaultMaxEventStreams)), "status event streams (GET /events and the like) served at once; beyond it, 429 at once; 0: no bound (GMINI_MAX_EVENT_STREAMS)")
	fs.StringVar(&logFollows, "max-log-follows", env("GMINI_MAX_LOG_FOLLOWS", strconv.Itoa(api.DefaultMaxLogFollows)), "GET /experiments/{id}/logs?follow=true served at once, each holding a 32 KiB buffer for as long as its experiment runs; beyond it, 429 at once; 0: no bound (GMINI_MAX_LOG_FOLLOWS)")
	fs.StringVar(&maxSet, "max-set-bytes", env("GMINI_MAX_SET_BYTES", strconv.Itoa(api.DefaultMaxSetBytes)), "largest accepted POST /experiment-sets body, read whole before any item is submitted; each item is still held to --max-body-bytes (GMINI_MAX_SET_BYTES)")
	fs.StringVar(&inflightSets, "max-inflight-sets", env("GMINI_MAX_INFLIGHT_SETS", strconv.Itoa(api.DefaultMaxInflightSets)), "POST /experiment-sets requests processed at once, each holding up to --max-set-bytes; beyond it, 429 at once; 0: no bound (GMINI_MAX_INFLIGHT_SETS)")
	fs.StringVar(&setConcurrency, "set-concurrency", env("GMINI_SET_CONCURRENCY", strconv.Itoa(sets.DefaultConcurrency)), "items of one experiment set submitted or cancelled at once (GMINI_SET_CONCURRENCY)")
	fs.StringVar(&cfg.DebugListen, "debug-listen", env("GMINI_DEBUG_LISTEN", ""), "address serving Go's CPU and memory profiles under /debug/pprof/, for performance work; empty: off. They need no token: keep it on localhost (GMINI_DEBUG_LISTEN)")
	fs.StringVar(&cfg.DefaultQueue, "default-queue", env("GMINI_DEFAULT_QUEUE", ""), "Kueue LocalQueue of an experiment whose POST names no \"queue\"; empty: the template's label kueue.x-k8s.io/queue-name, else none (GMINI_DEFAULT_QUEUE)")
	fs.StringVar(&cfg.Identity, "identity", env("GMINI_IDENTITY", getenv("POD_NAME")), "this replica's name in the recorder's lease, unique among the replicas; default: the pod's name, else the host name followed by _ and a random suffix (GMINI_IDENTITY, POD_NAME)")
	fs.StringVar(&cfg.WebhooksFile, "webhooks-file", env("GMINI_WEBHOOKS_FILE", ""), "webhooks file (YAML or JSON: sinks, allowNotify, notifySecret), mounted from a Secret; checked at start (an invalid file stops it), then read every 10 s and applied when it changed and is valid (an invalid change is logged and the configuration before it stays); empty: no webhooks. Needs --history-dsn (GMINI_WEBHOOKS_FILE)")
	fs.StringVar(&hookMaxAge, "webhook-max-age", env("GMINI_WEBHOOK_MAX_AGE", webhook.DefaultMaxAge.String()), "how long a webhook delivery is retried, with growing pauses up to 10 minutes, before it is given up as failed (GMINI_WEBHOOK_MAX_AGE)")
	fs.StringVar(&hookWorkers, "webhook-workers", env("GMINI_WEBHOOK_WORKERS", strconv.Itoa(webhook.DefaultWorkers)), "webhook attempts under way at once (GMINI_WEBHOOK_WORKERS)")
	fs.StringVar(&hookTimeout, "webhook-timeout", env("GMINI_WEBHOOK_TIMEOUT", webhook.DefaultTimeout.String()), "bound on one webhook attempt, connection included (GMINI_WEBHOOK_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	var errs []error
	var err error
	// ParseFloat accepts "NaN" and "Inf", and NaN <= 0 is false; client-go
	// takes the limit as a float32, so anything above its range is Inf too.
	if cfg.QPS, err = strconv.ParseFloat(qps, 64); err != nil || !(cfg.QPS > 0 && cfg.QPS <= math.MaxFloat32) {
		errs = append(errs, fmt.Errorf("kube-qps %q: want a positive finite number", qps))
	}
	if cfg.Burst, err = strconv.Atoi(burst); err != nil || cfg.Burst <= 0 {
		errs = append(errs, fmt.Errorf("kube-burst %q: want a positive integer", burst))
	}
	if cfg.MaxBodyBytes, err = strconv.ParseInt(maxBody, 10, 64); err != nil || cfg.MaxBodyBytes <= 0 || cfg.MaxBodyBytes > 100<<10 {
		errs = append(errs, fmt.Errorf("max-body-bytes %q: want 1 to %d (the runner gets the body as one argument)", maxBody, 100<<10))
	}
	if cfg.APITimeout, err = time.ParseDuration(apiTimeout); err != nil || cfg.APITimeout <= 0 {
		errs = append(errs, fmt.Errorf("api-timeout %q: want a positive duration such as 10s", apiTimeout))
	}
	if cfg.ShutdownTimeout, err = time.ParseDuration(shutdownTimeout); err != nil || cfg.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout %q: want a positive duration such as 25s", shutdownTimeout))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		errs = append(errs, fmt.Errorf("log-level %q: want debug, info, warn or error", level))
	}
	if cfg.LogFormat != "json" && cfg.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log-format %q: want json or text", cfg.LogFormat))
	}
	if cfg.HistoryRetention, err = time.ParseDuration(retention); err != nil || cfg.HistoryRetention <= 0 {
		errs = append(errs, fmt.Errorf("history-retention %q: want a positive duration such as 720h", retention))
	}
	if d := cfg.HistoryDSN; d != "" && !strings.HasPrefix(d, "sqlite:") && !strings.HasPrefix(d, "postgres://") && !strings.HasPrefix(d, "postgresql://") {
		scheme, _, _ := strings.Cut(d, ":")
		errs = append(errs, fmt.Errorf("history-dsn: %q is not a database gmini knows: use sqlite:/path/history.db or postgres://user:password@host:5432/db", scheme+":..."))
	}
	if cfg.Auth != "none" && cfg.Auth != "kubernetes" {
		errs = append(errs, fmt.Errorf("auth %q: want none or kubernetes", cfg.Auth))
	}
	if cfg.Auth == "kubernetes" && cfg.AuthAudience == "" {
		errs = append(errs, errors.New("auth-audience: must not be empty with --auth kubernetes"))
	}
	if cfg.MaxInflight, err = strconv.Atoi(inflight); err != nil || cfg.MaxInflight < 0 {
		errs = append(errs, fmt.Errorf("max-inflight %q: want 0 (no bound) or a positive integer", inflight))
	}
	if cfg.MaxLogReads, err = strconv.Atoi(logReads); err != nil || cfg.MaxLogReads < 0 {
		errs = append(errs, fmt.Errorf("max-log-reads %q: want 0 (no bound) or a positive integer", logReads))
	}
	if cfg.MaxLogFollows, err = strconv.Atoi(logFollows); err != nil || cfg.MaxLogFollows < 0 {
		errs = append(errs, fmt.Errorf("max-log-follows %q: want 0 (no bound) or a positive integer", logFollows))
	}
	if cfg.MaxEventStreams, err = strconv.Atoi(eventStreams); err != nil || cfg.MaxEventStreams < 0 {
		errs = append(errs, fmt.Errorf("max-event-streams %q: want 0 (no bound) or a positive integer", eventStreams))
	}
	if cfg.MaxSetBytes, err = strconv.ParseInt(maxSet, 10, 64); err != nil || cfg.MaxSetBytes <= 0 || cfg.MaxSetBytes > maxSetBytesLimit {
		errs = append(errs, fmt.Errorf("max-set-bytes %q: want 1 to %d", maxSet, maxSetBytesLimit))
	}
	if cfg.MaxInflightSets, err = strconv.Atoi(inflightSets); err != nil || cfg.MaxInflightSets < 0 {
		errs = append(errs, fmt.Errorf("max-inflight-sets %q: want 0 (no bound) or a positive integer", inflightSets))
	}
	if cfg.SetConcurrency, err = strconv.Atoi(setConcurrency); err != nil || cfg.SetConcurrency < 1 || cfg.SetConcurrency > maxSetConcurrency {
		errs = append(errs, fmt.Errorf("set-concurrency %q: want 1 to %d", setConcurrency, maxSetConcurrency))
	}
	if q := cfg.DefaultQueue; q != "" && len(validation.IsDNS1123Label(q)) > 0 {
		errs = append(errs, fmt.Errorf("default-queue %q: want a LocalQueue name (a DNS-1123 label)", q))
	}
	if cfg.WebhookMaxAge, err = time.ParseDuration(hookMaxAge); err != nil || cfg.WebhookMaxAge <= 0 {
		errs = append(errs, fmt.Errorf("webhook-max-age %q: want a positive duration such as 24h", hookMaxAge))
	}
	if cfg.WebhookWorkers, err = strconv.Atoi(hookWorkers); err != nil || cfg.WebhookWorkers < 1 || cfg.WebhookWorkers > maxWebhookWorkers {
		errs = append(errs, fmt.Errorf("webhook-workers %q: want 1 to %d", hookWorkers, maxWebhookWorkers))
	}
	if cfg.WebhookTimeout, err = time.ParseDuration(hookTimeout); err != nil || cfg.WebhookTimeout <= 0 {
		errs = append(errs, fmt.Errorf("webhook-timeout %q: want a positive duration such as 10s", hookTimeout))
	}
	if cfg.WebhooksFile != "" {
		if cfg.HistoryDSN == "" {
			errs = append(errs, errors.New("webhooks-file needs --history-dsn: deliveries are kept in the history database"))
		}
		if cfg.Webhooks, err = webhook.Open(cfg.WebhooksFile); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Template == "" {
		errs = append(errs, errors.New("template: must not be empty"))
	}
	if cfg.Identity == "" {
		// Two backends on one host (two processes, or pods on the host's
		// network) share its name; with the same identity both would
		// think they hold the lease and record at once.
		// The random suffix alone makes it unique; the host name says
		// where the holder runs.
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gmini-backend"
		}
		cfg.Identity = host + "_" + rand.Text()[:10]
	}
	return cfg, errors.Join(errs...)
}

func (c Config) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
