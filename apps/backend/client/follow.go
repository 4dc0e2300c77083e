package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// FollowLogs copies the runner's output to w as it is written, every
// attempt in turn, until the experiment ends (GET .../logs?follow=true, as
// plain text). A dropped connection is an error: FollowLogsSSE resumes
// instead.
func (c *Client) FollowLogs(ctx context.Context, id string, w io.Writer) error {
	res, err := c.sendWith(ctx, http.MethodGet, followPath(id), url.Values{"follow": {"true"}}, nil, http.Header{"Accept": {"text/plain"}})
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
	what := "follow the output of " + id
	return c.streamSSE(ctx, what, followPath(id), url.Values{"follow": {"true"}}, fromID, func(ev sseEvent) error {
		le := LogEvent{Type: ev.name, ID: ev.id, Data: ev.data}
		switch ev.name {
		case "", "message":
			le.Type = EventOutput
		case EventDone:
			le.End = &wire.LogEnd{}
			if err := json.Unmarshal(le.Data, le.End); err != nil {
				return fmt.Errorf("gmini: %s: decode done: %w", what, err)
			}
		}
		if err := fn(le); err != nil {
			return fnError{err}
		}
		if le.Type == EventDone {
			return errDone
		}
		return nil
	})
}

func followPath(id string) string {
	return "/experiments/" + url.PathEscape(id) + "/logs"
}
