package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultMaxEventStreams bounds the status event streams served at once.
// An idle stream holds a goroutine and a subscription buffer; the poller
// reading the store is shared.
const DefaultMaxEventStreams = 1000

// eventsRoutes registers the status event streams. Each is SSE, whatever
// the Accept header says: there is no other form of them.
func (s *server) eventsRoutes(r *gin.Engine) {
	r.GET("/events", s.authorize(auth.VerbList), bounded(s.eventStreams, s.tooManyEventStreams), s.allEvents)
	r.GET("/experiments/:id/events", s.authorize(auth.VerbGet), bounded(s.eventStreams, s.tooManyEventStreams), s.experimentEvents)
	r.GET("/experiment-sets/:set/events", s.authorize(auth.VerbList), bounded(s.eventStreams, s.tooManyEventStreams), s.setEvents)
}

func (s *server) tooManyEventStreams(c *gin.Context) {
	err := failure.New(failure.TooManyRequests, "%d event streams are being served already (--max-event-streams); retry after the Retry-After delay", cap(s.eventStreams))
	s.logFailure(c, "stream events", c.Param("id"), s.fail(c, err), err)
}

// eventsEnabled answers the request itself when this backend keeps no
// history: the events are the history store's.
func (s *server) eventsEnabled(c *gin.Context) bool {
	if s.Events != nil && s.History != nil {
		return true
	}
	s.fail(c, failure.New(failure.NotFound, "status events need the history store: this backend runs without --history-dsn"))
	return false
}

// resumeFrom reads where a stream resumes: Last-Event-ID (what an SSE
// client sends when it reconnects) or, for a first connection, ?after=.
func resumeFrom(c *gin.Context) (int64, bool, error) {
	v, name := c.GetHeader("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, name = c.Query("after"), "after"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, failure.New(failure.Invalid, "%s %s: want the seq of an event, a number of 0 or more", name, failure.Quote(v))
	}
	return n, true, nil
}

