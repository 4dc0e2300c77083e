package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// FollowLogs copies the runner's output to w as it is written, every
// attempt in turn, until the experiment ends (GET .../logs?follow=true, as
// plain text). A dropped connection is an error: FollowLogsSSE resumes
// instead.
func (c *Client) FollowLogs(ctx context.Context, id string, w io.Writer) error {
	res, err := c.sendAccept(ctx, followPath(id), "text/plain", "")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(w, res.Body); err != nil {
		return fmt.Errorf("gmini: follow the output of %s: %w", id, err)
	}
	return nil
}

// Kinds of LogEvent.
const (
	// EventOutput: Data is more of the runner's output.
	EventOutput = "output"
	// EventAttempt: Data is an attempt's header line, without its
	// newline (as GET .../logs writes it with more than one attempt).
	EventAttempt = "attempt"
	// EventDone: the experiment ended; End says how. The last event.
	EventDone = "done"
)

// LogEvent is one event of a log follow.
type LogEvent struct {
	Type string
	// ID is the event's position, "<attempt>:<byte offset>"; pass it as
	// fromID to resume after this event. Empty for done, and for output
	// whose position the backend does not know (the cut start of a
	// stored output over 1 MiB).
	ID   string
	Data []byte
	End  *wire.LogEnd
}

// WithReconnectDelay makes FollowLogsSSE wait d before reconnecting,
// instead of the delay the backend asks for (its SSE retry field).
func WithReconnectDelay(d time.Duration) Option { return func(c *Client) { c.reconnect = d } }

// maxReconnects bounds the reconnections in a row that deliver no event.
const maxReconnects = 10

// maxEventLine bounds one line of the event stream; the backend's lines
// are at most its 32 KiB read buffer.
const maxEventLine = 1 << 20

// FollowLogsSSE follows the runner's output as Server-Sent Events and
// calls fn with each event, starting after fromID (an event's ID; empty
// for the beginning). A connection that drops, or ends without done, is
// resumed with Last-Event-ID, so fn sees no output twice and none missing
// (but for output beyond the 1 MiB a stored record keeps). It returns nil
// after done, fn's error as is, ctx's error, an *Error when the backend
// refuses the follow (a 429 or 503 is retried after its Retry-After), or
// the last error after maxReconnects reconnections in a row without an
// event.
func (c *Client) FollowLogsSSE(ctx context.Context, id, fromID string, fn func(LogEvent) error) error {
	last := fromID
	failures := 0
	for {
		progressed, retry, err := c.followOnce(ctx, id, &last, fn)
		if err == nil || errors.Is(err, errDone) {
			return nil
		}
		var fnErr fnError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var e *Error
		if errors.As(err, &e) && e.StatusCode != http.StatusTooManyRequests && e.StatusCode < 500 {
			return err
		}
		if progressed {
			failures = 0
		}
		if failures++; failures > maxReconnects {
			return fmt.Errorf("gmini: follow the output of %s: %d reconnections in a row failed: %w", id, maxReconnects, err)
		}
		delay := retry
		if c.reconnect > 0 {
			delay = c.reconnect
		}
		if e != nil && e.RetryAfter > delay {
			delay = e.RetryAfter
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

var errDone = errors.New("done")

type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// followOnce reads one connection's events. It reports whether any event
// came, and the reconnection delay the backend asked for.
func (c *Client) followOnce(ctx context.Context, id string, last *string, fn func(LogEvent) error) (progressed bool, retry time.Duration, err error) {
	retry = 2 * time.Second
	res, err := c.sendAccept(ctx, followPath(id), "text/event-stream", *last)
	if err != nil {
		return false, retry, err
	}
	defer res.Body.Close()
	r := bufio.NewReaderSize(res.Body, 64<<10)
	var ev struct {
		name, id string
		hasID    bool
		data     bytes.Buffer
		lines    int
	}
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the backend ends a stream with done
			}
			return progressed, retry, fmt.Errorf("gmini: follow the output of %s: %w", id, err)
		}
		if len(line) > 0 {
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "": // a comment: the heartbeat
			case "event":
				ev.name = string(value)
			case "id":
				ev.id, ev.hasID = string(value), true
			case "data":
				if ev.lines > 0 {
					ev.data.WriteByte('\n')
				}
				ev.data.Write(value)
				ev.lines++
			case "retry":
				if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
					retry = time.Duration(ms) * time.Millisecond
				}
			}
			continue
		}
		// A blank line dispatches the event.
		if ev.lines == 0 && ev.name == "" {
			continue
		}
		le := LogEvent{Type: ev.name, ID: ev.id, Data: bytes.Clone(ev.data.Bytes())}
		if ev.hasID {
			*last = ev.id
		}
		switch ev.name {
		case "", "message":
			le.Type = EventOutput
		case "error":
			var we wire.Error
			_ = json.Unmarshal(le.Data, &we)
			return progressed, retry, fmt.Errorf("gmini: follow the output of %s: the backend stopped: %s", id, we.Error)
		case EventDone:
			le.End = &wire.LogEnd{}
			if err := json.Unmarshal(le.Data, le.End); err != nil {
				return progressed, retry, fmt.Errorf("gmini: follow the output of %s: decode done: %w", id, err)
			}
		}
		progressed = true
		if err := fn(le); err != nil {
			return progressed, retry, fnError{err}
		}
		if le.Type == EventDone {
			return progressed, retry, errDone
		}
		ev.name, ev.id, ev.hasID, ev.lines = "", "", false, 0
		ev.data.Reset()
	}
}

// readLine reads one line of an event stream, ended by LF, CRLF or CR
// (the backend sends LF only), without its end.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch b {
		case '\n':
			return line, nil
		case '\r':
			if next, err := r.Peek(1); err == nil && next[0] == '\n' {
				r.ReadByte()
			}
			return line, nil
		}
		if len(line) >= maxEventLine {
			return nil, fmt.Errorf("an event line is over %d bytes", maxEventLine)
		}
		line = append(line, b)
	}
}

func followPath(id string) string {
	return "/experiments/" + url.PathEscape(id) + "/logs"
}

// sendAccept sends a follow request.
func (c *Client) sendAccept(ctx context.Context, path, accept, lastID string) (*http.Response, error) {
	q := url.Values{"follow": {"true"}}
	h := http.Header{"Accept": {accept}}
	if lastID != "" {
		h.Set("Last-Event-ID", lastID)
	}
	return c.sendWith(ctx, http.MethodGet, path, q, nil, h)
}
