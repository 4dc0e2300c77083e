// Package ui is the backend's status page under /ui/: the experiments, one
// experiment with its timeline and live log, and a set's progress. Pages
// are rendered on the server with html/template from what the JSON API's
// own services answer (experiments, sets), and kept live in the browser by
// one small script whose EventSources read the API's streams (GET
// /events, /experiments/{id}/events, /experiments/{id}/logs?follow=true).
// Nothing is fetched from elsewhere: the stylesheet and the script are
// embedded.
//
// Every link the pages carry is relative: behind the API server's service
// proxy (make proxy) the page lives under a prefix the backend does not
// know, and the proxy rewrites absolute links (and Location headers) to its
// own address.
//
// With authentication on, the pages authenticate as the API does
// (auth.Reviewer), with the token a person signs in with kept in a cookie
// (session.go).
package ui

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/gmini-dev/gmini/apps/backend/internal/api"
	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiment"
	"github.com/gmini-dev/gmini/apps/backend/internal/experiments"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Config holds what the pages need: the JSON API's services and its
// authentication.
type Config struct {
	Experiments *experiments.Service
	Sets        *sets.Service
	// Auth, when set, makes every page and action authenticate and be
	// authorized as the API's requests are; nil serves everyone.
	Auth   *auth.Reviewer
	Logger *slog.Logger
	// APITimeout bounds each page's calls, as the API's; default 10s.
	APITimeout time.Duration
	// PageSize is how many experiments a page lists unless ?limit= says;
	// default DefaultPageSize.
	PageSize int
}

// DefaultPageSize is Config.PageSize's default: a screenful or two.
const DefaultPageSize = 50

type handler struct {
	Config
	cross *http.CrossOriginProtection
}

// New returns the status page's handler, for the paths under /ui/.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.APITimeout <= 0 {
		cfg.APITimeout = 10 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	h := &handler{Config: cfg, cross: http.NewCrossOriginProtection()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", h.list)
	mux.HandleFunc("GET /ui/experiments/{id}", h.experiment)
	mux.HandleFunc("POST /ui/experiments/{id}/cancel", h.cancel)
	mux.HandleFunc("GET /ui/sets/{id}", h.set)
	mux.HandleFunc("POST /ui/login", h.login)
	mux.HandleFunc("POST /ui/logout", h.logout)
	mux.HandleFunc("GET /ui/static/{name}", serveAsset)
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, rootOf(r.URL.Path), failure.New(failure.NotFound, "no such page: %s", failure.Quote(r.URL.Path)))
	})
	return secured(mux)
}

// secured sets the headers every answer of the page carries: nothing but
// the page's own script and stylesheet may run or load, the page may not
// be framed (a cancel button under someone else's page), and pages, which
// hold a CSRF token and the caller's data, are not cached.
func secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: a form POST must carry its Origin,
		// which no-referrer turns into "null".
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// Relative paths from a page to /ui/ and to the backend's root.
const (
	rootTop    = "./"  // from /ui/
	rootNested = "../" // from /ui/experiments/{id}, /ui/sets/{id}
)

// rootOf is the relative path from the page at path to /ui/.
func rootOf(path string) string {
	depth := 0
	for i := len("/ui/"); i < len(path); i++ {
		if path[i] == '/' {
			depth++
		}
	}
	if depth == 0 {
		return rootTop
	}
	root := ""
	for range depth {
		root += "../"
	}
	return root
}

// page is what every template gets.
type page struct {
	Name  string // the template, and the page's kind for the script
	Title string
	// Root is the relative path to /ui/, API to the backend's root.
	Root, API string
	// Auth is on; User is who signed in.
	Auth bool
	User string
	CSRF string
	Data any
}

func (h *handler) newPage(w http.ResponseWriter, r *http.Request, name, title, root string, who user.Info) *page {
	p := &page{Name: name, Title: title, Root: root, API: root + "../", Auth: h.Auth != nil}
	if who != nil {
		p.User = who.GetName()
	}
	p.CSRF = csrfToken(h.sessionSecret(w, r))
	return p
}

