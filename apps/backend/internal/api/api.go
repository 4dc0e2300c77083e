// Package api is the backend's HTTP surface: routes, request checks and the
// mapping of failures onto status codes (errors.go). The work itself is done
// by spawn and lifecycle.
package api

import (
	"context"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/metrics"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultMaxBodyBytes bounds POST /experiment. The experiment reaches the
// runner as one process argument, and Linux refuses a single argument over
// 128 KiB (MAX_ARG_STRLEN); 64 KiB leaves room for re-encoding and keeps the
// Job object small in etcd.
const DefaultMaxBodyBytes = 64 << 10

// MaxRequestTarget bounds the request target (path and query). The longest
// real one, a logs path with a 128-character ID, is far shorter; longer
// ones get a JSON 414 from the handler.
const MaxRequestTarget = 8 << 10

// MaxHeaderBytes is the http.Server's bound on the request line and
// headers. It sits well above MaxRequestTarget so that an over-long target
// reaches the handler and its JSON 414; only requests beyond it get
// net/http's plain-text 431.
const MaxHeaderBytes = 64 << 10

// Config holds what the handlers need.
type Config struct {
	Experiments *experiments.Service
	Metrics     *metrics.Metrics
	Logger      *slog.Logger
	// Ready reports whether a POST would work now: the template is loaded
	// and usable, and the API server answers.
	Ready func(context.Context) error
	// MaxBodyBytes defaults to DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// APITimeout bounds each request's calls to the API server, so a POST
	// answers 503 in bounded time when the API server is gone. Default 10s.
	APITimeout time.Duration
	// Auth, when set, makes every experiment request authenticate and be
	// authorized through the API server; nil serves everyone (the
	// tutorial's open contract, for namespaces behind a NetworkPolicy).
	Auth *auth.Reviewer
	// MaxInflight bounds the POSTs being processed at once; beyond it a
	// POST gets 429 at once. 0 means no bound.
	MaxInflight int
	// MaxLogReads bounds the GET .../logs being served at once: each holds
	// up to lifecycle.MaxLogBytes. Beyond it, 429 at once. 0 means no
	// bound.
	MaxLogReads int
	// MaxLogFollows bounds the GET .../logs?follow=true being served at
	// once, apart from MaxLogReads: follows last as long as experiments.
	// Beyond it, 429 at once. 0 means no bound.
	MaxLogFollows int
	// Events serves the status event streams from History, the store
	// they come from; both nil without a history store (the streams then
	// answer 404).
	Events  *events.Hub
	History history.Store
	// MaxEventStreams bounds the status event streams served at once;
	// beyond it, 429 at once. 0 means no bound.
	MaxEventStreams int
	// Heartbeat is the pause between the comments that keep an SSE log
	// follow alive; default DefaultHeartbeat, negative for none.
	Heartbeat time.Duration
	// FollowPoll is how often a follow looks at the Job while no log
	// streams; default 1s.
	FollowPoll time.Duration
	// PositionPoll is how often an experiment's event stream looks at
	// its queue position while it is Queued; default
	// DefaultPositionPoll.
	PositionPoll time.Duration
	// Done, closed when the server shuts down, ends the log follows, which
	// would otherwise hold the drain until their experiments end.
	Done <-chan struct{}
	// MaxSetBytes bounds POST /experiment-sets; default
	// DefaultMaxSetBytes. Each item is still held to MaxBodyBytes.
	MaxSetBytes int64
	// MaxInflightSets bounds the sets processed at once; beyond it 429 at
	// once. 0 means no bound.
	MaxInflightSets int
	// SetConcurrency bounds the items of one set submitted or cancelled
	// at once; default sets.DefaultConcurrency.
	SetConcurrency int
	// UI, when set, serves the status page under /ui/ (package ui), and
	// / redirects to it.
	UI http.Handler
}

// DefaultMaxLogReads keeps concurrent log reads to a few tens of MiB,
// well inside the backend's memory limit next to its other work.
const DefaultMaxLogReads = 16

type server struct {
	Config
	inflight, logReads, logFollows, setSlots chan struct{}
	eventStreams                             chan struct{}
	sets                                     *sets.Service
	// done is Done as a context, made once: streams hang their end on it
	// with context.AfterFunc, which needs no goroutine per stream.
	done context.Context
}

// NewHandler returns the backend's routes. Every error it answers is JSON.
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
	if cfg.Done != nil {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-cfg.Done; cancel() }()
		s.done = ctx
	}
	if cfg.MaxInflight > 0 {
		s.inflight = make(chan struct{}, cfg.MaxInflight)
	}
	if cfg.MaxLogReads > 0 {
		s.logReads = make(chan struct{}, cfg.MaxLogReads)
	}
	if cfg.MaxLogFollows > 0 {
		s.logFollows = make(chan struct{}, cfg.MaxLogFollows)
	}
	if cfg.MaxEventStreams > 0 {
		s.eventStreams = make(chan struct{}, cfg.MaxEventStreams)
	}
	if s.Heartbeat == 0 {
		s.Heartbeat = DefaultHeartbeat
	}
	if s.PositionPoll <= 0 {
		s.PositionPoll = DefaultPositionPoll
	}
	if s.MaxSetBytes <= 0 {
		s.MaxSetBytes = DefaultMaxSetBytes
	}
	if cfg.MaxInflightSets > 0 {
		s.setSlots = make(chan struct{}, cfg.MaxInflightSets)
	}
	s.sets = &sets.Service{Experiments: cfg.Experiments, Concurrency: cfg.SetConcurrency, ItemTimeout: s.APITimeout}

	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	// gin answers "/experiments/" or "/Experiments" with a redirect whose
	// body is HTML; a JSON 404 tells the client what is wrong instead.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	// observe comes first so that what the others reject is counted too.
	r.Use(s.observe, s.limitTarget, gin.CustomRecovery(s.recovered))
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, failure.New(failure.NotFound, "no such route: %s %s", methodOf(c.Request), failure.Quote(c.Request.URL.Path)))
	})
	r.NoMethod(func(c *gin.Context) {
		s.fail(c, failure.New(failure.MethodNotAllowed, "method %s is not allowed on %s", methodOf(c.Request), failure.Quote(c.Request.URL.Path)))
	})

	r.POST("/experiment", bounded(s.inflight, s.tooManyPOSTs), s.authorize(auth.VerbCreate), s.createExperiment)
	r.GET("/experiments", s.authorize(auth.VerbList), s.listExperiments)
	r.GET("/experiments/:id", s.authorize(auth.VerbGet), s.getExperiment)
	r.GET("/experiments/:id/logs", s.authorize(auth.VerbGet), s.boundLogs, s.experimentLogs)
	r.DELETE("/experiments/:id", s.authorize(auth.VerbDelete), s.deleteExperiment)
	s.setsRoutes(r)
	s.eventsRoutes(r)
	if cfg.UI != nil {
		r.Any("/ui/*path", gin.WrapH(cfg.UI))
		r.GET("/", toUI)
		r.GET("/ui", toUI)
	}

	// Probes and load balancers also use HEAD; net/http drops the body.
	healthz := func(c *gin.Context) { c.String(http.StatusOK, "ok\n") }
	r.GET("/healthz", healthz)
	r.HEAD("/healthz", healthz)
	r.GET("/readyz", s.readyz)
	r.HEAD("/readyz", s.readyz)
	metricsHandler := promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{Registry: cfg.Metrics.Registry})
	r.GET("/metrics", gin.WrapH(metricsHandler))
	return r
}

