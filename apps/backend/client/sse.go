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

// WithReconnectDelay makes the SSE streams (FollowLogsSSE, Events) wait d
// before reconnecting, instead of the delay the backend asks for (its SSE
// retry field).
func WithReconnectDelay(d time.Duration) Option { return func(c *Client) { c.reconnect = d } }

// maxReconnects bounds the reconnections in a row that deliver no event;
// with the backend's 2 s delay doubling to maxReconnectDelay they span
// about three and a half minutes.
const (
	maxReconnects     = 10
	maxReconnectDelay = 30 * time.Second
)

// maxEventLine bounds one line of an event stream; the backend's lines
// are at most its 32 KiB read buffer.
const maxEventLine = 1 << 20

// sseEvent is one dispatched event of a stream.
type sseEvent struct {
	name, id string
	data     []byte
}

// errDone ends a stream after its last event; fnError carries the
// caller's own error out of it unchanged.
var errDone = errors.New("done")

type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// streamSSE reads the event stream at path, calling handle with each
// event, and resumes a connection that drops or ends without errDone with
// Last-Event-ID (starting from fromID). handle returns errDone after the
// last event, or an error that ends the stream.
func (c *Client) streamSSE(ctx context.Context, what, path string, q url.Values, fromID string, handle func(sseEvent) error) error {
	last := fromID
	failures := 0
	for {
		progressed, retry, err := c.sseOnce(ctx, what, path, q, &last, handle)
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
			return fmt.Errorf("gmini: %s: %d reconnections in a row failed: %w", what, maxReconnects, err)
		}
		// The backend's delay, doubled with each failure in a row up to
		// maxReconnectDelay: a backend restarting takes longer than a
		// dropped connection, and ten quick tries would give up on it.
		delay := min(retry<<(failures-1), maxReconnectDelay)
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

// sseOnce reads one connection's events. It reports whether any event
// came, and the reconnection delay the backend asked for.
func (c *Client) sseOnce(ctx context.Context, what, path string, q url.Values, last *string, handle func(sseEvent) error) (progressed bool, retry time.Duration, err error) {
	retry = 2 * time.Second
	h := http.Header{"Accept": {"text/event-stream"}}
	if *last != "" {
		h.Set("Last-Event-ID", *last)
	}
	res, err := c.sendWith(ctx, http.MethodGet, path, q, nil, h)
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
			return progressed, retry, fmt.Errorf("gmini: %s: %w", what, err)
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
		// A blank line dispatches the event. An id alone is no event but
		// still moves the place a reconnection resumes from, as in
		// browsers: a stream of what comes from now on starts with one.
		if ev.hasID {
			*last = ev.id
		}
		if ev.lines == 0 && ev.name == "" {
			ev.hasID = false
			continue
		}
		if ev.name == "error" {
			var we wire.Error
			_ = json.Unmarshal(ev.data.Bytes(), &we)
			return progressed, retry, fmt.Errorf("gmini: %s: the backend stopped: %s", what, we.Error)
		}
		progressed = true
		if err := handle(sseEvent{name: ev.name, id: ev.id, data: bytes.Clone(ev.data.Bytes())}); err != nil {
			return progressed, retry, err
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
