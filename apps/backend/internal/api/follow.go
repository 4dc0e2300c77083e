package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultMaxLogFollows bounds the log follows served at once. A follow
// holds one 32 KiB buffer and a goroutine or two for as long as the
// experiment runs, so it is bounded apart from the short, 1 MiB reads of
// --max-log-reads, and much higher.
const DefaultMaxLogFollows = 500

// DefaultHeartbeat is the pause between SSE heartbeat comments: short
// enough for proxies that drop a connection idle for 30 s or more.
const DefaultHeartbeat = 15 * time.Second

// followWriteTimeout bounds each write of a follow: a client that stops
// reading gets its stream ended, not a buffer growing for it.
const followWriteTimeout = time.Minute

// sseRetryMillis is the reconnection delay SSE clients are told to use.
const sseRetryMillis = 2000

// boundLogs bounds log reads and follows each by its own limit, and
// refuses a follow parameter that is not a boolean.
func (s *server) boundLogs(c *gin.Context) {
	follow, err := followParam(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	if follow {
		bounded(s.logFollows, s.tooManyFollows)(c)
		return
	}
	bounded(s.logReads, s.tooManyLogReads)(c)
}

func followParam(c *gin.Context) (bool, error) {
	v, ok := c.GetQuery("follow")
	if !ok || v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, failure.New(failure.Invalid, "follow %s: want true or false", failure.Quote(v))
	}
	return b, nil
}

// tooManyFollows refuses a follow beyond MaxLogFollows.
func (s *server) tooManyFollows(c *gin.Context) {
	err := failure.New(failure.TooManyRequests, "%d log follows are being served already (--max-log-follows); retry after the Retry-After delay", s.MaxLogFollows)
	s.logFailure(c, "follow experiment logs", c.Param("id"), s.fail(c, err), err)
}

// acceptsSSE reports whether the client asked for Server-Sent Events.
func acceptsSSE(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(h, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
				return true
			}
		}
	}
	return false
}

// followLogs streams the output as it is written, not bound by
// --api-timeout: the follow lasts as long as the experiment and the
// client; each API call inside it keeps that timeout.
func (s *server) followLogs(c *gin.Context, id string) {
	sse := acceptsSSE(c.Request)
	var from lifecycle.Position
	if v := c.GetHeader("Last-Event-ID"); sse && v != "" {
		p, err := lifecycle.ParsePosition(v)
		if err != nil {
			s.fail(c, failure.Wrap(failure.Invalid, err, "Last-Event-ID"))
			return
		}
		from = p
	}
	s.Metrics.LogFollowers.Inc()
	defer s.Metrics.LogFollowers.Dec()

	w := &followWriter{rw: c.Writer, rc: http.NewResponseController(c.Writer), sse: sse, heartbeat: s.Heartbeat}
	defer w.close()
	ctx := c.Request.Context()
	if s.done != nil {
		// A backend shutting down ends its follows (without done), so the
		// drain does not wait for them and clients resume elsewhere.
		var cancel func()
		ctx, cancel = contextUntil(ctx, s.done)
		defer cancel()
	}
	end, err := s.Experiments.FollowLogs(ctx, id, from, w, lifecycle.FollowOptions{CallTimeout: s.APITimeout, Poll: s.FollowPoll})
	switch {
	case err != nil && !w.begun:
		s.logFailure(c, "follow experiment logs", id, s.fail(c, err), err)
	case err != nil && ctx.Err() != nil: // the client went away, or the backend stops
	case err != nil:
		s.logFailure(c, "follow experiment logs", id, http.StatusOK, err)
		w.fail(err)
	default:
		w.done(end)
	}
}

// followWriter writes a follow to the client: plain text, or SSE with a
// heartbeat. Writes come from the follow and the heartbeat, hence mu.
type followWriter struct {
	// rw and rc write through net/http; conn, when set instead, is a
	// connection taken from it (Hijack), written directly.
	rw        http.ResponseWriter
	rc        *http.ResponseController
	conn      net.Conn
	sse       bool
	heartbeat time.Duration

	mu    sync.Mutex
	begun bool
	// closed: the handler has returned; the heartbeat writes no more.
	closed bool
	buf    bytes.Buffer
	// beat is the heartbeat's timer: a timer, not a goroutine, so that
	// an idle stream costs no stack of its own.
	beat *time.Timer
}

func (w *followWriter) Begin() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.begun = true
	if w.conn != nil {
		// The whole response is this stream's to write: its head, and a
		// body the connection's close ends (HTTP/1.1 allows it with
		// Connection: close).
		w.buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n" +
			"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n")
	} else {
		h := w.rw.Header()
		h.Set("Cache-Control", "no-cache")
		// Proxies such as nginx would otherwise buffer the stream.
		h.Set("X-Accel-Buffering", "no")
		if !w.sse {
			h.Set("Content-Type", textPlain)
			w.rw.WriteHeader(http.StatusOK)
			return w.flushLocked()
		}
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		w.rw.WriteHeader(http.StatusOK)
	}
	fmt.Fprintf(&w.buf, "retry: %d\n\n", sseRetryMillis)
	if err := w.flushLocked(); err != nil {
		return err
	}
	if w.heartbeat > 0 {
		w.beat = time.AfterFunc(w.heartbeat, w.ping)
	}
	return nil
}