func (s *server) createExperiment(c *gin.Context) {
	if err := s.checkBody(c.Request); err != nil {
		s.spawnFailed(c, "", err)
		return
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, s.MaxBodyBytes)
	exp, err := experiment.Decode(body)
	if err != nil {
		s.spawnFailed(c, "", err)
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	who := auth.UserName(ctx)
	if err := s.authorizeQueue(ctx, exp.Queue); err != nil {
		s.spawnFailed(c, exp.ID, err)
		return
	}
	res, err := s.Experiments.Submit(ctx, exp, who)
	if err != nil {
		s.spawnFailed(c, exp.ID, err)
		return
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
		s.Metrics.JobsCreated.Inc()
		s.Logger.InfoContext(ctx, "job created", "id", exp.ID, "job", res.Job, "user", who)
	} else {
		s.Metrics.JobsExisting.Inc()
	}
	statusPath := "/experiments/" + exp.ID
	c.Header("Location", statusPath)
	c.JSON(code, wire.Submission{
		ID:        exp.ID,
		Job:       res.Job,
		Namespace: res.Namespace,
		Created:   res.Created,
		State:     res.State,
		Source:    res.Source,
		Status:    statusPath,
		Logs:      statusPath + "/logs",
	})
}

// checkBody rejects what can be judged from the headers alone, before a
// byte of the body is read.
func (s *server) checkBody(r *http.Request) error {
	if err := s.checkContentType(r); err != nil {
		return err
	}
	if r.ContentLength > s.MaxBodyBytes {
		return failure.New(failure.TooLarge, "body is %d bytes; the limit is %d", r.ContentLength, s.MaxBodyBytes)
	}
	return nil
}

func (s *server) checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return failure.New(failure.UnsupportedMediaType, "Content-Type must be application/json, got %q", ct)
	}
	return nil
}

