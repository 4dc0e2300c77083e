package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/events"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultMaxEventStreams bounds the status event streams served at once.
// An idle stream holds a connection, a subscription and two small
// goroutines; the poller reading the store is shared.
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
	s.streamEvents(c, f, after, func(context.Context, history.Event) (bool, any) { return false, nil })
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
	s.streamEvents(c, f, after, func(_ context.Context, e history.Event) (bool, any) {
		return history.Final(e.State), wire.EventsDone{State: e.State}
	}, s.followPosition(id))
}

// DefaultPositionPoll is Config.PositionPoll's default: the queue's
// positions are reused for as long (queue.DefaultPositionTTL).
const DefaultPositionPoll = 2 * time.Second

// followPosition sends experiment id's queue position on a stream, when
// it first becomes known and each time it changes, while id is Queued.
// Once the stream has said Pending or Running (Kueue admitted it) it stops
// looking until it says Queued again (a re-queued experiment), so a
// follower of a running experiment costs no wakeups. nil without live
// Jobs to read.
func (s *server) followPosition(id string) func(*eventStream) {
	if s.Experiments == nil || s.Experiments.Live == nil {
		return nil
	}
	live := s.Experiments.Live
	return s.followPositions(func(ctx context.Context) map[string]*wire.Queue {
		if q, ok := live.QueuePosition(ctx, id); ok {
			return map[string]*wire.Queue{id: q}
		}
		return nil
	}, true)
}

// followSetPositions is followPosition for every Queued item of set. It
// looks for the set's whole life: some item may be queued while others
// run.
func (s *server) followSetPositions(set string) func(*eventStream) {
	if s.Experiments == nil || s.Experiments.Live == nil {
		return nil
	}
	live := s.Experiments.Live
	return s.followPositions(func(ctx context.Context) map[string]*wire.Queue {
		return live.SetQueuePositions(ctx, set)
	}, false)
}