// allEvents streams every change from now on (or after Last-Event-ID),
// filtered by state, set and submitter.
func (s *server) allEvents(c *gin.Context) {
	if !s.eventsEnabled(c) {
		return
	}
	f := events.Filter{State: c.Query("state"), Set: c.Query("set"), Submitter: c.Query("submitter")}
	if f.State != "" && !state.Known(f.State) {
		s.fail(c, failure.New(failure.Invalid, "state %s is not one of %v", failure.Quote(f.State), state.All()))
		return
	}
	after, resumed, err := resumeFrom(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !resumed {
		// A new stream starts now: the past is GET /experiments.
		if after, err = s.History.LastEvent(c.Request.Context()); err != nil {
			s.logFailure(c, "stream events", "", s.fail(c, err), err)
			return
		}
	}
	s.streamEvents(c, f, after, func(history.Event) (bool, any) { return false, nil })
}

// experimentEvents streams one experiment's changes from its first (or
// after Last-Event-ID) and ends with "done" once it is final.
func (s *server) experimentEvents(c *gin.Context) {
	id, ok := s.experimentID(c)
	if !ok || !s.eventsEnabled(c) {
		return
	}
	after, _, err := resumeFrom(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	rec, err := s.History.Get(c.Request.Context(), id)
	if err != nil {
		s.logFailure(c, "stream events", id, s.fail(c, err), err)
		return
	}
	f := events.Filter{ID: id}
	if history.Final(rec.State) {
		// Its events are all stored: send what the client lacks, then done.
		s.replayEvents(c, f, after, wire.EventsDone{State: rec.State})
		return
	}
	s.streamEvents(c, f, after, func(e history.Event) (bool, any) {
		return history.Final(e.State), wire.EventsDone{State: e.State}
	})
}

// setEvents streams one set's changes and ends with "done" once every
// item is final.
func (s *server) setEvents(c *gin.Context) {
	id := c.Param("set")
	if !s.eventsEnabled(c) {
		return
	}
	after, _, err := resumeFrom(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	counts, err := s.History.CountSet(ctx, id)
	if err != nil {
		s.logFailure(c, "stream events", id, s.fail(c, err), err)
		return
	}
	if len(counts) == 0 {
		s.fail(c, failure.New(failure.NotFound, "no experiment set %s", failure.Quote(id)))
		return
	}
	f := events.Filter{Set: id}
	if allFinal(counts) {
		s.replayEvents(c, f, after, wire.EventsDone{Counts: counts})
		return
	}
	s.streamEvents(c, f, after, func(e history.Event) (bool, any) {
		if !history.Final(e.State) {
			return false, nil
		}
		counts, err := s.History.CountSet(ctx, id)
		if err != nil || !allFinal(counts) {
			return false, nil
		}
		return true, wire.EventsDone{Counts: counts}
	})
}

func allFinal(counts map[string]int) bool {
	for st, n := range counts {
		if n > 0 && !history.Final(st) {
			return false
		}
	}
	return true
}

// streamEvents serves f's events after after until the client goes, the
// backend stops, or last says an event was the last (with the done event's
// data).
func (s *server) streamEvents(c *gin.Context, f events.Filter, after int64, last func(history.Event) (bool, any)) {
	w, ctx, cancel := s.startEvents(c)
	defer cancel()
	defer w.close()
	// Where the stream starts, as an id without an event: a client that
	// loses the connection before the first event resumes from here
	// (browsers keep it as lastEventId too), not from a later "now".
	_ = w.mark(strconv.FormatInt(after, 10))
	var done any
	send := func(e history.Event) error {
		if err := w.send(strconv.FormatInt(e.Seq, 10), wire.EventState, eventOf(e)); err != nil {
			return err
		}
		after = e.Seq
		return nil
	}
	err := s.Events.Stream(ctx, f, after, func(e history.Event) error {
		if err := send(e); err != nil {
			return err
		}
		if end, data := last(e); end {
			done = data
			return events.ErrStop
		}
		return nil
	})
	if err == nil && done != nil {
		// The last change may be stored before the events that precede
		// it reach this stream (a set's items end in any order): send
		// what is stored, then done.
		err = s.Events.Replay(ctx, f, after, send)
	}
	s.endEvents(c, w, ctx, err, done)
}

// replayEvents sends what the store holds of f after after, then done.
func (s *server) replayEvents(c *gin.Context, f events.Filter, after int64, done any) {
	w, ctx, cancel := s.startEvents(c)
	defer cancel()
	defer w.close()
	err := s.Events.Replay(ctx, f, after, func(e history.Event) error {
		return w.send(strconv.FormatInt(e.Seq, 10), wire.EventState, eventOf(e))
	})
	s.endEvents(c, w, ctx, err, done)
}

func (s *server) startEvents(c *gin.Context) (*followWriter, context.Context, context.CancelFunc) {
	s.Metrics.EventStreams.Inc()
	w := &followWriter{c: c, rc: http.NewResponseController(c.Writer), sse: true, heartbeat: s.Heartbeat}
	ctx, cancel := context.WithCancel(c.Request.Context())
	if s.done != nil {
		// A backend shutting down ends its streams; clients resume on
		// another replica with Last-Event-ID.
		ctx, cancel = contextUntil(ctx, s.done)
	}
	if err := w.Begin(); err != nil {
		cancel()
	}
	return w, ctx, func() { cancel(); s.Metrics.EventStreams.Dec() }
}

func (s *server) endEvents(c *gin.Context, w *followWriter, ctx context.Context, err error, done any) {
	switch {
	case err == nil && done != nil:
		w.event(wire.EventDone, done)
	case err == nil, ctx.Err() != nil: // the client went away, or the backend stops
	case errors.Is(err, errSend):
	default:
		s.logFailure(c, "stream events", c.Param("id"), http.StatusOK, err)
		w.event(wire.EventError, wire.Error{Error: failure.MessageOf(err)})
	}
}

// errSend marks a write to the client that failed: nothing more can be
// sent.
var errSend = errors.New("send event")

func eventOf(e history.Event) wire.Event {
	return wire.Event{Seq: e.Seq, Experiment: e.ID, Set: e.Set, Submitter: e.Submitter, State: e.State,
		Reason: e.Reason, Message: e.Message, ExitCode: e.ExitCode, Time: e.At}
}

// mark writes an id without an event.
func (w *followWriter) mark(id string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.WriteString("id: " + id + "\n\n")
	return w.flushLocked()
}

// send writes one SSE event with an id.
func (w *followWriter) send(id, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.WriteString("id: " + id + "\nevent: " + name + "\n")
	writeData(&w.buf, data)
	if err := w.flushLocked(); err != nil {
		return errors.Join(errSend, err)
	}
	return nil
}
