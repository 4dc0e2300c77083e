// Package api is the backend's HTTP surface: routes, request checks and the
// mapping of errors onto status codes. The work itself is done by spawn and
// lifecycle.
package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/spawn"
)

// DefaultMaxBodyBytes bounds POST /experiment. The experiment reaches the
// runner as one process argument, and Linux refuses a single argument over
// 128 KiB (MAX_ARG_STRLEN); 64 KiB leaves room for re-encoding and keeps the
// Job object small in etcd.
const DefaultMaxBodyBytes = 64 << 10

// Config holds what the handlers need.
type Config struct {
	Spawner *spawn.Spawner
	Store   *lifecycle.Store
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// Ready reports whether the backend can serve: the API server answers
	// and the template is loaded.
	Ready func(context.Context) error
	// MaxBodyBytes defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// APITimeout bounds each request's calls to the API server, so a POST
	// answers 503 in bounded time when the API server is gone. Default 10s.
	APITimeout time.Duration
}

type server struct {
	Config
}

// NewHandler returns the backend's routes.
func NewHandler(cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.APITimeout <= 0 {
		cfg.APITimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{Config: cfg}

	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.observe, gin.CustomRecovery(s.recovered))
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, http.StatusNotFound, "no such route: "+c.Request.Method+" "+c.Request.URL.Path)
	})
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, http.StatusMethodNotAllowed, "method "+c.Request.Method+" is not allowed on "+c.Request.URL.Path)
	})

	r.POST("/experiment", s.createExperiment)
	r.GET("/experiments", s.listExperiments)
	r.GET("/experiments/:id", s.getExperiment)
	r.GET("/experiments/:id/logs", s.experimentLogs)
	r.DELETE("/experiments/:id", s.deleteExperiment)

	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok\n") })
	r.GET("/readyz", s.readyz)
	metricsHandler := promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{Registry: cfg.Metrics.Registry})
	r.GET("/metrics", gin.WrapH(metricsHandler))
	return r
}

// created is the answer to POST /experiment.
type created struct {
	ID        string `json:"id"`
	Job       string `json:"job"`
	Namespace string `json:"namespace"`
	Created   bool   `json:"created"`
	Status    string `json:"status"`
	Logs      string `json:"logs"`
}

func (s *server) createExperiment(c *gin.Context) {
	if code, msg := s.checkBody(c.Request); code != 0 {
		s.spawnFailed(c, code, msg)
		return
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, s.MaxBodyBytes)
	exp, err := experiment.Decode(body)
	if err != nil {
		s.spawnFailed(c, statusFor(err), s.message(err))
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	res, err := s.Spawner.Create(ctx, exp)
	if err != nil {
		code := statusFor(err)
		s.Logger.ErrorContext(ctx, "spawn experiment", "id", exp.ID, "code", code, "err", err)
		s.spawnFailed(c, code, s.message(err))
		return
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
		s.Metrics.JobsCreated.Inc()
		s.Logger.InfoContext(ctx, "job created", "id", exp.ID, "job", res.Job.Name)
	} else {
		s.Metrics.JobsExisting.Inc()
	}
	statusPath := "/experiments/" + exp.ID
	c.Header("Location", statusPath)
	c.JSON(code, created{
		ID:        exp.ID,
		Job:       res.Job.Name,
		Namespace: res.Job.Namespace,
		Created:   res.Created,
		Status:    statusPath,
		Logs:      statusPath + "/logs",
	})
}

// checkBody rejects what can be judged from the headers alone, before a
// byte of the body is read.
func (s *server) checkBody(r *http.Request) (int, string) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return http.StatusUnsupportedMediaType, `Content-Type must be application/json, got "` + ct + `"`
	}
	if r.ContentLength > s.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, "body is " + strconv.FormatInt(r.ContentLength, 10) +
			" bytes; the limit is " + strconv.FormatInt(s.MaxBodyBytes, 10)
	}
	return 0, ""
}

func (s *server) spawnFailed(c *gin.Context, code int, msg string) {
	s.Metrics.SpawnErrors.WithLabelValues(strconv.Itoa(code)).Inc()
	s.fail(c, code, msg)
}

// message is what the client reads for err: the whole chain, which names
// the object and the API server's reason. Two exceptions: request-size
// errors, whose text is Go's, and network errors, whose text carries the API
// server's internal address; the log keeps the full error.
func (s *server) message(err error) string {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return "body exceeds the limit of " + strconv.FormatInt(maxBytes.Limit, 10) + " bytes"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return "the Kubernetes API server is unreachable (" + rootCause(err).Error() + "); retry later"
	}
	return err.Error()
}

// rootCause is the innermost error of a chain, such as "connection refused".
func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

func (s *server) listExperiments(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	items, err := s.Store.List(ctx)
	if err != nil {
		s.fail(c, statusFor(err), s.message(err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
}

// experimentID validates the :id path parameter the same way as a POSTed ID.
func (s *server) experimentID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if err := experiment.ValidateID(id); err != nil {
		s.fail(c, http.StatusBadRequest, err.Error())
		return "", false
	}
	return id, true
}

func (s *server) getExperiment(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	st, err := s.Store.Get(ctx, id)
	if err != nil {
		s.fail(c, statusFor(err), s.message(err))
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *server) experimentLogs(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	// Buffer (bounded by the store) so that an error found midway can
	// still become a proper status code.
	var buf bytes.Buffer
	if err := s.Store.Logs(ctx, id, &buf); err != nil {
		s.fail(c, statusFor(err), s.message(err))
		return
	}
	c.Data(http.StatusOK, "text/plain; charset=utf-8", buf.Bytes())
}

func (s *server) deleteExperiment(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	st, err := s.Store.Delete(ctx, id)
	if err != nil {
		s.fail(c, statusFor(err), s.message(err))
		return
	}
	s.Logger.InfoContext(ctx, "experiment deleted", "id", id, "job", st.Job)
	c.JSON(http.StatusOK, gin.H{"id": id, "job": st.Job, "deleted": true})
}

func (s *server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		c.String(http.StatusServiceUnavailable, "not ready: %v\n", err)
		return
	}
	c.String(http.StatusOK, "ok\n")
}

// fail answers with a JSON error a person can act on. 503s carry
// Retry-After: the condition is expected to pass.
func (s *server) fail(c *gin.Context, code int, msg string) {
	if code == http.StatusServiceUnavailable {
		c.Header("Retry-After", "5")
	}
	c.AbortWithStatusJSON(code, gin.H{"error": msg})
}

func (s *server) recovered(c *gin.Context, v any) {
	s.Logger.ErrorContext(c.Request.Context(), "panic in handler", "panic", v, "path", c.Request.URL.Path)
	s.fail(c, http.StatusInternalServerError, "internal error")
}

// observe records metrics and one log line per request.
func (s *server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	elapsed := time.Since(start)
	code := c.Writer.Status()
	s.Metrics.Requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(code)).Inc()
	s.Metrics.RequestDuration.WithLabelValues(route, c.Request.Method).Observe(elapsed.Seconds())
	if route == "/healthz" || route == "/readyz" || route == "/metrics" {
		return // probes and scrapes would drown the log
	}
	s.Logger.LogAttrs(c.Request.Context(), slog.LevelInfo, "request",
		slog.String("method", c.Request.Method),
		slog.String("path", c.Request.URL.Path),
		slog.Int("code", code),
		slog.Duration("elapsed", elapsed),
	)
}