// spawnFailed answers a POST that created no Job. id is empty when the
// request was refused before its ID was known.
func (s *server) spawnFailed(c *gin.Context, id string, err error) {
	code := s.fail(c, err)
	s.Metrics.SpawnErrors.WithLabelValues(strconv.Itoa(code)).Inc()
	if id != "" {
		s.logFailure(c, "spawn experiment", id, code, err)
	}
}

// logFailure logs an experiment request that failed, with its cause: the
// client reads only MessageOf(err).
func (s *server) logFailure(c *gin.Context, msg, id string, code int, err error) {
	s.logFailureCtx(c.Request.Context(), msg, id, code, err)
}

// logFailureCtx is logFailure for a request whose gin context is gone.
func (s *server) logFailureCtx(ctx context.Context, msg, id string, code int, err error) {
	level := slog.LevelInfo
	if code >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	attrs := []any{"code", code, "err", err}
	if id != "" {
		attrs = append([]any{"id", id, "job", jobspec.JobName(id)}, attrs...)
	}
	s.Logger.Log(ctx, level, msg, attrs...)
}

// listOptions reads a page's query (limit, continue, state) as GET
// /experiments and GET /experiment-sets/{id} take it; a bad limit is
// answered 400 here, the rest by the store.
func (s *server) listOptions(c *gin.Context) (experiments.ListOptions, bool) {
	opts := experiments.ListOptions{Continue: c.Query("continue"), State: c.Query("state")}
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.fail(c, failure.New(failure.Invalid, "limit %s: want a positive integer (at most %d)", failure.Quote(v), history.MaxPageSize))
			return opts, false
		}
		opts.Limit = n
	}
	return opts, true
}