// followPositions sends the positions read returns, by experiment ID,
// each when first known and when it changes. It looks every PositionPoll
// from a timer, so that a stream waiting between looks holds no
// goroutine; a look reads caches only (lifecycle.Store.QueuePosition).
// With pauses, the stream's states pause and resume the looks
// (followPosition).
func (s *server) followPositions(read func(context.Context) map[string]*wire.Queue, pauses bool) func(*eventStream) {
	return func(st *eventStream) {
		var (
			// mu keeps one look at a time, and a pause from racing one.
			mu     sync.Mutex
			last   = map[string]string{}
			paused bool
			t      *time.Timer
		)
		look := func() {
			mu.Lock()
			defer mu.Unlock()
			if paused || st.ctx.Err() != nil {
				return
			}
			now := read(st.ctx)
			for id, q := range now {
				if key := fmt.Sprintf("%s/%d", q.Name, *q.Position); key != last[id] {
					last[id] = key
					st.w.note(wire.EventPosition, wire.Position{Experiment: id, Queue: *q})
				}
			}
			for id := range last {
				if _, ok := now[id]; !ok {
					delete(last, id) // admitted, or not known for now
				}
			}
			t.Reset(s.PositionPoll)
		}
		t = time.AfterFunc(time.Hour, look)
		t.Reset(0)
		context.AfterFunc(st.ctx, func() { t.Stop() })
		if !pauses {
			return
		}
		st.onState = func(state string) {
			mu.Lock()
			defer mu.Unlock()
			admitted := state == history.StatePending || state == history.StateRunning
			switch {
			case admitted && !paused:
				paused = true
				t.Stop()
				// A position after a re-queue is news, even the same one.
				clear(last)
			case !admitted && paused:
				paused = false
				t.Reset(0)
			}
		}
	}
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
	// The stream may outlive the request's context: last reads the store
	// with the stream's.
	s.streamEvents(c, f, after, func(ctx context.Context, e history.Event) (bool, any) {
		if !history.Final(e.State) {
			return false, nil
		}
		counts, err := s.History.CountSet(ctx, id)
		if err != nil || !allFinal(counts) {
			return false, nil
		}
		return true, wire.EventsDone{Counts: counts}
	}, s.followSetPositions(id))
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
func (s *server) streamEvents(c *gin.Context, f events.Filter, after int64, last func(context.Context, history.Event) (bool, any), also ...func(*eventStream)) {
	st := s.beginEvents(c, true)
	// Where the stream starts, as an id without an event: a client that
	// loses the connection before the first event resumes from here
	// (browsers keep it as lastEventId too), not from a later "now".
	_ = st.w.mark(strconv.FormatInt(after, 10))
	// What else the stream carries (an experiment's queue position) runs
	// beside it until it ends.
	for _, a := range also {
		if a != nil {
			a(st)
		}
	}
	var done any
	send := func(e history.Event) error {
		if err := st.w.send(strconv.FormatInt(e.Seq, 10), wire.EventState, eventOf(e)); err != nil {
			return err
		}
		after = e.Seq
		if st.onState != nil {
			st.onState(e.State)
		}
		return nil
	}
	// What the store holds is read here, on the request's goroutine; the
	// wait for what comes next may run on a goroutine of its own.
	fl, err := s.Events.Follow(st.ctx, f, after, func(e history.Event) error {
		if err := send(e); err != nil {
			return err
		}
		if end, data := last(st.ctx, e); end {
			done = data
			return events.ErrStop
		}
		return nil
	})
	if err != nil {
		st.end(err, nil)
		return
	}
	st.run(func() {
		err := fl.Live(st.ctx)
		if err == nil && done != nil {
			// The last change may be stored before the events that
			// precede it reach this stream (a set's items end in any
			// order): send what is stored, then done.
			err = s.Events.Replay(st.ctx, f, after, send)
		}
		// The subscription goes before the connection does: a client
		// that has read the end finds nothing of its stream left.
		fl.Close()
		st.end(err, done)
	})
}

// replayEvents sends what the store holds of f after after, then done.
func (s *server) replayEvents(c *gin.Context, f events.Filter, after int64, done any) {
	st := s.beginEvents(c, false)
	err := s.Events.Replay(st.ctx, f, after, func(e history.Event) error {
		return st.w.send(strconv.FormatInt(e.Seq, 10), wire.EventState, eventOf(e))
	})
	st.end(err, done)
}

// eventStream is one status event stream being served.
//
// Over HTTP/1.x the stream takes its connection from net/http (Hijack)
// and answers with a body that ends when the connection closes, so that
// the request's goroutine, its buffers and gin's context are released
// once the stream has caught up with the store: an idle follower is then
// a socket, a subscription, a timer and two small goroutines (one waits
// for events, one notices the client leave), not net/http's 10 KiB of
// buffers and a deep stack (the idle rows of docs/benchmarks.md). Where
// the connection cannot be taken (HTTP/2, a test's recorder), the stream
// stays on the request's goroutine and writes through gin.
type eventStream struct {
	s   *server
	w   *followWriter
	ctx context.Context
	// stop ends ctx; for a detached stream it also closes the connection.
	stop func()
	// conn is the connection taken from net/http, nil if none was.
	conn net.Conn
	// releaseSlot gives back the stream's place among
	// --max-event-streams; nil while the request's handlers hold it.
	releaseSlot func()
	// req and id are what the end's log line needs: gin's context is
	// reused once the handler returns.
	req *http.Request
	id  string
	// onState, if set, learns each state the stream sends, once sent.
	onState func(string)
}

// beginEvents starts a stream. Only a live stream (one that waits for
// what comes next) takes its connection: a replay ends once it has sent
// what is stored, and the request's goroutine may as well serve it.
func (s *server) beginEvents(c *gin.Context, live bool) *eventStream {
	s.Metrics.EventStreams.Inc()
	st := &eventStream{s: s, req: c.Request, id: c.Param("id")}
	base := c.Request.Context()
	if conn := hijackIf(live, c); conn != nil {
		st.conn = conn
		// The stream outlives its handler from here on, and so does its
		// place among --max-event-streams.
		st.releaseSlot = keepSlot(c)
		// The request's context ends when its handler returns; the
		// stream's ends when the client closes the connection, which
		// only a read notices.
		base = context.WithoutCancel(base)
		st.w = &followWriter{conn: conn, sse: true, heartbeat: s.Heartbeat}
	} else {
		st.w = &followWriter{rw: c.Writer, rc: http.NewResponseController(c.Writer), sse: true, heartbeat: s.Heartbeat}
	}
	ctx, cancel := context.WithCancel(base)
	if s.done != nil {
		// A backend shutting down ends its streams; clients resume on
		// another replica with Last-Event-ID.
		ctx, cancel = contextUntil(ctx, s.done)
	}
	st.ctx, st.stop = ctx, cancel
	if st.conn != nil {
		conn := st.conn
		st.stop = func() { cancel(); conn.Close() }
		go watchClose(conn, cancel)
	}
	if err := st.w.Begin(); err != nil {
		cancel()
	}
	return st
}

// hijackIf takes c's connection from net/http, if asked and if it can,
// before anything was written to it. The stream writes its own response
// head then.
func hijackIf(live bool, c *gin.Context) net.Conn {
	if !live || c.Request.ProtoMajor != 1 {
		return nil
	}
	// Through gin's writer, so that gin knows the response is not its
	// to write; its status stays 200 for the access log and metrics.
	conn, _, err := http.NewResponseController(c.Writer).Hijack()
	if err != nil {
		return nil
	}
	return conn
}

// watchClose cancels a detached stream when its client closes the
// connection (or the stream closes it): the only read on it.
func watchClose(conn net.Conn, cancel func()) {
	// Small: a client sends nothing on an event stream, and whatever it
	// sends is dropped.
	var buf [16]byte
	for {
		if _, err := conn.Read(buf[:]); err != nil {
			cancel()
			return
		}
	}
}

// run runs the rest of the stream: on a goroutine of its own once the
// connection is the stream's (the handler returns and net/http lets go of
// the request), else here.
func (st *eventStream) run(rest func()) {
	if st.conn == nil {
		rest()
		return
	}
	go rest()
}

// end writes how the stream ends and releases what it holds.
func (st *eventStream) end(err error, done any) {
	defer st.release()
	switch {
	case err == nil && done != nil:
		st.w.event(wire.EventDone, done)
	case err == nil, st.ctx.Err() != nil: // the client went away, or the backend stops
	case errors.Is(err, errSend):
	default:
		st.s.logFailureCtx(st.req.Context(), "stream events", st.id, http.StatusOK, err)
		st.w.event(wire.EventError, wire.Error{Error: failure.MessageOf(err)})
	}
}

func (st *eventStream) release() {
	st.w.close()
	st.stop()
	st.s.Metrics.EventStreams.Dec()
	if st.releaseSlot != nil {
		st.releaseSlot()
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
