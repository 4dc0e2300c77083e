package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// EventFilter selects the changes of GET /events; empty fields select all.
type EventFilter struct {
	State, Set, Submitter string
}

// EventsFrom is where a stream starts: Seq of the last event already seen
// (an Event's Seq), or 0. For Events, 0 means "from now on".
type EventsFrom = int64

// WatchExperiment streams the changes of experiment id's state
// (GET /experiments/{id}/events) after Seq after (0: from its first), and
// returns its final state once it ends. fn sees each change once, in
// order, across reconnections (Last-Event-ID); its error ends the stream
// and is returned as is.
func (c *Client) WatchExperiment(ctx context.Context, id string, after EventsFrom, fn func(wire.Event) error) (wire.EventsDone, error) {
	return c.watch(ctx, "watch experiment "+id, "/experiments/"+url.PathEscape(id)+"/events", nil, after, fn)
}

// WatchSet streams the changes of experiment set id's items
// (GET /experiment-sets/{id}/events) and returns the counts by state once
// every item is final.
func (c *Client) WatchSet(ctx context.Context, id string, after EventsFrom, fn func(wire.Event) error) (wire.EventsDone, error) {
	return c.watch(ctx, "watch experiment set "+id, "/experiment-sets/"+url.PathEscape(id)+"/events", nil, after, fn)
}

// Events streams every change that matches f (GET /events) after Seq
// after, or from now on when after is 0, until ctx ends or fn fails: it
// returns ctx's error or fn's.
func (c *Client) Events(ctx context.Context, f EventFilter, after EventsFrom, fn func(wire.Event) error) error {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "set": f.Set, "submitter": f.Submitter} {
		if v != "" {
			q.Set(k, v)
		}
	}
	_, err := c.watch(ctx, "watch events", "/events", q, after, fn)
	return err
}

func (c *Client) watch(ctx context.Context, what, path string, q url.Values, after EventsFrom, fn func(wire.Event) error) (wire.EventsDone, error) {
	var done wire.EventsDone
	from := ""
	if after > 0 {
		from = strconv.FormatInt(after, 10)
	}
	err := c.streamSSE(ctx, what, path, q, from, func(ev sseEvent) error {
		switch ev.name {
		case wire.EventState:
			var e wire.Event
			if err := json.Unmarshal(ev.data, &e); err != nil {
				return fmt.Errorf("gmini: %s: decode event %s: %w", what, ev.id, err)
			}
			if err := fn(e); err != nil {
				return fnError{err}
			}
		case wire.EventDone:
			if err := json.Unmarshal(ev.data, &done); err != nil {
				return fmt.Errorf("gmini: %s: decode done: %w", what, err)
			}
			return errDone
		}
		return nil
	})
	return done, err
}