func (s *server) listExperiments(c *gin.Context) {
	opts, ok := s.listOptions(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	page, err := s.Experiments.List(ctx, opts)
	if err != nil {
		s.logFailure(c, "list experiments", "", s.fail(c, err), err)
		return
	}
	c.JSON(http.StatusOK, wire.Page{Items: page.Items, Continue: page.Continue})
}

// experimentID validates the :id path parameter the same way as a POSTed ID.
func (s *server) experimentID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if err := experiment.ValidateID(id); err != nil {
		s.fail(c, err)
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
	st, err := s.Experiments.Get(ctx, id)
	if err != nil {
		s.logFailure(c, "get experiment", id, s.fail(c, err), err)
		return
	}
	c.JSON(http.StatusOK, st)
}

func (s *server) experimentLogs(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok {
		return
	}
	if follow, _ := followParam(c); follow {
		s.followLogs(c, id)
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	// The output goes straight to the client from the reader's buffer:
	// the readers write nothing before they know there is no error, so a
	// failure still gets its status code.
	w := &textWriter{ResponseWriter: c.Writer}
	err := s.Experiments.Logs(ctx, id, w)
	switch {
	case err != nil && !c.Writer.Written():
		s.logFailure(c, "read experiment logs", id, s.fail(c, err), err)
	case err != nil: // the client went away midway
		s.logFailure(c, "send experiment logs", id, http.StatusOK, err)
	case !c.Writer.Written(): // no output yet
		c.Data(http.StatusOK, textPlain, nil)
	}
}

const textPlain = "text/plain; charset=utf-8"

// textWriter sets the Content-Type of the logs at their first byte, not
// before: an error answered instead is JSON.
type textWriter struct {
	gin.ResponseWriter
}

func (w *textWriter) Write(p []byte) (int, error) {
	if !w.Written() {
		w.Header().Set("Content-Type", textPlain)
	}
	return w.ResponseWriter.Write(p)
}

func (s *server) deleteExperiment(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	res, err := s.Experiments.Cancel(ctx, id)
	if err != nil {
		s.logFailure(c, "delete experiment", id, s.fail(c, err), err)
		return
	}
	if res.Deleted {
		s.Logger.InfoContext(ctx, "experiment deleted", "id", id, "job", res.Job, "user", auth.UserName(ctx))
	}
	c.JSON(http.StatusOK, wire.Cancellation{ID: id, Job: res.Job, Deleted: res.Deleted, State: res.State})
}

// toUI redirects to the status page. The Location is relative, as every
// link of the page is: the API server's service proxy (make proxy) would
// rewrite an absolute one to its own address.
func toUI(c *gin.Context) {
	c.Header("Location", "ui/")
	c.Status(http.StatusFound)
}

// readyz answers 200 only when a POST would work now; otherwise 503 with
// the reason, whatever kind of error the check met.
func (s *server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		s.fail(c, failure.Wrap(failure.Unavailable, err, "not ready"))
		return
	}
	c.String(http.StatusOK, "ok\n")
}

func (s *server) recovered(c *gin.Context, v any) {
	s.Logger.ErrorContext(c.Request.Context(), "panic in handler", "panic", v, "path", c.Request.URL.Path)
	s.fail(c, failure.New(failure.Internal, "internal error"))
}

// bounded lets at most cap(slots) requests through at once and answers
// the others with refuse at once: a burst is refused cheaply instead of
// queueing (POSTs on the API server, log reads on the backend's memory).
// A nil slots bounds nothing. A handler whose work outlives it (an event
// stream that took its connection) keeps its slot with keepSlot.
func bounded(slots chan struct{}, refuse gin.HandlerFunc) gin.HandlerFunc {
	if slots == nil {
		return func(*gin.Context) {}
	}
	return func(c *gin.Context) {
		select {
		case slots <- struct{}{}:
		default:
			refuse(c)
			return
		}
		sl := &slot{release: sync.OnceFunc(func() { <-slots })}
		c.Set(slotKey, sl)
		defer func() {
			if !sl.kept {
				sl.release()
			}
		}()
		c.Next()
	}
}

// slot is a request's place in a bounded route.
type slot struct {
	release func()
	kept    bool
}

const slotKey = "gmini.slot"

// keepSlot hands the request's slot, if it holds one, to the caller, who
// must call the returned release; the request no longer frees it when
// its handlers return. Without a slot the release does nothing.
func keepSlot(c *gin.Context) (release func()) {
	v, ok := c.Get(slotKey)
	if !ok {
		return func() {}
	}
	sl := v.(*slot)
	sl.kept = true
	return sl.release
}

// tooManyPOSTs refuses a POST beyond MaxInflight.
func (s *server) tooManyPOSTs(c *gin.Context) {
	s.spawnFailed(c, "", failure.New(failure.TooManyRequests, "%d experiments are being submitted already (--max-inflight); retry after the Retry-After delay", s.MaxInflight))
}

// tooManyLogReads refuses a log read beyond MaxLogReads, so that many
// readers of a large output cannot take the backend past its memory limit.
func (s *server) tooManyLogReads(c *gin.Context) {
	err := failure.New(failure.TooManyRequests, "%d log reads are being served already (--max-log-reads); retry after the Retry-After delay", s.MaxLogReads)
	s.logFailure(c, "read experiment logs", c.Param("id"), s.fail(c, err), err)
}

// authorize checks, when the backend authenticates clients, that the
// caller may verb the experiment of the :id parameter (or experiments, for
// create and list); the caller's identity then rides in the request's
// context. The token itself is never logged.
func (s *server) authorize(verb string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.Auth == nil {
			return
		}
		id := c.Param("id")
		if id != "" && experiment.ValidateID(id) != nil {
			return // the handler refuses the ID with a 400
		}
		req := c.Request
		if req.Method == http.MethodGet || req.Method == http.MethodHead {
			// The status page's EventSources cannot send a header, only
			// the page's cookie; reads may use it, changes never (CSRF).
			req = auth.WithCookieToken(req)
		}
		who, err := s.Auth.Check(req, verb, id)
		if err != nil {
			if failure.KindOf(err) == failure.Unauthenticated {
				c.Header("WWW-Authenticate", `Bearer realm="gmini"`)
			}
			code := s.fail(c, err)
			if verb == auth.VerbCreate {
				s.Metrics.SpawnErrors.WithLabelValues(strconv.Itoa(code)).Inc()
			}
			s.logFailure(c, "refused "+verb, id, code, err)
			return
		}
		c.Request = c.Request.WithContext(auth.WithUser(c.Request.Context(), who))
	}
}