// ping writes a comment every heartbeat, so proxies and clients see the
// stream alive while the runner is silent.
func (w *followWriter) ping() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.buf.WriteString(": ping\n\n")
	if err := w.flushLocked(); err == nil {
		w.beat.Reset(w.heartbeat)
	}
}

func (w *followWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	// A ping that fires from now on sees closed and writes nothing.
	w.closed = true
	if w.beat != nil {
		w.beat.Stop()
	}
	// A kept-alive connection must not carry this follow's deadline into
	// its next response.
	if w.conn == nil {
		_ = w.rc.SetWriteDeadline(time.Time{})
	}
}

func (w *followWriter) Header(at lifecycle.Position, line string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.sse {
		w.buf.WriteString(line)
		w.buf.WriteByte('\n')
		return w.flushLocked()
	}
	w.buf.WriteString("event: attempt\nid: " + at.String() + "\n")
	writeData(&w.buf, []byte(line))
	return w.flushLocked()
}

func (w *followWriter) Output(end lifecycle.Position, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.sse {
		w.buf.Write(p)
		return w.flushLocked()
	}
	// Output whose place is unknown (the cut start of a stored output)
	// has no id: the client's Last-Event-ID stays the last known one.
	if end.Known() {
		w.buf.WriteString("id: " + end.String() + "\n")
	}
	writeData(&w.buf, p)
	return w.flushLocked()
}

// done ends an SSE stream with the experiment's outcome; a plain stream
// simply ends.
func (w *followWriter) done(end wire.LogEnd) {
	w.event("done", end)
}

// fail ends an SSE stream with the reason the follow stopped (the client
// reconnects with Last-Event-ID); a plain stream is cut off, so that the
// client sees an error rather than a clean end.
func (w *followWriter) fail(err error) {
	if !w.sse {
		w.mu.Lock()
		defer w.mu.Unlock()
		// Closing the connection under the response leaves a chunked body
		// without its end, which clients report as an unexpected EOF. Over
		// HTTP/2, which cannot hijack, the stream just ends.
		// gin's writer refuses to hijack once the body started; the
		// connection's own writer does not.
		var raw http.ResponseWriter = w.rw
		if u, ok := raw.(interface{ Unwrap() http.ResponseWriter }); ok {
			raw = u.Unwrap()
		}
		if conn, _, herr := http.NewResponseController(raw).Hijack(); herr == nil {
			conn.Close()
		}
		return
	}
	w.event("error", wire.Error{Error: failure.MessageOf(err)})
}

// note writes an event that has no id, from outside the stream's own
// flow, as ping writes its comment: nothing once the stream is closed.
func (w *followWriter) note(name string, v any) {
	data, _ := json.Marshal(v)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || !w.sse {
		return
	}
	w.buf.WriteString("event: " + name + "\n")
	writeData(&w.buf, data)
	_ = w.flushLocked()
}

func (w *followWriter) event(name string, v any) {
	if !w.sse {
		return
	}
	data, _ := json.Marshal(v)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.WriteString("event: " + name + "\n")
	writeData(&w.buf, data)
	_ = w.flushLocked()
}

// flushLocked writes what is buffered and flushes it to the client, each
// write bounded by followWriteTimeout.
func (w *followWriter) flushLocked() error {
	if w.conn != nil {
		_ = w.conn.SetWriteDeadline(time.Now().Add(followWriteTimeout))
		_, err := w.conn.Write(w.buf.Bytes())
		w.buf.Reset()
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		w.shrinkLocked()
		return nil
	}
	// Not every ResponseWriter can take a deadline (a test recorder);
	// the write then waits as any other.
	_ = w.rc.SetWriteDeadline(time.Now().Add(followWriteTimeout))
	_, err := w.rw.Write(w.buf.Bytes())
	w.buf.Reset()
	if err != nil {
		return fmt.Errorf("send logs: %w", err)
	}
	if err := w.rc.Flush(); err != nil {
		return fmt.Errorf("flush logs: %w", err)
	}
	w.shrinkLocked()
	return nil
}

// shrinkLocked drops a large buffer: what a follower costs while nothing
// happens is what the benchmark's idle rows measure.
func (w *followWriter) shrinkLocked() {
	if w.buf.Cap() > 8<<10 {
		w.buf = bytes.Buffer{}
	}
}

// writeData writes p as an event's data lines and ends the event. SSE
// ends a line at LF, CR or CRLF and joins data lines with LF, so p is cut
// at each of them: a client joining the lines gets p back, with each CR
// (or CRLF) as an LF.
func writeData(b *bytes.Buffer, p []byte) {
	for {
		i := bytes.IndexAny(p, "\r\n")
		b.WriteString("data: ")
		if i < 0 {
			b.Write(p)
			b.WriteString("\n\n")
			return
		}
		b.Write(p[:i])
		b.WriteByte('\n')
		if p[i] == '\r' && i+1 < len(p) && p[i+1] == '\n' {
			i++
		}
		p = p[i+1:]
	}
}

// contextUntil is ctx, also cancelled once done is.
func contextUntil(ctx, done context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(done, cancel)
	return ctx, func() { stop(); cancel() }
}