// render writes p with status code. The page is rendered whole first, so
// that a template error is a 500, not half a page.
func (h *handler) render(w http.ResponseWriter, r *http.Request, code int, p *page) {
	var buf bytes.Buffer
	if err := pages[p.Name].ExecuteTemplate(&buf, "layout", p); err != nil {
		h.Logger.ErrorContext(r.Context(), "render page", "page", p.Name, "err", err)
		http.Error(w, "internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

type errorData struct {
	Code    int
	Status  string
	Message string
}

// fail answers err as an error page with the status the API gives it.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, root string, err error) {
	code := api.StatusOf(err)
	level := slog.LevelInfo
	if code >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	h.Logger.Log(r.Context(), level, "status page", "path", r.URL.Path, "code", code, "err", err)
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	p := h.newPage(w, r, "error", http.StatusText(code), root, nil)
	p.Data = errorData{Code: code, Status: http.StatusText(code), Message: failure.MessageOf(err)}
	h.render(w, r, code, p)
}

func (h *handler) context(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.APITimeout)
}

// listData is the experiment list.
type listData struct {
	States     []string
	State, Set string
	Items      []row
	// First is the newest page; Next and Newest are the links to the next
	// and the first page with the same filters.
	First        bool
	Next, Newest string
	// Note says what the list is when it is not the newest first.
	Note string
	// Events is the relative URL of the status stream this list follows.
	Events string
}

// row is one experiment of a list.
type row struct {
	wire.Status
	Cancellable bool
}

func rows(items []wire.Status) []row {
	out := make([]row, len(items))
	for i, st := range items {
		out[i] = row{Status: st, Cancellable: cancellable(st.State)}
	}
	return out
}

// cancellable reports whether an experiment in state s can still be
// cancelled: it is neither finished nor being deleted.
func cancellable(s string) bool { return !state.Final(s) && s != state.Deleting }

// pageOptions reads a page's query as the API's list does: limit,
// continue, state.
func (h *handler) pageOptions(q url.Values) (experiments.ListOptions, error) {
	opts := experiments.ListOptions{Limit: h.PageSize, Continue: q.Get("continue"), State: q.Get("state")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > history.MaxPageSize {
			return opts, failure.New(failure.Invalid, "limit %s: want 1 to %d", failure.Quote(v), history.MaxPageSize)
		}
		opts.Limit = n
	}
	if opts.State != "" && !state.Known(opts.State) {
		return opts, failure.New(failure.Invalid, "state %s is not one of %s", failure.Quote(opts.State), strings.Join(state.All(), ", "))
	}
	return opts, nil
}

// list is /ui/: the experiments, newest first, filtered by state and set
// (?state=, ?set=), a page at a time (?continue=).
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	const root = rootTop
	q := r.URL.Query()
	who, ok := h.authorize(w, r, root, auth.VerbList, "")
	if !ok {
		return
	}
	opts, err := h.pageOptions(q)
	if err != nil {
		h.fail(w, r, root, err)
		return
	}
	set := q.Get("set")
	if set != "" {
		if err := jobspec.ValidateSetID(set); err != nil {
			h.fail(w, r, root, &failure.Error{Kind: failure.Invalid, Err: err})
			return
		}
	}
	ctx, cancel := h.context(r)
	defer cancel()
	after := h.lastEvent(ctx)
	d := listData{States: state.All(), State: opts.State, Set: set, First: opts.Continue == ""}
	if set != "" {
		s, err := h.Sets.Get(ctx, set, opts)
		switch {
		case failure.KindOf(err) == failure.NotFound:
			d.Note = failure.MessageOf(err)
		case err != nil:
			h.fail(w, r, root, err)
			return
		}
		d.Items, d.Next = rows(s.Items), s.Continue
	} else {
		pg, err := h.Experiments.List(ctx, opts)
		if err != nil {
			h.fail(w, r, root, err)
			return
		}
		d.Items, d.Next = rows(pg.Items), pg.Continue
	}
	if h.Experiments.History == nil {
		d.Note = "History is off: the experiments whose Jobs exist, in the API server's order (by Job name)."
	}
	keep := url.Values{}
	for _, k := range []string{"state", "set", "limit"} {
		if v := q.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	d.Newest = "./"
	if len(keep) > 0 {
		d.Newest = "?" + keep.Encode()
	}
	if d.Next != "" {
		keep.Set("continue", d.Next)
		d.Next = "?" + keep.Encode()
	}
	// The state filter is the script's: a row that leaves the state is
	// still updated, and only new experiments are held to it.
	d.Events = root + "../events" + streamQuery(set, after)
	p := h.newPage(w, r, "list", "Experiments", root, who)
	p.Data = d
	h.render(w, r, http.StatusOK, p)
}

// experimentData is one experiment's page.
type experimentData struct {
	wire.Status
	Cancellable bool
	// Events and Logs are the relative URLs of its status stream and its
	// log follow.
	Events, Logs string
}

// experiment is /ui/experiments/{id}: its fields, the timeline of its
// states and its live log.
func (h *handler) experiment(w http.ResponseWriter, r *http.Request) {
	const root = rootNested
	id := r.PathValue("id")
	if err := experiment.ValidateID(id); err != nil {
		h.fail(w, r, root, err)
		return
	}
	who, ok := h.authorize(w, r, root, auth.VerbGet, id)
	if !ok {
		return
	}
	ctx, cancel := h.context(r)
	defer cancel()
	st, err := h.Experiments.Get(ctx, id)
	if err != nil {
		h.fail(w, r, root, err)
		return
	}
	base := root + "../experiments/" + url.PathEscape(id)
	p := h.newPage(w, r, "experiment", "Experiment "+id, root, who)
	p.Data = experimentData{Status: st, Cancellable: cancellable(st.State), Events: base + "/events", Logs: base + "/logs?follow=true"}
	h.render(w, r, http.StatusOK, p)
}

// setData is a set's page.
type setData struct {
	wire.Set
	// Counts in the vocabulary's order, the states with none left out.
	States []stateCount
	// Finished counts the items with an outcome; Percent is their share.
	Finished, Percent int
	Items             []row
	State             string
	AllStates         []string
	First             bool
	Next, Newest      string
	// Events is the relative URL of the status stream of the set, Status
	// that of its JSON status (for the counts).
	Events, Status string
}

type stateCount struct {
	State string
	Count int
}

// set is /ui/sets/{id}: a set's progress, its counts by state and its
// items, with their places in the queue while they wait.
func (h *handler) set(w http.ResponseWriter, r *http.Request) {
	const root = rootNested
	id := r.PathValue("id")
	if err := jobspec.ValidateSetID(id); err != nil {
		h.fail(w, r, root, &failure.Error{Kind: failure.Invalid, Err: err})
		return
	}
	// A set is authorized as the collection, as GET /experiment-sets/{id}.
	who, ok := h.authorize(w, r, root, auth.VerbList, "")
	if !ok {
		return
	}
	q := r.URL.Query()
	opts, err := h.pageOptions(q)
	if err != nil {
		h.fail(w, r, root, err)
		return
	}
	ctx, cancel := h.context(r)
	defer cancel()
	after := h.lastEvent(ctx)
	s, err := h.Sets.Get(ctx, id, opts)
	if err != nil {
		h.fail(w, r, root, err)
		return
	}
	d := setData{Set: s, Items: rows(s.Items), State: opts.State, AllStates: state.All(), First: opts.Continue == ""}
	for _, st := range state.All() {
		if n := s.Counts[st]; n > 0 {
			d.States = append(d.States, stateCount{st, n})
		}
		if state.Final(st) {
			d.Finished += s.Counts[st]
		}
	}
	if s.Total > 0 {
		d.Percent = d.Finished * 100 / s.Total
	}
	h.describeQueued(ctx, d.Items)
	keep := url.Values{}
	for _, k := range []string{"state", "limit"} {
		if v := q.Get(k); v != "" {
			keep.Set(k, v)
		}
	}
	d.Newest = url.PathEscape(id)
	if len(keep) > 0 {
		d.Newest = "?" + keep.Encode()
	}
	if s.Continue != "" {
		keep.Set("continue", s.Continue)
		d.Next = "?" + keep.Encode()
	}
	d.Events = root + "../events" + streamQuery(id, after)
	d.Status = root + "../experiment-sets/" + url.PathEscape(id) + "?limit=1"
	p := h.newPage(w, r, "set", "Set "+id, root, who)
	p.Data = d
	h.render(w, r, http.StatusOK, p)
}

// lastEvent is the newest status event's seq, read before a page's data:
// the page's stream starts after it (?after=), so a change made while the
// page is on its way is still shown. 0 (the stream starts when it opens)
// without history or when the store cannot say.
func (h *handler) lastEvent(ctx context.Context) int64 {
	if h.Experiments.History == nil {
		return 0
	}
	seq, err := h.Experiments.History.LastEvent(ctx)
	if err != nil {
		return 0
	}
	return seq
}

// streamQuery is the query of GET /events for a page: its set, and the
// event it starts after.
func streamQuery(set string, after int64) string {
	q := url.Values{}
	if set != "" {
		q.Set("set", set)
	}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// describeQueued fills in the queue of the items waiting in one: a set's
// items read from the records carry none, their live Jobs do. One read per
// queued item of the page, each bounded by the page's deadline; an item
// that cannot be read keeps its row without a place.
func (h *handler) describeQueued(ctx context.Context, items []row) {
	for i := range items {
		it := &items[i]
		if it.State != state.Queued || (it.Queue != nil && it.Queue.Position != nil) {
			continue
		}
		st, err := h.Experiments.Get(ctx, it.ID)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return
		}
		if st.Source == lifecycle.SourceJob && st.Queue != nil {
			it.Queue = st.Queue
		}
	}
}