// limitTarget refuses request targets longer than MaxRequestTarget with a
// JSON 414, before any handler reads them.
func (s *server) limitTarget(c *gin.Context) {
	target := c.Request.RequestURI
	if target == "" { // a request built in-process rather than read by a server
		target = c.Request.URL.RequestURI()
	}
	if n := len(target); n > MaxRequestTarget {
		s.fail(c, failure.New(failure.URITooLong, "the request target is %d bytes; the limit is %d", n, MaxRequestTarget))
	}
}

// methodLabel bounds the method label of the request metrics: any other
// token is a valid HTTP method, and each would add series for ever.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "other"
}

// methodOf is r's method for an error message: any token is a method, as
// long as the request line allows.
func methodOf(r *http.Request) string {
	if len(r.Method) > failure.MaxQuoted {
		return failure.Quote(r.Method)
	}
	return r.Method
}

// maxLoggedPath keeps a log line short when the path is long (up to
// MaxRequestTarget, or more for a 414).
const maxLoggedPath = 512

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
	method := methodLabel(c.Request.Method)
	s.Metrics.Requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	s.Metrics.RequestDuration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	if route == "/healthz" || route == "/readyz" || route == "/metrics" {
		return // probes and scrapes would drown the log
	}
	path := c.Request.URL.Path
	if len(path) > maxLoggedPath {
		path = path[:maxLoggedPath] + "..."
	}
	s.Logger.LogAttrs(c.Request.Context(), slog.LevelInfo, "request",
		slog.String("method", c.Request.Method),
		slog.String("path", path),
		slog.Int("code", code),
		slog.Duration("elapsed", elapsed),
	)
}
