// Package app wires the backend together: configuration, the Kubernetes
// client, the template cache, the HTTP server and its graceful shutdown.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/recorder"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
	"github.com/gmini-dev/gmini/apps/backend/internal/template"
	"github.com/gmini-dev/gmini/apps/backend/internal/ui"
)

// Main runs the backend until SIGTERM or SIGINT and returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
}

// Run is Main with its inputs injected. When ready is not nil it receives
// the listening address once the server accepts connections.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "backend: %v\n", err)
		return 2
	}
	log := cfg.logger(stdout)
	if err := serve(ctx, cfg, log, ready); err != nil {
		log.Error("backend stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, ready chan<- string) error {
	client, restCfg, err := kubeClient(&cfg)
	if err != nil {
		return err
	}
	if cfg.DebugListen != "" {
		if err := serveDebug(ctx, cfg.DebugListen, log); err != nil {
			return err
		}
	}
	templates := template.NewCronJobSource(client, cfg.Namespace, cfg.Template, log)
	informerCtx, stopInformer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInformer()
	templates.Start(informerCtx)

	m := metrics.New()
	queues, err := startQueues(informerCtx, cfg, client, restCfg, templates, m, log)
	if err != nil {
		return err
	}
	// Log follows waiting for their runners read Jobs and pods from one
	// watch of each; a replica without the RBAC to watch pods (an older
	// Role) has follows read the API each poll, as before.
	watch, err := lifecycle.NewWatch(client, cfg.Namespace, 0)
	if err != nil {
		return err
	}
	go watch.Run(informerCtx)
	live := &lifecycle.Store{Client: client, Namespace: cfg.Namespace, Queues: queues, Watch: watch}
	svc := &experiments.Service{
		Spawner: &spawn.Spawner{Client: client, Namespace: cfg.Namespace, Templates: templates},
		Live:    live,
		Queues:  queues,
		// A POST creates its Job within --api-timeout of its claim; twice
		// that leaves room for the clocks of two replicas to differ.
		ClaimGrace: 2 * cfg.APITimeout,
		Log:        log,
	}
	var hub *events.Hub
	if cfg.HistoryDSN != "" {
		store := openHistory(informerCtx, cfg.HistoryDSN, cfg.Namespace, log)
		defer store.Close()
		svc.History = store
		hub = events.NewHub(store, events.Options{Log: log})
		go hub.Run(informerCtx)
		svc.Spawner.Hold = true
		whileLeading := startWebhooks(informerCtx, cfg, svc, store, m, log)
		recorderDone := make(chan struct{})
		go func() {
			defer close(recorderDone)
			recorder.Run(informerCtx, recorder.Config{
				Client: client, Namespace: cfg.Namespace, Store: store, Output: live.Capture,
				Metrics: m, Log: log, Retention: cfg.HistoryRetention,
				LeaseName: leaseName, Identity: cfg.Identity,
				WhileLeading: whileLeading,
			})
		}()
		// The recorder stops after the HTTP server: it releases its lease
		// for the next replica, and the store closes only once it is done.
		defer func() { stopInformer(); <-recorderDone }()
	}

	var reviewer *auth.Reviewer
	if cfg.Auth == "kubernetes" {
		if reviewer, err = auth.New(client, cfg.Namespace, []string{cfg.AuthAudience}); err != nil {
			return err
		}
	}

	shuttingDown := make(chan struct{})
	gin.SetMode(gin.ReleaseMode)
	handler := api.NewHandler(api.Config{
		Auth:            reviewer,
		MaxInflight:     cfg.MaxInflight,
		MaxLogReads:     cfg.MaxLogReads,
		MaxLogFollows:   cfg.MaxLogFollows,
		MaxEventStreams: cfg.MaxEventStreams,
		Events:          hub,
		History:         svc.History,
		// Follows end when the server shuts down; clients resume on
		// another replica.
		Done:        shuttingDown,
		Experiments: svc,
		Metrics:     m,
		Logger:      log,
		// Ready means "a POST would work": the template is there and
		// usable, and the API server answers.
		Ready: func(ctx context.Context) error {
			if err := templates.Check(); err != nil {
				return err
			}
			return apiReady(ctx, client)
		},
		MaxBodyBytes: cfg.MaxBodyBytes,
		APITimeout:   cfg.APITimeout,

		MaxSetBytes:     cfg.MaxSetBytes,
		MaxInflightSets: cfg.MaxInflightSets,
		SetConcurrency:  cfg.SetConcurrency,

		UI: ui.New(ui.Config{
			Experiments: svc,
			Sets:        &sets.Service{Experiments: svc, Concurrency: cfg.SetConcurrency, ItemTimeout: cfg.APITimeout},
			Auth:        reviewer,
			Logger:      log,
			APITimeout:  cfg.APITimeout,
		}),
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    api.MaxHeaderBytes,
	}
	srv.RegisterOnShutdown(func() { close(shuttingDown) })
	log.Info("backend listening", "addr", ln.Addr().String(), "namespace", cfg.Namespace,
		"template", cfg.Template, "qps", cfg.QPS, "burst", cfg.Burst, "history", cfg.HistoryDSN != "", "auth", cfg.Auth)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Shutdown stops accepting connections and waits for in-flight requests,
	// whose API calls keep their own contexts, so a POST that was accepted
	// still creates its Job and gets its answer.
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
